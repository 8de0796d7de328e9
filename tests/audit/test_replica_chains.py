"""One audit chain per replica (issue 12): ``state.replica_id`` names the chain (every line
carries it, the log file's name too when it is set), a writer never continues another
replica's chain, and ``bastion audit verify`` / ``search`` take several chains at once:
a verdict per chain, two files claiming one replica refused, a merged summary; the
end-to-end test runs two real replicas on PostgreSQL through real SSH logins."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import WriteConfig
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from front_door.harness import BastionEnv, make_env
from front_door.test_login_asyncssh import fresh_login
from front_door.test_replicas_postgres import replica_config as postgres_replica_config
from pydantic import ValidationError

from bastion.audit.chain import GENESIS, Head, canonical, render, verify
from bastion.audit.checkpoint import CheckpointPolicy
from bastion.audit.log import AUDIT_SIGNING_KEY, AuditLog, Checkpointer, read_head
from bastion.audit.ship import rfc5424
from bastion.cli.audit import Query, search
from bastion.config import load_config
from bastion.config.state import REPLICA_ID, State, default_replica_id
from bastion.errors import AuditUnavailable
from bastion.recording.key_files import load_or_create_signing_key, signing_public_key_path
from bastion.ssh.worker import Worker
from bastion.state.database import PostgresLocation

KEY = b"k" * 32
START = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def replica_log(
    path: Path, key: Ed25519PrivateKey, replica: str | None, clock: Clock | None = None
) -> AuditLog:
    return AuditLog(
        path,
        hmac_key=KEY,
        fsync="event",
        clock=clock or Clock(),
        checkpoints=Checkpointer(key, CheckpointPolicy(5, 3600)),
        replica=replica,
        genesis=True,
    )


async def write_chain(log: AuditLog, count: int, actor: str = "alice") -> None:
    async with log:
        for n in range(count):
            await log.record("session.state", actor=actor, outcome="ok", session="s1", n=n)


def signer(state_dir: Path) -> tuple[Ed25519PrivateKey, Path]:
    key = load_or_create_signing_key(state_dir, AUDIT_SIGNING_KEY)
    return key, signing_public_key_path(state_dir, AUDIT_SIGNING_KEY)


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "audit", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
async def two_chains(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """Replica a's and b's chains in one directory (their events interleaved in time),
    each signed by the replica's own key: (log a, log b, pubkey a, pubkey b)."""
    logs = tmp_path / "logs"
    key_a, pub_a = signer(tmp_path / "a")
    key_b, pub_b = signer(tmp_path / "b")
    await write_chain(replica_log(logs / "audit.a.jsonl", key_a, "a", Clock()), 7)
    later = Clock(START + timedelta(milliseconds=500))
    await write_chain(replica_log(logs / "audit.b.jsonl", key_b, "b", later), 4, actor="bob")
    return logs / "audit.a.jsonl", logs / "audit.b.jsonl", pub_a, pub_b


# ------------------------------------------------------------------ the replica id
def test_a_replica_id_is_short_lower_case_and_named_in_the_error() -> None:
    assert State(replica_id="bastion-a").replica_id == "bastion-a"
    for bad in ("Bastion-A", "-a", "a_b", "a" * 64, "", "a.b"):
        with pytest.raises(ValidationError, match="is not a replica id: expected 1 to 63"):
            State(replica_id=bad)
    # Unset: the host name, made to fit; and not "named" (paths stay as configured).
    assert REPLICA_ID.fullmatch(State().replica_id)
    assert State().replica_id == default_replica_id()
    assert not State().replica_named
    assert State(replica_id="bastion-a").replica_named


def test_a_replica_id_set_in_the_config_names_the_log_file(write_config: WriteConfig) -> None:
    plain = load_config(write_config(), check_files=False)
    assert plain.paths.audit_log.name == "audit.jsonl"  # single node: unchanged

    def named(data: dict[str, Any]) -> None:
        data["state"] = {"replica_id": "bastion-b"}

    config = load_config(write_config(named), check_files=False)
    assert config.paths.audit_log == plain.paths.audit_log.with_name("audit.bastion-b.jsonl")
    assert config.state.replica_id == "bastion-b"

    def already(data: dict[str, Any]) -> None:
        data["state"] = {"replica_id": "bastion-b"}
        data["paths"]["audit_log"] = "state/bastion-b-audit.jsonl"

    config = load_config(write_config(already), check_files=False)
    assert config.paths.audit_log.name == "bastion-b-audit.jsonl"


