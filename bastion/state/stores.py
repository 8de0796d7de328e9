"""The state stores, opened on the configured database: SQLite files in ``paths.state_dir``
(``logins.db``: login guard and break-glass codes; ``journal.db``: journal and approvals), or
one PostgreSQL database for every store and every replica (``state.url``).

Each store owns its connection: one per store and thread, as each store's docstring says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bastion.state import (
    approvals,
    breakglass_codes,
    journal,
    kill_notes,
    logins,
    notices,
    sources,
)
from bastion.state.approvals import SqlApprovalStore, SqliteApprovalStore
from bastion.state.breakglass_codes import SqlBreakGlassCodes, SqliteBreakGlassCodes
from bastion.state.database import PostgresLocation, StateDatabase, connect_postgres, open_sqlite
from bastion.state.journal import Journal
from bastion.state.kill_notes import KillNotes
from bastion.state.logins import LoginGuard
from bastion.state.migrations import Migration, migrate
from bastion.state.notices import NoticeBoard
from bastion.state.sources import SourceHistory

__all__ = ["COMPONENTS", "StateStores"]

# Each component's migrations, and the SQLite file it lives in.
COMPONENTS: dict[str, tuple[tuple[Migration, ...], str]] = {
    "logins": (logins.MIGRATIONS, "logins.db"),
    "break_glass_codes": (breakglass_codes.MIGRATIONS, "logins.db"),
    "journal": (journal.MIGRATIONS, "journal.db"),
    "approvals": (approvals.MIGRATIONS, "journal.db"),
    "notices": (notices.MIGRATIONS, "journal.db"),  # after the journal: it reads sessions
    "kill_notes": (kill_notes.MIGRATIONS, "journal.db"),
    "login_sources": (sources.MIGRATIONS, "login-sources.db"),
}


@dataclass(frozen=True)
class StateStores:
    state_dir: Path
    postgres: PostgresLocation | None = None  # None: SQLite
    replica: str | None = None  # state.replica_id (None: the host name)
    dead_after: float = journal.DEAD_AFTER  # state.replica_dead_after, in seconds

    @property
    def description(self) -> str:
        if self.postgres is None:
            return f"SQLite in {self.state_dir}"
        return f"PostgreSQL at {self.postgres.host}"

    def login_guard(self) -> LoginGuard:
        return LoginGuard(self._target("logins.db"))

    def break_glass_codes(self, *, read_only: bool = False) -> SqlBreakGlassCodes:
        """``read_only`` (inspection: check-config, reports): on SQLite, the existing file
        opened read-only (FileNotFoundError when there is none); on PostgreSQL, the store as
        the server opens it (its schema migrated if needed)."""
        if self.postgres is None:
            return SqliteBreakGlassCodes(self.state_dir / "logins.db", read_only=read_only)
        return SqlBreakGlassCodes(connect_postgres(self.postgres))

    def approvals(self) -> SqlApprovalStore:
        if self.postgres is None:
            return SqliteApprovalStore(self.state_dir / "journal.db")
        return SqlApprovalStore(connect_postgres(self.postgres))

    def journal(self, *, clock: Callable[[], float] = time.time) -> Journal:
        return Journal(
            self._target("journal.db"),
            clock=clock,
            replica=self.replica,
            dead_after=self.dead_after,
        )

    def notice_board(self) -> NoticeBoard:
        return NoticeBoard(self._target("journal.db"))

    def kill_notes(self) -> KillNotes:
        return KillNotes(self._target("journal.db"))

    def login_sources(self) -> SourceHistory:
        """The guard's login memory: per host on SQLite, shared by replicas on PostgreSQL."""
        return SourceHistory(self._target("login-sources.db"))

    def migrate(self) -> dict[str, int]:
        """Bring every component's schema up to date; the version each is at now.
        SchemaTooNew (nothing changed for that component) when one is past this release."""
        versions: dict[str, int] = {}
        for component, (migrations, file) in COMPONENTS.items():
            db = self._database(file)
            try:
                versions[component] = migrate(db, component, migrations)
            finally:
                db.close()
        return versions

    def _database(self, file: str) -> StateDatabase:
        if self.postgres is None:
            return open_sqlite(self.state_dir / file)
        return connect_postgres(self.postgres)

    def _target(self, file: str) -> Path | StateDatabase:
        if self.postgres is None:
            return self.state_dir / file
        return connect_postgres(self.postgres)
