"""The debug objects through kubesim with real Vault-issued credentials: an ephemeral
container added and running, ended by its watchdog (exit 137) or by its stdin closing; a
copy pod and a toolbox pod created, running and deleted; what an ephemeral-only role may
not do; and wait_for_container's answers for a missing container, a missing pod, a
container that cannot start and a pod deleted while waiting.

Every JSON answer kubesim sends is checked against the official OpenAPI schemas by the
``local_stack`` fixture at the end of the test session."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from bastion.config.models import Cluster
from bastion.debug_container import (
    SESSION_LABEL,
    DebugPlan,
    container_name,
    copy_pod,
    ephemeral_container,
    find_reattachable,
    next_ordinal,
    toolbox_pod,
    watchdog_command,
)
from bastion.errors import BackendUnavailable, PolicyDenied
from bastion.kube import KubeApi
from bastion.policy import Mode
from bastion.vault import KubeCredential, KubeToken, VaultClient
from devstack.kubesim_harness import ThreadedStack
from devstack.test_vault import vault_config

IMAGE = "registry.example.com/debug-toolbox@sha256:" + "ab" * 32
APP_IMAGE = "registry.example.com/shop/app@sha256:" + "cd" * 32
V5 = "v5.channel.k8s.io"
CREDENTIAL_TTL = timedelta(minutes=10)


@pytest.fixture
def info(local_stack: ThreadedStack) -> dict[str, Any]:
    return local_stack.stack.info


@pytest.fixture
def cluster(info: dict[str, Any]) -> Cluster:
    return Cluster.model_validate(
        {
            "name": "local",
            "api_url": info["kube_api"],
            "ca_file": info["kube_ca"],
            "vault_mount": info["vault_kubernetes_mount"],
        }
    )


@pytest.fixture
async def vault(info: dict[str, Any]) -> AsyncIterator[VaultClient]:
    client = VaultClient(vault_config(info))
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def issued(
    vault: VaultClient, cluster: Cluster, role: str, namespace: str
) -> AsyncIterator[KubeCredential]:
    """A credential Vault issues for ``namespace`` with ``role``, revoked afterwards."""
    credential = await vault.issue_kube_credential(
        cluster.vault_mount, role, namespace, CREDENTIAL_TTL
    )
    try:
        yield credential
    finally:
        await vault.revoke_lease(credential.lease_id)


@contextlib.asynccontextmanager
async def session_kube(
    vault: VaultClient, cluster: Cluster, role: str, namespace: str
) -> AsyncIterator[KubeApi]:
    async with (
        issued(vault, cluster, role, namespace) as credential,
        KubeApi(cluster, credential.token) as kube,
    ):
        yield kube


@pytest.fixture
async def admin(cluster: Cluster, info: dict[str, Any]) -> AsyncIterator[KubeApi]:
    """The cluster administrator, who sets the scene (the target pods), never the bastion."""
    async with KubeApi(cluster, KubeToken(info["kube_admin_token"])) as kube:
        yield kube


def new_session() -> str:
    return secrets.token_hex(8)


def app_pod(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    """An application pod of the kind people debug: labels, probes, a token volume."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "shop"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": APP_IMAGE,
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                    "volumeMounts": [
                        {
                            "name": "kube-api-access-abcde",
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                            "readOnly": True,
                        }
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "kube-api-access-abcde",
                    "projected": {
                        "sources": [{"serviceAccountToken": {"path": "token"}}],
                    },
                }
            ],
            **spec,
        },
    }


@contextlib.asynccontextmanager
async def target(admin: KubeApi, namespace: str, **spec: Any) -> AsyncIterator[dict[str, Any]]:
    """A fresh running application pod, deleted afterwards."""
    name = f"shop-{secrets.token_hex(4)}"
    await admin.create_pod(namespace, app_pod(namespace, name, **spec))
    try:
        await admin.wait_for_container(namespace, name, "app", until="running", timeout=10)
        yield await admin.get_pod(namespace, name)
    finally:
        await admin.delete_pod(namespace, name)


