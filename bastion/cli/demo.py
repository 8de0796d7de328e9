"""``bastion demo`` and ``bastion devstack up``: the product on the embedded local stack.

This module is the only part of the product that may import :mod:`bastion.devstack`.

Until the SSH front door and the console land, the demo says so plainly and shows what does
run: the example configuration, the policy engine deciding real requests, an audit log
written and verified, and the local stack (kubesim and a real OpenBao) issuing a
namespace-scoped Kubernetes credential and revoking it, which kills the token.
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import hvac
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bastion.audit.chain import verify
from bastion.audit.log import AuditLog, head_path, load_or_create_hmac_key, read_head
from bastion.config import Config, load_config, summary
from bastion.devstack.background import kube_client
from bastion.devstack.stack import LocalStack
from bastion.policy import DebugRequest, DebugTarget, Mode, decide

NOT_YET = (
    "the SSH front door with key + TOTP (issue 4)",
    "Vault credentials, deadlines and the wipe (issue 5)",
    "debug containers and the attach path (issue 6)",
    "the console (issue 7)",
)


def run(state_dir: Path | None) -> int:
    state = (state_dir or Path(".state/demo")).absolute()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    with resources.as_file(resources.files("bastion") / "examples" / "bastion.yaml") as path:
        config = load_config(path, check_files=False)
        print(f"config  {summary(path, config)}")
    _show_decisions(config)
    log_path = state / "audit.jsonl"
    count = asyncio.run(_write_audit(config, state, log_path))
    with log_path.open("rb") as log:
        verdict = verify(log, read_head(head_path(log_path)))
    print(f"audit   {count} events appended to {log_path}; verify: {verdict.message}")
    asyncio.run(_show_credential(state / "stack"))
    print("\nnot built yet, so there is no SSH login to try:")
    for item in NOT_YET:
        print(f"  - {item}")
    return 0 if verdict.ok else 1


async def _show_credential(state: Path) -> None:
    """The local stack's Vault issues a credential for one namespace, then revokes it."""
    stack = LocalStack(state)
    started = time.perf_counter()
    info = await stack.start()
    try:
        print(
            f"stack   kubesim {info['kube_api']} ({stack.kubesim.pod_count} pods) and OpenBao "
            f"{info['vault_addr']} up in {time.perf_counter() - started:.1f} s"
        )
        for line in await asyncio.to_thread(_credential_round_trip, info):
            print(f"vault   {line}")
    finally:
        await stack.stop()


def _credential_round_trip(info: dict[str, Any]) -> list[str]:
    vault = hvac.Client(url=info["vault_addr"], verify=info["vault_ca"])
    secret_id = Path(info["approle_secret_id_file"]).read_text().strip()
    vault.auth.approle.login(role_id=info["approle_role_id"], secret_id=secret_id)
    creds = vault.write_data(
        f"{info['vault_kubernetes_mount']}/creds/{info['vault_roles'][0]}",
        data={"kubernetes_namespace": "payments", "ttl": "10m"},
    )
    token = creds["data"]["service_account_token"]
    lines = [
        f"AppRole login; credential for namespace payments: service account "
        f"{creds['data']['service_account_name']}"
    ]
    with kube_client(info["kube_api"], info["kube_ca"], token) as api:
        pods = client.CoreV1Api(api).list_namespaced_pod("payments").items
        lines.append(f"the token lists {len(pods)} pods in payments")
        try:
            client.CoreV1Api(api).list_namespaced_pod("checkout")
        except ApiException as exc:
            lines.append(f"and is refused elsewhere: {exc.status} {exc.reason}")
        vault.sys.revoke_lease(creds["lease_id"])
        try:
            client.CoreV1Api(api).list_namespaced_pod("payments")
            lines.append("after revocation the token STILL WORKS (this is a bug)")
        except ApiException as exc:
            lines.append(f"lease revoked: the service account is gone, the token gets {exc.status}")
    return lines


def _requests(config: Config) -> list[tuple[str, DebugTarget, DebugRequest]]:
    image = config.grants[0].images[0]
    return [
        (
            "alice",
            DebugTarget("prod-eu", "payments", "api-7f9c", {"app": "api"}, "api"),
            DebugRequest(Mode.EPHEMERAL, image, reason="INC-4711 checkout latency spike"),
        ),
        (
            "alice",
            DebugTarget("prod-eu", "payments", "api-7f9c", {"app": "api"}, "api"),
            DebugRequest(Mode.EPHEMERAL, image),
        ),
        (
            "alice",
            DebugTarget("prod-eu", "kube-system", "coredns-0"),
            DebugRequest(Mode.COPY, image),
        ),
        ("bob", DebugTarget("staging", "web", "web-1"), DebugRequest(Mode.POD, image)),
    ]


def _show_decisions(config: Config) -> None:
    policy = config.policy()
    now = datetime.now(UTC)
    for user, target, request in _requests(config):
        principal = config.principal(user)
        if principal is None:
            continue
        decision = decide(policy, principal, target, request, now)
        verdict = "allow" if decision.allowed else "deny "
        where = f"{target.cluster}/{target.namespace}/{target.pod} ({request.mode})"
        print(f"policy  {verdict} {user} → {where}: {decision.reason}")


async def _write_audit(config: Config, state: Path, log_path: Path) -> int:
    key = load_or_create_hmac_key(state / "audit-hmac.key")
    async with AuditLog(log_path, hmac_key=key) as log:
        events = [
            log.record("demo.started", actor="demo", outcome="ok", users=len(config.users)),
            log.record("policy.checked", actor="alice", outcome="allowed", cluster="prod-eu"),
            log.record("policy.checked", actor="alice", outcome="denied", cluster="prod-eu"),
        ]
        return len(await asyncio.gather(*events))


def devstack_up(state_dir: Path, fixture: Path | None) -> int:
    """Start kubesim and OpenBao, write ``devstack.json``, serve until Ctrl-C or SIGTERM."""
    return asyncio.run(_serve_stack(state_dir.absolute(), fixture))


async def _serve_stack(state_dir: Path, fixture: Path | None) -> int:
    stack = LocalStack(state_dir, fixture)
    started = time.perf_counter()
    info = await stack.start()
    took = time.perf_counter() - started
    print(f"kubesim  {info['kube_api']}  ({stack.kubesim.pod_count} pods, CA {info['kube_ca']})")
    print(f"openbao  {info['vault_addr']}  (CA {info['vault_ca']})")
    print(f"ready in {took:.1f} s; connection details in {state_dir / 'devstack.json'}")
    print("Ctrl-C stops both and removes their files.", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await stack.stop()
        (state_dir / "devstack.json").unlink(missing_ok=True)
    print("stopped")
    return 0
