"""The notices feed of one worker: the notice board (:mod:`bastion.state.notices`) pushed to
the consoles that subscribed (``WatchNotices``, :mod:`bastion.console_protocol`).

Every worker polls the board, which lives in the shared state journal, so a notice posted
by one worker reaches the consoles of all of them within one poll (1 s), and a notice whose
session closed, however it closed, disappears within one poll too. A poll is one indexed
``SELECT`` of a handful of rows, made only while some console is subscribed. Each
subscriber gets the whole set of notices it may see, at once when it subscribes and then
whenever that set changes; a post or an end in this worker wakes the poll at once.

SQLite calls run on the feed's own database thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bastion.console_protocol import NoticeItem
from bastion.state.notices import NoticeBoard, NoticeRecord

__all__ = ["POLL", "NoticeFeed"]

log = logging.getLogger(__name__)
T = TypeVar("T")
POLL = 1.0
TIDY_EVERY = 60.0  # seconds between marking finished notices ended (any worker may)


@dataclass
class _Subscriber:
    user: str
    deliver: Callable[[list[NoticeItem]], None]
    last: list[NoticeItem] | None = None  # what it was sent last; None: nothing yet


class NoticeFeed:
    def __init__(
        self,
        board: Path | Callable[[], NoticeBoard],
        *,
        poll: float = POLL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """On the journal's SQLite file, or a board opened by ``board()`` (PostgreSQL)."""
        self._poll = poll
        self._clock = clock
        self._db = ThreadPoolExecutor(1, thread_name_prefix="notices")
        opener = (lambda: NoticeBoard(board)) if isinstance(board, Path) else board
        self._board: NoticeBoard = self._db.submit(opener).result()
        self._subscribers: dict[int, _Subscriber] = {}
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tidied = float("-inf")

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    # ------------------------------------------------------------------ the board
    async def post(
        self,
        kind: str,
        *,
        user: str,
        text: str,
        session: str | None = None,
        audience: tuple[str, ...] | None = None,
        expires_at: float | None = None,
    ) -> str:
        """Put a notice up for every worker's consoles; returns its id. Raises what the
        database raises (the caller decides whether a notice that could not go up stops
        what it announces)."""
        notice = NoticeRecord(
            id=secrets.token_hex(8),
            kind=kind,
            user=user,
            session=session,
            text=text,
            audience=audience,
            posted_at=self._clock(),
            expires_at=expires_at,
        )
        await self._in_db(self._board.post, notice)
        self._wake.set()
        return notice.id

    async def end(self, notice_id: str) -> bool:
        ended = await self._in_db(self._board.end, notice_id, self._clock())
        self._wake.set()
        return ended

    async def in_force(self) -> list[NoticeRecord]:
        now = self._clock()
        if now - self._tidied >= TIDY_EVERY:
            self._tidied = now
            await self._in_db(self._board.tidy, now)
        return await self._in_db(self._board.in_force, now)

    # ------------------------------------------------------------------ subscribers
    def subscribe(
        self, user: str, deliver: Callable[[list[NoticeItem]], None]
    ) -> Callable[[], None]:
        """``deliver(notices)`` now and at every change of what ``user`` may see; returns
        the function that ends the subscription."""
        key = next(self._ids)
        self._subscribers[key] = _Subscriber(user, deliver)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="notices")
        self._wake.set()

        def unsubscribe() -> None:
            self._subscribers.pop(key, None)

        return unsubscribe

    async def _run(self) -> None:
        while True:
            if not self._subscribers:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._wake.clear()
            try:
                notices = await self.in_force()
            except Exception:  # a busy or broken database: the banners wait for the next poll
                log.exception("reading the notice board failed")
            else:
                self._deliver(notices)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    def _deliver(self, notices: list[NoticeRecord]) -> None:
        for subscriber in list(self._subscribers.values()):
            shown = [_item(n) for n in notices if n.visible_to(subscriber.user)]
            if shown != subscriber.last:
                subscriber.last = shown
                subscriber.deliver(shown)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._subscribers.clear()
        await self._in_db(self._board.close)
        self._db.shutdown()


def _item(notice: NoticeRecord) -> NoticeItem:
    return NoticeItem(notice.id, notice.kind, notice.user, notice.posted_at, notice.text)
