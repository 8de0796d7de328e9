"""Where operators log in from, and failed logins per address: the guard's login rules' memory,
in SQLite, shared by every worker.

* ``known_sources``: each (user, address) of a successful login, with when it was first and
  last seen. :meth:`SourceHistory.remember` is one ``INSERT ... ON CONFLICT``, so of two
  workers seeing a user's new address at once exactly one is told it is new.
* ``source_failures``: one row per failed login (address, user, time), pruned past the window
  as new ones come; :meth:`SourceHistory.failed` adds one and counts the window, for that
  address, across users.

Calls are synchronous and may come from any thread (the caller runs them off the event loop
with ``asyncio.to_thread``); one lock keeps them one at a time on the one connection.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["SourceHistory"]

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
"""


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

    def remember(self, user: str, source: str, now: float) -> tuple[bool, bool]:
        """Record a successful login; (whether ``source`` is new for ``user``, whether the
        user had logged in from anywhere before)."""
        with self._transaction():
            before = self._db.execute(
                "SELECT COUNT(*) FROM known_sources WHERE user = ?", (user,)
            ).fetchone()[0]
            cursor = self._db.execute(
                "INSERT INTO known_sources (user, source, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?) "
                "ON CONFLICT (user, source) DO UPDATE SET last_seen = excluded.last_seen "
                "RETURNING first_seen = last_seen",
                (user, source, now, now),
            )
            new = bool(cursor.fetchone()[0])
        return new, before > 0

    def failed(self, source: str, user: str, now: float, window: float) -> tuple[int, int]:
        """Record a failed login; (failures, distinct users) from ``source`` in the window."""
        with self._transaction():
            self._db.execute("DELETE FROM source_failures WHERE at <= ?", (now - window,))
            self._db.execute(
                "INSERT INTO source_failures (source, user, at) VALUES (?, ?, ?)",
                (source, user, now),
            )
            count, users = self._db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT user) FROM source_failures WHERE source = ?",
                (source,),
            ).fetchone()
        return int(count), int(users)

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
