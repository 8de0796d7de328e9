"""The session broker of one worker: opens sessions, watches for admin kills, wipes all
sessions when the worker stops.

SQLite (the state journal) is used from one dedicated thread per worker, so the event loop
never waits on an fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from bastion.audit.log import AuditLog
from bastion.config import Config
from bastion.session.approvals import ApprovalDesk
from bastion.session.deadlines import Deadlines
from bastion.session.lifecycle import Ending
from bastion.session.session import Session, SessionInfo
from bastion.state.journal import Journal, Owner
from bastion.state.kill_notes import KillNotes

__all__ = ["SHUTDOWN_GRACE", "SessionBroker"]

log = logging.getLogger(__name__)
T = TypeVar("T")
SHUTDOWN_GRACE = 20.0
KILL_POLL = 1.0


class SessionBroker:
    def __init__(
        self, config: Config, audit: AuditLog, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self._audit = audit
        self._clock = clock
        self._db = ThreadPoolExecutor(1, thread_name_prefix="journal")
        stores = config.state_stores()
        self._journal: Journal = self._db.submit(stores.journal).result()
        # Four-eyes approval requests live in the same database, on the same thread.
        store = self._db.submit(stores.approvals).result()
        self.approvals = ApprovalDesk(store, in_db=self.in_db, audit=audit, clock=clock)
        self._kill_notes: KillNotes = self._db.submit(stores.kill_notes).result()
        self._owner = Owner.current()
        self.sessions: dict[str, Session] = {}
        self.temp_root = config.paths.state_dir / "sessions"
        self.temp_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._kill_watch: asyncio.Task[None] | None = None

    async def in_db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, lambda: fn(*args, **kwargs))

    @property
    def journal(self) -> Journal:
        """For the reaper, which shares the broker's database thread."""
        return self._journal

    def start(self) -> None:
        self._kill_watch = asyncio.get_running_loop().create_task(
            self._watch_kill_requests(), name="session-kill-requests"
        )
        self.approvals.start()

    # ------------------------------------------------------------------ sessions
    async def open(
        self, *, user: str, source: str, connection: str, marks: dict[str, Any] | None = None
    ) -> Session:
        """``marks``: fields every audit event of the session carries (see Session)."""
        limits = self.config.limits
        now = self._clock()
        session = Session(
            SessionInfo(id=new_session_id(), user=user, source=source, connection=connection),
            journal=self._journal,
            in_db=self.in_db,
            audit=self._audit,
            deadlines=Deadlines(
                idle_timeout=limits.console_idle_timeout.total_seconds(),
                hard_deadline=now + limits.session_hard_limit.total_seconds(),
            ),
            temp_root=self.temp_root,
            clock=self._clock,
            marks=marks,
        )
        await session.open()
        self.sessions[session.id] = session
        # end_soon returns the one wipe task; the session is forgotten once it is done.
        session.on_end(
            lambda ending: session.end_soon(ending).add_done_callback(
                lambda _: self.forget(session)
            )
        )
        return session

    def forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)

    async def _watch_kill_requests(self) -> None:
        while True:
            await asyncio.sleep(KILL_POLL)
            try:
                wanted = await self.in_db(self._journal.kill_requests, self._owner)
            except Exception:
                log.exception("reading kill requests failed")
                continue
            for session_id in wanted:
                session = self.sessions.get(session_id)
                if session is not None and session.ending is None:
                    log.info("session %s killed by an administrator", session_id)
                    note = await self.in_db(self._kill_notes.read, session_id)
                    if note is not None:
                        session.ending_note = f"{note[0]} ended this session: {note[1]}"
                    session.end_soon(Ending.ADMIN_KILL)

    async def shutdown(self) -> None:
        """Wipe every live session (SIGTERM), within SHUTDOWN_GRACE seconds."""
        await self.approvals.stop()
        if self._kill_watch is not None:
            self._kill_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._kill_watch
        wipes = [s.end_soon(Ending.SHUTDOWN) for s in list(self.sessions.values())]
        if wipes:
            _, pending = await asyncio.wait(wipes, timeout=SHUTDOWN_GRACE)
            if pending:
                log.error(
                    "%d session wipes did not finish in %.0f s; the reaper of the next "
                    "start finishes them from the journal",
                    len(pending),
                    SHUTDOWN_GRACE,
                )

    def close(self) -> None:
        self._db.submit(self.approvals.store.close).result()
        self._db.submit(self._kill_notes.close).result()
        self._db.submit(self._journal.close).result()
        self._db.shutdown()


def new_session_id() -> str:
    # 64 random bits: unguessable in `bastion sessions kill ID`, short enough to read out.
    return secrets.token_hex(8)
