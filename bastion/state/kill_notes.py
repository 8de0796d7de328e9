"""Who asked for a session to end, and why: the note its operator is shown.

``bastion sessions kill ID --reason TEXT`` writes a note here (in the state database beside
the journal) before it marks the kill request; the worker that owns the session reads it
when it acts on the request, so the operator reads "root ended this session: TEXT" instead
of only "an administrator ended this session".
"""

from __future__ import annotations

import time
from pathlib import Path

from bastion.state.database import StateDatabase, open_sqlite
from bastion.state.migrations import Migration, migrate

__all__ = ["MIGRATIONS", "KillNotes"]

_COLUMNS = """
    session TEXT PRIMARY KEY,
    requested_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_at {real} NOT NULL
"""
MIGRATIONS = (
    Migration(
        1,
        sqlite=(f"CREATE TABLE IF NOT EXISTS kill_notes ({_COLUMNS.format(real='REAL')})",),
        postgresql=(f"CREATE TABLE kill_notes ({_COLUMNS.format(real='DOUBLE PRECISION')})",),
    ),
)


class KillNotes:
    def __init__(self, target: Path | StateDatabase) -> None:
        """On the journal's SQLite file ``target``, or an open :class:`StateDatabase`,
        which it then owns and closes."""
        self._db: StateDatabase = open_sqlite(target) if isinstance(target, Path) else target
        try:
            migrate(self._db, "kill_notes", MIGRATIONS)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def write(self, session: str, *, by: str, reason: str) -> None:
        # One statement both databases read: a second kill request's note replaces the first.
        self._db.execute(
            "INSERT INTO kill_notes (session, requested_by, reason, requested_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (session) DO UPDATE SET "
            "requested_by = excluded.requested_by, reason = excluded.reason, "
            "requested_at = excluded.requested_at",
            (session, by, reason, time.time()),
        )

    def read(self, session: str) -> tuple[str, str] | None:
        """(who, why) for ``session``'s kill request, or None."""
        row = self._db.execute(
            "SELECT requested_by, reason FROM kill_notes WHERE session = ?", (session,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))
