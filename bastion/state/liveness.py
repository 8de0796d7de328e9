"""Which bastion replicas are alive, and which one reaps for the dead (issue 12).

**Heartbeats.** Every worker of a replica writes the replica's row in ``replicas`` (a table
of the journal's component, migration 2) every ``state.heartbeat_interval``: its id
(``state.replica_id``, the host name by default), the boot it runs on, and when it last beat.
A replica whose row is older than ``state.replica_dead_after`` is dead: all its workers
(and its supervisor) are gone, or it lost the database for that long, which for the other
replicas is the same thing. The beat is one statement, an upsert that refuses to take over
the row of another boot that is still beating (:class:`ReplicaIdInUse`): two hosts
configured with one id would otherwise reap each other's sessions as their own.

Freshness is judged against the reader's clock, so replicas need synchronised clocks (they
already do for TOTP): a skew of a second against a deadline of fifteen is harmless.

**Leadership.** On PostgreSQL, the replicas' workers compete for one session-level advisory
lock (:class:`ReaperLeadership`, ``pg_try_advisory_lock``) on a connection of their own. The
holder leads: it alone reaps the sessions of dead replicas. If the leader dies, its
connection closes and the server releases the lock, so another worker takes it at its next
heartbeat. Leadership is an economy, not the safety: should two workers both believe they
lead (a leader whose connection broke while it was mid-sweep), each session is still reaped
under a claim (:meth:`bastion.state.journal.Journal.claim`), a conditional write in a
transaction that locks the journal's tables, so only one of them cleans it; the cleaners are
idempotent ("already gone" is a success). On SQLite (one host) there is nothing to lead:
every worker's reaper sees every session of the host, as before.
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass
from typing import Any

from bastion.errors import BastionError
from bastion.state.database import (
    PostgresDatabase,
    PostgresLocation,
    StateDatabase,
    connect_postgres,
)

__all__ = [
    "REPLICA_ID",
    "ReaperLeadership",
    "ReplicaIdInUse",
    "ReplicaRecord",
    "beat",
    "default_replica_id",
    "replica_records",
]

log = logging.getLogger(__name__)

# No ':' (a claim is written "replica:pid:started:boot:nonce"), nothing a terminal or a
# file name would read specially (it names the replica's audit log), no case to mistake.
REPLICA_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

REPLICAS_TABLE = """
    id TEXT PRIMARY KEY,
    boot TEXT NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
"""

# pg_try_advisory_lock(int4, int4): "bast" and "reap", so that pg_locks names it plainly
# (classid, objid) and it cannot collide with the migrations' int8 key.
_LOCK = (int.from_bytes(b"bast", "big"), int.from_bytes(b"reap", "big") & 0x7FFFFFFF)


def default_replica_id() -> str:
    """This host's name up to its first dot (unique per host in any sane deployment), made
    to fit REPLICA_ID: lower case, other characters as '-'; ``bastion`` when nothing fits."""
    label = socket.gethostname().split(".", 1)[0].lower()
    fitted = re.sub(r"[^a-z0-9-]", "-", label).lstrip("-")[:63]
    return fitted or "bastion"


class ReplicaIdInUse(BastionError):
    """Another host (or boot) is beating under this replica id."""

    exit_code = 2


@dataclass(frozen=True)
class ReplicaRecord:
    id: str
    boot: str
    started_at: float  # the first heartbeat of this boot
    heartbeat_at: float

    def alive(self, now: float, dead_after: float) -> bool:
        return self.heartbeat_at > now - dead_after


def beat(db: StateDatabase, replica: str, boot: str, *, now: float, dead_after: float) -> None:
    """Say that ``replica`` (running on ``boot``) is alive at ``now``.

    ReplicaIdInUse when the row belongs to another boot whose last beat is younger than
    ``dead_after``: the same id configured on two hosts (or a reboot faster than the
    deadline, which a restart after ``dead_after`` resolves).
    """
    row = db.execute(
        "INSERT INTO replicas (id, boot, started_at, heartbeat_at) "
        "VALUES (:id, :boot, :now, :now) "
        "ON CONFLICT (id) DO UPDATE SET boot = excluded.boot, "
        "heartbeat_at = excluded.heartbeat_at, "
        "started_at = CASE WHEN replicas.boot = excluded.boot THEN replicas.started_at "
        "ELSE excluded.started_at END "
        "WHERE replicas.boot = excluded.boot OR replicas.heartbeat_at <= :dead_before "
        "RETURNING id",
        {"id": replica, "boot": boot, "now": now, "dead_before": now - dead_after},
    ).fetchone()
    if row is None:
        raise ReplicaIdInUse(
            f"replica id {replica!r} is in use by another running bastion (another host or "
            "boot beats under it)",
            hint="give each replica its own state.replica_id",
        )


def replica_records(db: StateDatabase) -> list[ReplicaRecord]:
    rows = db.execute(
        "SELECT id, boot, started_at, heartbeat_at FROM replicas ORDER BY id"
    ).fetchall()
    return [ReplicaRecord(str(r[0]), str(r[1]), float(r[2]), float(r[3])) for r in rows]


class ReaperLeadership:
    """The reaper leader's advisory lock, on a PostgreSQL connection of its own (one thread
    per object, like every store)."""

    def __init__(self, location: PostgresLocation) -> None:
        self._location = location
        self._db: PostgresDatabase | None = None
        self._held = False

    def hold(self) -> bool:
        """Whether this process leads now: checks the lock it had is still held on the
        server (a broken connection lost it), or tries to take it. A database that cannot
        be reached is not leading: BackendUnavailable and such propagate."""
        try:
            if self._db is None:
                self._db = connect_postgres(self._location)
            self._held = self._still_held() if self._held else self._take()
        except BaseException:
            self._held = False
            self.close()
            raise
        return self._held

    def _take(self) -> bool:
        if self._db is None:  # pragma: no cover - hold() connects first
            raise RuntimeError("no connection")
        row: Any = self._db.execute("SELECT pg_try_advisory_lock(?, ?)", _LOCK).fetchone()
        return bool(row[0])

    def _still_held(self) -> bool:
        # A lock is the connection's: after a reconnect (PostgresDatabase opens a new
        # connection once the old one broke) pg_backend_pid() is another backend's.
        if self._db is None:  # pragma: no cover - hold() connects first
            raise RuntimeError("no connection")
        row: Any = self._db.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND pid = pg_backend_pid() AND objsubid = 2 "
            "AND classid = CAST(? AS oid) AND objid = CAST(? AS oid)",
            _LOCK,
        ).fetchone()
        return int(row[0]) > 0 or self._take()

    def close(self) -> None:
        """Give leadership up: unlocked at once when the connection works (a closed
        connection's lock is released too, but only once its server process has exited)."""
        held, self._held = self._held, False
        if self._db is None:
            return
        db, self._db = self._db, None
        try:
            if held and not db.connection.broken:
                db.execute("SELECT pg_advisory_unlock(?, ?)", _LOCK)
        except Exception:  # the close below releases it too
            log.warning("the reaper leadership's lock was not released at once", exc_info=True)
        finally:
            db.close()