async def test_every_line_of_a_replica_chain_names_it(tmp_path: Path) -> None:
    key, _ = signer(tmp_path)
    log = replica_log(tmp_path / "audit.jsonl", key, "bastion-a")
    await write_chain(log, 6)
    events = events_of(tmp_path / "audit.jsonl")
    # The genesis: whose chain it is, and an id no other chain has.
    assert events[0]["event"] == "audit.chain_started"
    assert (events[0]["replica"], len(events[0]["chain"])) == ("bastion-a", 32)
    assert {e["event"] for e in events[1:]} == {"session.state", "audit.checkpoint"}
    assert all(e["replica"] == "bastion-a" for e in events)
    # The replica is the first of a line's own fields, under the hash like the rest.
    assert (
        next(
            iter(
                k
                for k in events[0]
                if k not in ("seq", "time", "event", "session", "actor", "outcome")
            )
        )
        == "replica"
    )
    with pytest.raises(ValueError, match="may not be named replica"):
        log.record_now("x", actor="a", outcome="ok", replica="other")


async def test_a_writer_does_not_continue_another_replicas_chain(tmp_path: Path) -> None:
    key, _ = signer(tmp_path)
    path = tmp_path / "audit.jsonl"
    await write_chain(replica_log(path, key, "a"), 2)
    size = path.stat().st_size
    other = replica_log(path, key, "b")
    other.open()
    try:
        with pytest.raises(AuditUnavailable, match="chain of replica 'a', and this is replica"):
            other.record_now("login.succeeded", actor="bob", outcome="allowed")
    finally:
        other.close()
    assert path.stat().st_size == size  # nothing written


async def test_a_log_from_before_replica_ids_is_continued_and_still_verifies(
    tmp_path: Path,
) -> None:
    key, _ = signer(tmp_path)
    path = tmp_path / "audit.jsonl"
    await write_chain(replica_log(path, key, None), 3)
    await write_chain(replica_log(path, key, "a"), 3)
    events = events_of(path)
    assert "replica" not in events[0]
    assert events[-1]["replica"] == "a"
    verdict = verify(
        path.read_bytes().splitlines(keepends=True),
        read_head(path.with_name("audit.jsonl.head")),
        public_key=key.public_key(),
    )
    assert verdict.ok, verdict.message
    assert verdict.chain is not None
    assert verdict.chain.replica == "a"


def test_a_line_of_another_chain_put_in_breaks_the_chain() -> None:
    # Re-hashed consistently (no key needed for the chain): the replica names give it away.
    prev, lines = GENESIS, []
    for seq, replica in enumerate(("a", "a", "b", "a"), start=1):
        event: dict[str, Any] = {
            "seq": seq,
            "time": "2026-11-28T12:00:00.000000Z",
            "event": "x",
            "session": None,
            "actor": "bastion",
            "outcome": "ok",
            "replica": replica,
            "prev": prev,
        }
        event["hash"] = hashlib.sha256(canonical(event)).hexdigest()
        prev = event["hash"]
        lines.append(render(event) + b"\n")
    verdict = verify(lines, Head(4, prev))
    assert (verdict.ok, verdict.kind, verdict.bad_line) == (False, "broken", 3)
    assert "names replica 'b' in the chain of replica 'a'" in verdict.message


def test_syslog_names_the_replica_as_the_hostname() -> None:
    line = b'{"seq":1,"time":"2026-11-28T12:00:00.000000Z","event":"x","replica":"bastion-b"}\n'
    message = rfc5424(line, hostname="host-1")
    assert message.split(b" ")[2:4] == [b"bastion-b", b"bastion"]
    assert rfc5424(b'{"seq":1}\n', hostname="host-1").split(b" ")[2] == b"host-1"


