"""The state journal: every session and everything it creates, in SQLite, safe across processes.

The rule (DESIGN.md): a resource (a Vault lease, a temp directory, an ephemeral container, a
pod) is written here *before* it is created (:meth:`Journal.plan`), marked when it exists
(:meth:`Journal.created`) and marked again once it is gone (:meth:`Journal.removed`). So
whatever a process had made when it died can be found and removed by the reaper of another
(or the next) process: see :mod:`bastion.session.reaper`.

Sessions are owned by one worker process, identified by an :class:`Owner`: its pid, its start
time in clock ticks since boot (``/proc/PID/stat`` field 22) and the boot id. The pid alone
is not enough, since pids are reused; a pid with the same start time on the same boot is the
same process. The reaper takes over (:meth:`Journal.orphaned`) an open session once its owner
is no longer alive, and a closed session with resources still pending whatever its owner's
state: a worker closes a session only after its wipe, so what the wipe failed to remove is
no longer that worker's to retry.

Each session also names its *replica* (``state.replica_id``). On PostgreSQL, where replicas
share the journal, a process can only be judged alive on its own host: a session of another
replica is reaped only once that replica has stopped beating (:mod:`bastion.state.liveness`),
and then only by the reaper leader (``orphaned(dead_replicas=True)``), which cleans what is
reachable from anywhere (leases, debug containers, pods) and leaves what exists only on the
dead host (its temp directory) *deferred* for that host's own reaper.

Every public method is one atomic step: a single SQL statement in autocommit mode, or a
``BEGIN IMMEDIATE`` transaction when a read must decide a write. Rules are enforced by the
database statement itself (``UPDATE ... WHERE state != 'closed'``), never by a separate read
followed by a write, so racing processes cannot both win. ``synchronous=FULL`` in WAL mode
makes each step durable before the method returns: a plan is on disk before the thing it
plans is created.

Threads: a ``Journal`` holds one ``sqlite3`` connection, which may only be used from the
thread that opened it (Python's ``check_same_thread``; a misuse raises
``sqlite3.ProgrammingError``). Each worker process opens its own ``Journal`` on one dedicated
database thread and makes every call from that thread, so the event loop never waits on an
``fsync``. Several processes (and several ``Journal`` objects) may use one file at once.

The server opens this database at ``<state_dir>/journal.db``.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.state.database import StateDatabase, open_sqlite
from bastion.state.liveness import (
    REPLICAS_TABLE,
    ReplicaRecord,
    beat,
    default_replica_id,
    replica_records,
)
from bastion.state.migrations import Migration, migrate

__all__ = [
    "MIGRATIONS",
    "PENDING",
    "PLANNED",
    "Claim",
    "Journal",
    "Owner",
    "ResourceRecord",
    "SessionRecord",
]

CLOSED = "closed"
OPENED = "authenticated"  # the state a session is opened in (bastion.session.lifecycle)
PLANNED, CREATED, REMOVED, FAILED = "planned", "created", "removed", "failed"
PENDING = (PLANNED, CREATED, FAILED)  # everything that may still exist

_SESSIONS = """
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    source TEXT NOT NULL,
    owner_pid INTEGER NOT NULL,
    owner_started INTEGER NOT NULL,
    owner_boot TEXT NOT NULL,
    state TEXT NOT NULL,
    target TEXT,
    opened_at REAL NOT NULL,
    idle_deadline REAL,
    hard_deadline REAL,
    closed_at REAL,
    kill_requested INTEGER NOT NULL DEFAULT 0 CHECK (kill_requested IN (0, 1)),
    claimed_by TEXT,
    claimed_at REAL
