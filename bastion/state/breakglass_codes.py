"""Break-glass codes at rest: digests only, one batch in force per user, each code used once.

:class:`BreakGlassCodeStore` is what the login service and the command line need; the
SQL implementation runs on SQLite, in the login guard's database (``<state_dir>/logins.db``,
next to the scratch codes), and on PostgreSQL for several replicas (issue 12).
Rules every implementation keeps:

* **Used once.** Using a code is one conditional write (``... WHERE used_at IS NULL AND
  revoked_at IS NULL``): of racing connections, in any process, exactly one changes the row
  and is told yes.
* **One batch in force.** Issuing a batch revokes every code of the previous one that is
  still unused, in the same transaction as the new codes are stored; rows are kept (used
  and revoked alike), so an incident record can still say when a code was used, and by
  which connection.
* **Audit before action.** :meth:`issue` calls ``before_commit`` with the number of codes it
  revokes, inside the transaction: if the audit event cannot be written, nothing changes.

Digests come from :func:`bastion.breakglass.codes.code_digest`; no code is ever stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bastion.state.database import SqliteDatabase, StateDatabase
from bastion.state.migrations import Migration, migrate

__all__ = [
    "MIGRATIONS",
    "BatchState",
    "BreakGlassCodeStore",
    "CodeUse",
    "SqlBreakGlassCodes",
    "SqliteBreakGlassCodes",
]

# Column "user" is quoted everywhere: PostgreSQL reads a bare ``user`` as CURRENT_USER.
# ``rowid`` orders batches issued in the same second: SQLite's own, an identity column on
# PostgreSQL (which has none).
MIGRATIONS = (
    Migration(
        1,
        sqlite=(
            "CREATE TABLE IF NOT EXISTS break_glass_codes ("
            "user TEXT NOT NULL, batch TEXT NOT NULL, digest TEXT NOT NULL, "
            "issued_at REAL NOT NULL, used_at REAL, used_by TEXT, revoked_at REAL, "
            "PRIMARY KEY (user, digest))",
            "CREATE INDEX IF NOT EXISTS break_glass_codes_batch ON break_glass_codes (user, batch)",
        ),
        postgresql=(
            'CREATE TABLE break_glass_codes ("user" TEXT NOT NULL, batch TEXT NOT NULL, '
            "digest TEXT NOT NULL, issued_at DOUBLE PRECISION NOT NULL, "
            "used_at DOUBLE PRECISION, used_by TEXT, revoked_at DOUBLE PRECISION, "
            "rowid BIGINT GENERATED ALWAYS AS IDENTITY, "
            'PRIMARY KEY ("user", digest))',
            'CREATE INDEX break_glass_codes_batch ON break_glass_codes ("user", batch)',
        ),
    ),
)


@dataclass(frozen=True)
class BatchState:
    """A user's batch in force, by count only."""

    batch: str
    issued_at: float
    issued: int
    used: int
    remaining: int


@dataclass(frozen=True)
class CodeUse:
    batch: str
    used_at: float
    connection: str  # the SSH connection that logged in with it


class BreakGlassCodeStore(Protocol):
    def issue(
        self,
        user: str,
        batch: str,
        digests: Sequence[str],
        *,
        now: float,
        before_commit: Callable[[int], None] = ...,
    ) -> int:
        """Make ``digests`` the user's codes (batch ``batch``), revoking the unused codes of
        the previous batch; returns how many were revoked. ``before_commit(revoked)`` runs
        inside the transaction: if it raises, nothing changes."""
        ...

    def use(self, user: str, digest: str, *, now: float, connection: str) -> bool:
        """Burn the code with ``digest``; False when unknown, used or revoked."""
        ...

    def batch(self, user: str) -> BatchState | None:
        """The user's batch in force (the last one issued); None if none ever was."""
        ...

    def uses(self, user: str) -> list[CodeUse]:
        """Every use of one of the user's codes, oldest first."""
        ...

    def close(self) -> None: ...


class SqlBreakGlassCodes:
    """The store on an open :class:`StateDatabase` (SQLite or PostgreSQL), which it owns;
    one thread per object, as :class:`bastion.state.logins.LoginGuard`."""

    def __init__(self, db: StateDatabase) -> None:
        self._db = db
        try:
            migrate(db, "break_glass_codes", MIGRATIONS)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def issue(
        self,
        user: str,
        batch: str,
        digests: Sequence[str],
        *,
        now: float,
        before_commit: Callable[[int], None] = lambda _revoked: None,
    ) -> int:
        if not digests:
            raise ValueError("a batch needs at least one code")
        # Locked against every other writer of the table: a code used meanwhile is either
        # used before the revocation (and stays used) or refused after it, and two batches
        # issued at once cannot both stay in force.
        with self._db.write_transaction("break_glass_codes"):
            revoked = self._db.execute(
                "UPDATE break_glass_codes SET revoked_at = ? "
                'WHERE "user" = ? AND used_at IS NULL AND revoked_at IS NULL',
                (now, user),
            ).rowcount
            self._db.executemany(
                'INSERT INTO break_glass_codes ("user", batch, digest, issued_at) '
                "VALUES (?, ?, ?, ?)",
                [(user, batch, digest, now) for digest in digests],
            )
            before_commit(revoked)
        return revoked

    def use(self, user: str, digest: str, *, now: float, connection: str) -> bool:
        cursor = self._db.execute(
            "UPDATE break_glass_codes SET used_at = ?, used_by = ? "
            'WHERE "user" = ? AND digest = ? AND used_at IS NULL AND revoked_at IS NULL',
            (now, connection, user, digest),
        )
        return cursor.rowcount == 1

    def batch(self, user: str) -> BatchState | None:
        if not self._has_table():
            return None
        # One snapshot: the last batch and its counts agree even while a code is used.
        row = self._db.execute(
            "SELECT batch, issued_at, count(*), count(used_at), "
            "count(*) FILTER (WHERE used_at IS NULL AND revoked_at IS NULL) "
            "FROM break_glass_codes "
            'WHERE "user" = :user AND batch = (SELECT batch FROM break_glass_codes '
            'WHERE "user" = :user ORDER BY issued_at DESC, rowid DESC LIMIT 1) '
            "GROUP BY batch, issued_at",
            {"user": user},
        ).fetchone()
        if row is None:
            return None
        return BatchState(str(row[0]), float(row[1]), int(row[2]), int(row[3]), int(row[4]))

    def uses(self, user: str) -> list[CodeUse]:
        if not self._has_table():
            return []
        rows = self._db.execute(
            "SELECT batch, used_at, used_by FROM break_glass_codes "
            'WHERE "user" = ? AND used_at IS NOT NULL ORDER BY used_at',
            (user,),
        ).fetchall()
        return [CodeUse(str(b), float(t), str(c or "")) for b, t, c in rows]

    def _has_table(self) -> bool:
        return True


class SqliteBreakGlassCodes(SqlBreakGlassCodes):
    """The store in the login guard's SQLite file.

    ``read_only`` opens an existing database for inspection (``bastion check-config``)
    without creating or changing anything; FileNotFoundError when there is none.
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self._read_only = read_only
        if read_only:
            if not path.exists():
                raise FileNotFoundError(path)
            uri = f"{path.absolute().as_uri()}?mode=ro"
            self._db = SqliteDatabase(sqlite3.connect(uri, uri=True, timeout=10.0))
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        connection = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
        except BaseException:
            connection.close()
            raise
        super().__init__(SqliteDatabase(connection))
        path.chmod(0o600)

    def _has_table(self) -> bool:
        if not self._read_only:
            return True
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'break_glass_codes'"
        ).fetchone()
        return row is not None
