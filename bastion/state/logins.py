"""The TOTP replay guard, failed-login counters and scratch codes, in SQLite, safe across
processes.

The replay guard is enforced by the database, not by a read-then-write: accepting a time step
is one conditional upsert (``... DO UPDATE ... WHERE excluded.last_step > last_step``), so of
two connections racing with the same code exactly one changes the row, and only that one is
told it may proceed. ``synchronous=FULL`` makes the accepted step durable before the caller
reports success, so a restart does not forget it.

Scratch codes are stored as digests (``bastion.enrolment.scratch_code_digest``) and used the
same way: one ``UPDATE ... WHERE used_at IS NULL``; the connection whose update changed the
row is the one that used the code.

The server opens this database at ``Config.login_db_path()`` (``<state_dir>/logins.db``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bastion.state.database import SqliteDatabase, StateDatabase
from bastion.state.migrations import Migration, migrate

__all__ = ["MIGRATIONS", "FailureRecord", "LoginGuard"]

# Column "user" is quoted everywhere: PostgreSQL reads a bare ``user`` as CURRENT_USER.
MIGRATIONS = (
    Migration(
        1,
        sqlite=(
            "CREATE TABLE IF NOT EXISTS totp_steps ("
            "user TEXT PRIMARY KEY, last_step INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS login_failures ("
            "user TEXT PRIMARY KEY, failures INTEGER NOT NULL, last_failure REAL NOT NULL)",
            "CREATE TABLE IF NOT EXISTS scratch_codes ("
            "user TEXT NOT NULL, digest TEXT NOT NULL, used_at REAL, "
            "PRIMARY KEY (user, digest))",
        ),
        postgresql=(
            'CREATE TABLE totp_steps ("user" TEXT PRIMARY KEY, last_step BIGINT NOT NULL)',
            'CREATE TABLE login_failures ("user" TEXT PRIMARY KEY, '
            "failures INTEGER NOT NULL, last_failure DOUBLE PRECISION NOT NULL)",
            'CREATE TABLE scratch_codes ("user" TEXT NOT NULL, digest TEXT NOT NULL, '
            'used_at DOUBLE PRECISION, PRIMARY KEY ("user", digest))',
        ),
    ),
)


@dataclass(frozen=True)
class FailureRecord:
    failures: int
    last_failure: float | None


class LoginGuard:
    """On a SQLite file (``path``) or an open :class:`StateDatabase` (PostgreSQL), which it
    then owns and closes."""

    def __init__(self, target: Path | StateDatabase) -> None:
        if isinstance(target, Path):
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Autocommit: every statement is its own transaction, which atomicity needs.
            connection = sqlite3.connect(target, timeout=10.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            target.chmod(0o600)
            self._db: StateDatabase = SqliteDatabase(connection)
        else:
            self._db = target
        try:
            migrate(self._db, "logins", MIGRATIONS)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ replay guard
    def last_step(self, user: str) -> int | None:
        row = self._db.execute(
            'SELECT last_step FROM totp_steps WHERE "user" = ?', (user,)
        ).fetchone()
        return None if row is None else int(row[0])

    def accept_step(self, user: str, step: int) -> bool:
        """Record ``step`` as used; False when it (or a later one) already was."""
        cursor = self._db.execute(
            'INSERT INTO totp_steps ("user", last_step) VALUES (?, ?) '
            'ON CONFLICT ("user") DO UPDATE SET last_step = excluded.last_step '
            "WHERE excluded.last_step > totp_steps.last_step",
            (user, step),
        )
        return cursor.rowcount == 1

    # ------------------------------------------------------------------ failures
    def failures(self, user: str) -> FailureRecord:
        row = self._db.execute(
            'SELECT failures, last_failure FROM login_failures WHERE "user" = ?', (user,)
        ).fetchone()
        return FailureRecord(0, None) if row is None else FailureRecord(int(row[0]), float(row[1]))

    def record_failure(self, user: str, now: float) -> FailureRecord:
        row = self._db.execute(
            'INSERT INTO login_failures ("user", failures, last_failure) VALUES (?, 1, ?) '
            'ON CONFLICT ("user") DO UPDATE SET failures = login_failures.failures + 1, '
            "last_failure = excluded.last_failure RETURNING failures, last_failure",
            (user, now),
        ).fetchone()
        # The count this very increment produced, not a later read's.
        return FailureRecord(int(row[0]), float(row[1]))

    def reset_failures(self, user: str) -> None:
        """After a successful login, or when an administrator unlocks the account."""
        self._db.execute('DELETE FROM login_failures WHERE "user" = ?', (user,))

    def unlock(self, user: str) -> FailureRecord:
        """Clear the failure counter (back-off and hard lock); returns what it was."""
        with self._db.write_transaction("login_failures"):
            before = self.failures(user)
            self.reset_failures(user)
        return before

    # ------------------------------------------------------------------ scratch codes
    def replace_scratch_codes(self, user: str, digests: Iterable[str]) -> None:
        """Make ``digests`` the user's only scratch codes, all unused (one transaction)."""
        rows = [(user, digest) for digest in digests]
        with self._db.write_transaction("scratch_codes"):
            self._db.execute('DELETE FROM scratch_codes WHERE "user" = ?', (user,))
            self._db.executemany('INSERT INTO scratch_codes ("user", digest) VALUES (?, ?)', rows)

    def use_scratch_code(self, user: str, digest: str, now: float) -> bool:
        """Mark the code with ``digest`` used at ``now``; False when unknown or used before."""
        cursor = self._db.execute(
            "UPDATE scratch_codes SET used_at = ? "
            'WHERE "user" = ? AND digest = ? AND used_at IS NULL',
            (now, user, digest),
        )
        return cursor.rowcount == 1

    def scratch_codes_left(self, user: str) -> int:
        row = self._db.execute(
            'SELECT count(*) FROM scratch_codes WHERE "user" = ? AND used_at IS NULL', (user,)
        ).fetchone()
        return int(row[0])
