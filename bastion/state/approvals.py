"""Approval requests, stored: the interface every store implements, and its SQLite
implementation in the state database (``<state_dir>/journal.db``, table ``approvals``).

Every change is one conditional statement, so that of two processes racing for a request
exactly one wins, and the loser is told so (``False``) rather than overwriting:

* ``approve``/``deny``: ``... WHERE status = 'pending' AND expires_at > now``; approving
  also requires ``requester != approver`` (and a ``CHECK`` constraint refuses an approved or
  used row whose approver is its requester, whatever the caller does);
* ``use``: ``... WHERE status = 'approved' AND expires_at > now AND requester = ?``;
* ``expire_due``: marks every open request past its expiry, in one write transaction, and
  returns exactly the ones this call marked (with the status they had), so one process, and
  only one, reports each expiry.

A use racing an expiry therefore has one outcome: the use changes the row and the expiry no
longer matches it, or the other way round. Times are the callers' (epoch seconds); every
bastion process of a host reads the same clock.

The interface (:class:`ApprovalStore`) is what the broker and the command line use;
:class:`SqlApprovalStore` implements it on SQLite and on PostgreSQL (several bastion replicas,
issue 12), and ``tests/test_approval_store.py`` is the contract both pass.

Threads: like the journal, a :class:`SqlApprovalStore` holds one connection, used only
from the thread that opened it (the broker's database thread).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from bastion.approval import ApprovalRequest, DebugKey, Status
from bastion.state.database import StateDatabase, open_sqlite
from bastion.state.migrations import Migration, migrate

__all__ = ["MIGRATIONS", "ApprovalStore", "SqlApprovalStore", "SqliteApprovalStore"]

_COLUMNS = """
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    session TEXT NOT NULL,
    cluster TEXT NOT NULL,
    namespace TEXT NOT NULL,
    pod TEXT NOT NULL,
    pod_uid TEXT NOT NULL,
    container TEXT NOT NULL,
    mode TEXT NOT NULL,
    image TEXT NOT NULL,
    run_as_user INTEGER NOT NULL,
    duration_seconds INTEGER NOT NULL,
    approvers TEXT NOT NULL,
    grants TEXT NOT NULL,
    reason TEXT NOT NULL,
    expires_after REAL NOT NULL CHECK (expires_after > 0),
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'used')),
    requested_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    decided_by TEXT,
    decided_at REAL,
    decision_reason TEXT NOT NULL DEFAULT '',
    used_at REAL,
    used_by_session TEXT,
    CHECK (status NOT IN ('approved', 'used') OR decided_by != requester)
