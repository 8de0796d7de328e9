"""Where operators log in from, and failed logins per address: the guard's login rules' memory,
in SQLite, shared by every worker.

* ``known_sources``: each (user, address) of a successful login, with when it was first and
  last seen. :meth:`SourceHistory.remember` is one write transaction (``BEGIN IMMEDIATE``), so
  of two workers seeing a user's new address at once exactly one is told it is new.
* ``source_failures``: one row per failed login (address, user, time), pruned past the window
  as new ones come; :meth:`SourceHistory.failed` adds one and counts the window, for that
  address, across users.
* ``blocked_sources``: addresses whose logins are refused until a time
  (``failures_from_source`` with action ``end``); :meth:`SourceHistory.blocked_until` reads it.

Calls are synchronous and may come from any thread (the caller runs them off the event loop
with ``asyncio.to_thread``); one lock keeps them one at a time on the one connection.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["SourceHistory", "sources_db_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS known_sources (
    user TEXT NOT NULL,
    source TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (user, source)
);
CREATE TABLE IF NOT EXISTS source_failures (
    source TEXT NOT NULL,
    user TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS source_failures_by_source ON source_failures (source, at);
CREATE TABLE IF NOT EXISTS blocked_sources (
    source TEXT PRIMARY KEY,
    until REAL NOT NULL
);
"""


def sources_db_path(state_dir: Path) -> Path:
    return state_dir / "login-sources.db"


class SourceHistory:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(
            path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        path.chmod(0o600)

    def close(self) -> None:
        self._db.close()

    def remember(
        self, user: str, source: str, now: float, *, learn: bool = True
    ) -> tuple[bool, bool]:
        """Record a successful login; (whether ``source`` is new for ``user``, whether the
        user had logged in from anywhere before). With ``learn`` False a new address of a
        user seen before is not remembered (its login is being ended); a user's first
        address always is, as there is nothing to compare it with."""
        with self._transaction():
            before = self._db.execute(
                "SELECT COUNT(*) FROM known_sources WHERE user = ?", (user,)
            ).fetchone()[0]
            updated = self._db.execute(
                "UPDATE known_sources SET last_seen = ? WHERE user = ? AND source = ?",
                (now, user, source),
            ).rowcount
            new = updated == 0
            if new and (learn or before == 0):
                self._insert(user, source, now)
        return new, before > 0

    def allow(self, user: str, source: str, now: float) -> bool:
        """Remember ``source`` for ``user`` as if they had logged in from it (an
        administrator vouching for a new address); False when it was known already."""
        with self._transaction():
            known = self._db.execute(
                "SELECT 1 FROM known_sources WHERE user = ? AND source = ?", (user, source)
            ).fetchone()
            if known is None:
                self._insert(user, source, now)
        return known is None

    def _insert(self, user: str, source: str, now: float) -> None:
        self._db.execute(
            "INSERT INTO known_sources (user, source, first_seen, last_seen) VALUES (?, ?, ?, ?)",
            (user, source, now, now),
        )

    def failed(self, source: str, user: str, now: float, window: float) -> tuple[int, list[str]]:
        """Record a failed login; (failures, the distinct user names tried) from ``source``
        in the window."""
        with self._transaction():
            self._db.execute("DELETE FROM source_failures WHERE at <= ?", (now - window,))
            self._db.execute(
                "INSERT INTO source_failures (source, user, at) VALUES (?, ?, ?)",
                (source, user, now),
            )
            rows = self._db.execute(
                "SELECT user, COUNT(*) FROM source_failures WHERE source = ? GROUP BY user "
                "ORDER BY MIN(at)",
                (source,),
            ).fetchall()
        return sum(int(n) for _, n in rows), [str(name) for name, _ in rows]

    def block(self, source: str, now: float, until: float) -> None:
        """Refuse logins from ``source`` until ``until`` (a later block wins)."""
        with self._transaction():
            self._db.execute("DELETE FROM blocked_sources WHERE until <= ?", (now,))
            self._db.execute(
                "INSERT INTO blocked_sources (source, until) VALUES (?, ?) "
                "ON CONFLICT (source) DO UPDATE SET until = MAX(until, excluded.until)",
                (source, until),
            )

    def blocked_until(self, source: str, now: float) -> float | None:
        """When the block on ``source`` ends, if it is blocked at ``now``."""
        with self._lock:
            row = self._db.execute(
                "SELECT until FROM blocked_sources WHERE source = ? AND until > ?", (source, now)
            ).fetchone()
        return None if row is None else float(row[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
