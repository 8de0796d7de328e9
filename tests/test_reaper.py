"""The reaper finishes the cleanup of sessions whose worker died: real temp directories, a
real audit log, back-off, alerts, and two reapers racing from two processes."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bastion.audit.chain import verify
from bastion.audit.log import AuditLog, head_path, read_head
from bastion.errors import BackendUnavailable
from bastion.session.reaper import Reaper, temp_dir_cleaner
from bastion.state.journal import Journal, Owner, ResourceRecord

KEY = b"k" * 32
ME = Owner.current()
LEASE_ID = "kubernetes/creds/debug-shop/Zx81kQ"


def dead_owner() -> Owner:
    """This process's pid with another start time: a worker that died and whose pid was
    reused (dead from every process's point of view)."""
    return Owner(ME.pid, ME.started + 1)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def chain_ok(path: Path) -> bool:
    return verify(path.read_bytes().splitlines(keepends=True), read_head(head_path(path))).ok


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[AuditLog]:
    async with AuditLog(tmp_path / "audit.jsonl", hmac_key=KEY) as log:
        yield log


def open_orphan(j: Journal, sid: str, owner: Owner | None = None) -> None:
    j.open_session(
        sid,
        user="alice",
        source="192.0.2.7:50022",
        owner=owner or dead_owner(),
        opened_at=900.0,
    )
    j.set_state(sid, "attached", target={"cluster": "prod", "namespace": "shop", "pod": "p"})


def make(j: Journal, sid: str, kind: str, ref: dict[str, Any], **later: Any) -> int:
    rid = j.plan(sid, kind, ref)
    j.created(rid, later)
    return rid


def session_dir(root: Path, sid: str) -> Path:
    path = root / sid
    path.mkdir(parents=True, mode=0o700)
    (path / "scratch.txt").write_text("left behind\n")
    return path


class Recorder:
    """Fake cleaners for kinds whose real cleaner talks to Vault or Kubernetes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def cleaner(self, result: str = "done") -> Callable[[ResourceRecord], Any]:
        async def clean(resource: ResourceRecord) -> str:
            self.calls.append((resource.kind, resource.id))
            return result

        return clean


# ------------------------------------------------------------------ the sweep
async def test_real_temp_dir_is_removed_and_a_failing_revoke_backs_off(
    tmp_path: Path, audit: AuditLog
) -> None:
    clock = Clock()
    db = tmp_path / "journal.db"
    root = tmp_path / "sessions"
    j = Journal(db, clock=clock)
    open_orphan(j, "s1")
    directory = session_dir(root, "s1")
    temp = make(j, "s1", "temp_dir", {"path": str(directory)})
    lease = make(j, "s1", "lease", {"namespace": "shop"}, lease_id=LEASE_ID)

    attempts: list[float] = []

    async def revoke(resource: ResourceRecord) -> str:
        attempts.append(clock.now)
        assert resource.ref["lease_id"] == LEASE_ID
        if len(attempts) <= 2:
            raise BackendUnavailable("Vault is sealed", hint="unseal it")
        return "revoked"

    reaper = Reaper(
        lambda: Journal(db, clock=clock),
        {"temp_dir": temp_dir_cleaner(root), "lease": revoke},
        audit,
        clock=clock,
    )
    report = await reaper.sweep()  # t=1000: newest first, the lease fails, the dir goes
    assert [(o.resource, o.outcome) for o in report.outcomes] == [
        (lease, "failed"),
        (temp, "cleaned"),
    ]
    assert report.closed == ()
    assert not directory.exists()
    [pending] = j.pending("s1")
    assert (pending.id, pending.status, pending.attempts, pending.error) == (
        lease,
        "failed",
        1,
        "Vault is sealed",
    )

    clock.now = 1010.0  # back-off: 30 s after the first failure
    report = await reaper.sweep()
    assert [o.outcome for o in report.outcomes] == ["deferred"]
    clock.now = 1030.0
    report = await reaper.sweep()
    assert [o.outcome for o in report.outcomes] == ["failed"]
    clock.now = 1089.0  # 60 s after the second
    assert [o.outcome for o in (await reaper.sweep()).outcomes] == ["deferred"]
    clock.now = 1090.0
    report = await reaper.sweep()
    assert [(o.resource, o.outcome, o.detail) for o in report.outcomes] == [
        (lease, "cleaned", "revoked")
    ]
    assert report.closed == ("s1",)
    assert attempts == [1000.0, 1030.0, 1090.0]
    clock.now = 1200.0
    assert (await reaper.sweep()).orphans == 0
    await reaper.aclose()

    record = j.session("s1")
    assert record is not None
    assert (record.state, record.closed_at) == ("closed", 1090.0)
    assert j.pending("s1") == []
    j.close()
    check_backoff_events(audit)


def check_backoff_events(audit: AuditLog) -> None:
    log = events(audit.path)
    assert [(e["event"], e["outcome"], e.get("kind")) for e in log] == [
        ("reaper.failed", "alert", "lease"),
        ("reaper.cleaned", "cleaned", "temp_dir"),
        ("reaper.failed", "alert", "lease"),
        ("reaper.cleaned", "cleaned", "lease"),
        ("session.reaped", "closed", None),
    ]
    assert all(e["session"] == "s1" and e["actor"] == "reaper" for e in log)
    assert (log[0]["error"], log[0]["attempts"], log[0]["retry_in_seconds"]) == (
        "Vault is sealed",
        1,
        30.0,
    )
    assert (log[2]["attempts"], log[2]["retry_in_seconds"]) == (2, 60.0)
    assert (log[1]["result"], log[3]["result"], log[3]["attempts"]) == ("removed", "revoked", 3)
    assert log[4]["user"] == "alice"
    assert log[4]["previous_state"] == "attached"
    assert LEASE_ID not in audit.path.read_text()  # the lease id is only a reference
    assert log[3]["ref"]["lease_id"] == audit.reference(LEASE_ID)
    assert chain_ok(audit.path)


async def test_resources_are_cleaned_newest_first(tmp_path: Path, audit: AuditLog) -> None:
    db = tmp_path / "journal.db"
    j = Journal(db)
    open_orphan(j, "s1")
    ids = [
        make(j, "s1", "temp_dir", {"path": str(tmp_path / "sessions" / "s1")}),
        make(j, "s1", "lease", {"namespace": "shop"}, lease_id=LEASE_ID),
        make(j, "s1", "pod", {"namespace": "shop", "name": "debug-copy"}),
        make(j, "s1", "ephemeral_container", {"namespace": "shop", "pod": "p", "name": "dbg"}),
    ]
    recorder = Recorder()
    cleaners = {k: recorder.cleaner() for k in ("lease", "pod", "ephemeral_container")}
    cleaners["temp_dir"] = temp_dir_cleaner(tmp_path / "sessions")
    reaper = Reaper(lambda: Journal(db), cleaners, audit)
    report = await reaper.sweep()
    await reaper.aclose()
    assert recorder.calls == [
        ("ephemeral_container", ids[3]),
        ("pod", ids[2]),
        ("lease", ids[1]),
    ]
    assert [o.resource for o in report.cleaned] == ids[::-1]
    assert report.cleaned[-1].detail == "already gone"  # the dir was never made
    assert report.closed == ("s1",)
    j.close()


async def test_a_kind_without_a_cleaner_fails_loudly(tmp_path: Path, audit: AuditLog) -> None:
    db = tmp_path / "journal.db"
    j = Journal(db)
    open_orphan(j, "s1")
    temp = make(j, "s1", "temp_dir", {"path": str(tmp_path / "sessions" / "s1")})
    odd = make(j, "s1", "gpu_reservation", {"node": "n1"})
    reaper = Reaper(
        lambda: Journal(db), {"temp_dir": temp_dir_cleaner(tmp_path / "sessions")}, audit
    )
    report = await reaper.sweep()
    await reaper.aclose()
    assert [(o.resource, o.outcome) for o in report.outcomes] == [
        (odd, "failed"),
        (temp, "cleaned"),
    ]
    assert "no cleaner for resource kind 'gpu_reservation'" in report.failed[0].detail
    assert report.closed == ()
    [left] = j.pending("s1")
    assert (left.id, left.status) == (odd, "failed")
    assert left.error is not None
    assert "no cleaner" in left.error
    [alert] = [e for e in events(audit.path) if e["event"] == "reaper.failed"]
    assert alert["outcome"] == "alert"
    assert alert["kind"] == "gpu_reservation"
    assert "no cleaner for resource kind 'gpu_reservation'" in alert["error"]
    j.close()


async def test_live_sessions_are_never_touched(tmp_path: Path, audit: AuditLog) -> None:
    db = tmp_path / "journal.db"
    j = Journal(db)
    open_orphan(j, "mine", owner=ME)
    directory = session_dir(tmp_path / "sessions", "mine")
    make(j, "mine", "temp_dir", {"path": str(directory)})
    reaper = Reaper(
        lambda: Journal(db), {"temp_dir": temp_dir_cleaner(tmp_path / "sessions")}, audit
    )
    report = await reaper.sweep()
    await reaper.aclose()
    assert (report.orphans, report.outcomes) == (0, ())
    assert directory.exists()
    assert not audit.path.read_bytes()
    j.close()


async def test_a_closed_session_whose_revoke_failed_is_finished(
    tmp_path: Path, audit: AuditLog
) -> None:
    db = tmp_path / "journal.db"
    clock = Clock(940.0)
    j = Journal(db, clock=clock)
    open_orphan(j, "s1")
    lease = make(j, "s1", "lease", {}, lease_id=LEASE_ID)
    j.failed(lease, "connection refused")  # the session's own wipe could not revoke...
    j.close_session("s1", 950.0)  # ...closed, and then the worker died
    recorder = Recorder()
    clock.now = 1000.0  # the first retry is due 30 s after the session's own attempt
    reaper = Reaper(lambda: Journal(db), {"lease": recorder.cleaner("revoked")}, audit, clock=clock)
    report = await reaper.sweep()
    await reaper.aclose()
    assert recorder.calls == [("lease", lease)]
    assert report.closed == ("s1",)
    record = j.session("s1")
    assert record is not None
    assert (record.state, record.closed_at) == ("closed", 950.0)
    reaped = events(audit.path)[-1]
    assert (reaped["event"], reaped["previous_state"]) == ("session.reaped", "closed")
    j.close()


async def test_a_live_workers_closed_session_is_finished_and_its_open_one_left_alone(
    tmp_path: Path, audit: AuditLog
) -> None:
    db = tmp_path / "journal.db"
    root = tmp_path / "sessions"
    clock = Clock(940.0)
    j = Journal(db, clock=clock)
    # Both sessions belong to this very process, which is alive.
    open_orphan(j, "open", owner=ME)
    directory = session_dir(root, "open")
    make(j, "open", "temp_dir", {"path": str(directory)})
    open_orphan(j, "closed", owner=ME)
    lease = make(j, "closed", "lease", {}, lease_id=LEASE_ID)
    j.failed(lease, "Vault did not answer")  # the worker's own wipe could not revoke...
    j.close_session("closed", 950.0)  # ...and closed the session with the lease pending
    recorder = Recorder()
    reaper = Reaper(
        lambda: Journal(db),
        {"temp_dir": temp_dir_cleaner(root), "lease": recorder.cleaner("revoked")},
        audit,
        clock=clock,
    )
    clock.now = 960.0  # the back-off counts from the wipe's failed attempt
    report = await reaper.sweep()
    assert report.orphans == 1
    assert [(o.session, o.resource, o.outcome) for o in report.outcomes] == [
        ("closed", lease, "deferred")
    ]
    clock.now = 970.0
    report = await reaper.sweep()
    await reaper.aclose()
    assert recorder.calls == [("lease", lease)]
    assert report.closed == ("closed",)
    assert j.pending("closed") == []
    record = j.session("closed")
    assert record is not None
    assert (record.state, record.closed_at) == ("closed", 950.0)
    # The open session of the live worker: not touched, not even claimed.
    assert directory.exists()
    assert [r.status for r in j.pending("open")] == ["created"]
    still_open = j.session("open")
    assert still_open is not None
    assert (still_open.state, still_open.claimed_by) == ("attached", None)
    log = events(audit.path)
    assert [(e["event"], e["outcome"], e["session"]) for e in log] == [
        ("reaper.cleaned", "cleaned", "closed"),
        ("session.reaped", "closed", "closed"),
    ]
    assert (log[0]["attempts"], log[0]["status_before"]) == (2, "failed")
    assert log[1]["previous_state"] == "closed"
    assert chain_ok(audit.path)
    j.close()


async def test_what_a_live_worker_may_still_be_creating_is_left_to_it(
    tmp_path: Path, audit: AuditLog
) -> None:
    # A credential asked for while the wipe ran: planned, then the session closed. Its
    # owner will confirm it (with the lease id) or mark it removed; until then the reaper
    # must not take it for one that was never issued.
    db = tmp_path / "journal.db"
    j = Journal(db)
    open_orphan(j, "s1", owner=ME)
    lease = j.plan("s1", "lease", {"namespace": "shop"})
    j.close_session("s1", 950.0)
    recorder = Recorder()
    reaper = Reaper(lambda: Journal(db), {"lease": recorder.cleaner("revoked")}, audit)
    report = await reaper.sweep()
    assert [(o.resource, o.outcome) for o in report.outcomes] == [(lease, "deferred")]
    assert "still running" in report.outcomes[0].detail
    assert (recorder.calls, report.closed) == ([], ())
    j.created(lease, {"lease_id": LEASE_ID})  # the owner confirms it: now it is the reaper's
    report = await reaper.sweep()
    await reaper.aclose()
    assert recorder.calls == [("lease", lease)]
    assert report.closed == ("s1",)
    j.close()


async def test_a_session_that_died_before_creating_anything_is_closed(
    tmp_path: Path, audit: AuditLog
) -> None:
    db = tmp_path / "journal.db"
    j = Journal(db)
    open_orphan(j, "s1")
    reaper = Reaper(lambda: Journal(db), {}, audit, clock=Clock(2000.0))
    report = await reaper.sweep()
    await reaper.aclose()
    assert (report.orphans, report.closed, report.outcomes) == (1, ("s1",), ())
    record = j.session("s1")
    assert record is not None
    assert (record.state, record.closed_at) == ("closed", 2000.0)
    assert [e["event"] for e in events(audit.path)] == ["session.reaped"]
    j.close()


async def test_a_cleaner_that_hangs_times_out_and_is_retried(
    tmp_path: Path, audit: AuditLog
) -> None:
    db = tmp_path / "journal.db"
    j = Journal(db)
    open_orphan(j, "s1")
    pod = make(j, "s1", "pod", {"name": "p"})

    async def hang(resource: ResourceRecord) -> str:
        await asyncio.sleep(3600)
        return "never"

    reaper = Reaper(lambda: Journal(db), {"pod": hang}, audit, cleaner_timeout=0.05)
    report = await reaper.sweep()
    await reaper.aclose()
    assert [(o.resource, o.outcome, o.detail) for o in report.outcomes] == [
        (pod, "failed", "no answer within 0.05 s")
    ]
    [left] = j.pending("s1")
    assert left.attempts == 1
    j.close()


async def test_an_audit_log_that_cannot_be_written_does_not_stop_the_cleanup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "journal.db"
    j = Journal(db)
    open_orphan(j, "s1")
    directory = session_dir(tmp_path / "sessions", "s1")
    make(j, "s1", "temp_dir", {"path": str(directory)})
    broken = AuditLog(tmp_path / "audit.jsonl", hmac_key=KEY)  # never opened: writes fail
    reaper = Reaper(
        lambda: Journal(db), {"temp_dir": temp_dir_cleaner(tmp_path / "sessions")}, broken
    )
    with caplog.at_level(logging.ERROR, logger="bastion.session.reaper"):
        report = await reaper.sweep()
    await reaper.aclose()
    assert report.closed == ("s1",)
    assert not directory.exists()
    assert "audit event reaper.cleaned for session s1 not written" in caplog.text
    j.close()


async def test_the_reaper_can_share_the_brokers_database_thread(
    tmp_path: Path, audit: AuditLog
) -> None:
    db = tmp_path / "journal.db"
    j = Journal(db)
    open_orphan(j, "s1")
    make(j, "s1", "lease", {}, lease_id=LEASE_ID)
    j.close()
    thread = ThreadPoolExecutor(1, thread_name_prefix="journal")
    journal = thread.submit(Journal, db).result()  # as the broker opens it
    loop = asyncio.get_running_loop()

    async def in_db(fn: Callable[..., Any], *args: Any) -> Any:
        return await loop.run_in_executor(thread, lambda: fn(*args))

    with pytest.raises(ValueError, match="thread that opened it"):
        Reaper(journal, {}, audit)
    recorder = Recorder()
    reaper = Reaper(journal, {"lease": recorder.cleaner("revoked")}, audit, in_db=in_db)
    report = await reaper.sweep()
    await reaper.aclose()  # the broker's journal is the broker's to close
    assert report.closed == ("s1",)
    assert await in_db(journal.live_sessions) == []
    thread.submit(journal.close).result()
    thread.shutdown()


async def test_a_journal_the_reaper_opened_on_the_brokers_thread_is_closed_once(
    tmp_path: Path, audit: AuditLog
) -> None:
    db = tmp_path / "journal.db"
    thread = ThreadPoolExecutor(1, thread_name_prefix="journal")
    loop = asyncio.get_running_loop()
    opened: list[Journal] = []

    async def in_db(fn: Callable[..., Any], *args: Any) -> Any:
        return await loop.run_in_executor(thread, lambda: fn(*args))

    def factory() -> Journal:
        opened.append(Journal(db))
        return opened[-1]

    reaper = Reaper(factory, {}, audit, in_db=in_db)
    assert (await reaper.sweep()).orphans == 0
    await reaper.sweep()
    await reaper.aclose()
    assert len(opened) == 1
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        await in_db(opened[0].live_sessions)
    thread.shutdown()


def test_settings_that_would_let_a_live_claim_lapse_are_refused(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "a.jsonl", hmac_key=KEY)
    with pytest.raises(ValueError, match="shorter than claim_ttl"):
        Reaper(lambda: Journal(tmp_path / "j.db"), {}, audit, cleaner_timeout=60, claim_ttl=60)
    with pytest.raises(ValueError, match="interval"):
        Reaper(lambda: Journal(tmp_path / "j.db"), {}, audit, interval=0)


# ------------------------------------------------------------------ run()
class FlakyJournal(Journal):
    failures = 1

    def orphaned(self, *, dead_replicas: bool = False) -> Any:
        if FlakyJournal.failures:
            FlakyJournal.failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return super().orphaned(dead_replicas=dead_replicas)


async def test_a_failing_sweep_is_logged_and_run_goes_on(
    tmp_path: Path, audit: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "journal.db"
    j = Journal(db)
    open_orphan(j, "s1")
    directory = session_dir(tmp_path / "sessions", "s1")
    make(j, "s1", "temp_dir", {"path": str(directory)})
    opens = [0]

    def factory() -> Journal:
        opens[0] += 1
        if opens[0] == 1:
            raise sqlite3.OperationalError("unable to open database file")
        return FlakyJournal(db)

    reaper = Reaper(
        factory, {"temp_dir": temp_dir_cleaner(tmp_path / "sessions")}, audit, interval=0.02
    )
    with caplog.at_level(logging.ERROR, logger="bastion.session.reaper"):
        task = asyncio.create_task(reaper.run())
        for _ in range(500):
            if not directory.exists():
                break
            await asyncio.sleep(0.01)
        for _ in range(500):  # the session is closed right after the last resource
            if j.live_sessions() == []:
                break
            await asyncio.sleep(0.01)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await reaper.aclose()
    assert not directory.exists()
    assert j.live_sessions() == []
    failures = [r for r in caplog.records if "reaper sweep failed" in r.getMessage()]
    assert len(failures) == 2  # opening the journal, then reading it
    assert "unable to open database file" in caplog.text
    assert "disk I/O error" in caplog.text
    j.close()


# ------------------------------------------------------------------ temp_dir cleaner
async def test_the_temp_dir_cleaner_removes_only_session_directories(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    clean = temp_dir_cleaner(root)
    victim = tmp_path / "precious"
    victim.mkdir()
    (root / "link").parent.mkdir(parents=True, exist_ok=True)
    (root / "link").symlink_to(victim)

    def record(path: str) -> ResourceRecord:
        return ResourceRecord(1, "s", "temp_dir", {"path": path}, "created", 0, None, 0.0)

    for bad in (str(victim), str(root), f"{root}/../precious", "sessions/s1", str(root / "link")):
        with pytest.raises(ValueError, match="session directory"):
            await clean(record(bad))
    with pytest.raises(ValueError, match="no path"):
        await clean(ResourceRecord(1, "s", "temp_dir", {}, "created", 0, None, 0.0))
    assert victim.exists()
    nested = session_dir(root, "s1")
    (nested / "deep" / "er").mkdir(parents=True)
    assert await clean(record(str(nested))) == "removed"
    assert not nested.exists()
    assert await clean(record(str(nested))) == "already gone"


# ------------------------------------------------------------------ two reapers racing
def _racer(
    db: str, root: str, log_path: str, cleaned: str, start: multiprocessing.synchronize.Event
) -> None:
    async def main() -> None:
        def note(resource: ResourceRecord) -> None:
            fd = os.open(cleaned, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{resource.id} {os.getpid()}\n".encode())
            finally:
                os.close(fd)

        remove_dir = temp_dir_cleaner(Path(root))

        async def temp_dir(resource: ResourceRecord) -> str:
            note(resource)
            await asyncio.sleep(0.005)  # widen the window for a second cleaner
            return await remove_dir(resource)

        async def lease(resource: ResourceRecord) -> str:
            note(resource)
            await asyncio.sleep(0.005)
            return "revoked"

        async with AuditLog(Path(log_path), hmac_key=KEY) as audit:
            reaper = Reaper(
                lambda: Journal(Path(db)), {"temp_dir": temp_dir, "lease": lease}, audit
            )
            start.wait()
            for _ in range(400):
                report = await reaper.sweep()
                if report.orphans == 0:
                    break
                await asyncio.sleep(0.01)
            await reaper.aclose()

    asyncio.run(main())


def test_two_reapers_racing_clean_each_resource_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    root = tmp_path / "sessions"
    j = Journal(db)
    expected: set[int] = set()
    sessions = [f"s{i}" for i in range(8)]
    for sid in sessions:
        open_orphan(j, sid)
        for n in range(3):
            directory = session_dir(root, f"{sid}-{n}")
            expected.add(make(j, sid, "temp_dir", {"path": str(directory)}))
        expected.add(make(j, sid, "lease", {}, lease_id=f"{LEASE_ID}-{sid}"))
    log_path, cleaned = tmp_path / "audit.jsonl", tmp_path / "cleaned.txt"
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    racers = [
        context.Process(
            target=_racer, args=(str(db), str(root), str(log_path), str(cleaned), start)
        )
        for _ in range(2)
    ]
    for racer in racers:
        racer.start()
    start.set()
    for racer in racers:
        racer.join(120)
        assert racer.exitcode == 0
    lines = [line.split() for line in cleaned.read_text().splitlines()]
    ids = [int(rid) for rid, _ in lines]
    assert sorted(ids) == sorted(expected)  # every resource, each exactly once
    assert list(root.iterdir()) == []
    assert j.orphaned() == []
    assert all(j.session(sid).state == "closed" for sid in sessions)  # type: ignore[union-attr]
    log = events(log_path)
    reaped = [e["session"] for e in log if e["event"] == "session.reaped"]
    assert sorted(reaped) == sessions  # one closing event per session
    assert len([e for e in log if e["event"] == "reaper.cleaned"]) == len(expected)
    assert chain_ok(log_path)
    j.close()
