"""One operator session: its state, its deadlines, what it created, and its wipe.

A session is opened when an authenticated connection starts its console and lives until
the wipe has run, whatever ends it (see :class:`bastion.session.lifecycle.Ending`). Rules:

* **Journal before action.** Every resource (the session's temp directory, a Vault lease,
  later a debug container) is recorded in the state journal *before* it is created and
  marked removed after it is removed; if this process dies, the reaper of the next one
  finishes the job from the journal.
* **Audit every transition.** Each state change is a ``session.state`` event; the end is a
  ``session.wiped`` event listing each resource and what happened to it.
* **The wipe runs once**, removes resources newest first, and is not cancelled by the
  disconnect that may have caused it (it runs in its own task; callers wait on it).

Journal calls are synchronous SQLite: they run on the broker's one database thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bastion.audit.log import AuditLog
from bastion.errors import AuditUnavailable, BastionError, SessionExpired
from bastion.session.deadlines import Deadlines, Kind, Notice
from bastion.session.lifecycle import Ending, State, check_move

__all__ = ["Resource", "Session", "SessionInfo"]

log = logging.getLogger(__name__)
T = TypeVar("T")
RunInDb = Callable[..., Awaitable[Any]]
Cleanup = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class SessionInfo:
    id: str
    user: str
    source: str
    connection: str


@dataclass
class Resource:
    journal_id: int
    kind: str
    ref: dict[str, Any]
    cleanup: Cleanup


@dataclass
class _Watch:
    given: frozenset[tuple[Kind, float, float]] = frozenset()
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Session:
    def __init__(
        self,
        info: SessionInfo,
        *,
        journal: Any,
        in_db: RunInDb,
        audit: AuditLog,
        deadlines: Deadlines,
        temp_root: Path,
        clock: Callable[[], float] = time.time,
        marks: dict[str, Any] | None = None,
    ) -> None:
        self.info = info
        # Fields every audit event of this session carries (``break_glass: true``), so that
        # a search or a SIEM rule can single out its events without joining on the session.
        self.marks: dict[str, Any] = dict(marks or {})
        self.state = State.AUTHENTICATED
        self.deadlines = deadlines
        self.last_input = clock()
        self.ending: Ending | None = None
        # Who ended the session and why, when a person did (an auditor, an administrator's
        # kill with its reason): what the operator is told instead of the ending's name.
        self.ending_note: str | None = None
        self.temp_dir = temp_root / info.id
        self._journal = journal
        self._in_db = in_db
        self._audit = audit
        self._clock = clock
        self._resources: list[Resource] = []
        self._wipe: asyncio.Task[list[dict[str, str]]] | None = None
        self._watch = _Watch()
        self._on_end: list[Callable[[Ending], None]] = []
        self._on_deadlines: list[Callable[[Deadlines], None]] = []

    @property
    def id(self) -> str:
        return self.info.id

    def now(self) -> float:
        """The session's clock, in which its deadlines are given."""
        return self._clock()

    # ------------------------------------------------------------------ opening
    async def open(self) -> None:
        """Audit and journal the session, and create its temp directory (0700).

        Raises AuditUnavailable when the opening cannot be recorded: then nothing exists.
        """
        now = self._clock()
        await self._audit.record(
            "session.opened",
            actor=self.info.user,
            outcome="opened",
            session=self.id,
            connection=self.info.connection,
            source=self.info.source,
            idle_timeout_seconds=self.deadlines.idle_timeout,
            hard_deadline=self.deadlines.hard_deadline,
            **self.marks,
        )
        await self._in_db(
            self._journal.open_session,
            self.id,
            user=self.info.user,
            source=self.info.source,
            owner=self._owner(),
            opened_at=now,
            idle_deadline=self.deadlines.idle_deadline(self.last_input),
            hard_deadline=self.deadlines.hard_deadline,
        )
        path = self.temp_dir
        try:
            await self.track(
                "temp_dir",
                {"path": str(path)},
                create=lambda: asyncio.to_thread(path.mkdir, mode=0o700, parents=False),
                cleanup=lambda: _remove_dir(path),
            )
        except Exception:
            await self.end(Ending.ERROR)  # closes the journal entry just opened
            raise

    def _owner(self) -> Any:
        from bastion.state.journal import Owner  # noqa: PLC0415 - one import site for the type

        return Owner.current()

    async def track(
        self,
        kind: str,
        ref: dict[str, Any],
        *,
        create: Callable[[], Awaitable[Any]],
        cleanup: Cleanup,
        created_ref: Callable[[Any], dict[str, Any]] | None = None,
    ) -> Any:
        """Journal ``kind``, create it, then mark it created; returns what ``create`` made.

        If creating fails, the journal entry is marked removed (nothing identifiable exists)
        and the error propagates. Nothing new is made once the wipe has begun.
        """
        if self._wipe is not None:
            raise SessionExpired(f"the session is ending: no {kind} is made for it any more")
        resource_id = await self._in_db(self._journal.plan, self.id, kind, ref)
        try:
            made = await create()
        except BaseException:
            await self._in_db(self._journal.removed, resource_id)
            raise
        full = {**ref, **(created_ref(made) if created_ref else {})}
        await self._in_db(self._journal.created, resource_id, full)
        self._resources.append(Resource(resource_id, kind, full, cleanup))
        return made

    async def release(self, kind: str, *, purpose: str | None = None) -> list[dict[str, str]]:
        """Remove this session's resources of ``kind`` now (newest first), e.g. the lease of
        a debug that could not start; the session goes on. With ``purpose``, only those whose
        ref says that purpose: a debug's end releases its own lease, not the console's browse
        lease, which lives as long as the session. Once the wipe has begun it owns every
        resource, so this does nothing (no resource is cleaned twice)."""
        if self._wipe is not None:
            return []

        def chosen(r: Resource) -> bool:
            return r.kind == kind and (purpose is None or r.ref.get("purpose") == purpose)

        mine = [r for r in self._resources if chosen(r)]
        # Taken out first: a wipe that begins meanwhile leaves these to this call.
        self._resources = [r for r in self._resources if not chosen(r)]
        return [await self._clean(r) for r in reversed(mine)]

    # ------------------------------------------------------------------ state
    async def move(self, state: State, **fields: Any) -> None:
        check_move(self.state, state)
        previous, self.state = self.state, state
        await self._in_db(self._journal.set_state, self.id, str(state), target=fields.get("target"))
        await self._record("session.state", outcome=str(state), previous=str(previous), **fields)

    async def narrow_deadlines(self, *, idle_timeout: float, hard_deadline: float) -> None:
        """Apply a grant's tighter limits (the most restrictive wins, for the rest of the
        session): the idle timeout and the hard deadline only ever shrink."""
        narrowed = Deadlines(
            idle_timeout=min(self.deadlines.idle_timeout, idle_timeout),
            hard_deadline=min(self.deadlines.hard_deadline, hard_deadline),
        )
        if narrowed == self.deadlines:
            return
        self.deadlines = narrowed
        await self._in_db(
            self._journal.set_state,
            self.id,
            str(self.state),
            idle_deadline=narrowed.idle_deadline(self.last_input),
            hard_deadline=narrowed.hard_deadline,
        )
        await self._record(
            "session.deadlines",
            outcome="narrowed",
            idle_timeout_seconds=narrowed.idle_timeout,
            hard_deadline=narrowed.hard_deadline,
        )
        self._watch.wake.set()
        for callback in self._on_deadlines:
            callback(narrowed)

    def touch(self) -> None:
        """The operator typed something: the idle deadline moves."""
        self.last_input = self._clock()
        self._watch.wake.set()

    def on_end(self, callback: Callable[[Ending], None]) -> None:
        self._on_end.append(callback)

    def on_deadlines(self, callback: Callable[[Deadlines], None]) -> None:
        """``callback(deadlines)`` each time :meth:`narrow_deadlines` changes them."""
        self._on_deadlines.append(callback)

    # ------------------------------------------------------------------ deadlines
    async def watch_deadlines(self, notify: Callable[[Notice], None]) -> None:
        """Give warnings and end the session at a deadline; returns when it has ended."""
        watch = self._watch
        while self.ending is None:
            now = self._clock()
            for notice, key in self.deadlines.due(now, self.last_input, watch.given):
                if notice.expired:
                    notify(notice)
                    ending = Ending.IDLE if notice.kind is Kind.IDLE else Ending.HARD_LIMIT
                    await self.end(ending)
                    return
                watch.given |= {key}
                notify(notice)
                await self._record(
                    "session.warning",
                    outcome="warned",
                    deadline=str(notice.kind),
                    seconds_left=round(notice.seconds_left),
                )
            wake = self.deadlines.next_wakeup(self._clock(), self.last_input, watch.given)
            watch.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.wake.wait(), max(wake - self._clock(), 0.01))

    # ------------------------------------------------------------------ the end
    def end_soon(self, ending: Ending) -> asyncio.Task[list[dict[str, str]]]:
        """Start the wipe (once) from a synchronous callback; returns its task."""
        if self._wipe is None:
            self.ending = ending
            self._watch.wake.set()
            self._wipe = asyncio.get_running_loop().create_task(
                self._wipe_all(ending), name=f"wipe-{self.id}"
            )
            for callback in self._on_end:
                callback(ending)
        return self._wipe

    async def end(self, ending: Ending) -> list[dict[str, str]]:
        """End and wipe the session; every caller waits for the one wipe."""
        return await asyncio.shield(self.end_soon(ending))

    async def _wipe_all(self, ending: Ending) -> list[dict[str, str]]:
        with contextlib.suppress(BastionError):
            await self.move(State.WIPING, ending=str(ending))
        # One at a time, newest first: a container goes before the lease that let us make it.
        outcomes = [await self._clean(resource) for resource in reversed(self._resources)]
        self._resources.clear()
        await self._in_db(self._journal.close_session, self.id, self._clock())
        failed = [o for o in outcomes if o["outcome"] == "failed"]
        await self._record(
            "session.wiped",
            outcome="alert" if failed else "wiped",
            ending=str(ending),
            resources=outcomes,
        )
        with contextlib.suppress(BastionError):
            await self.move(State.CLOSED)
        return outcomes

    async def _clean(self, resource: Resource) -> dict[str, str]:
        what = {"kind": resource.kind, **{k: str(v) for k, v in resource.ref.items()}}
        try:
            result = await resource.cleanup()
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, none stops the wipe
            log.error("session %s: cleaning %s failed: %s", self.id, resource.kind, exc)  # noqa: TRY400
            await self._in_db(self._journal.failed, resource.journal_id, str(exc))
            return {**what, "outcome": "failed", "error": str(exc)}
        await self._in_db(self._journal.removed, resource.journal_id)
        return {**what, "outcome": result}

    async def lookup(self, session_id: str) -> Any:
        """Another session's journal record (a ``SessionRecord``), or None: for checks such
        as who is watching this one (bastion.oversight)."""
        return await self._in_db(self._journal.session, session_id)

    async def record(self, event: str, *, outcome: str, **fields: Any) -> None:
        """An audit event of this session; an unwritable log ends the session."""
        await self._record(event, outcome=outcome, **fields)

    async def _record(self, event: str, *, outcome: str, **fields: Any) -> None:
        try:
            await self._audit.record(
                event,
                actor=self.info.user,
                outcome=outcome,
                session=self.id,
                **{**fields, **self.marks},
            )
        except AuditUnavailable:
            # Audit before action: a session that cannot be recorded must end. The wipe
            # itself goes on (removing access is always right) and logs instead.
            log.exception("session %s: audit event %s not written", self.id, event)
            if self.ending is None:
                self.end_soon(Ending.ERROR)


async def _remove_dir(path: Path) -> str:
    return await asyncio.to_thread(remove_dir, path)


def remove_dir(path: Path) -> str:
    """Remove a session's temp directory; the outcome, as the wipe event reports it."""
    if not path.exists():
        return "already gone"
    shutil.rmtree(path)
    return "removed"