"""
_RESOURCES = """
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL REFERENCES sessions (id),
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('planned', 'created', 'removed', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    updated_at REAL NOT NULL
"""
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS resources_pending ON resources (session) WHERE status != 'removed'",
    "CREATE INDEX IF NOT EXISTS sessions_live ON sessions (state) WHERE state != 'closed'",
)


def _postgres(columns: str) -> str:
    # Epoch seconds need DOUBLE PRECISION (PostgreSQL's REAL is four bytes), a process start
    # time in clock ticks outgrows INTEGER after 248 days of uptime, and "user" is quoted
    # (bare, PostgreSQL reads it as CURRENT_USER).
    return (
        columns.replace(" REAL", " DOUBLE PRECISION")
        .replace("owner_started INTEGER", "owner_started BIGINT")
        .replace("\n    user TEXT", '\n    "user" TEXT')
        .replace(
            "id INTEGER PRIMARY KEY AUTOINCREMENT",
            "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        )
    )


MIGRATIONS = (
    Migration(
        1,
        sqlite=(
            f"CREATE TABLE IF NOT EXISTS sessions ({_SESSIONS})",
            f"CREATE TABLE IF NOT EXISTS resources ({_RESOURCES})",
            *_INDEXES,
        ),
        postgresql=(
            f"CREATE TABLE sessions ({_postgres(_SESSIONS)})",
            f"CREATE TABLE resources ({_postgres(_RESOURCES)})",
            *_INDEXES,
        ),
    ),
    # Replicas (issue 12): each session names its replica, which beats in ``replicas``; a
    # resource left for another host's reaper says why (``deferred``).
    Migration(
        2,
        sqlite=(
            f"CREATE TABLE replicas ({REPLICAS_TABLE})",
            "ALTER TABLE sessions ADD COLUMN replica TEXT",
            "ALTER TABLE resources ADD COLUMN deferred TEXT",
        ),
        postgresql=(
            f"CREATE TABLE replicas ({_postgres(REPLICAS_TABLE)})",
            "ALTER TABLE sessions ADD COLUMN replica TEXT",
            "ALTER TABLE resources ADD COLUMN deferred TEXT",
        ),
    ),
)

# How long a replica may be silent before it counts as dead (state.replica_dead_after).
DEAD_AFTER = 15.0

_PLAN_SQLITE = (
    "INSERT INTO resources (session, kind, ref, status, attempts, updated_at) "
    "SELECT ?, ?, ?, 'planned', 0, ? "
    "WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ? AND state != 'closed') "
    "RETURNING id"
)
_PLAN_POSTGRESQL = _PLAN_SQLITE.replace("'closed')", "'closed' FOR SHARE)")

# Rows are read with SELECT *: the column order is the one in _SESSIONS and _RESOURCES, then
# the columns migration 2 added at the end, which _session and _resource unpack.


# ---------------------------------------------------------------------------- processes
@functools.cache
def current_boot() -> str:
    """This boot's id: start times count from boot, so an owner is only known on its boot."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def process_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (clock ticks since boot); None when no such process
    is running (gone, or exited and not yet waited for).

    PermissionError when the process exists but ``/proc`` hides it from us (``hidepid``):
    then nobody can tell whether it is the owner, and callers must not assume it is dead.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (the command name, in parentheses) may itself hold spaces and ")".
    rest = raw[raw.rfind(b")") + 2 :].split()
    if len(rest) < 20:  # the process went away while we read
        return None
    state, started = rest[0], rest[19]  # fields 3 and 22
    if state in (b"Z", b"X", b"x"):  # exited, waiting to be reaped: not alive
        return None
    return int(started)


@dataclass(frozen=True)
class Owner:
    """A process, identified even across pid reuse: pid, start time and boot id."""

    pid: int
    started: int
    boot: str = field(default_factory=current_boot)

    @classmethod
    def current(cls) -> Owner:
        started = process_start_time(os.getpid())
        if started is None:  # pragma: no cover - only without /proc, which Linux always has
            raise RuntimeError("cannot read this process's start time from /proc")
        return cls(os.getpid(), started, current_boot())

    def is_alive(self) -> bool:
        """True when this very process is still running (not exited, not a reused pid).

        A process we may not look at counts as alive: reaping a live session's resources
        would be worse than leaving a dead one's for an administrator.
        """
        if self.boot != current_boot():
            return False
        try:
            return process_start_time(self.pid) == self.started
        except PermissionError:
            return True


@dataclass(frozen=True)
class Claim:
    """Who is reaping a session: a process (:class:`Owner`) of a replica, and a nonce per
    reaper.

    A claim is void when its process is gone (judged on its own host) or its replica dead
    (judged from another), and expires after a time-to-live when its process is alive but
    the claim was not renewed (a reaper stuck somewhere).
    """

    owner: Owner
    nonce: str
    replica: str | None = None  # None: a claim written before replicas had ids

    @classmethod
    def new(cls, replica: str | None = None) -> Claim:
        return cls(Owner.current(), secrets.token_hex(6), replica)

    def __str__(self) -> str:
        process = f"{self.owner.pid}:{self.owner.started}:{self.owner.boot}:{self.nonce}"
        return process if self.replica is None else f"{self.replica}:{process}"

    @classmethod
    def parse(cls, text: str) -> Claim | None:
        parts = text.split(":")
        replica = parts.pop(0) if len(parts) == 5 else None
        try:
            pid, started, boot, nonce = parts
            return cls(Owner(int(pid), int(started), boot), nonce, replica)
        except ValueError:
            return None


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class SessionRecord:
    id: str
    user: str
    source: str  # ip:port
    owner_pid: int
    owner_started: int
    owner_boot: str
    state: str
    target: dict[str, Any] | None
    opened_at: float
    idle_deadline: float | None
    hard_deadline: float | None
    closed_at: float | None
    kill_requested: bool
    claimed_by: str | None
    claimed_at: float | None
    replica: str | None = None  # None: opened before replicas had ids

    @property
    def owner(self) -> Owner:
        return Owner(self.owner_pid, self.owner_started, self.owner_boot)

    @property
    def closed(self) -> bool:
        return self.state == CLOSED


@dataclass(frozen=True)
class ResourceRecord:
    id: int
    session: str
    kind: str
    ref: dict[str, Any]
    status: str  # planned, created, removed or failed
    attempts: int  # cleanup attempts that failed
    error: str | None  # the last failure
    updated_at: float
    deferred: str | None = None  # why it waits for another host's reaper, if it does


def _session(row: tuple[Any, ...]) -> SessionRecord:
    (sid, user, source, pid, started, boot, state, target, opened, idle, hard, closed) = row[:12]
    kill, claimed_by, claimed_at, replica = row[12:]
    return SessionRecord(
        id=sid,
        user=user,
        source=source,
        owner_pid=int(pid),
        owner_started=int(started),
        owner_boot=boot,
        state=state,
        target=None if target is None else json.loads(target),
        opened_at=float(opened),
        idle_deadline=idle,
        hard_deadline=hard,
        closed_at=closed,
        kill_requested=bool(kill),
        claimed_by=claimed_by,
        claimed_at=claimed_at,
        replica=replica,
    )


def _resource(row: tuple[Any, ...]) -> ResourceRecord:
    rid, session, kind, ref, status, attempts, error, updated_at, deferred = row
    return ResourceRecord(
        id=int(rid),
        session=session,
        kind=kind,
        ref=json.loads(ref),
        status=status,
        attempts=int(attempts),
        error=error,
        updated_at=float(updated_at),
        deferred=deferred,
    )


def _json(value: Mapping[str, Any], what: str) -> str:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"{what} must be a mapping with string keys")
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------------------- the file
# ---------------------------------------------------------------------------- the journal
class Journal:
    """Sessions and their resources; see the module docstring (one thread per object)."""

    def __init__(
        self,
        target: Path | StateDatabase,
        *,
        clock: Callable[[], float] = time.time,
        replica: str | None = None,
        dead_after: float = DEAD_AFTER,
    ) -> None:
        """On the SQLite file ``target``, or an open :class:`StateDatabase`, which it then
        owns and closes. ``replica``: this bastion's ``state.replica_id`` (the host name by
        default); ``dead_after``: its ``state.replica_dead_after`` in seconds."""
        self._clock = clock
        self.replica = replica or default_replica_id()
        self.dead_after = dead_after
        self._db = open_sqlite(target) if isinstance(target, Path) else target
        try:
            migrate(self._db, "journal", MIGRATIONS)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ sessions
    def open_session(
        self,
        id: str,
        *,
        user: str,
        source: str,
        owner: Owner,
        opened_at: float,
        idle_deadline: float | None = None,
        hard_deadline: float | None = None,
        state: str = OPENED,
    ) -> None:
        """Record a new session; ValueError if the id was ever used."""
        if state == CLOSED:
            raise ValueError("a session cannot be opened closed")
        try:
            self._db.execute(
                'INSERT INTO sessions (id, "user", source, owner_pid, owner_started, owner_boot, '
                "state, opened_at, idle_deadline, hard_deadline, replica) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    id,
                    user,
                    source,
                    owner.pid,
                    owner.started,
                    owner.boot,
                    state,
                    opened_at,
                    idle_deadline,
                    hard_deadline,
                    self.replica,
                ),
            )
        except self._db.integrity_errors:
            raise ValueError(f"session {id} already exists in the journal") from None

    def set_state(
        self,
        id: str,
        state: str,
        *,
        target: Mapping[str, Any] | None = None,
        idle_deadline: float | None = None,
        hard_deadline: float | None = None,
    ) -> None:
        """Move a session to ``state``; None leaves a field as it is, ``target={}`` clears it.

        Nothing leaves ``closed``: ValueError. Closing is :meth:`close_session` (it records
        when); ``set_state(id, "closed")`` on a session already closed changes nothing.
        """
        if state == CLOSED:
            record = self.session(id)
            if record is None:
                raise KeyError(f"no session {id} in the journal")
            if not record.closed:
                raise ValueError(f"session {id}: close it with close_session, not set_state")
            return
        cursor = self._db.execute(
            "UPDATE sessions SET state = :state, "
            "target = CASE WHEN :keep THEN target ELSE :target END, "
            "idle_deadline = coalesce(:idle, idle_deadline), "
            "hard_deadline = coalesce(:hard, hard_deadline) "
            "WHERE id = :id AND state != 'closed'",
            {
                "state": state,
                "keep": target is None,
                "target": _json(target, "target") if target else None,
                "idle": idle_deadline,
                "hard": hard_deadline,
                "id": id,
            },
        )
        if cursor.rowcount == 1:
            return
        if self.session(id) is None:
            raise KeyError(f"no session {id} in the journal")
        raise ValueError(f"session {id} is closed: nothing leaves closed (wanted {state})")

    def close_session(self, id: str, closed_at: float) -> None:
        """Mark the session closed (once: closing again keeps the first time)."""
        cursor = self._db.execute(
            "UPDATE sessions SET state = 'closed', closed_at = coalesce(closed_at, ?) WHERE id = ?",
            (closed_at, id),
        )
        if cursor.rowcount != 1:
            raise KeyError(f"no session {id} in the journal")

    def session(self, id: str) -> SessionRecord | None:
        row = self._db.execute("SELECT * FROM sessions WHERE id = ?", (id,)).fetchone()
        return None if row is None else _session(row)

    def live_sessions(self) -> list[SessionRecord]:
        """Sessions not closed, oldest first (whoever owns them, dead or alive)."""
        rows = self._db.execute(
            "SELECT * FROM sessions WHERE state != 'closed' ORDER BY opened_at, id"
        ).fetchall()
        return [_session(row) for row in rows]

    # ------------------------------------------------------------------ admin kills
    def request_kill(self, id: str) -> bool:
        """Ask the session's owner to end it; True if a live session of that id exists."""
        cursor = self._db.execute(
            "UPDATE sessions SET kill_requested = 1 WHERE id = ? AND state != 'closed'", (id,)
        )
        return cursor.rowcount == 1

    def kill_requests(self, owner: Owner) -> list[str]:
        """Ids of ``owner``'s live sessions that an administrator asked to end."""
        rows = self._db.execute(
            "SELECT id FROM sessions WHERE kill_requested = 1 AND state != 'closed' "
            "AND owner_pid = ? AND owner_started = ? AND owner_boot = ? ORDER BY opened_at, id",
            (owner.pid, owner.started, owner.boot),
        ).fetchall()
        return [str(row[0]) for row in rows]

    # ------------------------------------------------------------------ resources
    def plan(self, session: str, kind: str, ref: Mapping[str, Any]) -> int:
        """Record a resource *before* creating it; returns its id. ValueError when the
        session is closed or unknown: nothing is created for a session that has ended."""
        if not kind:
            raise ValueError("a resource needs a kind")
        # On PostgreSQL the session's row is locked for the check: a close committing
        # meanwhile is waited for and seen, as SQLite's single writer would order the two.
        row = self._db.execute(
            _PLAN_POSTGRESQL if self._db.dialect == "postgresql" else _PLAN_SQLITE,
            (session, kind, _json(ref, "ref"), self._clock(), session),
        ).fetchone()
        if row is None:
            state = "is closed" if self.session(session) is not None else "does not exist"
            raise ValueError(f"session {session} {state}: cannot plan a {kind}")
        return int(row[0])

    def created(self, resource_id: int, ref: Mapping[str, Any] | None = None) -> None:
        """The planned resource now exists; ``ref`` adds what became known (key by key)."""
        extra = {} if ref is None else json.loads(_json(ref, "ref"))
        with self._db.write_transaction("resources"):
            row = self._db.execute(
                "SELECT status, ref FROM resources WHERE id = ?", (resource_id,)
            ).fetchone()
            if row is None:
                raise KeyError(f"no resource {resource_id} in the journal")
            if row[0] != PLANNED:
                raise ValueError(f"resource {resource_id} is {row[0]}, not planned")
            merged = {**json.loads(row[1]), **extra}
            self._db.execute(
                "UPDATE resources SET status = 'created', ref = ?, updated_at = ? WHERE id = ?",
                (_json(merged, "ref"), self._clock(), resource_id),
            )

    def removed(self, resource_id: int) -> None:
        """The resource is gone (or was never made). Removing again changes nothing."""
        cursor = self._db.execute(
            "UPDATE resources SET status = 'removed', updated_at = ? "
            "WHERE id = ? AND status != 'removed'",
            (self._clock(), resource_id),
        )
        if cursor.rowcount == 0 and self._status(resource_id) is None:
            raise KeyError(f"no resource {resource_id} in the journal")

    def failed(self, resource_id: int, error: str) -> None:
        """A cleanup attempt failed: count it; the resource stays pending for the reaper."""
        cursor = self._db.execute(
            "UPDATE resources SET status = 'failed', attempts = attempts + 1, error = ?, "
            "updated_at = ? WHERE id = ? AND status != 'removed'",
            (error, self._clock(), resource_id),
        )
        if cursor.rowcount == 1:
            return
        if self._status(resource_id) is None:
            raise KeyError(f"no resource {resource_id} in the journal")
        raise ValueError(f"resource {resource_id} was removed already; it cannot fail now")

    def pending(self, session: str) -> list[ResourceRecord]:
        """The session's resources that may still exist, in creation (plan) order."""
        rows = self._db.execute(
            "SELECT * FROM resources WHERE session = ? AND status != 'removed' ORDER BY id",
            (session,),
        ).fetchall()
        return [_resource(row) for row in rows]

    def resources(self, session: str) -> list[ResourceRecord]:
        """All of the session's resources, removed ones included, in creation order."""
        rows = self._db.execute(
            "SELECT * FROM resources WHERE session = ? ORDER BY id",
            (session,),
        ).fetchall()
        return [_resource(row) for row in rows]

    def _status(self, resource_id: int) -> str | None:
        row = self._db.execute(
            "SELECT status FROM resources WHERE id = ?", (resource_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def defer(self, resource_id: int, reason: str) -> None:
        """Note why a pending resource is left for another host's reaper; it stays pending."""
        self._db.execute(
            "UPDATE resources SET deferred = ?, updated_at = ? "
            "WHERE id = ? AND status != 'removed'",
            (reason, self._clock(), resource_id),
        )

    # ------------------------------------------------------------------ replicas
    def heartbeat(self) -> None:
        """Say this replica is alive now (:func:`bastion.state.liveness.beat`).
        ReplicaIdInUse on PostgreSQL when another boot still beats under this id; on SQLite
        (one host) another boot is this host before a reboot, whose row is taken over."""
        shared = self._db.dialect == "postgresql"
        beat(
            self._db,
            self.replica,
            current_boot(),
            now=self._clock(),
            dead_after=self.dead_after if shared else 0.0,
        )

    def replicas(self) -> list[ReplicaRecord]:
        """Every replica that ever beat, by id."""
        return replica_records(self._db)

    # ------------------------------------------------------------------ orphans
    def orphaned(
        self, *, dead_replicas: bool = False
    ) -> list[tuple[SessionRecord, list[ResourceRecord]]]:
        """Sessions left to the reaper, with their pending resources: open sessions whose
        owner is gone, and closed sessions with resources still pending, whoever owns them
        (the owner's wipe ran and closed it: what is left is not the owner's to retry).
        Open sessions of a live owner are never listed, nor, on PostgreSQL, any session of
        another replica (:meth:`_elsewhere`).

        ``dead_replicas`` (the reaper leader, PostgreSQL): instead, the sessions of *other*
        replicas that stopped beating ``dead_after`` ago, open or with resources pending.
        One consistent snapshot of the database.
        """
        with self._db.snapshot():
            rows = self._db.execute(
                "SELECT * FROM sessions WHERE state != 'closed' "
                "OR id IN (SELECT session FROM resources "
                "WHERE status != 'removed') ORDER BY opened_at, id"
            ).fetchall()
            candidates = [_session(row) for row in rows]
            if dead_replicas:
                now = self._clock()
                beats = {r.id: r.heartbeat_at for r in self.replicas()}
                left = [
                    s
                    for s in candidates
                    if self._elsewhere(s) and _dead(s.replica, beats, now - self.dead_after)
                ]
            else:
                left = [
                    s
                    for s in candidates
                    if not self._elsewhere(s) and (s.closed or not s.owner.is_alive())
                ]
            return [(s, self.pending(s.id)) for s in left]

    def claim(self, session: str, claim: Claim, *, now: float, ttl: float) -> bool:
        """Take (or renew) the right to reap ``session``; False when another live reaper
        holds a claim younger than ``ttl``, when the session is open and its owner alive, or
        when it needs no reaping any more (closed with nothing pending, or unknown).

        A closed session with resources pending may be claimed whether its owner is alive or
        not: the owner's wipe is over. A session of another replica (PostgreSQL) may be
        claimed only once that replica is dead: this host cannot see its processes. Only the
        holder of the claim cleans the session's resources, one at a time, newest first; a
        reaper renews its claim before each one.
        """
        with self._db.write_transaction("replicas", "sessions", "resources"):
            row = self._db.execute(
                "SELECT * FROM sessions WHERE id = :id AND "
                "(state != 'closed' OR EXISTS (SELECT 1 FROM resources "
                "WHERE session = :id AND status != 'removed'))",
                {"id": session},
            ).fetchone()
            if row is None:
                return False
            record = _session(row)
            if self._elsewhere(record):
                if not self._replica_dead(record.replica, now):
                    return False
            # Never reap an open session of a live process: it may still be using it.
            elif not record.closed and record.owner.is_alive():
                return False
            holder = record.claimed_by
            if holder is not None and holder != str(claim):
                other = Claim.parse(holder)
                fresh = record.claimed_at is not None and record.claimed_at > now - ttl
                if fresh and (other is None or self._holder_alive(other, now)):
                    return False
            self._db.execute(
                "UPDATE sessions SET claimed_by = ?, claimed_at = ? WHERE id = ?",
                (str(claim), now, session),
            )
            return True

    def release(self, session: str, claim: Claim) -> None:
        """Give up the claim on ``session`` (a no-op unless ``claim`` holds it)."""
        self._db.execute(
            "UPDATE sessions SET claimed_by = NULL, claimed_at = NULL "
            "WHERE id = ? AND claimed_by = ?",
            (session, str(claim)),
        )

    def finish_reaped(
        self, session: str, claim: Claim, closed_at: float, *, deferred_may_stay: bool = False
    ) -> bool:
        """Close a reaped session and drop the claim, if ``claim`` holds it and nothing is
        pending (``deferred_may_stay``: nothing but resources deferred to another host's
        reaper, :meth:`defer`); True when this call did so."""
        cursor = self._db.execute(
            "UPDATE sessions SET state = 'closed', closed_at = coalesce(closed_at, ?), "
            "claimed_by = NULL, claimed_at = NULL "
            "WHERE id = ? AND claimed_by = ? AND NOT EXISTS (SELECT 1 FROM resources "
            "WHERE session = ? AND status != 'removed' AND (deferred IS NULL OR NOT ?))",
            (closed_at, session, str(claim), session, deferred_may_stay),
        )
        return cursor.rowcount == 1

    def _elsewhere(self, record: SessionRecord) -> bool:
        """Whether ``record`` belongs to another replica while the journal is shared by
        replicas (PostgreSQL): its processes cannot be seen from this host, and some of its
        resources (its temp directory) exist only on the host that made them.

        A session of this replica is this host's, whatever boot opened it (after a reboot,
        its processes are dead and its temp directory is here). A session from before
        replica ids is judged by its boot, as then.
        """
        if self._db.dialect != "postgresql":
            return False
        if record.replica is None:
            return record.owner.boot != current_boot()
        return record.replica != self.replica

    def _replica_dead(self, replica: str | None, now: float) -> bool:
        """Whether ``replica`` stopped beating ``dead_after`` before ``now``. A session from
        before replica ids has nobody to judge it dead: never (an administrator ends it)."""
        if replica is None:
            return False
        row = self._db.execute(
            "SELECT heartbeat_at FROM replicas WHERE id = ?", (replica,)
        ).fetchone()
        beats = {} if row is None else {replica: float(row[0])}
        return _dead(replica, beats, now - self.dead_after)

    def _holder_alive(self, other: Claim, now: float) -> bool:
        """Whether the reaper holding ``other`` may still be working."""
        here = (
            self._db.dialect != "postgresql"
            or other.replica == self.replica
            or (other.replica is None and other.owner.boot == current_boot())
        )
        if here:
            return other.owner.is_alive()
        if other.replica is None:  # another host's, from before replica ids: until its ttl
            return True
        return not self._replica_dead(other.replica, now)


def _dead(replica: str | None, beats: Mapping[str, float], silent_since: float) -> bool:
    """Whether ``replica`` has not beaten after ``silent_since``; ``beats``: last beat by
    replica id. No row: it never beat under this schema, or the row was deleted by hand."""
    if replica is None:
        return False
    last = beats.get(replica)
    return last is None or last <= silent_since
