"""The approval store's contract: what every implementation of
:class:`bastion.state.approvals.ApprovalStore` must do (SQLite here; issue 12's PostgreSQL
store joins ``STORES``). Races run in separate processes against one database."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from state_backends import INTEGRITY_ERRORS, Backend

from bastion.approval import ApprovalRequest, DebugKey, Status
from bastion.state.approvals import ApprovalStore, SqlApprovalStore, SqliteApprovalStore
from bastion.state.database import SqliteDatabase
from bastion.state.journal import Journal

NOW = 1_800_000_000.0
TOOLBOX = "registry.example.com/toolbox@sha256:" + "a" * 64
APPROVERS = '[{"users":[],"groups":["leads"]}]'


def open_store(backend: Backend) -> ApprovalStore:
    target = backend.open("journal.db")
    if isinstance(target, Path):
        return SqliteApprovalStore(target)
    return SqlApprovalStore(target)


def key(**overrides: object) -> DebugKey:
    fields: dict[str, object] = {
        "cluster": "prod", "namespace": "shop", "pod": "web-1", "pod_uid": "uid-1",
        "container": "app", "mode": "ephemeral", "image": TOOLBOX, "run_as_user": 65532,
        "duration_seconds": 1800, "approvers": APPROVERS,
    }  # fmt: skip
    fields.update(overrides)
    return DebugKey(**fields)  # type: ignore[arg-type]


def request(request_id: str = "r1", **overrides: object) -> ApprovalRequest:
    fields: dict[str, object] = {
        "id": request_id, "requester": "alice", "session": "s1", "key": key(),
        "reason": "INC-7", "grants": ("prod-db",), "expires_after": 600.0,
        "status": Status.PENDING, "requested_at": NOW, "expires_at": NOW + 600,
    }  # fmt: skip
    fields.update(overrides)
    return ApprovalRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture
def path(state_backend: Backend) -> Path:
    """The SQLite store's file (unused on PostgreSQL)."""
    return state_backend.directory / "journal.db"


@pytest.fixture
def store(state_backend: Backend) -> Iterator[ApprovalStore]:
    opened = open_store(state_backend)
    yield opened
    opened.close()


# ---------------------------------------------------------------------------- one process
def test_a_request_is_stored_as_given_and_its_id_is_unique(store: ApprovalStore) -> None:
    made = request()
    store.create(made)
    assert store.get("r1") == made
    assert store.get("nope") is None
    with pytest.raises(ValueError, match="r1 exists already"):
        store.create(replace(made, requester="mallory"))
    assert store.get("r1") == made
    with pytest.raises(ValueError, match="pending, not approved"):
        store.create(request("r2", status=Status.APPROVED, decided_by="alice"))
    assert store.get("r2") is None


def test_open_requests_for_a_requester_match_the_exact_debug(store: ApprovalStore) -> None:
    store.create(request("r1"))
    store.create(request("r2", key=key(pod="web-2")))
    store.create(request("r3", requester="bob"))
    store.create(request("r4", requested_at=NOW + 1, expires_at=NOW + 601))
    assert [r.id for r in store.open_for("alice", key(), NOW)] == ["r1", "r4"]
    assert [r.id for r in store.open_for("alice", key(pod_uid="uid-2"), NOW)] == []
    assert [r.id for r in store.open_for("alice", key(), NOW + 600)] == ["r4"]  # r1 lapsed
    assert store.deny("r1", by="carol", reason="no", now=NOW)
    assert [r.id for r in store.open_for("alice", key(), NOW)] == ["r4"]


def test_an_approval_moves_the_expiry_and_is_given_once(store: ApprovalStore) -> None:
    store.create(request())
    assert store.approve("r1", by="carol", reason="go", now=NOW + 100)
    approved = store.get("r1")
    assert approved is not None
    assert approved.status is Status.APPROVED
    assert (approved.decided_by, approved.decided_at, approved.decision_reason) == (
        "carol",
        NOW + 100,
        "go",
    )
    assert approved.expires_at == NOW + 700  # expires_after from the approval
    assert not store.approve("r1", by="dave", reason="", now=NOW + 101)
    assert not store.deny("r1", by="dave", reason="late", now=NOW + 101)
    assert store.get("r1") == approved


