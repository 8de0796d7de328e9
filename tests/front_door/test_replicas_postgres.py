"""Two bastion replicas on one PostgreSQL state database: each its own host state (state_dir,
audit log, port), the logins' shared rules held across both, through real SSH logins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.config import load_config
from bastion.ssh.front_door import PROMPT
from bastion.ssh.worker import Worker
from bastion.state.database import PostgresLocation
from front_door.harness import BastionEnv, make_env
from front_door.test_login_asyncssh import login

Replica = tuple[BastionEnv, int]


def replica_config(env: BastionEnv, name: str, location: PostgresLocation) -> Path:
    """``env``'s configuration for replica ``name``: a state_dir and audit log of its own,
    the state on PostgreSQL."""
    data: dict[str, Any] = yaml.safe_load(env.config_path.read_text())
    data["paths"] = {
        "state_dir": f"{name}/state",
        "audit_log": f"{name}/state/audit.jsonl",
        "recordings_dir": f"{name}/state/recordings",
    }
    data["listener"]["host_key"] = f"{name}/state/host_ed25519"
    data["state"] = {"url": location.url, "password_file": str(location.password_file)}
    path = env.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
async def replicas(
    tmp_path: Path, postgres_location: PostgresLocation
) -> AsyncIterator[tuple[Replica, Replica]]:
    env = make_env(tmp_path, operators=4)
    workers, served = [], []
    try:
        for name in ("a", "b"):
            worker = Worker(load_config(replica_config(env, name, postgres_location)))
            workers.append(worker)
            port = await worker.start()
            view = BastionEnv(tmp_path / name, env.config_path, env.operators, env._unused)
            served.append((view, port))
        yield served[0], served[1]
    finally:
        for worker in workers:
            await worker.stop()


async def test_one_code_on_both_replicas_at_once_logs_in_exactly_once(
    replicas: tuple[Replica, Replica],
) -> None:
    (a, port_a), (b, port_b) = replicas
    op = a.fresh()
    code = op.code()
    results = await asyncio.gather(
        login(port_a, op.name, op.key, [code]), login(port_b, op.name, op.key, [code])
    )
    winners = [conn for conn, _ in results if conn is not None]
    assert len(winners) == 1
    for conn in winners:
        conn.close()
        await conn.wait_closed()
    loser = a if results[1][0] is not None else b
    replayed = await loser.event("login.failed", user=op.name, mfa="replayed")
    assert replayed["key"] == op.fingerprint
    # Each replica audits into its own log: the winner's success is not in the loser's.
    assert not [e for e in loser.audit_events("login.succeeded") if e.get("user") == op.name]


async def test_a_lockout_on_one_replica_holds_on_the_other(
    replicas: tuple[Replica, Replica],
) -> None:
    (a, port_a), (b, port_b) = replicas
    op = a.fresh()
    wrong = op.wrong_codes(5)
    await login(port_a, op.name, op.key, wrong[:3])
    conn, _ = await login(port_a, op.name, op.key, wrong[3:])
    assert conn is None
    # Locked on b too, before it asks for anything, with the right code at hand.
    conn, client = await login(port_b, op.name, op.key, [op.code()])
    assert conn is None
    assert client.prompts == []
    assert client.shown[0].startswith("too many failed logins: try again in ")
    assert await b.event("login.failed", user=op.name, mfa="locked")
    assert PROMPT not in client.prompts