"""

MIGRATIONS = (
    Migration(
        1,
        sqlite=(
            "CREATE TABLE IF NOT EXISTS approvals (" + _COLUMNS + ")",
            "CREATE INDEX IF NOT EXISTS approvals_open ON approvals (expires_at) "
            "WHERE status IN ('pending', 'approved')",
            "CREATE INDEX IF NOT EXISTS approvals_requested ON approvals (requested_at)",
        ),
        postgresql=(
            # Epoch seconds need DOUBLE PRECISION: PostgreSQL's REAL is four bytes.
            "CREATE TABLE approvals (" + _COLUMNS.replace(" REAL", " DOUBLE PRECISION") + ")",
            "CREATE INDEX approvals_open ON approvals (expires_at) "
            "WHERE status IN ('pending', 'approved')",
            "CREATE INDEX approvals_requested ON approvals (requested_at)",
        ),
    ),
)

# Rows are read with SELECT *, in the column order of _COLUMNS, which _request unpacks.
_KEY_COLUMNS = (
    "cluster",
    "namespace",
    "pod",
    "pod_uid",
    "container",
    "mode",
    "image",
    "run_as_user",
    "duration_seconds",
    "approvers",
)


class ApprovalStore(Protocol):
    """Where approval requests live; every method is one atomic step."""

    def create(self, request: ApprovalRequest) -> None:
        """Store a new, pending request; ValueError when its id is taken (or it is not
        pending: decisions are made by the conditional updates below, never by a write)."""

    def get(self, request_id: str) -> ApprovalRequest | None: ...

    def open_for(self, requester: str, key: DebugKey, now: float) -> list[ApprovalRequest]:
        """``requester``'s pending and approved requests for exactly ``key`` that have not
        expired at ``now``, oldest first."""

    def open_requests(self, now: float) -> list[ApprovalRequest]:
        """Every pending or approved request not expired at ``now``, oldest first."""

    def recent(
        self, since: float, limit: int, *, requester: str | None = None
    ) -> list[ApprovalRequest]:
        """Requests made at ``since`` or later (by ``requester`` only, when given), whatever
        their status, newest first."""

    def approve(self, request_id: str, *, by: str, reason: str, now: float) -> bool:
        """Approve a pending, unexpired request of someone other than ``by``; its unused
        approval then lapses ``expires_after`` from ``now``. False when this call did not
        change it."""

    def deny(self, request_id: str, *, by: str, reason: str, now: float) -> bool:
        """Deny a pending, unexpired request; False when this call did not change it."""

    def use(self, request_id: str, *, requester: str, session: str, now: float) -> bool:
        """Spend ``requester``'s approved, unexpired request for a debug of ``session``;
        False when this call did not (used, expired, someone else's)."""

    def expire_due(self, now: float) -> list[ApprovalRequest]:
        """Mark every open request past its expiry at ``now`` expired; those this call
        marked, as they were before."""

    def retract(self, request_id: str, *, by: str) -> bool:
        """Take back ``by``'s approval that was not used yet (its record could not be
        written): pending again, as if never approved, until its first expiry. False when
        this call did not change it."""

    def close(self) -> None: ...


def _request(row: tuple[Any, ...]) -> ApprovalRequest:
    (rid, requester, session, cluster, namespace, pod, pod_uid, container, mode, image) = row[:10]
    (run_as_user, duration, approvers, grants, reason, expires_after, status) = row[10:17]
    (requested_at, expires_at, decided_by, decided_at, decision_reason) = row[17:22]
    used_at, used_by_session = row[22:]
    return ApprovalRequest(
        id=rid,
        requester=requester,
        session=session,
        key=DebugKey(
            cluster=cluster,
            namespace=namespace,
            pod=pod,
            pod_uid=pod_uid,
            container=container,
            mode=mode,
            image=image,
            run_as_user=int(run_as_user),
            duration_seconds=int(duration),
            approvers=approvers,
        ),
        reason=reason,
        grants=tuple(json.loads(grants)),
        expires_after=float(expires_after),
        status=Status(status),
        requested_at=float(requested_at),
        expires_at=float(expires_at),
        decided_by=decided_by,
        decided_at=decided_at,
        decision_reason=decision_reason,
        used_at=used_at,
        used_by_session=used_by_session,
    )


class SqlApprovalStore:
    """:class:`ApprovalStore` on an open :class:`StateDatabase` (SQLite or PostgreSQL),
    which it owns (one thread per object)."""

    def __init__(self, db: StateDatabase) -> None:
        self._db = db
        try:
            migrate(db, "approvals", MIGRATIONS)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def create(self, request: ApprovalRequest) -> None:
        if request.status is not Status.PENDING:
            raise ValueError(f"a new approval request is pending, not {request.status}")
        key = request.key
        try:
            self._db.execute(
                "INSERT INTO approvals (id, requester, session, cluster, namespace, pod, "
                "pod_uid, container, mode, image, run_as_user, duration_seconds, approvers, "
                "grants, reason, expires_after, status, requested_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (
                    request.id,
                    request.requester,
                    request.session,
                    key.cluster,
                    key.namespace,
                    key.pod,
                    key.pod_uid,
                    key.container,
                    key.mode,
                    key.image,
                    key.run_as_user,
                    key.duration_seconds,
                    key.approvers,
                    json.dumps(list(request.grants)),
                    request.reason,
                    request.expires_after,
                    request.requested_at,
                    request.expires_at,
                ),
            )
        except self._db.integrity_errors:
            raise ValueError(f"approval request {request.id} exists already") from None

    def get(self, request_id: str) -> ApprovalRequest | None:
        row = self._db.execute("SELECT * FROM approvals WHERE id = ?", (request_id,)).fetchone()
        return None if row is None else _request(row)

    def open_for(self, requester: str, key: DebugKey, now: float) -> list[ApprovalRequest]:
        matches = " AND ".join(f"{column} = ?" for column in _KEY_COLUMNS)
        values = [getattr(key, column) for column in _KEY_COLUMNS]
        rows = self._db.execute(
            f"SELECT * FROM approvals WHERE requester = ? AND {matches} "  # noqa: S608 - column names are ours
            "AND status IN ('pending', 'approved') AND expires_at > ? "
            "ORDER BY requested_at, id",
            (requester, *values, now),
        ).fetchall()
        return [_request(row) for row in rows]

    def open_requests(self, now: float) -> list[ApprovalRequest]:
        rows = self._db.execute(
            "SELECT * FROM approvals WHERE status IN ('pending', 'approved') "
            "AND expires_at > ? ORDER BY requested_at, id",
            (now,),
        ).fetchall()
        return [_request(row) for row in rows]

    def recent(
        self, since: float, limit: int, *, requester: str | None = None
    ) -> list[ApprovalRequest]:
        rows = self._db.execute(
            "SELECT * FROM approvals WHERE requested_at >= ? "
            "AND (CAST(? AS TEXT) IS NULL OR requester = ?) "
            "ORDER BY requested_at DESC, id DESC LIMIT ?",
            (since, requester, requester, limit),
        ).fetchall()
        return [_request(row) for row in rows]

    def approve(self, request_id: str, *, by: str, reason: str, now: float) -> bool:
        cursor = self._db.execute(
            "UPDATE approvals SET status = 'approved', decided_by = :by, decided_at = :now, "
            "decision_reason = :reason, expires_at = :now + expires_after "
            "WHERE id = :id AND status = 'pending' AND expires_at > :now AND requester != :by",
            {"id": request_id, "by": by, "reason": reason, "now": now},
        )
        return cursor.rowcount == 1

    def deny(self, request_id: str, *, by: str, reason: str, now: float) -> bool:
        cursor = self._db.execute(
            "UPDATE approvals SET status = 'denied', decided_by = :by, decided_at = :now, "
            "decision_reason = :reason "
            "WHERE id = :id AND status = 'pending' AND expires_at > :now",
            {"id": request_id, "by": by, "reason": reason, "now": now},
        )
        return cursor.rowcount == 1

    def use(self, request_id: str, *, requester: str, session: str, now: float) -> bool:
        cursor = self._db.execute(
            "UPDATE approvals SET status = 'used', used_at = :now, used_by_session = :session "
            "WHERE id = :id AND status = 'approved' AND expires_at > :now "
            "AND requester = :requester",
            {"id": request_id, "requester": requester, "session": session, "now": now},
        )
        return cursor.rowcount == 1

    def expire_due(self, now: float) -> list[ApprovalRequest]:
        # One write transaction: what is read is exactly what is marked, and another
        # process's sweep waits for the lock, then finds nothing of it left.
        with self._db.write_transaction("approvals"):
            rows = self._db.execute(
                "SELECT * FROM approvals WHERE status IN ('pending', 'approved') "
                "AND expires_at <= ? ORDER BY expires_at, id",
                (now,),
            ).fetchall()
            if rows:
                self._db.execute(
                    "UPDATE approvals SET status = 'expired' "
                    "WHERE status IN ('pending', 'approved') AND expires_at <= ?",
                    (now,),
                )
        return [_request(row) for row in rows]

    def retract(self, request_id: str, *, by: str) -> bool:
        cursor = self._db.execute(
            "UPDATE approvals SET status = 'pending', decided_by = NULL, decided_at = NULL, "
            "decision_reason = '', expires_at = requested_at + expires_after "
            "WHERE id = :id AND status = 'approved' AND decided_by = :by",
            {"id": request_id, "by": by},
        )
        return cursor.rowcount == 1


class SqliteApprovalStore(SqlApprovalStore):
    """:class:`ApprovalStore` in the SQLite state database (``<state_dir>/journal.db``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(open_sqlite(path))