# ------------------------------------------------------------------ several chains
async def test_two_chains_verify_each_and_merge(two_chains: tuple[Path, Path, Path, Path]) -> None:
    log_a, log_b, pub_a, pub_b = two_chains
    for given in ((log_a, log_b), (log_a.parent,)):
        result = cli("verify", *given, "--pubkey", pub_a, "--pubkey", pub_b)
        assert result.returncode == 0, result.stderr
        out = result.stdout.splitlines()
        assert out[0].startswith(f"{log_a} (replica a): ok: 11 events, 3 checkpoints verified")
        assert out[1].startswith(f"{log_b} (replica b): ok: 7 events, 2 checkpoints verified")
        assert out[2] == (
            "merged: 2 chains, 18 events, 2026-11-28T12:00:02.000000Z to "
            "2026-11-28T12:00:09.000000Z"
        )
        # Time-ordered: a started first.
        assert out[3].split()[3:5] == ["a", "11"]
        assert out[4].split()[3:5] == ["b", "7"]


async def test_a_tampered_chain_fails_and_is_named(
    two_chains: tuple[Path, Path, Path, Path],
) -> None:
    log_a, log_b, pub_a, pub_b = two_chains
    lines = log_b.read_bytes().splitlines(keepends=True)
    edited = next(i for i, line in enumerate(lines) if b'"actor":"bob"' in line)
    lines[edited] = lines[edited].replace(b'"actor":"bob"', b'"actor":"eve"')
    log_b.write_bytes(b"".join(lines))
    result = cli("verify", log_a, log_b, "--pubkey", pub_a, "--pubkey", pub_b)
    assert result.returncode == 1
    assert result.stdout.startswith(f"{log_a} (replica a): ok: 11 events")
    assert "merged" not in result.stdout
    assert result.stderr == (
        f"BROKEN: {log_b} (replica b): line {edited + 1}: hash does not match the content "
        "(the line was edited)\n"
    )


