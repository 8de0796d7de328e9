"""``bastion demo``: the product's main job on the embedded local stack.

The local stack (kubesim and OpenBao, ``bastion.devstack``) and the SSH front door are
built by the issues that follow the foundation. Until they land, the demo says so plainly
and shows what does run: the example configuration, the policy engine deciding real
requests, and an audit log written and verified.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from bastion.audit.chain import verify
from bastion.audit.log import AuditLog, head_path, load_or_create_hmac_key, read_head
from bastion.config import Config, load_config, summary
from bastion.policy import DebugRequest, DebugTarget, Mode, decide

NOT_YET = (
    "kubesim and OpenBao as the local stack (issue 3)",
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
    print("\nnot built yet, so there is no SSH login to try:")
    for item in NOT_YET:
        print(f"  - {item}")
    return 0 if verdict.ok else 1


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