def test_the_store_itself_refuses_a_self_approval(store: ApprovalStore) -> None:
    store.create(request())
    assert not store.approve("r1", by="alice", reason="mine", now=NOW)
    current = store.get("r1")
    assert current is not None
    assert current.status is Status.PENDING


def test_the_database_refuses_an_approved_row_whose_approver_is_its_requester(
    store: ApprovalStore, state_backend: Backend
) -> None:
    store.create(request())
    target = state_backend.open("journal.db")
    db = SqliteDatabase(sqlite3.connect(target)) if isinstance(target, Path) else target
    try:
        with pytest.raises(INTEGRITY_ERRORS, match=r"(?i)check constraint"):
            db.execute("UPDATE approvals SET status = 'approved', decided_by = requester")
    finally:
        db.close()


def test_nothing_is_decided_or_used_past_its_expiry(store: ApprovalStore) -> None:
    store.create(request("r1"))
    assert not store.approve("r1", by="carol", reason="", now=NOW + 600)
    assert not store.deny("r1", by="carol", reason="x", now=NOW + 600)
    store.create(request("r2"))
    assert store.approve("r2", by="carol", reason="", now=NOW)
    assert not store.use("r2", requester="alice", session="s2", now=NOW + 600)


def test_an_approval_is_used_once_by_its_requester_only(store: ApprovalStore) -> None:
    store.create(request())
    assert not store.use("r1", requester="alice", session="s2", now=NOW)  # not approved yet
    assert store.approve("r1", by="carol", reason="", now=NOW)
    assert not store.use("r1", requester="bob", session="s9", now=NOW + 1)
    assert store.use("r1", requester="alice", session="s2", now=NOW + 1)
    assert not store.use("r1", requester="alice", session="s3", now=NOW + 2)
    used = store.get("r1")
    assert used is not None
    assert (used.status, used.used_at, used.used_by_session) == (Status.USED, NOW + 1, "s2")


def test_expiry_marks_each_lapsed_request_once_and_says_what_it_was(
    store: ApprovalStore,
) -> None:
    store.create(request("pending"))
    store.create(request("approved"))
    store.create(request("later", expires_at=NOW + 900))
    store.create(request("denied"))
    assert store.approve("approved", by="carol", reason="", now=NOW - 500)  # until NOW + 100
    assert store.deny("denied", by="carol", reason="no", now=NOW)
    assert store.expire_due(NOW + 50) == []
    expired = store.expire_due(NOW + 700)
    assert [(r.id, r.status) for r in expired] == [
        ("approved", Status.APPROVED),
        ("pending", Status.PENDING),
    ]
    assert store.expire_due(NOW + 700) == []
    statuses = {r: store.get(r).status for r in ("pending", "approved", "later", "denied")}  # type: ignore[union-attr]
    assert statuses == {
        "pending": Status.EXPIRED,
        "approved": Status.EXPIRED,
        "later": Status.PENDING,
        "denied": Status.DENIED,
    }


def test_a_retracted_approval_is_pending_again_as_if_never_given(
    store: ApprovalStore,
) -> None:
    made = request()
    store.create(made)
    assert store.approve("r1", by="carol", reason="go", now=NOW + 100)
    assert not store.retract("r1", by="dave")
    assert store.retract("r1", by="carol")
    assert store.get("r1") == made  # the first expiry back, no decision
    assert not store.use("r1", requester="alice", session="s2", now=NOW + 101)
    assert not store.retract("r1", by="carol")


def test_listing_open_and_recent_requests(store: ApprovalStore) -> None:
    for n in range(4):
        store.create(request(f"r{n}", requested_at=NOW + n, expires_at=NOW + 600 + n))
    assert store.deny("r1", by="carol", reason="no", now=NOW + 10)
    assert [r.id for r in store.open_requests(NOW + 10)] == ["r0", "r2", "r3"]
    assert [r.id for r in store.open_requests(NOW + 601)] == ["r2", "r3"]
    assert [r.id for r in store.recent(NOW + 1, 10)] == ["r3", "r2", "r1"]
    assert [r.id for r in store.recent(NOW, 2)] == ["r3", "r2"]
    store.create(request("b0", requester="bob", requested_at=NOW + 5))
    assert [r.id for r in store.recent(NOW, 2, requester="alice")] == ["r3", "r2"]
    assert [r.id for r in store.recent(NOW, 9, requester="bob")] == ["b0"]


