"""The state journal: its rules, owners across pid reuse, orphans, kills, claims, and
several processes at once."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from state_backends import Backend

from bastion.state import journal as journal_module
from bastion.state.journal import (
    Claim,
    Journal,
    Owner,
    ResourceRecord,
    process_start_time,
)

ME = Owner.current()


def dead_owner() -> Owner:
    """This process's pid with another start time: what a reused pid looks like."""
    return Owner(ME.pid, ME.started + 1)


@pytest.fixture
def journal(state_backend: Backend) -> Iterator[Journal]:
    j = Journal(state_backend.open("journal.db"))
    yield j
    j.close()


def open_session(j: Journal, sid: str, owner: Owner = ME, **kw: float) -> None:
    j.open_session(sid, user="alice", source="192.0.2.7:50022", owner=owner, opened_at=100.0, **kw)


# ------------------------------------------------------------------ files and durability
def test_file_and_directory_modes_and_durable_settings(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.db"
    j = Journal(path)
    open_session(j, "s1")
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    for name in ("journal.db", "journal.db-wal", "journal.db-shm"):
        assert (tmp_path / "state" / name).stat().st_mode & 0o777 == 0o600, name
    assert j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert j._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    j.close()
    reopened = Journal(path)
    record = reopened.session("s1")
    assert record is not None
    assert record.owner == ME
    reopened.close()


def test_a_symlink_in_place_of_the_journal_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "journal.db").symlink_to(elsewhere)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        Journal(tmp_path / "state" / "journal.db")
    assert not elsewhere.exists()