def plan(session: str, mode: Mode, namespace: str, pod: str, **changes: Any) -> DebugPlan:
    fields: dict[str, Any] = {
        "session_id": session,
        "user": "alice",
        "mode": mode,
        "image": IMAGE,
        "namespace": namespace,
        "pod": pod,
        "target_container": "app" if mode is Mode.EPHEMERAL else None,
        "watchdog_seconds": 300,
    }
    fields.update(changes)
    return DebugPlan(**fields)


async def close_stdin(kube: KubeApi, token: str, namespace: str, pod: str, container: str) -> None:
    """Attach as the operator's terminal would and close stdin (v5's close signal)."""
    path = (
        f"/api/v1/namespaces/{namespace}/pods/{pod}/attach"
        f"?container={container}&stdin=true&stdout=true&tty=true"
    )
    async with kube.http.ws_connect(
        path, protocols=(V5,), headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        assert ws.protocol == V5
        await ws.send_bytes(b"\xff\x00")
        with contextlib.suppress(TimeoutError):
            await ws.receive(timeout=0.5)


async def gone(kube: KubeApi, namespace: str, pod: str, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            await kube.get_pod(namespace, pod)
        except PolicyDenied:
            return True
        await asyncio.sleep(0.1)
    return False


# ------------------------------------------------------------------------- ephemeral mode
async def test_an_ephemeral_container_runs_the_watchdog_and_ends_when_stdin_closes(
    vault: VaultClient, cluster: Cluster, admin: KubeApi
) -> None:
    session = new_session()
    async with (
        target(admin, "payments") as pod,
        issued(vault, cluster, "debug", "payments") as credential,
        KubeApi(cluster, credential.token) as kube,
    ):
        name = pod["metadata"]["name"]
        debug = plan(session, Mode.EPHEMERAL, "payments", name)
        updated = await kube.add_ephemeral_container("payments", name, ephemeral_container(debug))
        (added,) = updated["spec"]["ephemeralContainers"]
        assert added["name"] == container_name(session)
        assert added["command"] == watchdog_command(session, 300)
        assert added["targetContainerName"] == "app"
        assert added["securityContext"]["runAsNonRoot"] is True

        state = await kube.wait_for_container(
            "payments", name, added["name"], until="running", timeout=10
        )
        assert state.state == "running"
        current = await kube.get_pod("payments", name)
        assert find_reattachable(current, session) == added["name"]  # reattach, not add
        assert next_ordinal(current, session) == 2

        token = credential.token.reveal()
        await close_stdin(kube, token, "payments", name, added["name"])
        ended = await kube.wait_for_container(
            "payments", name, added["name"], until="terminated", timeout=10
        )
        assert ended.state == "terminated"
        assert ended.exit_code != 137  # the hangup ended it, not the watchdog
        assert find_reattachable(await kube.get_pod("payments", name), session) is None


async def test_the_watchdog_kills_the_shell_and_the_next_debug_gets_the_next_name(
    vault: VaultClient, cluster: Cluster, admin: KubeApi, local_stack: ThreadedStack
) -> None:
    session = new_session()
    async with (
        target(admin, "payments") as pod,
        session_kube(vault, cluster, "debug", "payments") as kube,
    ):
        name = pod["metadata"]["name"]
        first = ephemeral_container(
            plan(session, Mode.EPHEMERAL, "payments", name, watchdog_seconds=2)
        )
        reads: list[str] = []

        def observe(method: str, path: str, *_: object) -> None:
            if method == "GET" and path.startswith(f"/api/v1/namespaces/payments/pods/{name}"):
                reads.append(path)

        observers = local_stack.stack.kubesim.api.observers
        started = time.monotonic()
        await kube.add_ephemeral_container("payments", name, first)
        observers.append(observe)
        try:
            ended = await kube.wait_for_container(
                "payments", name, first["name"], until="terminated", timeout=15
            )
        finally:
            observers.remove(observe)
        assert 2 <= time.monotonic() - started < 10
        # One read, then the watch carried the change: no polling for two seconds.
        assert reads == [f"/api/v1/namespaces/payments/pods/{name}"]
        assert (ended.state, ended.reason) == ("terminated", "Error")

        current = await kube.get_pod("payments", name)
        assert find_reattachable(current, session) is None
        ordinal = next_ordinal(current, session)
        second = ephemeral_container(
            plan(session, Mode.EPHEMERAL, "payments", name, ordinal=ordinal, watchdog_seconds=2)
        )
        assert second["name"] == f"dbg-{session[:8]}-2"
        await kube.add_ephemeral_container("payments", name, second)
        running = await kube.wait_for_container(
            "payments", name, second["name"], until="running", timeout=10
        )
        assert running.state == "running"
        after = await kube.get_pod("payments", name)
        assert [c["name"] for c in after["spec"]["ephemeralContainers"]] == [
            first["name"],
            second["name"],
        ]
        await kube.wait_for_container(
            "payments", name, second["name"], until="terminated", timeout=15
        )


async def test_a_watchdog_kill_is_reported_as_exit_137(
    vault: VaultClient, cluster: Cluster, admin: KubeApi
) -> None:
    session = new_session()
    async with (
        target(admin, "payments") as pod,
        session_kube(vault, cluster, "debug", "payments") as kube,
    ):
        name = pod["metadata"]["name"]
        body = ephemeral_container(
            plan(session, Mode.EPHEMERAL, "payments", name, watchdog_seconds=1)
        )
        await kube.add_ephemeral_container("payments", name, body)
        ended = await kube.wait_for_container(
            "payments", name, body["name"], until="terminated", timeout=10
        )
        # timeout(1) SIGKILLs its whole process group, itself included.
        assert ended.describe() == "terminated with exit code 137 (Error)"


# ------------------------------------------------------------------------- copy and toolbox
async def test_a_copy_pod_is_created_running_and_deleted(
    vault: VaultClient, cluster: Cluster, admin: KubeApi
) -> None:
    session = new_session()
    async with (
        target(admin, "checkout") as source,
        session_kube(vault, cluster, "debug-pods", "checkout") as kube,
    ):
        seen = await kube.get_pod("checkout", source["metadata"]["name"])
        body = copy_pod(plan(session, Mode.COPY, "checkout", seen["metadata"]["name"]), seen)
        created = await kube.create_pod("checkout", body)
        name = created["metadata"]["name"]
        assert name == f"{seen['metadata']['name']}-dbg-{session[:8]}"
        assert created["metadata"]["labels"][SESSION_LABEL] == session
        assert "app" not in created["metadata"]["labels"]
        assert created["spec"]["shareProcessNamespace"] is True
        assert created["spec"]["automountServiceAccountToken"] is False
        assert [v["name"] for v in created["spec"]["volumes"]] == [f"dbg-{session[:8]}-tmp"]
        assert "readinessProbe" not in created["spec"]["containers"][0]

        debug = created["spec"]["containers"][-1]["name"]
        state = await kube.wait_for_container("checkout", name, debug, until="running", timeout=10)
        assert state.state == "running"

        assert await kube.delete_pod("checkout", name) == "deleted"
        assert await gone(kube, "checkout", name)
        assert await kube.delete_pod("checkout", name) == "already gone"


async def test_a_toolbox_pod_is_created_and_deleted_only_by_its_uid(
    vault: VaultClient, cluster: Cluster
) -> None:
    session = new_session()
    async with session_kube(vault, cluster, "debug-pods", "checkout") as kube:
        created = await kube.create_pod(
            "checkout", toolbox_pod(plan(session, Mode.POD, "checkout", "web-1"))
        )
        name, uid = created["metadata"]["name"], created["metadata"]["uid"]
        assert name == f"dbg-{session[:8]}-toolbox"
        assert created["spec"]["enableServiceLinks"] is False
        state = await kube.wait_for_container(
            "checkout", name, container_name(session), until="running", timeout=10
        )
        assert state.state == "running"

        with pytest.raises(
            PolicyDenied, match=r"create pod checkout/dbg-\w+-toolbox: it already exists$"
        ):
            await kube.create_pod(
                "checkout", toolbox_pod(plan(session, Mode.POD, "checkout", "web-1"))
            )
        # A pod that is not the one the session made (another uid) is left alone.
        other = "00000000-0000-4000-8000-000000000000"
        assert await kube.delete_pod("checkout", name, uid=other) == "already gone"
        assert (await kube.get_pod("checkout", name))["metadata"]["uid"] == uid
        assert await kube.delete_pod("checkout", name, uid=uid) == "deleted"
        assert await gone(kube, "checkout", name)


async def test_an_ephemeral_only_role_cannot_create_or_delete_pods(
    vault: VaultClient, cluster: Cluster
) -> None:
    session = new_session()
    async with session_kube(vault, cluster, "debug", "payments") as kube:
        body = copy_pod(
            plan(session, Mode.COPY, "payments", "api-1"),
            await kube.get_pod("payments", "api-1"),
        )
        with pytest.raises(BackendUnavailable) as caught:
            await kube.create_pod("payments", body)
        assert caught.value.message == (
            f"could not create pod payments/api-1-dbg-{session[:8]}: the session's credential "
            "was refused (403)"
        )
        assert "bastion.kube_permissions" in (caught.value.hint or "")
        # RBAC decides before existence: refused, though no such pod exists.
        copy_name = body["metadata"]["name"]
        with pytest.raises(
            BackendUnavailable, match=rf"delete pod payments/{copy_name}: .*\(403\)"
        ):
            await kube.delete_pod("payments", copy_name)


# ------------------------------------------------------------------------- waiting
async def test_waiting_for_a_missing_container_or_pod_is_one_sentence(
    vault: VaultClient, cluster: Cluster
) -> None:
    async with session_kube(vault, cluster, "debug", "payments") as kube:
        with pytest.raises(PolicyDenied) as caught:
            await kube.wait_for_container("payments", "api-1", "nope", until="running", timeout=5)
        assert caught.value.message == "pod payments/api-1 has no container 'nope'"
        with pytest.raises(PolicyDenied) as caught:
            await kube.wait_for_container("payments", "gone-1", "app", until="running", timeout=5)
        assert caught.value.message == (
            "could not read pod payments/gone-1: it does not exist (any more)"
        )


async def test_a_container_that_cannot_start_is_reported_not_waited_for(
    vault: VaultClient, cluster: Cluster, admin: KubeApi
) -> None:
    name = f"broken-{secrets.token_hex(4)}"
    body = app_pod("checkout", name)
    body["spec"]["containers"][0]["command"] = ["/nonexistent/server"]
    await admin.create_pod("checkout", body)
    try:
        async with session_kube(vault, cluster, "debug-pods", "checkout") as kube:
            with pytest.raises(BackendUnavailable) as caught:
                await kube.wait_for_container("checkout", name, "app", until="running", timeout=10)
        assert caught.value.message.startswith(
            f"debug container app in pod checkout/{name} cannot start: waiting "
            "(CreateContainerError; "
        )
    finally:
        await admin.delete_pod("checkout", name)


async def test_a_pod_deleted_while_waiting_and_a_wait_that_times_out(
    vault: VaultClient, cluster: Cluster, admin: KubeApi
) -> None:
    # kubesim never reports init containers, so a wait for one is certainly still going.
    # Its environment makes every watch event larger than aiohttp's line limit (512 KiB).
    env = [{"name": f"BLOB_{i}", "value": "x" * 100_000} for i in range(7)]
    init = [{"name": "migrate", "image": APP_IMAGE, "env": env}]
    async with (
        target(admin, "payments", initContainers=init) as pod,
        session_kube(vault, cluster, "debug", "payments") as kube,
    ):
        name = pod["metadata"]["name"]
        with pytest.raises(BackendUnavailable) as caught:
            await kube.wait_for_container("payments", name, "migrate", until="running", timeout=0.5)
        assert caught.value.message == (
            f"debug container migrate in pod payments/{name} was not running within 0.5 "
            "seconds (last seen: not reported by the cluster yet)"
        )
        waiting = asyncio.create_task(
            kube.wait_for_container("payments", name, "migrate", until="running", timeout=10)
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()
        assert await admin.delete_pod("payments", name) == "deleted"
        with pytest.raises(PolicyDenied) as caught:
            await waiting
        assert caught.value.message == (
            f"pod payments/{name} was deleted while the bastion waited for it"
        )
