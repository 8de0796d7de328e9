"""Where operators log in from, and failed logins per address: the guard's login rules' memory,
in the state database, shared by every worker (and, on PostgreSQL, by every replica: a user's
address seen by one replica is not "new" on the next, and failures from one address add up
across replicas).

* ``known_sources``: each (user, address) of a successful login, with when it was first and
  last seen. :meth:`SourceHistory.remember` is one write transaction that locks the table, so
  of two workers (or replicas) seeing a user's new address at once exactly one is told it is
  new.
* ``source_failures``: one row per failed login (address, user, time), pruned past the window
  as new ones come; :meth:`SourceHistory.failed` adds one and counts the window, for that
  address, across users, in one write transaction.
* ``blocked_sources``: addresses whose logins are refused until a time
  (``failures_from_source`` with action ``end``); :meth:`SourceHistory.blocked_until` reads it.

Calls are synchronous and may come from any thread (the caller runs them off the event loop
with ``asyncio.to_thread``); one lock keeps them one at a time on the one connection.
"""

from __future__ import annotations

import threading
from pathlib import Path

from bastion.state.database import StateDatabase, open_sqlite
from bastion.state.migrations import Migration, migrate

__all__ = ["MIGRATIONS", "SourceHistory", "sources_db_path"]

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
_BLOCKED = "source TEXT PRIMARY KEY, until {real} NOT NULL"
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
    Migration(
        2,
        sqlite=(f"CREATE TABLE IF NOT EXISTS blocked_sources ({_BLOCKED.format(real='REAL')})",),
        postgresql=(f"CREATE TABLE blocked_sources ({_BLOCKED.format(real='DOUBLE PRECISION')})",),
    ),
)


def sources_db_path(state_dir: Path) -> Path:
    """The SQLite file of a single node (PostgreSQL: ``StateStores.login_sources``)."""
    return state_dir / "login-sources.db"


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

    def remember(
        self, user: str, source: str, now: float, *, learn: bool = True
    ) -> tuple[bool, bool]:
        """Record a successful login; (whether ``source`` is new for ``user``, whether the
        user had logged in from anywhere before). With ``learn`` False a new address of a
        user seen before is not remembered (its login is being ended); a user's first
        address always is, as there is nothing to compare it with."""
        with self._lock, self._db.write_transaction("known_sources"):
            known = self._db.execute(
                'SELECT COUNT(*) FROM known_sources WHERE "user" = ?', (user,)
            ).fetchone()[0]
            updated = self._db.execute(
                'UPDATE known_sources SET last_seen = ? WHERE "user" = ? AND source = ?',
                (now, user, source),
            ).rowcount
            new = updated == 0
            if new and (learn or known == 0):
                self._insert(user, source, now)
        return new, known > 0

    def allow(self, user: str, source: str, now: float) -> bool:
        """Remember ``source`` for ``user`` as if they had logged in from it (an
        administrator vouching for a new address); False when it was known already."""
        with self._lock, self._db.write_transaction("known_sources"):
            known = self._db.execute(
                'SELECT 1 FROM known_sources WHERE "user" = ? AND source = ?', (user, source)
            ).fetchone()
            if known is None:
                self._insert(user, source, now)
        return known is None

    def _insert(self, user: str, source: str, now: float) -> None:
        self._db.execute(
            'INSERT INTO known_sources ("user", source, first_seen, last_seen) VALUES (?, ?, ?, ?)',
            (user, source, now, now),
        )

    def failed(self, source: str, user: str, now: float, window: float) -> tuple[int, list[str]]:
        """Record a failed login; (failures, the distinct user names tried) from ``source``
        in the window."""
        with self._lock, self._db.write_transaction("source_failures"):
            self._db.execute("DELETE FROM source_failures WHERE at <= ?", (now - window,))
            self._db.execute(
                'INSERT INTO source_failures (source, "user", at) VALUES (?, ?, ?)',
                (source, user, now),
            )
            rows = self._db.execute(
                'SELECT "user", COUNT(*) FROM source_failures WHERE source = ? '
                'GROUP BY "user" ORDER BY MIN(at), "user"',
                (source,),
            ).fetchall()
        return sum(int(n) for _, n in rows), [str(name) for name, _ in rows]

    def block(self, source: str, now: float, until: float) -> None:
        """Refuse logins from ``source`` until ``until`` (a later block wins)."""
        with self._lock, self._db.write_transaction("blocked_sources"):
            self._db.execute("DELETE FROM blocked_sources WHERE until <= ?", (now,))
            self._db.execute(
                "INSERT INTO blocked_sources (source, until) VALUES (?, ?) "
                "ON CONFLICT (source) DO UPDATE SET until = CASE "
                "WHEN excluded.until > blocked_sources.until THEN excluded.until "
                "ELSE blocked_sources.until END",
                (source, until),
            )

    def blocked_until(self, source: str, now: float) -> float | None:
        """When the block on ``source`` ends, if it is blocked at ``now``."""
        with self._lock:
            row = self._db.execute(
                "SELECT until FROM blocked_sources WHERE source = ? AND until > ?", (source, now)
            ).fetchone()
        return None if row is None else float(row[0])