def test_a_journal_is_bound_to_the_thread_that_opened_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    errors: list[BaseException] = []

    def use() -> None:
        try:
            journal.live_sessions()
        except sqlite3.ProgrammingError as exc:
            errors.append(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    journal.close()
    assert len(errors) == 1


# ------------------------------------------------------------------ session states
def test_a_session_is_opened_once_with_its_owner_and_deadlines(journal: Journal) -> None:
    open_session(journal, "s1", idle_deadline=400.0, hard_deadline=3700.0)
    record = journal.session("s1")
    assert record is not None
    assert (record.user, record.source, record.state) == (
        "alice",
        "192.0.2.7:50022",
        "authenticated",
    )
    assert (record.owner_pid, record.owner_started, record.owner_boot) == (
        ME.pid,
        ME.started,
        ME.boot,
    )
    assert (record.idle_deadline, record.hard_deadline, record.closed_at) == (400.0, 3700.0, None)
    assert not record.kill_requested
    assert record.target is None
    with pytest.raises(ValueError, match="already exists"):
        open_session(journal, "s1")
    assert journal.session("nope") is None


def test_nothing_leaves_closed(journal: Journal) -> None:
    open_session(journal, "s1")
    journal.set_state("s1", "browsing")
    journal.close_session("s1", 200.0)
    for state in ("authenticated", "browsing", "starting_debug", "attached", "wiping"):
        with pytest.raises(ValueError, match="nothing leaves closed"):
            journal.set_state("s1", state)
    journal.set_state("s1", "closed")  # staying closed changes nothing
    journal.close_session("s1", 300.0)  # closing again keeps the first time
    record = journal.session("s1")
    assert record is not None
    assert (record.state, record.closed_at) == ("closed", 200.0)
    assert journal.live_sessions() == []


def test_closing_goes_through_close_session_and_unknown_ids_are_errors(journal: Journal) -> None:
    open_session(journal, "s1")
    with pytest.raises(ValueError, match="close_session"):
        journal.set_state("s1", "closed")
    with pytest.raises(KeyError):
        journal.set_state("nope", "browsing")
    with pytest.raises(KeyError):
        journal.set_state("nope", "closed")
    with pytest.raises(KeyError):
        journal.close_session("nope", 1.0)
    with pytest.raises(ValueError, match="opened closed"):
        journal.open_session("s2", user="a", source="x:1", owner=ME, opened_at=1.0, state="closed")


def test_target_and_deadlines_change_only_when_given(journal: Journal) -> None:
    open_session(journal, "s1", idle_deadline=400.0, hard_deadline=3700.0)
    target = {"cluster": "prod", "namespace": "shop", "pod": "cart-1", "container": "app"}
    journal.set_state("s1", "attached", target=target, idle_deadline=500.0)
    record = journal.session("s1")
    assert record is not None
    assert (record.state, record.target, record.idle_deadline, record.hard_deadline) == (
        "attached",
        target,
        500.0,
        3700.0,
    )
    journal.set_state("s1", "browsing")  # None: unchanged
    record = journal.session("s1")
    assert record is not None
    assert record.target == target
    journal.set_state("s1", "browsing", target={})  # {}: no target any more
    record = journal.session("s1")
    assert record is not None
    assert record.target is None
    assert [s.id for s in journal.live_sessions()] == ["s1"]


# ------------------------------------------------------------------ resources
def test_plan_before_create_then_removed(journal: Journal) -> None:
    open_session(journal, "s1")
    lease = journal.plan("s1", "lease", {"mount": "kubernetes", "namespace": "shop"})
    [planned] = journal.pending("s1")
    assert (planned.id, planned.kind, planned.status, planned.attempts) == (
        lease,
        "lease",
        "planned",
        0,
    )
    journal.created(lease, {"lease_id": "kubernetes/creds/debug/abc"})  # known only now
    [created] = journal.pending("s1")
    assert created.status == "created"
    assert created.ref == {
        "mount": "kubernetes",
        "namespace": "shop",
        "lease_id": "kubernetes/creds/debug/abc",
    }
    with pytest.raises(ValueError, match="not planned"):
        journal.created(lease)
    journal.removed(lease)
    journal.removed(lease)  # removing again changes nothing
    assert journal.pending("s1") == []
    assert [r.status for r in journal.resources("s1")] == ["removed"]
    with pytest.raises(ValueError, match="removed already"):
        journal.failed(lease, "late")


def test_a_planned_thing_that_was_never_made_can_be_marked_removed(journal: Journal) -> None:
    open_session(journal, "s1")
    rid = journal.plan("s1", "temp_dir", {"path": "/x"})
    journal.removed(rid)  # creating it failed: nothing identifiable exists
    assert journal.pending("s1") == []


def test_nothing_is_planned_for_a_closed_or_unknown_session(journal: Journal) -> None:
    open_session(journal, "s1")
    journal.close_session("s1", 1.0)
    with pytest.raises(ValueError, match="is closed"):
        journal.plan("s1", "lease", {})
    with pytest.raises(ValueError, match="does not exist"):
        journal.plan("nope", "lease", {})
    with pytest.raises(ValueError, match="kind"):
        journal.plan("s1", "", {})
    with pytest.raises(TypeError, match="mapping"):
        journal.plan("s1", "lease", ["not", "a", "mapping"])  # type: ignore[arg-type]


def test_failed_cleanups_stay_pending_and_count_attempts(state_backend: Backend) -> None:
    now = [1000.0]
    j = Journal(state_backend.open("journal.db"), clock=lambda: now[0])
    open_session(j, "s1")
    temp = j.plan("s1", "temp_dir", {"path": "/tmp/x"})
    j.created(temp)
    lease = j.plan("s1", "lease", {"namespace": "shop"})
    j.created(lease, {"lease_id": "L1"})
    now[0] = 1010.0
    j.failed(lease, "vault is sealed")
    now[0] = 1020.0
    j.failed(lease, "connection refused")
    assert [(r.id, r.status) for r in j.pending("s1")] == [(temp, "created"), (lease, "failed")]
    failed = j.pending("s1")[1]
    assert (failed.attempts, failed.error, failed.updated_at) == (2, "connection refused", 1020.0)
    j.removed(lease)
    assert [r.id for r in j.pending("s1")] == [temp]
    with pytest.raises(KeyError):
        j.removed(12345)
    with pytest.raises(KeyError):
        j.failed(12345, "x")
    with pytest.raises(KeyError):
        j.created(12345)
    j.close()


def test_pending_lists_are_per_session_in_creation_order(journal: Journal) -> None:
    open_session(journal, "s1")
    open_session(journal, "s2")
    a = journal.plan("s1", "temp_dir", {"path": "/a"})
    b = journal.plan("s2", "temp_dir", {"path": "/b"})
    c = journal.plan("s1", "lease", {})
    d = journal.plan("s1", "ephemeral_container", {"pod": "p"})
    journal.removed(c)
    assert [r.id for r in journal.pending("s1")] == [a, d]
    assert [r.id for r in journal.pending("s2")] == [b]
    assert journal.pending("nope") == []
    assert all(isinstance(r, ResourceRecord) for r in journal.pending("s1"))


# ------------------------------------------------------------------ owners
def test_the_current_process_is_alive() -> None:
    assert ME.pid == os.getpid()
    assert ME.is_alive()
    assert Owner.current() == ME
    assert ME.boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_a_dead_child_is_not_alive_even_before_it_is_reaped() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        started = process_start_time(child.pid)
        assert started is not None
        owner = Owner(child.pid, started)
        assert owner.is_alive()
        os.kill(child.pid, signal.SIGKILL)
        # Until waited for, the child is a zombie: it has ended all the same.
        deadline = time.monotonic() + 10
        while owner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert Path(f"/proc/{child.pid}").exists()
        assert not owner.is_alive()
    finally:
        child.kill()
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    assert not owner.is_alive()


def test_a_reused_pid_or_another_boot_is_not_the_owner() -> None:
    assert not Owner(ME.pid, ME.started + 1).is_alive()  # same pid, another process
    assert not Owner(ME.pid, ME.started, "00000000-0000-0000-0000-000000000000").is_alive()


def test_a_process_hidden_from_us_counts_as_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    # With /proc mounted hidepid=noaccess, another user's process cannot be checked:
    # reaping what may be a live session would be worse than leaving it.
    def hidden(pid: int) -> int | None:
        raise PermissionError(13, "Permission denied", f"/proc/{pid}/stat")

    monkeypatch.setattr(journal_module, "process_start_time", hidden)
    assert Owner(1, 1).is_alive()


def test_start_time_is_read_past_a_command_name_with_parentheses(tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"
    odd.symlink_to("/bin/sleep")
    child = subprocess.Popen([str(odd), "30"])
    try:
        deadline = time.monotonic() + 10
        while b") b (c" not in Path(f"/proc/{child.pid}/stat").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        fields = Path(f"/proc/{child.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        assert process_start_time(child.pid) == int(fields[19])
    finally:
        child.kill()
        child.wait()


# ------------------------------------------------------------------ orphans and kills
def test_orphans_are_open_sessions_of_dead_owners_and_closed_ones_with_leftovers(
    journal: Journal,
) -> None:
    gone = dead_owner()
    open_session(journal, "mine")  # live owner: not an orphan
    journal.plan("mine", "temp_dir", {"path": "/m"})
    open_session(journal, "crashed", gone)
    crashed_dir = journal.plan("crashed", "temp_dir", {"path": "/c"})
    crashed_lease = journal.plan("crashed", "lease", {})
    journal.created(crashed_lease, {"lease_id": "L"})
    open_session(journal, "closed-but-revoke-failed", gone)
    lease = journal.plan("closed-but-revoke-failed", "lease", {})
    journal.failed(lease, "vault down")
    journal.close_session("closed-but-revoke-failed", 5.0)
    open_session(journal, "clean", gone)
    journal.removed(journal.plan("clean", "temp_dir", {"path": "/x"}))
    journal.close_session("clean", 5.0)
    # A live worker whose wipe could not revoke: closed, so the reaper retries it now.
    open_session(journal, "closed-by-live-owner")
    live_lease = journal.plan("closed-by-live-owner", "lease", {})
    journal.failed(live_lease, "x")
    journal.close_session("closed-by-live-owner", 5.0)
    open_session(journal, "closed-clean-by-live-owner")
    journal.close_session("closed-clean-by-live-owner", 5.0)
    open_session(journal, "crashed-early", gone)  # nothing created yet: still to be closed

    orphans = {s.id: [r.id for r in pending] for s, pending in journal.orphaned()}
    assert orphans == {
        "crashed": [crashed_dir, crashed_lease],
        "closed-but-revoke-failed": [lease],
        "closed-by-live-owner": [live_lease],
        "crashed-early": [],
    }


def test_sessions_of_another_boot_of_this_replica_are_orphans(
    journal: Journal, state_backend: Backend
) -> None:
    """A boot id not ours under this replica's id: the host rebooted, so the owner is dead
    and the temp directories are on this disk; on SQLite and PostgreSQL alike. (Another
    replica's sessions: tests/test_replicas.py.)"""
    elsewhere = Owner(ME.pid, ME.started, boot="another-boot")
    open_session(journal, "theirs", elsewhere)
    journal.plan("theirs", "lease", {})
    open_session(journal, "theirs-closed", elsewhere)
    journal.plan("theirs-closed", "temp_dir", {"path": "/elsewhere"})
    journal.close_session("theirs-closed", 2.0)
    orphans = [s.id for s, _ in journal.orphaned()]
    claimed = [
        journal.claim(sid, Claim(ME, "r"), now=1.0, ttl=60.0) for sid in ("theirs", "theirs-closed")
    ]
    assert (orphans, claimed) == (["theirs", "theirs-closed"], [True, True])
    # A claim from before replica ids, by a reaper of another boot: on PostgreSQL that may
    # be another host's live reaper, so it holds until its time-to-live.
    open_session(journal, "dead-here", dead_owner())
    assert journal.claim("dead-here", Claim(elsewhere, "x"), now=1.0, ttl=60.0)
    taken = journal.claim("dead-here", Claim(ME, "y"), now=2.0, ttl=60.0)
    assert taken is (state_backend.name == "sqlite")
    assert journal.claim("dead-here", Claim(ME, "y"), now=62.0, ttl=60.0)


def test_kill_requests_reach_only_the_owner_of_a_live_session(journal: Journal) -> None:
    other = dead_owner()
    open_session(journal, "s1")
    open_session(journal, "s2")
    open_session(journal, "theirs", other)
    assert journal.kill_requests(ME) == []
    assert journal.request_kill("s2")
    assert journal.request_kill("theirs")
    assert not journal.request_kill("nope")
    assert journal.kill_requests(ME) == ["s2"]
    assert journal.kill_requests(other) == ["theirs"]
    record = journal.session("s2")
    assert record is not None
    assert record.kill_requested
    journal.close_session("s2", 9.0)
    assert journal.kill_requests(ME) == []
    assert not journal.request_kill("s2")  # it has ended


# ------------------------------------------------------------------ claims
def test_one_claim_at_a_time_until_it_expires(journal: Journal) -> None:
    open_session(journal, "s1", dead_owner())
    a, b = Claim(ME, "a"), Claim(ME, "b")
    assert journal.claim("s1", a, now=100.0, ttl=60.0)
    assert not journal.claim("s1", b, now=120.0, ttl=60.0)
    assert journal.claim("s1", a, now=150.0, ttl=60.0)  # renewed
    assert not journal.claim("s1", b, now=200.0, ttl=60.0)
    assert journal.claim("s1", b, now=211.0, ttl=60.0)  # a did not renew in time
    assert not journal.finish_reaped("s1", a, 300.0)  # a no longer holds it
    journal.release("s1", a)  # a no-op: a does not hold it
    assert not journal.claim("s1", a, now=212.0, ttl=60.0)
    journal.release("s1", b)
    assert journal.claim("s1", a, now=213.0, ttl=60.0)


def test_the_claim_of_a_dead_reaper_is_void_at_once(journal: Journal) -> None:
    open_session(journal, "s1", dead_owner())
    assert journal.claim("s1", Claim(dead_owner(), "x"), now=100.0, ttl=600.0)
    assert journal.claim("s1", Claim(ME, "y"), now=101.0, ttl=600.0)


def test_open_sessions_of_live_owners_and_finished_sessions_cannot_be_claimed(
    journal: Journal,
) -> None:
    claim = Claim(ME, "r")
    open_session(journal, "live")
    journal.failed(journal.plan("live", "lease", {}), "vault down")  # pending, yet still open
    assert not journal.claim("live", claim, now=1.0, ttl=60.0)
    open_session(journal, "live-done")
    journal.close_session("live-done", 1.0)  # closed by its live owner with nothing left
    assert not journal.claim("live-done", claim, now=1.0, ttl=60.0)
    assert not journal.claim("nope", claim, now=1.0, ttl=60.0)
    open_session(journal, "done", dead_owner())
    journal.close_session("done", 1.0)
    assert not journal.claim("done", claim, now=1.0, ttl=60.0)


def test_a_closed_session_with_leftovers_is_claimed_even_while_its_owner_lives(
    journal: Journal,
) -> None:
    open_session(journal, "s1")  # owned by this very process, which is alive
    rid = journal.plan("s1", "lease", {})
    journal.created(rid, {"lease_id": "L"})
    journal.failed(rid, "vault down")  # the wipe could not revoke it...
    journal.close_session("s1", 2.0)  # ...and the session was closed with it pending
    a, b = Claim(ME, "a"), Claim(ME, "b")
    assert journal.claim("s1", a, now=3.0, ttl=60.0)
    assert not journal.claim("s1", b, now=4.0, ttl=60.0)  # still one reaper at a time
    assert not journal.finish_reaped("s1", a, 5.0)  # the lease is still pending
    journal.removed(rid)
    assert journal.finish_reaped("s1", a, 6.0)
    record = journal.session("s1")
    assert record is not None
    assert (record.state, record.closed_at, record.claimed_by) == ("closed", 2.0, None)
    assert journal.orphaned() == []
    assert not journal.claim("s1", b, now=7.0, ttl=60.0)


def test_a_reaped_session_closes_only_when_nothing_is_pending(journal: Journal) -> None:
    open_session(journal, "s1", dead_owner())
    rid = journal.plan("s1", "lease", {})
    claim = Claim(ME, "r")
    assert journal.claim("s1", claim, now=1.0, ttl=60.0)
    assert not journal.finish_reaped("s1", claim, 2.0)
    journal.removed(rid)
    assert journal.finish_reaped("s1", claim, 3.0)
    record = journal.session("s1")
    assert record is not None
    assert (record.state, record.closed_at, record.claimed_by) == ("closed", 3.0, None)
    assert journal.orphaned() == []
    assert not journal.claim("s1", claim, now=4.0, ttl=60.0)  # nothing left to do


def test_claims_name_their_process_and_replica() -> None:
    claim = Claim.new("bastion-2")
    assert (claim.owner, claim.replica) == (ME, "bastion-2")
    assert str(claim).startswith(f"bastion-2:{ME.pid}:")
    assert Claim.parse(str(claim)) == claim
    old = Claim.new()  # as written before replica ids
    assert Claim.parse(str(old)) == old
    assert old.replica is None
    assert Claim.parse("garbage") is None


# ------------------------------------------------------------------ several processes
def _worker(
    backend: Backend, name: str, count: int, start: multiprocessing.synchronize.Event
) -> None:
    j = Journal(backend.open("journal.db"))
    open_session(j, name)
    start.wait()
    for i in range(count):
        rid = j.plan(name, "temp_dir", {"path": f"/{name}/{i}"})
        j.created(rid, {"n": i})
        if i % 2 == 0:
            j.removed(rid)
        else:
            j.failed(rid, "busy")
    j.close_session(name, 1.0)
    j.close()


def test_processes_plan_and_remove_concurrently(state_backend: Backend) -> None:
    Journal(state_backend.open("journal.db")).close()
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    names = [f"w{i}" for i in range(4)]
    workers = [context.Process(target=_worker, args=(state_backend, n, 40, start)) for n in names]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    j = Journal(state_backend.open("journal.db"))
    all_ids: list[int] = []
    for name in names:
        resources = j.resources(name)
        all_ids += [r.id for r in resources]
        assert [r.ref for r in resources] == [{"path": f"/{name}/{i}", "n": i} for i in range(40)]
        assert [r.ref["n"] for r in j.pending(name)] == list(range(1, 40, 2))
        assert all(r.status == "failed" and r.attempts == 1 for r in j.pending(name))
    assert len(set(all_ids)) == 160
    j.close()