async def test_a_chain_signed_by_another_key_is_forged(
    two_chains: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    log_a, log_b, pub_a, _ = two_chains
    result = cli("verify", log_a, log_b, "--pubkey", pub_a)
    assert result.returncode == 3
    assert result.stderr.startswith(f"FORGED: {log_b} (replica b): line ")
    assert "merged" not in result.stdout


async def test_two_files_claiming_one_replica_are_refused(
    two_chains: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    log_a, _, pub_a, pub_b = two_chains
    # A copy of a's chain given with it: one genesis.
    copy = tmp_path / "copy.jsonl"
    shutil.copy(log_a, copy)
    shutil.copy(log_a.with_name(log_a.name + ".head"), copy.with_name("copy.jsonl.head"))
    result = cli("verify", log_a, copy, "--pubkey", pub_a)
    assert result.returncode == 8
    assert result.stderr == (
        f"DUPLICATE: {log_a} and {copy} both claim replica 'a', the same chain (one genesis) "
        "twice: a copy; give one of them\n"
    )
    # Another chain claiming replica a (another genesis): swapped in for b, or duplicated.
    key_b = load_or_create_signing_key(tmp_path / "b", AUDIT_SIGNING_KEY)
    impostor = tmp_path / "impostor.jsonl"
    await write_chain(replica_log(impostor, key_b, "a"), 3)
    result = cli("verify", log_a, impostor, "--pubkey", pub_a, "--pubkey", pub_b)
    assert result.returncode == 8
    assert f"DUPLICATE: {log_a} and {impostor} both claim replica 'a', different chains" in (
        result.stderr
    )
    assert "merged" not in result.stdout


async def test_shipped_checkpoints_of_a_chain_not_given_show_it_missing(
    two_chains: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    log_a, log_b, pub_a, pub_b = two_chains
    received = tmp_path / "received.log"
    received.write_text(
        "".join(
            json.dumps(e) + "\n"
            for path in (log_a, log_b)
            for e in events_of(path)
            if e["event"] == "audit.checkpoint"
        )
    )
    both = cli(
        "verify", log_a, log_b, "--pubkey", pub_a, "--pubkey", pub_b, "--checkpoints", received
    )
    assert both.returncode == 0, both.stderr
    assert "3 shipped checkpoints match" in both.stdout.splitlines()[0]
    assert "2 shipped checkpoints match" in both.stdout.splitlines()[1]
    # One log alone is checked against its own replica's checkpoints in the SIEM's file.
    alone = cli("verify", log_a, "--pubkey", pub_a, "--checkpoints", received)
    assert alone.returncode == 0, alone.stderr
    assert "3 shipped checkpoints match" in alone.stdout
    log_b.rename(tmp_path / "b-elsewhere.jsonl")
    result = cli(
        "verify", log_a.parent, "--pubkey", pub_a, "--pubkey", pub_b, "--checkpoints", received
    )
    assert result.returncode == 4
    assert "TRUNCATED: 2 shipped checkpoints are of replica 'b', whose chain was not given" in (
        result.stderr
    )


async def test_search_reads_several_chains_in_time_order(
    two_chains: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    log_a, _, _, _ = two_chains
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        search(
            tmp_path / "unused.yaml",
            query=Query(event="session.state"),
            log=[log_a.parent],
            out=sink,
        )
    lines = out.read_text().splitlines()
    assert len(lines) == 7 + 4
    actors = [line.split()[5] for line in lines]
    # b's events (bob) start half a second after a's: they interleave by time.
    assert actors[:4] == ["alice", "bob", "alice", "bob"]
    assert all("replica=" in line for line in lines)


# ------------------------------------------------------------------ two real replicas
def replica_config(env: BastionEnv, name: str, location: PostgresLocation) -> Path:
    """Replica ``name`` as the PostgreSQL replica tests make it (its own state_dir, so its
    own checkpoint key), with its replica id set and its audit log in one directory shared
    with the other replica: the id names each replica's file there."""
    path = postgres_replica_config(env, name, location)
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    data["paths"]["audit_log"] = "logs/audit.jsonl"
    data["state"]["replica_id"] = f"bastion-{name}"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
async def two_replicas(
    tmp_path: Path, postgres_location: PostgresLocation
) -> AsyncIterator[tuple[BastionEnv, list[Worker], list[int]]]:
    env = make_env(tmp_path, operators=4)
    workers: list[Worker] = []
    ports: list[int] = []
    try:
        for name in ("a", "b"):
            worker = Worker(load_config(replica_config(env, name, postgres_location)))
            workers.append(worker)
            ports.append(await worker.start())
        yield env, workers, ports
    finally:
        for worker in workers:
            await worker.stop()


async def test_two_replicas_write_two_chains_that_verify_together(
    two_replicas: tuple[BastionEnv, list[Worker], list[int]],
) -> None:
    env, workers, ports = two_replicas
    logins = []
    for port in ports:
        op, conn = await fresh_login(env, port)
        conn.close()
        await conn.wait_closed()
        logins.append(op.name)
    while workers:  # stopped here (the fixture stops only those left)
        await workers.pop().stop()  # closing signs what is not signed yet
    logs = env.root / "logs"
    assert sorted(p.name for p in logs.glob("*.jsonl")) == [
        "audit.bastion-a.jsonl",
        "audit.bastion-b.jsonl",
    ]
    for name, user in zip(("a", "b"), logins, strict=True):
        events = events_of(logs / f"audit.bastion-{name}.jsonl")
        assert {e["replica"] for e in events} == {f"bastion-{name}"}
        assert [e["user"] for e in events if e["event"] == "login.succeeded"] == [user]
    keys = [env.root / name / "state" / "audit-signing.pub" for name in ("a", "b")]
    result = cli("verify", logs, "--pubkey", keys[0], "--pubkey", keys[1])
    assert result.returncode == 0, result.stderr
    assert "merged: 2 chains" in result.stdout
    # One key for both is not enough: b's chain is signed by b's key.
    result = cli("verify", logs, "--pubkey", keys[0])
    assert result.returncode == 3
    assert f"FORGED: {logs / 'audit.bastion-b.jsonl'} (replica bastion-b)" in result.stderr
    found = cli("search", "--log", logs, "--event", "login.succeeded")
    assert found.returncode == 0, found.stderr
    assert [line.split()[4] for line in found.stdout.splitlines()] == ["allowed", "allowed"]
    assert {f"replica=bastion-{n}" for n in "ab"} <= set(found.stdout.split())
