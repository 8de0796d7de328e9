"""The notice board: what every operator's console must show while it lasts (a break-glass
session in progress; later approval requests and who watches whom), in the state journal's
database so that every worker process sees the same board.

A notice is posted once (``post``) and is in force until it is ended (``end``), until it
expires (``expires_at``), or, when it belongs to a session, until that session is closed in
the journal, however it closes: its own wipe, an administrator's kill, or the reaper after
the worker died. So a banner can never outlive its session, even when nothing was left
running to take it down.

``audience`` narrows who sees a notice (a list of user names; None: every operator).

Threads: one ``sqlite3`` connection per object, used from the thread that opened it (as
:class:`bastion.state.journal.Journal`). The journal's ``sessions`` table must exist: open
the :class:`~bastion.state.journal.Journal` on the file first.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.state.database import SqliteDatabase, StateDatabase
from bastion.state.migrations import Migration, migrate

__all__ = ["MIGRATIONS", "NoticeBoard", "NoticeRecord"]

_COLUMNS = """
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    user TEXT NOT NULL,
    session TEXT,
    text TEXT NOT NULL,
    audience TEXT,
    posted_at REAL NOT NULL,
    expires_at REAL,
    ended_at REAL
"""
_INDEX = "CREATE INDEX IF NOT EXISTS notices_open ON notices (posted_at) WHERE ended_at IS NULL"

MIGRATIONS = (
    Migration(
        1,
        sqlite=(f"CREATE TABLE IF NOT EXISTS notices ({_COLUMNS})", _INDEX),
        postgresql=(
            # DOUBLE PRECISION for epoch seconds; "user" quoted (bare, it is CURRENT_USER).
            "CREATE TABLE notices ("
            + _COLUMNS.replace(" REAL", " DOUBLE PRECISION").replace(
                "\n    user TEXT", '\n    "user" TEXT'
            )
            + ")",
            _INDEX,
        ),
    ),
)


@dataclass(frozen=True)
class NoticeRecord:
    id: str
    kind: str
    user: str
    session: str | None
    text: str
    audience: tuple[str, ...] | None  # None: every operator
    posted_at: float
    expires_at: float | None = None

    def visible_to(self, user: str) -> bool:
        return self.audience is None or user in self.audience


class NoticeBoard:
    def __init__(self, target: Path | StateDatabase) -> None:
        """On the journal's SQLite file ``target``, or an open :class:`StateDatabase`,
        which it then owns and closes."""
        if isinstance(target, Path):
            connection = sqlite3.connect(target, timeout=10.0, isolation_level=None)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
            except BaseException:
                connection.close()
                raise
            target = SqliteDatabase(connection)
        self._db: StateDatabase = target
        try:
            migrate(self._db, "notices", MIGRATIONS)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def post(self, notice: NoticeRecord) -> None:
        """Put ``notice`` up (durable when this returns); ValueError if its id was used."""
        try:
            self._db.execute(
                'INSERT INTO notices (id, kind, "user", session, text, audience, posted_at, '
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    notice.id,
                    notice.kind,
                    notice.user,
                    notice.session,
                    notice.text,
                    None if notice.audience is None else json.dumps(list(notice.audience)),
                    notice.posted_at,
                    notice.expires_at,
                ),
            )
        except self._db.integrity_errors:
            raise ValueError(f"notice {notice.id} was posted before") from None

    def end(self, notice_id: str, at: float) -> bool:
        """Take a notice down; False when it was down already (or never up)."""
        cursor = self._db.execute(
            "UPDATE notices SET ended_at = ? WHERE id = ? AND ended_at IS NULL", (at, notice_id)
        )
        return cursor.rowcount == 1

    def tidy(self, now: float) -> int:
        """Mark ended the notices no longer in force (expired, or of a session that is closed
        or unknown), so that the board's open rows stay few however long it runs; returns
        how many. What is shown does not depend on it: :meth:`in_force` checks the same."""
        cursor = self._db.execute(
            "UPDATE notices SET ended_at = :now WHERE ended_at IS NULL AND ("
            "(expires_at IS NOT NULL AND expires_at <= :now) OR (session IS NOT NULL AND "
            "session NOT IN (SELECT id FROM sessions WHERE state != 'closed')))",
            {"now": now},
        )
        return cursor.rowcount

    def in_force(self, now: float) -> list[NoticeRecord]:
        """The notices up at ``now``, oldest first: not ended, not expired, and of no session
        or of one the journal has not closed."""
        rows = self._db.execute(
            'SELECT n.id, n.kind, n."user", n.session, n.text, n.audience, n.posted_at, '
            "n.expires_at FROM notices n LEFT JOIN sessions s ON s.id = n.session "
            "WHERE n.ended_at IS NULL AND (n.expires_at IS NULL OR n.expires_at > ?) "
            "AND (n.session IS NULL OR (s.id IS NOT NULL AND s.state != 'closed')) "
            "ORDER BY n.posted_at, n.id",
            (now,),
        ).fetchall()
        return [_record(row) for row in rows]


def _record(row: tuple[Any, ...]) -> NoticeRecord:
    nid, kind, user, session, text, audience, posted, expires = row
    names = None if audience is None else tuple(str(n) for n in json.loads(str(audience)))
    return NoticeRecord(
        id=str(nid),
        kind=str(kind),
        user=str(user),
        session=None if session is None else str(session),
        text=str(text),
        audience=names,
        posted_at=float(posted),
        expires_at=None if expires is None else float(expires),
    )
