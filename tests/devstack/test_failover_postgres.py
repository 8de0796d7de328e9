"""Issue 12's failover, end to end: two `bastion serve` replicas (own ports, state
directories and audit logs) on one real PostgreSQL, with OpenBao and kubesim. An operator
attaches a debug shell on replica a through Debian's OpenSSH client; replica a is killed with
SIGKILL, supervisor, workers and all; replica b, now the reaper leader, reaps the session
within 30 s: the service account's tokens get 401, the debug container is Terminated, the
journal says closed. The temp directory, on a's disk, waits for a: restarted, it removes it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest
import yaml
from front_door.harness import BastionEnv, ServedBastion
from front_door.test_real_clients import _children, spawn_ssh
from front_door.test_replicas_postgres import replica_config
from kubernetes import client

from bastion.devstack.background import kube_client
from bastion.state.database import PostgresLocation, connect_postgres
from bastion.state.journal import Journal
from devstack.test_debug_shell import debug_status, read_pod, stack, stack_env
from devstack.test_vault import pods, service_account_exists

__all__ = ["stack"]  # the module's OpenBao and kubesim, shared by its tests

pytestmark = pytest.mark.slow

REAPED_WITHIN = 30.0  # issue 12: another replica reaps a dead one's sessions within 30 s


def replica(env: BastionEnv, name: str, location: PostgresLocation) -> BastionEnv:
    """Replica ``name``'s view of ``env``: its own config (``state.replica_id: name``),
    state directory and audit log, the shared PostgreSQL state."""
    path = replica_config(env, name, location)
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    data["state"]["replica_id"] = name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return BastionEnv(env.root / name, path, env.operators, env._unused)


def descendants(pid: int) -> set[int]:
    found = set()
    for child in _children(pid):
        found |= {child} | descendants(child)
    return found


def kill_whole_tree(bastion: ServedBastion) -> None:
    """SIGKILL the replica's process group (supervisor, workers, recorder) and anything of
    its tree that left the group (the console template runs in a session of its own)."""
    assert bastion.proc is not None
    tree = descendants(bastion.proc.pid)
    os.killpg(bastion.proc.pid, signal.SIGKILL)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    bastion.proc.wait()
    if bastion.proc.stdout is not None:
        bastion.proc.stdout.close()
    bastion.proc = None


def token_of(info: dict[str, Any], namespace: str, account: str) -> str:
    """A token of the session's service account, as good as the session's own (which lived
    only in the killed worker's memory): kubesim accepts either while the account exists."""
    with kube_client(info["kube_api"], info["kube_ca"], info["kube_admin_token"]) as api:
        answer = client.CoreV1Api(api).create_namespaced_service_account_token(
            account, namespace, {"spec": {"expirationSeconds": 600}}
        )
    return str(answer.status.token)


def attach_over_openssh(a: BastionEnv, port: int) -> tuple[pexpect.spawn, dict[str, Any]]:
    op = a.fresh()
    ssh = spawn_ssh(port, op, "-t", command="debug payments/api-1")
    ssh.expect("Verification code: ")
    ssh.sendline(op.code())
    ssh.sendline("echo READY-$((6*7))")
    ssh.expect("READY-42", timeout=60)
    return ssh, a.wait_for_event("session.state", outcome="attached")


def check_reaped_by_b(b: BastionEnv, reaped: dict[str, Any], session: str) -> None:
    """b's audit log: who reaped, for whom, what it cleaned and what it left to a."""
    assert (reaped["reaped_by"], reaped["on_behalf_of"]) == ("b", "a")
    assert [r["kind"] for r in reaped["left_to_owner"]] == ["temp_dir"]
    cleaned = {e["kind"]: e for e in b.audit_events("reaper.cleaned") if e["session"] == session}
    assert set(cleaned) == {"debug_container", "lease"}
    assert {e["on_behalf_of"] for e in cleaned.values()} == {"a"}
    assert cleaned["debug_container"]["result"].startswith("terminated (exit")
    assert cleaned["lease"]["result"] == "revoked"
    [deferred] = [e for e in b.audit_events("reaper.deferred") if e["session"] == session]
    assert deferred["kind"] == "temp_dir"
    assert "replica a" in deferred["reason"]


def check_journal(location: PostgresLocation, session: str) -> None:
    """The shared journal: closed, a's, its temp directory pending and deferred to a."""
    journal = Journal(connect_postgres(location), replica="observer")
    try:
        record = journal.session(session)
        assert record is not None
        assert (record.state, record.replica) == ("closed", "a")
        [left] = journal.pending(session)
        assert left.kind == "temp_dir"
        assert left.deferred is not None
        assert "replica a" in left.deferred
    finally:
        journal.close()


def test_kill_9_of_the_replica_holding_a_shell_the_other_reaps_it_within_30_s(
    tmp_path: Path, stack: dict[str, Any], postgres_location: PostgresLocation
) -> None:
    env = stack_env(tmp_path, stack)
    a, b = (replica(env, name, postgres_location) for name in ("a", "b"))
    served_a = ServedBastion(a, workers=2, own_group=True).start()
    served_b = ServedBastion(b, workers=1).start()
    try:
        ssh, attached = attach_over_openssh(a, served_a.port)
        session = str(attached["session"])
        issued = a.wait_for_event("session.credential_issued", session=session)
        account = str(issued["service_account"])
        token = token_of(stack, "payments", account)
        assert pods(stack, token, "payments") != 401
        container = str(attached["container"])
        running = read_pod(stack, "payments", "api-1")
        assert running is not None
        assert "running" in debug_status(running, container)["state"]

        kill_whole_tree(served_a)
        killed = time.monotonic()
        ssh.expect(pexpect.EOF)
        ssh.close()
        temp = a.state_dir / "sessions" / session
        assert temp.is_dir()  # nobody on a wiped anything

        reaped = b.wait_for_event(
            "session.reaped",
            timeout=REAPED_WITHIN - (time.monotonic() - killed),
            session=session,
        )
        check_reaped_by_b(b, reaped, session)
        assert pods(stack, token, "payments") == 401
        assert not service_account_exists(stack, "payments", account)
        pod = read_pod(stack, "payments", "api-1")
        assert pod is not None
        assert "terminated" in debug_status(pod, container)["state"]
        check_journal(postgres_location, session)
        assert temp.is_dir()  # b could not reach it

        # a comes back: its own reaper removes what only it could.
        restarted = ServedBastion(a, workers=1).start()
        try:
            removed = a.wait_for_event("reaper.cleaned", session=session, kind="temp_dir")
            assert removed["result"] == "removed"
            assert not temp.exists()
        finally:
            assert restarted.stop() == 0
    finally:
        if served_a.proc is not None:
            kill_whole_tree(served_a)
        assert served_b.stop() == 0


def test_a_second_replica_under_a_running_replicas_id_is_refused(
    tmp_path: Path, stack: dict[str, Any], postgres_location: PostgresLocation
) -> None:
    """Same id, another boot: made here by a row that another boot beat into just now."""
    env = stack_env(tmp_path, stack)
    a = replica(env, "a", postgres_location)
    journal = Journal(connect_postgres(postgres_location), replica="a")
    try:
        journal._db.execute(
            "INSERT INTO replicas (id, boot, started_at, heartbeat_at) VALUES (?, ?, ?, ?)",
            ("a", "another-host-boot", time.time(), time.time() + 60),
        )
    finally:
        journal.close()
    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "bastion.cli.main",
            "serve",
            "--config",
            str(a.config_path),
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode != 0
    assert "replica id 'a' is in use by another running bastion" in started.stderr
