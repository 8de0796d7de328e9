"""Where operators log in from, and failed logins per address: the guard's login rules' memory,
in the state database, shared by every worker (and, on PostgreSQL, by every replica: a user's
address seen by one replica is not "new" on the next).

* ``known_sources``: each (user, address) of a successful login, with when it was first and
  last seen. :meth:`SourceHistory.remember` runs in a write transaction that locks the table,
  so of two workers (or replicas) seeing a user's new address at once exactly one is told it
  is new.
* ``source_failures``: one row per failed login (address, user, time), pruned past the window
  as new ones come; :meth:`SourceHistory.failed` adds one and counts the window, for that
  address, across users, in one write transaction: the count a replica reads includes every
  failure committed before it, on any replica.

Calls are synchronous and may come from any thread (the caller runs them off the event loop
with ``asyncio.to_thread``); one lock keeps them one at a time on the one connection.
"""

from __future__ import annotations

import threading
from pathlib import Path

from bastion.state.database import StateDatabase, open_sqlite
from bastion.state.migrations import Migration, migrate

__all__ = ["MIGRATIONS", "SourceHistory"]

_KNOWN = """
    "user" TEXT NOT NULL,
    source TEXT NOT NULL,
    first_seen {real} NOT NULL,
    last_seen {real} NOT NULL,
    PRIMARY KEY ("user", source)
"""
_FAILURES = """
    source TEXT NOT NULL,
    "user" TEXT NOT NULL,
    at {real} NOT NULL
"""
_INDEX = "source_failures_by_source ON source_failures (source, at)"
MIGRATIONS = (
    Migration(
        1,
        # IF NOT EXISTS: a login-sources.db made before versioning is adopted as it is.
        sqlite=(
            f"CREATE TABLE IF NOT EXISTS known_sources ({_KNOWN.format(real='REAL')})",
            f"CREATE TABLE IF NOT EXISTS source_failures ({_FAILURES.format(real='REAL')})",
            f"CREATE INDEX IF NOT EXISTS {_INDEX}",
        ),
        postgresql=(
            f"CREATE TABLE known_sources ({_KNOWN.format(real='DOUBLE PRECISION')})",
            f"CREATE TABLE source_failures ({_FAILURES.format(real='DOUBLE PRECISION')})",
            f"CREATE INDEX {_INDEX}",
        ),
    ),
)


class SourceHistory:
    def __init__(self, target: Path | StateDatabase) -> None:
        """On the SQLite file ``target`` (``login-sources.db``), or an open
        :class:`StateDatabase` (PostgreSQL), which it then owns and closes."""
        self._db: StateDatabase = (
            open_sqlite(target, any_thread=True) if isinstance(target, Path) else target
        )
        self._lock = threading.Lock()
        try:
            migrate(self._db, "login_sources", MIGRATIONS)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def remember(self, user: str, source: str, now: float) -> tuple[bool, bool]:
        """Record a successful login; (whether ``source`` is new for ``user``, whether the
        user had logged in from anywhere before)."""
        with self._lock, self._db.write_transaction("known_sources"):
            known = self._db.execute(
                'SELECT source FROM known_sources WHERE "user" = ?', (user,)
            ).fetchall()
            new = source not in {row[0] for row in known}
            self._db.execute(
                'INSERT INTO known_sources ("user", source, first_seen, last_seen) '
                'VALUES (?, ?, ?, ?) ON CONFLICT ("user", source) '
                "DO UPDATE SET last_seen = excluded.last_seen",
                (user, source, now, now),
            )
        return new, bool(known)

    def failed(self, source: str, user: str, now: float, window: float) -> tuple[int, int]:
        """Record a failed login; (failures, distinct users) from ``source`` in the window."""
        with self._lock, self._db.write_transaction("source_failures"):
            self._db.execute("DELETE FROM source_failures WHERE at <= ?", (now - window,))
            self._db.execute(
                'INSERT INTO source_failures (source, "user", at) VALUES (?, ?, ?)',
                (source, user, now),
            )
            count, users = self._db.execute(
                'SELECT COUNT(*), COUNT(DISTINCT "user") FROM source_failures WHERE source = ?',
                (source,),
            ).fetchone()
        return int(count), int(users)
