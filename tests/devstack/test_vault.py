"""bastion.vault against a real OpenBao wired to kubesim.

The shared ``local_stack`` serves everything that leaves OpenBao as it was. Tests that seal,
freeze (SIGSTOP) or revoke the bastion's token behind its back get a throwaway stack of their
own (``spare``: about 0.4 s to start).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from bastion.config.models import AppRole, Vault
from bastion.devstack.background import kube_client
from bastion.devstack.stack import APPROLE, VaultRole
from bastion.errors import BackendUnavailable
from bastion.policy import Mode
from bastion.vault import KubeCredential, VaultClient
from devstack.conftest import STACK_FIXTURE
from devstack.kubesim_harness import ThreadedStack

MIN = timedelta(minutes=10)


def vault_config(
    info: dict[str, Any], *, timeout: timedelta | None = None, **changes: Any
) -> Vault:
    """The bastion's vault section for a stack, as `bastion demo` writes it. ``timeout`` may
    be shorter than the config's whole seconds, to keep the tests that freeze Vault fast."""
    fields: dict[str, Any] = {
        "address": info["vault_addr"],
        "ca_file": info["vault_ca"],
        "approle": {
            "role_id": info["approle_role_id"],
            "secret_id_file": info["approle_secret_id_file"],
        },
    }
    fields.update(changes)
    config = Vault.model_validate(fields)
    return config if timeout is None else config.model_copy(update={"timeout": timeout})


def root(info: dict[str, Any]) -> hvac.Client:
    return hvac.Client(
        url=info["vault_addr"], token=info["vault_root_token"], verify=info["vault_ca"]
    )


def pods(info: dict[str, Any], token: str, namespace: str) -> list[str] | int:
    """Pod names in ``namespace`` as the token sees them, or the HTTP status refusing it."""
    with kube_client(info["kube_api"], info["kube_ca"], token) as api:
        try:
            found = client.CoreV1Api(api).list_namespaced_pod(namespace)
        except ApiException as exc:
            return int(exc.status)
    return [p.metadata.name for p in found.items]


