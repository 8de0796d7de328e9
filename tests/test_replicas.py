"""Replicas on one state database (issue 12): heartbeats, a replica id held by one boot,
whose sessions a replica may reap (its own, or a dead replica's when it leads), the reaper
leadership's advisory lock, the reaper leaving host-local resources to their host, and
``bastion sessions list`` telling which replica is alive. Contract tests run on SQLite and
on a real PostgreSQL; what only replicas sharing PostgreSQL do runs on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import WriteConfig
from state_backends import Backend

from bastion.audit.log import AuditLog
from bastion.cli.sessions import list_sessions
from bastion.config import load_config
from bastion.errors import ConfigError
from bastion.session.failover import ReplicaWatch
from bastion.session.reaper import Reaper, SweepReport, temp_dir_cleaner
from bastion.state.database import PostgresLocation, connect_postgres
from bastion.state.journal import Claim, Journal, Owner, ResourceRecord
from bastion.state.liveness import ReaperLeadership, ReplicaIdInUse

ME = Owner.current()
ELSEWHERE = Owner(ME.pid, ME.started, boot="another-boot")


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def journal_of(backend: Backend, replica: str, clock: Clock) -> Journal:
    return Journal(backend.open("journal.db"), clock=clock, replica=replica, dead_after=15.0)


@pytest.fixture
def a_and_b(state_backend: Backend, clock: Clock) -> Iterator[tuple[Journal, Journal]]:
    a, b = journal_of(state_backend, "a", clock), journal_of(state_backend, "b", clock)
    yield a, b
    a.close()
    b.close()


def open_session(j: Journal, sid: str, owner: Owner = ME) -> None:
    j.open_session(sid, user="alice", source="192.0.2.7:50022", owner=owner, opened_at=1.0)


def orphan_ids(j: Journal, *, dead_replicas: bool = False) -> list[str]:
    return [s.id for s, _ in j.orphaned(dead_replicas=dead_replicas)]


# ------------------------------------------------------------------ heartbeats
def test_a_replica_beats_and_is_dead_once_silent_past_the_deadline(
    a_and_b: tuple[Journal, Journal], clock: Clock
) -> None:
    a, b = a_and_b
    a.heartbeat()
    clock.now = 1010.0
    a.heartbeat()
    [record] = b.replicas()
    assert (record.id, record.started_at, record.heartbeat_at) == ("a", 1000.0, 1010.0)
    assert record.alive(1024.0, 15.0)
    assert not record.alive(1025.0, 15.0)


def test_one_replica_id_is_held_by_one_boot_until_that_boot_is_dead(
    a_and_b: tuple[Journal, Journal], clock: Clock, state_backend: Backend
) -> None:
    """On PostgreSQL another boot is another host (or a reboot faster than the deadline);
    on SQLite, one host, it is this host before a reboot: taken over at once."""
    a, _ = a_and_b
    a._db.execute(
        "INSERT INTO replicas (id, boot, started_at, heartbeat_at) VALUES ('a', 'other', 1, ?)",
        (995.0,),
    )
    if state_backend.name == "sqlite":
        a.heartbeat()
        assert [(r.boot, r.started_at) for r in a.replicas()] == [(ME.boot, 1000.0)]
        return
    with pytest.raises(ReplicaIdInUse, match="replica id 'a' is in use by another running"):
        a.heartbeat()
    assert [r.boot for r in a.replicas()] == ["other"]  # untouched
    clock.now = 1010.0  # the other boot's last beat is 15 s old: dead
    a.heartbeat()
    [record] = a.replicas()
    assert (record.boot, record.started_at) != ("other", 1.0)
    assert record.started_at == 1010.0


# ------------------------------------------------------------------ whose sessions
def test_another_replicas_sessions_are_reaped_only_by_a_sweep_for_the_dead_once_it_is_dead(
    a_and_b: tuple[Journal, Journal], clock: Clock, state_backend: Backend
) -> None:
    a, b = a_and_b
    a.heartbeat()
    # Owned by a live process of this host; on PostgreSQL b must not judge a's processes.
    open_session(a, "theirs")
    a.plan("theirs", "lease", {})
    claim = Claim(ME, "r", "b")
    assert orphan_ids(b) == []
    assert orphan_ids(b, dead_replicas=True) == []
    assert not b.claim("theirs", claim, now=clock.now, ttl=60.0)
    clock.now = 1016.0  # a silent for 16 s
    if state_backend.name == "sqlite":  # one host: the process is judged, and lives
        assert orphan_ids(b, dead_replicas=True) == []
        assert not b.claim("theirs", claim, now=clock.now, ttl=60.0)
        return
    assert orphan_ids(b) == []  # never in b's own sweep
    assert orphan_ids(b, dead_replicas=True) == ["theirs"]
    assert orphan_ids(a, dead_replicas=True) == []  # nobody reaps for itself that way
    assert b.claim("theirs", claim, now=clock.now, ttl=60.0)
    a.heartbeat()  # a is back: its session is its own again
    assert orphan_ids(b, dead_replicas=True) == []
    assert not b.claim("theirs", Claim(ME, "s", "b"), now=clock.now, ttl=60.0)


def test_this_replicas_sessions_of_an_earlier_boot_are_its_own_to_reap(
    a_and_b: tuple[Journal, Journal],
) -> None:
    """The host rebooted: the processes are dead and the temp directory is on this disk."""
    a, b = a_and_b
    open_session(a, "before-reboot", ELSEWHERE)
    a.plan("before-reboot", "temp_dir", {"path": "/x"})
    assert orphan_ids(a) == ["before-reboot"]
    assert a.claim("before-reboot", Claim(ME, "r", "a"), now=1.0, ttl=60.0)
    expected = [] if a._db.dialect == "postgresql" else ["before-reboot"]
    assert orphan_ids(b) == expected


def test_sessions_from_before_replica_ids_keep_the_boot_rule(
    a_and_b: tuple[Journal, Journal], clock: Clock, state_backend: Backend
) -> None:
    a, b = a_and_b
    open_session(a, "old", ELSEWHERE)
    open_session(a, "old-here", Owner(ME.pid, ME.started + 1))
    a._db.execute("UPDATE sessions SET replica = NULL")
    clock.now = 10_000.0
    if state_backend.name == "sqlite":
        assert orphan_ids(b) == ["old", "old-here"]
        return
    assert orphan_ids(b) == ["old-here"]  # this boot: judged by its process
    assert orphan_ids(b, dead_replicas=True) == []  # nobody can say the other is dead


def test_a_dead_replicas_claim_is_void_and_a_live_ones_holds_until_its_ttl(
    postgres_location: PostgresLocation, tmp_path: Path, clock: Clock
) -> None:
    backend = Backend("postgresql", tmp_path, postgres_location)
    a, b, c = (journal_of(backend, name, clock) for name in "abc")
    try:
        a.heartbeat()
        open_session(a, "theirs")
        clock.now = 1020.0  # a is dead
        c.heartbeat()
        assert c.claim("theirs", Claim(ELSEWHERE, "x", "c"), now=clock.now, ttl=60.0)
        assert not b.claim("theirs", Claim(ME, "y", "b"), now=1021.0, ttl=60.0)
        clock.now = 1036.0  # c has gone silent too
        assert b.claim("theirs", Claim(ME, "y", "b"), now=clock.now, ttl=60.0)
    finally:
        for j in (a, b, c):
            j.close()


def test_a_reaped_session_closes_with_only_deferred_resources_left(
    a_and_b: tuple[Journal, Journal],
) -> None:
    a, _ = a_and_b
    open_session(a, "s", Owner(ME.pid, ME.started + 1))
    temp = a.plan("s", "temp_dir", {"path": "/x"})
    lease = a.plan("s", "lease", {})
    claim = Claim(ME, "r", "a")
    assert a.claim("s", claim, now=1.0, ttl=60.0)
    a.removed(lease)
    assert not a.finish_reaped("s", claim, 2.0, deferred_may_stay=True)  # not deferred yet
    a.defer(temp, "on another host")
    assert not a.finish_reaped("s", claim, 2.0)  # still pending
    assert a.finish_reaped("s", claim, 3.0, deferred_may_stay=True)
    [left] = a.pending("s")
    assert (left.id, left.deferred) == (temp, "on another host")
    record = a.session("s")
    assert record is not None
    assert record.closed


# ------------------------------------------------------------------ leadership
def test_one_leader_at_a_time_and_another_takes_over_when_its_connection_dies(
    postgres_location: PostgresLocation,
) -> None:
    first, second = ReaperLeadership(postgres_location), ReaperLeadership(postgres_location)
    admin = connect_postgres(postgres_location)
    try:
        assert first.hold()
        assert not second.hold()
        assert first.hold()  # still held, checked on the server
        assert not second.hold()
        # The leader's connection dies (its process was killed): the server frees the lock.
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2)"
        )
        with pytest.raises(psycopg.OperationalError):
            first.hold()
        assert second.hold()
        assert not first.hold()  # on a new connection, and the lock is taken
        second.close()
        assert first.hold()
    finally:
        first.close()
        second.close()
        admin.close()


# ------------------------------------------------------------------ the reaper
KEY = b"k" * 32


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[AuditLog]:
    async with AuditLog(tmp_path / "audit.jsonl", hmac_key=KEY) as log:
        yield log


def events(path: Path, name: str) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in path.read_bytes().splitlines()]
    return [e for e in found if e["event"] == name]


async def test_the_leader_cleans_a_dead_replicas_remote_resources_and_leaves_its_temp_dir(
    postgres_location: PostgresLocation, tmp_path: Path, audit: AuditLog, clock: Clock
) -> None:
    backend = Backend("postgresql", tmp_path, postgres_location)
    root = tmp_path / "sessions"
    (root / "s1").mkdir(parents=True)
    a = journal_of(backend, "a", clock)
    a.heartbeat()
    open_session(a, "s1", Owner(ME.pid, ME.started + 1))  # a worker of a, since killed
    temp = a.plan("s1", "temp_dir", {"path": str(root / "s1")})
    a.created(temp)
    lease = a.plan("s1", "lease", {})
    a.created(lease, {"lease_id": "L1"})
    a.close()
    cleaned: list[str] = []

    async def revoke(resource: ResourceRecord) -> str:
        cleaned.append(str(resource.ref["lease_id"]))
        return "revoked"

    cleaners = {"temp_dir": temp_dir_cleaner(root), "lease": revoke}
    b = Reaper(lambda: journal_of(backend, "b", clock), cleaners, audit, clock=clock)
    try:
        report = await b.sweep_dead_replicas()  # a is alive: nothing
        assert (report.orphans, cleaned) == (0, [])
        clock.now = 1016.0
        assert (await b.sweep()).orphans == 0  # b's own sweep never reaps a's
        report = await b.sweep_dead_replicas()
        assert [(o.kind, o.outcome) for o in report.outcomes] == [
            ("lease", "cleaned"),
            ("temp_dir", "deferred"),
        ]
        assert (report.closed, cleaned) == (("s1",), ["L1"])
        assert (root / "s1").is_dir()
        assert (await b.sweep_dead_replicas()).orphans == 0  # only a's disk is left
    finally:
        await b.aclose()
    [reaped] = events(audit.path, "session.reaped")
    assert (reaped["reaped_by"], reaped["on_behalf_of"]) == ("b", "a")
    assert reaped["left_to_owner"] == [
        {"resource": temp, "kind": "temp_dir", "ref": {"path": str(root / "s1")}}
    ]
    [revoked] = events(audit.path, "reaper.cleaned")
    assert (revoked["kind"], revoked["reaped_by"], revoked["on_behalf_of"]) == ("lease", "b", "a")
    [deferred] = events(audit.path, "reaper.deferred")
    assert deferred["reason"].startswith("exists only on the host of replica a, which is dead")

    # a comes back (a new process: its old owner is dead): its own sweep removes the rest.
    a_again = Reaper(lambda: journal_of(backend, "a", clock), cleaners, audit, clock=clock)
    try:
        report = await a_again.sweep()
    finally:
        await a_again.aclose()
    assert [(o.kind, o.outcome) for o in report.outcomes] == [("temp_dir", "cleaned")]
    assert not (root / "s1").exists()


async def test_the_leader_keeps_beating_while_its_sweep_for_the_dead_hangs(
    postgres_location: PostgresLocation, tmp_path: Path, audit: AuditLog
) -> None:
    """A cleaner may take a minute; a leader silent that long would itself look dead."""
    backend = Backend("postgresql", tmp_path, postgres_location)
    thread = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()

    async def in_db(fn: Callable[..., Any], *args: Any) -> Any:
        return await loop.run_in_executor(thread, lambda: fn(*args))

    ticks = itertools.count(1000)
    journal: Journal = await in_db(
        lambda: Journal(backend.open(), replica="a", clock=lambda: float(next(ticks)))
    )
    sweeping = asyncio.Event()

    class Stuck(Reaper):
        async def sweep_dead_replicas(self) -> SweepReport:
            sweeping.set()
            await asyncio.Event().wait()  # a cleaner that never answers
            raise AssertionError("unreachable")

    reaper = Stuck(journal, {}, audit, in_db=in_db)
    watch = ReplicaWatch(
        journal, in_db, reaper, audit, interval=0.01, leadership=ReaperLeadership(postgres_location)
    )
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.wait_for(sweeping.wait(), 30)
        assert watch.leading
        [before] = await in_db(journal.replicas)
        for _ in range(3000):
            [now] = await in_db(journal.replicas)
            if now.heartbeat_at > before.heartbeat_at:
                break
            await asyncio.sleep(0.01)
        assert now.heartbeat_at > before.heartbeat_at
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watch.aclose()
        await in_db(journal.close)
        thread.shutdown()
    [took] = events(audit.path, "reaper.leadership")
    assert (took["outcome"], took["leader"]) == ("acquired", "a")


# ------------------------------------------------------------------ config and listing
def test_replica_settings_are_checked(write_config: WriteConfig) -> None:
    def with_state(**state: str) -> Path:
        return write_config(lambda data: data.update(state=state))

    for state, wanted in (
        ({"replica_id": "a:b"}, "'a:b' is not a replica id: expected 1 to 63 characters"),
        ({"replica_id": ""}, "'' is not a replica id"),
        ({"heartbeat_interval": "0s"}, "heartbeat_interval"),
        ({"heartbeat_interval": "10s", "replica_dead_after": "15s"}, "at least twice"),
    ):
        with pytest.raises(ConfigError, match=wanted):
            load_config(with_state(**state), check_files=False)
    config = load_config(with_state(replica_id="bastion-2"), check_files=False)
    assert config.state.replica_id == "bastion-2"
    assert config.state_stores().replica == "bastion-2"


def test_sessions_list_names_each_sessions_replica_and_whether_it_is_alive(
    write_config: WriteConfig, postgres_location: PostgresLocation, tmp_path: Path
) -> None:
    def on_postgres(data: dict[str, Any]) -> None:
        data["state"] = {
            "url": postgres_location.url,
            "password_file": str(postgres_location.password_file),
            "replica_id": "here",
        }

    path = write_config(on_postgres)
    backend = Backend("postgresql", tmp_path, postgres_location)
    here = Journal(backend.open(), replica="here")
    gone = Journal(backend.open(), replica="gone", clock=lambda: 1000.0)
    for name, j in (("here", here), ("gone", gone)):
        j.heartbeat()
        open_session(j, f"session{name}")
        j.close()
    out = io.StringIO()
    assert list_sessions(path, out=out) == 0
    header, *rows = out.getvalue().splitlines()
    assert "REPLICA  ALIVE" in header
    by_id = {row.split()[0]: row for row in rows}
    assert re.search(r" here +yes ", by_id["sessionhere"])
    assert re.search(r" gone +no \(last seen \d+s ago\) ", by_id["sessiongone"])
