"""Who asked for a session to end, and why: the note its operator is shown.

``bastion sessions kill ID --reason TEXT`` writes a note here (in the state database beside
the journal) before it marks the kill request; the worker that owns the session reads it
when it acts on the request, so the operator reads "root ended this session: TEXT" instead
of only "an administrator ended this session".
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from bastion.state.journal import open_state_db

__all__ = ["KillNotes"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kill_notes (
    session TEXT PRIMARY KEY,
    requested_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_at REAL NOT NULL
);
"""


class KillNotes:
    def __init__(self, path: Path) -> None:
        self._db: sqlite3.Connection = open_state_db(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def write(self, session: str, *, by: str, reason: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO kill_notes VALUES (?, ?, ?, ?)",
            (session, by, reason, time.time()),
        )

    def read(self, session: str) -> tuple[str, str] | None:
        """(who, why) for ``session``'s kill request, or None."""
        row = self._db.execute(
            "SELECT requested_by, reason FROM kill_notes WHERE session = ?", (session,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))