def test_the_journal_and_the_store_share_one_private_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = Journal(path)
    store = SqliteApprovalStore(path)
    try:
        store.create(request())
        assert journal.live_sessions() == []
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        store.close()
        journal.close()
    link = path.parent / "link.db"
    link.symlink_to(path)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        SqliteApprovalStore(link)


def _count_elsewhere(path: Path) -> int:
    """The requests another process sees, opening and closing the file as the CLI does."""
    code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "print(db.execute('SELECT count(*) FROM approvals').fetchone()[0]); db.close()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_commits_stay_visible_when_one_process_opens_the_file_twice(tmp_path: Path) -> None:
    """The broker holds the journal and the store on one file. Opening the second must not
    drop the first's locks, or another process's last close deletes the WAL under them."""
    path = tmp_path / "journal.db"
    journal = Journal(path)
    store = SqliteApprovalStore(path)
    try:
        store.create(request("r1"))
        assert _count_elsewhere(path) == 1
        store.create(request("r2"))
        assert _count_elsewhere(path) == 2
    finally:
        store.close()
        journal.close()


# ---------------------------------------------------------------------------- races
ROUNDS = 40


def _racer(
    backend: Backend,
    role: tuple[str, str],
    start: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue[tuple[str, list[Any]]],
) -> None:
    action, who = role
    store = open_store(backend)
    won: list[Any] = []
    for n in range(ROUNDS):
        start.wait()  # every round a race of its own, not one racer running ahead
        rid = f"r{n}"
        if action == "approve":
            won.append(store.approve(rid, by=who, reason="", now=NOW + n))
        elif action == "deny":
            won.append(store.deny(rid, by=who, reason="no", now=NOW + n))
        elif action == "use":
            # Just before this request's expiry: alone, the use would succeed.
            won.append(store.use(rid, requester="alice", session=who, now=NOW + n - 0.5))
        else:
            # Just after it: alone, the sweep would expire it.
            won.extend(r.id for r in store.expire_due(NOW + n + 0.5))
    store.close()
    results.put((who, won))


def _race(backend: Backend, racers: list[tuple[str, str]]) -> dict[str, list[Any]]:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(racers))
    results: multiprocessing.Queue[tuple[str, list[Any]]] = context.Queue()
    processes = [
        context.Process(target=_racer, args=(backend, role, start, results)) for role in racers
    ]
    for process in processes:
        process.start()
    found = dict(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(30)
    return found


def test_racing_approvers_have_exactly_one_winner_per_request(
    store: ApprovalStore, state_backend: Backend
) -> None:
    for n in range(ROUNDS):
        store.create(request(f"r{n}", expires_at=NOW + 10_000))
    found = _race(state_backend, [("approve", "carol"), ("approve", "dave"), ("deny", "erin")])
    for n in range(ROUNDS):
        winners = [who for who, won in found.items() if won[n]]
        assert len(winners) == 1, (n, winners)
        final = store.get(f"r{n}")
        assert final is not None
        assert final.decided_by == winners[0]
        assert final.status is (Status.DENIED if winners[0] == "erin" else Status.APPROVED)


def test_a_use_racing_an_expiry_has_one_outcome(
    store: ApprovalStore, state_backend: Backend
) -> None:
    for n in range(ROUNDS):
        store.create(request(f"r{n}", expires_after=float(n + 1)))
        # Approved at NOW - 1: the approval of r<n> lapses at NOW + n.
        assert store.approve(f"r{n}", by="carol", reason="", now=NOW - 1)
    found = _race(state_backend, [("use", "s-use"), ("expire", "sweeper")])
    used = {f"r{n}" for n, won in enumerate(found["s-use"]) if won}
    expired = set(found["sweeper"])
    assert used | expired == {f"r{n}" for n in range(ROUNDS)}
    assert not used & expired
    for n in range(ROUNDS):
        final = store.get(f"r{n}")
        assert final is not None
        assert final.status is (Status.USED if f"r{n}" in used else Status.EXPIRED)