def service_account_exists(info: dict[str, Any], namespace: str, name: str) -> bool:
    with kube_client(info["kube_api"], info["kube_ca"], info["kube_admin_token"]) as api:
        try:
            client.CoreV1Api(api).read_namespaced_service_account(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
    return True


def vault_accounts(info: dict[str, Any], namespace: str) -> list[str]:
    """Service accounts the Vault engine created in ``namespace`` (its ``v-`` names)."""
    with kube_client(info["kube_api"], info["kube_ca"], info["kube_admin_token"]) as api:
        found = client.CoreV1Api(api).list_namespaced_service_account(namespace)
    return [a.metadata.name for a in found.items if a.metadata.name.startswith("v-")]


def jwt_lifetime(token: str) -> int:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(claims["exp"]) - int(claims["iat"])


def one_sentence(error: BackendUnavailable) -> str:
    """The error's message, checked to be one sentence with a hint for the administrator."""
    message = error.message
    assert message.endswith("."), message
    assert ". " not in message.replace("e.g. ", ""), message
    assert "\n" not in message, message
    assert error.hint, message
    return message


async def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"{what} did not happen within {within} s"
        await asyncio.sleep(0.05)


def write_secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def info(local_stack: ThreadedStack) -> dict[str, Any]:
    return local_stack.stack.info


@pytest.fixture
async def vault(info: dict[str, Any]) -> AsyncIterator[VaultClient]:
    async with VaultClient(vault_config(info)) as started:
        yield started


@pytest.fixture
def spare(tmp_path: Path) -> Iterator[ThreadedStack]:
    """A throwaway kubesim + OpenBao for the tests that break Vault on purpose."""
    running = ThreadedStack(
        tmp_path / "stack",
        STACK_FIXTURE,
        roles=[VaultRole("debug", ("payments",), modes=(Mode.EPHEMERAL,))],
    )
    running.start()
    try:
        yield running
    finally:
        pid = running.stack.openbao.pid
        if pid is not None:
            os.killpg(pid, signal.SIGCONT)  # whatever a test froze must be able to stop
        running.stop()


class Frozen:
    """OpenBao stopped with SIGSTOP: it accepts connections but answers nothing."""

    def __init__(self, stack: ThreadedStack) -> None:
        pid = stack.stack.openbao.pid
        assert pid is not None
        self.pgid = pid

    def __enter__(self) -> Frozen:
        os.killpg(self.pgid, signal.SIGSTOP)
        return self

    def thaw(self) -> None:
        os.killpg(self.pgid, signal.SIGCONT)

    def thaw_after(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self.thaw)
        timer.start()
        return timer

    def __exit__(self, *exc: object) -> None:
        self.thaw()


# ---------------------------------------------------------------------- credentials
async def test_credential_works_in_its_namespace_only_and_dies_on_revoke(
    vault: VaultClient, info: dict[str, Any]
) -> None:
    mount = info["vault_kubernetes_mount"]
    started = time.perf_counter()
    credential = await vault.issue_kube_credential(mount, "debug", "payments", MIN)
    issue_ms = (time.perf_counter() - started) * 1000
    assert isinstance(credential, KubeCredential)
    assert credential.namespace == "payments"
    assert credential.lease_duration == MIN
    assert not credential.renewable
    assert credential.lease_id.startswith(f"{mount}/creds/debug/")
    assert abs(credential.issued_at - time.time()) < 5
    token = credential.token.reveal()
    assert jwt_lifetime(token) == 600  # what Kubernetes was asked for, not only the lease
    assert service_account_exists(info, "payments", credential.service_account)

    assert pods(info, token, "payments") == ["api-1"]
    assert pods(info, token, "checkout") == 403

    started = time.perf_counter()
    await vault.revoke_lease(credential.lease_id)
    revoke_ms = (time.perf_counter() - started) * 1000
    assert pods(info, token, "payments") == 401
    assert not service_account_exists(info, "payments", credential.service_account)
    await vault.revoke_lease(credential.lease_id)  # twice is fine: already revoked
    credential.token.drop()
    with pytest.raises(ValueError, match="dropped"):
        credential.token.reveal()
    print(f"\nvault latency on the local stack: issue {issue_ms:.0f} ms, revoke {revoke_ms:.0f} ms")


async def test_lease_duration_is_what_was_asked_up_to_the_role_maximum(
    vault: VaultClient, info: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    mount = info["vault_kubernetes_mount"]
    asked = timedelta(minutes=25)
    credential = await vault.issue_kube_credential(mount, "debug", "payments", asked)
    try:
        assert credential.lease_duration == asked
        assert jwt_lifetime(credential.token.reveal()) == 25 * 60
    finally:
        await vault.revoke_lease(credential.lease_id)
    # The local stack's role allows one hour at most: Vault caps the lease and says so.
    credential = await vault.issue_kube_credential(mount, "debug", "payments", timedelta(hours=2))
    try:
        assert credential.lease_duration == timedelta(hours=1)
        assert "valid for 3600 s instead of the 7200 s asked" in caplog.text
    finally:
        await vault.revoke_lease(credential.lease_id)


async def test_too_short_ttl_and_bad_names_are_refused_before_any_call(tmp_path: Path) -> None:
    # Nothing listens at this address: any request would be a BackendUnavailable.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = Vault.model_validate(
        {
            "address": f"https://127.0.0.1:{port}",
            "ca_file": tmp_path / "ca.pem",
            "approle": {"role_id": "r", "secret_id_file": tmp_path / "secret-id"},
        }
    )
    vault = VaultClient(config)
    try:
        with pytest.raises(ValueError, match="at least 10 minutes"):
            await vault.issue_kube_credential(
                "kubernetes", "debug", "payments", timedelta(minutes=9)
            )
        for mount, role, namespace in (
            ("kubernetes/../sys", "debug", "payments"),
            ("kubernetes", "debug/x", "payments"),
            ("kubernetes", "debug", "Payments"),
        ):
            with pytest.raises(ValueError, match="is not a valid"):
                await vault.issue_kube_credential(mount, role, namespace, MIN)
    finally:
        await vault.close()


async def test_plain_http_is_refused(tmp_path: Path) -> None:
    # The config refuses it already; a config built without validation is refused here too.
    config = Vault.model_construct(
        address="http://127.0.0.1:8200",
        ca_file=tmp_path / "ca.pem",
        approle=AppRole.model_construct(role_id="r", secret_id_file=tmp_path / "s"),
        timeout=timedelta(seconds=1),
    )
    with pytest.raises(BackendUnavailable, match="not an https:// URL"):
        VaultClient(config)


async def test_kube_leases_are_not_renewable(vault: VaultClient, info: dict[str, Any]) -> None:
    credential = await vault.issue_kube_credential(
        info["vault_kubernetes_mount"], "debug", "payments", MIN
    )
    assert await vault.renew_lease(credential.lease_id, timedelta(minutes=5)) is None
    await vault.revoke_lease(credential.lease_id)
    with pytest.raises(BackendUnavailable) as caught:
        await vault.renew_lease(credential.lease_id, timedelta(minutes=5))
    assert "no longer knows the session's credential" in one_sentence(caught.value)


async def test_the_token_never_reaches_a_log_a_repr_or_a_pickle(
    info: dict[str, Any], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "requests", "hvac", "bastion"):
        caplog.set_level(logging.DEBUG, logger=name)
    secret_id = await asyncio.to_thread(Path(info["approle_secret_id_file"]).read_text)
    secret_id = secret_id.strip()
    async with VaultClient(vault_config(info)) as vault:
        credential = await vault.issue_kube_credential(
            info["vault_kubernetes_mount"], "debug", "payments", MIN
        )
        token = credential.token.reveal()
        bastion_token = vault._token  # the bastion's own Vault token, to look for it
        assert bastion_token
        await vault.renew_lease(credential.lease_id, MIN)
        await vault.revoke_lease(credential.lease_id)
        assert await vault.healthy()
    shown = [repr(credential), str(credential), repr(credential.token), f"{credential.token}"]
    assert all("KubeToken(<redacted>)" in text for text in shown)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(credential)
    # urllib3 logs each request line at DEBUG: method, path, status; never headers or bodies.
    assert any(r.name.startswith("urllib3") for r in caplog.records)
    out, err = capfd.readouterr()
    everything = caplog.text + "".join(str(r.args) for r in caplog.records) + out + err
    everything += "".join(shown)
    for secret in (token, bastion_token, secret_id):
        assert secret not in everything


async def test_healthy(vault: VaultClient) -> None:
    assert await vault.healthy()


# ---------------------------------------------------------------------- refusals
async def test_wrong_secret_id_is_one_clear_sentence(info: dict[str, Any], tmp_path: Path) -> None:
    wrong = write_secret(tmp_path / "secret-id", "0f7c-not-the-secret-id\n")
    config = vault_config(
        info, approle={"role_id": info["approle_role_id"], "secret_id_file": wrong}
    )
    vault = VaultClient(config)
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await vault.start()
        message = one_sentence(caught.value)
        assert message.startswith("Vault refused the bastion's AppRole login")
        assert "expired" in message
        assert str(wrong) in (caught.value.hint or "")
        assert "0f7c-not-the-secret-id" not in str(caught.value)
        assert not await vault.healthy()
    finally:
        await vault.close()


async def test_secret_id_file_must_be_private_readable_and_one_word(
    info: dict[str, Any], tmp_path: Path
) -> None:
    real = await asyncio.to_thread(Path(info["approle_secret_id_file"]).read_text)
    link = tmp_path / "link"
    link.symlink_to(info["approle_secret_id_file"])
    cases = {
        write_secret(tmp_path / "open", real, 0o644): "has mode 0644; expected 0600",
        tmp_path / "absent": "does not exist",
        link: "is a symbolic link",
        write_secret(tmp_path / "empty", "\n"): "does not hold one secret-id",
        write_secret(tmp_path / "two", "a b\n"): "does not hold one secret-id",
    }
    for path, expected in cases.items():
        config = vault_config(
            info, approle={"role_id": info["approle_role_id"], "secret_id_file": path}
        )
        async with asyncio.timeout(5):
            vault = VaultClient(config)
            try:
                with pytest.raises(BackendUnavailable) as caught:
                    await vault.start()
            finally:
                await vault.close()
        message = one_sentence(caught.value)
        assert expected in message, path
        assert str(path) in message
        assert real.strip() not in str(caught.value)


async def test_missing_role_forbidden_namespace_and_denied_path_are_clear(
    vault: VaultClient, info: dict[str, Any]
) -> None:
    mount = info["vault_kubernetes_mount"]
    with pytest.raises(BackendUnavailable) as caught:
        await vault.issue_kube_credential(mount, "nope", "payments", MIN)
    assert one_sentence(caught.value) == (
        f"Vault has no Kubernetes role 'nope' on the secrets engine mounted at '{mount}'."
    )
    with pytest.raises(BackendUnavailable) as caught:
        await vault.issue_kube_credential(mount, "debug", "checkout", MIN)
    assert one_sentence(caught.value) == (
        "Vault's Kubernetes role 'debug' does not allow namespace 'checkout'."
    )
    assert "allowed_kubernetes_namespaces" in (caught.value.hint or "")
    with pytest.raises(BackendUnavailable) as caught:
        await vault.issue_kube_credential("elsewhere", "debug", "payments", MIN)
    assert one_sentence(caught.value) == (
        "Vault's policy for the bastion does not allow elsewhere/creds/debug, so the bastion "
        "could not get a Kubernetes credential for namespace 'payments'."
    )
    assert '"elsewhere/creds/debug"' in (caught.value.hint or "")
    assert vault_accounts(info, "checkout") == []


async def test_wrong_ca_and_unreachable_vault_are_clear(
    info: dict[str, Any], tmp_path: Path
) -> None:
    vault = VaultClient(vault_config(info, ca_file=info["kube_ca"]))
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await vault.start()
        assert "failed the TLS check against the CA in" in one_sentence(caught.value)
        assert not await vault.healthy()
    finally:
        await vault.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vault = VaultClient(vault_config(info, address=f"https://127.0.0.1:{port}"))
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await vault.start()
        assert one_sentence(caught.value) == (
            f"Vault at https://127.0.0.1:{port} cannot be reached, so the bastion could not "
            "log in to Vault with AppRole."
        )
    finally:
        await vault.close()


# ---------------------------------------------------------------------- the bastion's token
async def test_new_login_when_the_token_is_revoked_behind_our_back(
    spare: ThreadedStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bastion.vault")
    info = spare.stack.info
    async with VaultClient(vault_config(info)) as vault:
        admin = root(info)
        accessors = admin.list("auth/token/accessors")["data"]["keys"]
        revoked = 0
        for accessor in accessors:
            data = admin.auth.token.lookup_accessor(accessor)["data"]
            if APPROLE in data["policies"]:
                admin.auth.token.revoke_accessor(accessor)
                revoked += 1
        assert revoked == 1
        credential = await vault.issue_kube_credential(
            info["vault_kubernetes_mount"], "debug", "payments", MIN
        )
        assert "Vault no longer accepted the token" in caplog.text
        assert pods(info, credential.token.reveal(), "payments") == ["api-1"]
        await vault.revoke_lease(credential.lease_id)
        assert await vault.healthy()


async def test_own_token_is_renewed_then_replaced_near_its_max_ttl(
    spare: ThreadedStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bastion.vault")
    info = spare.stack.info
    admin = root(info)
    admin.auth.approle.create_or_update_approle(
        role_name="short", token_policies=[APPROLE], token_ttl="2s", token_max_ttl="4s"
    )
    role_id = admin.auth.approle.read_role_id(role_name="short")["data"]["role_id"]
    secret = admin.auth.approle.generate_secret_id(role_name="short")["data"]["secret_id"]
    secret_file = write_secret(tmp_path / "short-secret-id", secret + "\n")
    config = vault_config(info, approle={"role_id": role_id, "secret_id_file": secret_file})
    async with VaultClient(config) as vault:
        first_login = time.monotonic()
        await wait_for(lambda: "the token reached its maximum TTL" in caplog.text, 6, "a new login")
        assert "renewed the bastion's Vault token; valid for 2 s" in caplog.text
        # The first token is dead by now (max TTL 4 s); the client holds a newer one.
        await asyncio.sleep(max(0.0, first_login + 4.2 - time.monotonic()))
        credential = await vault.issue_kube_credential(
            info["vault_kubernetes_mount"], "debug", "payments", MIN
        )
        await vault.revoke_lease(credential.lease_id)
    assert "Vault no longer accepted the token" not in caplog.text


# ---------------------------------------------------------------------- Vault down
async def test_sealed_vault_is_one_clear_sentence(spare: ThreadedStack) -> None:
    info = spare.stack.info
    async with VaultClient(vault_config(info)) as vault:
        root(info).sys.seal()
        with pytest.raises(BackendUnavailable) as caught:
            await vault.issue_kube_credential(
                info["vault_kubernetes_mount"], "debug", "payments", MIN
            )
        assert one_sentence(caught.value) == (
            f"Vault at {info['vault_addr']} is sealed, so the bastion could not get a "
            "Kubernetes credential for namespace 'payments'."
        )
        assert "unseal" in (caught.value.hint or "")
        assert not await vault.healthy()


async def test_revoke_is_retried_until_vault_answers_again(
    spare: ThreadedStack, caplog: pytest.LogCaptureFixture
) -> None:
    info = spare.stack.info
    config = vault_config(info, timeout=timedelta(milliseconds=500))
    async with VaultClient(config) as vault:
        credential = await vault.issue_kube_credential(
            info["vault_kubernetes_mount"], "debug", "payments", MIN
        )
        token = credential.token.reveal()
        with Frozen(spare) as frozen:
            timer = frozen.thaw_after(1.0)
            started = time.monotonic()
            await vault.revoke_lease(credential.lease_id, attempts=5, first_delay=0.2)
            took = time.monotonic() - started
            timer.join()
        assert 1.0 < took < 5
        assert "revoking a credential failed (attempt 1 of 5)" in caplog.text
        assert pods(info, token, "payments") == 401
        assert not service_account_exists(info, "payments", credential.service_account)


async def test_revoke_gives_up_with_one_clear_sentence_when_vault_stays_down(
    spare: ThreadedStack,
) -> None:
    info = spare.stack.info
    async with VaultClient(vault_config(info, timeout=timedelta(milliseconds=300))) as vault:
        credential = await vault.issue_kube_credential(
            info["vault_kubernetes_mount"], "debug", "payments", MIN
        )
        with Frozen(spare), pytest.raises(BackendUnavailable) as caught:
            await vault.revoke_lease(credential.lease_id, attempts=3, first_delay=0.1)
        message = one_sentence(caught.value)
        assert message.startswith(
            f"Vault at {info['vault_addr']} did not answer within 0.3 s, so the bastion could "
            "not revoke a session's credential (gave up after 3 attempts in "
        )
        assert "reaper" in (caught.value.hint or "")
        await vault.revoke_lease(credential.lease_id)  # back: now it works
        assert not service_account_exists(info, "payments", credential.service_account)


async def test_a_credential_vault_issues_after_we_gave_up_is_revoked(
    spare: ThreadedStack, caplog: pytest.LogCaptureFixture
) -> None:
    info = spare.stack.info
    mount = info["vault_kubernetes_mount"]
    async with VaultClient(vault_config(info, timeout=timedelta(milliseconds=500))) as vault:
        # One credential first, so the request below goes out on an open connection and
        # reaches Vault before it freezes (a slow Vault, not a dead one).
        warm = await vault.issue_kube_credential(mount, "debug", "payments", MIN)
        await vault.revoke_lease(warm.lease_id)
        with Frozen(spare) as frozen:
            timer = frozen.thaw_after(0.7)  # after the caller's deadline, in the late window
            with pytest.raises(BackendUnavailable) as caught:
                await vault.issue_kube_credential(
                    info["vault_kubernetes_mount"], "debug", "payments", MIN
                )
            assert "did not answer within 0.5 s" in one_sentence(caught.value)
            timer.join()
        await wait_for(
            lambda: "after the bastion stopped waiting for it; revoking it" in caplog.text,
            3,
            "the late answer",
        )
        await wait_for(lambda: vault_accounts(info, "payments") == [], 3, "the revocation")


async def test_kubernetes_down_behind_vault_is_one_clear_sentence(spare: ThreadedStack) -> None:
    info = spare.stack.info
    async with VaultClient(vault_config(info)) as vault:
        spare.background.call(spare.stack.kubesim.stop())
        with pytest.raises(BackendUnavailable) as caught:
            await vault.issue_kube_credential(
                info["vault_kubernetes_mount"], "debug", "payments", MIN
            )
        assert one_sentence(caught.value) == (
            f"Vault at {info['vault_addr']} failed (HTTP 500) when asked to get a Kubernetes "
            "credential for namespace 'payments'."
        )
        assert "kubernetes_host" in (caught.value.hint or "")
        assert await vault.healthy()  # Vault itself is fine


def test_the_stacks_bastion_token_is_periodic(info: dict[str, Any]) -> None:
    # A session credential's lease dies with the token that asked for it: the bastion's
    # token must be renewable for as long as the bastion runs, never capped by a max TTL.
    bao = hvac.Client(url=info["vault_addr"], verify=info["vault_ca"])
    secret_id = Path(info["approle_secret_id_file"]).read_text().strip()
    bao.auth.approle.login(role_id=info["approle_role_id"], secret_id=secret_id)
    me = bao.auth.token.lookup_self()["data"]
    assert me["period"] == 3600
    assert me["explicit_max_ttl"] == 0
    assert me["renewable"]
    bao.auth.token.revoke_self()
