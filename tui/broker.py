"""The console's client of the session broker (:mod:`bastion.console_protocol`).

Requests are answered by ``id``; a pod watch is an async iterator of its pages and changes;
everything else the broker sends on its own (``Notice``, ``DeadlinesChanged``,
``NoticesChanged``, ``DebugProgress``, ``DebugRefused``, ``Handover``, ``DebugEnded``) goes
to one callback.
A broker that closes the socket, sends a line that is not a message, or does not answer a
request in time is gone: every waiter gets :class:`BrokerGone` and ``on_gone`` is told once.

The bytes travel through a :class:`Transport`: the socket named by ``BASTION_BROKER_FD`` in
a console, an in-memory fake in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

from bastion.console_protocol import (
    MAX_LINE,
    ApprovalDecided,
    ApprovalItem,
    Approvals,
    DebugOptions,
    DebugRequest,
    DecideApproval,
    Failed,
    GetDebugOptions,
    GetPod,
    GetView,
    ListApprovals,
    ListNamespaces,
    ListSessions,
    LiveSessionItem,
    LiveSessions,
    Message,
    Namespaces,
    PodDetail,
    PodsChanged,
    PodsPage,
    ProtocolError,
    StopWatch,
    ViewResult,
    WatchNotices,
    WatchPods,
    WatchSession,
    Welcome,
    decode,
    encode,
)

__all__ = [
    "ANSWER_TIMEOUT",
    "BrokerClient",
    "BrokerGone",
    "PodWatch",
    "RequestFailed",
    "SocketTransport",
    "Transport",
]

ANSWER_TIMEOUT = 20.0  # seconds; the broker answers from memory or one API call
GONE = "the session broker stopped answering; this session ends, log in again"

_Answer = TypeVar("_Answer", bound=Message)
_T = TypeVar("_T")


class BrokerGone(Exception):
    """The broker is not there any more; the console must end."""


class RequestFailed(Exception):
    """The broker answered ``Failed``: one sentence for the operator."""


class Transport(Protocol):
    async def send(self, line: bytes) -> None: ...

    async def receive(self) -> bytes:
        """One line with its newline; ``b""`` at the end of the stream."""

    def close(self) -> None: ...


class SocketTransport:
    """The console's end of the broker's socketpair."""

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)
        self._sock.setblocking(False)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_unix_connection(
                sock=self._sock, limit=MAX_LINE + 1
            )
        return self._reader, self._writer

    async def send(self, line: bytes) -> None:
        _, writer = await self._open()
        writer.write(line)
        await writer.drain()

    async def receive(self) -> bytes:
        reader, _ = await self._open()
        try:
            return await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return b""
        except asyncio.LimitOverrunError as exc:
            raise ProtocolError("a line from the broker is too long") from exc

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        else:
            self._sock.close()


class PodWatch:
    """The pages, then the live changes, of one namespace's pods; ``close()`` stops it."""

    def __init__(self, client: BrokerClient, request: WatchPods) -> None:
        self._client = client
        self.request = request
        self.queue: asyncio.Queue[PodsPage | PodsChanged | Exception] = asyncio.Queue()
        self._closed = False

    def __aiter__(self) -> AsyncIterator[PodsPage | PodsChanged]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[PodsPage | PodsChanged]:
        first = True
        while not self._closed:
            if first:
                item = await self._client.within_timeout(self.queue.get())
                first = False
            else:
                item = await self.queue.get()
            if isinstance(item, Exception):
                raise item
            yield item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.forget_watch(self.request.id)
        with contextlib.suppress(BrokerGone):
            await self._client.send(StopWatch(self.request.id))


class BrokerClient:
    def __init__(
        self,
        transport: Transport,
        *,
        on_event: Callable[[Message], None] = lambda _message: None,
        on_gone: Callable[[str], None] = lambda _reason: None,
        timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self._transport = transport
        self.on_event = on_event
        self.on_gone = on_gone
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._watches: dict[int, PodWatch] = {}
        self._reader: asyncio.Task[None] | None = None
        self.gone: str | None = None

    # ------------------------------------------------------------------ life
    async def start(self) -> Welcome:
        """Wait for the broker's ``Welcome``, then read everything else in the background."""
        try:
            first = await self.within_timeout(self._receive())
        except BrokerGone:
            self._fail(GONE)
            raise
        if not isinstance(first, Welcome):
            self._fail("the session broker did not greet this console; log in again")
            raise BrokerGone(self.gone)
        self._reader = asyncio.get_running_loop().create_task(self._read_forever())
        return first

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._transport.close()

    async def within_timeout(self, waiting: Awaitable[_T]) -> _T:
        try:
            return await asyncio.wait_for(waiting, self.timeout)
        except TimeoutError:
            self._fail(GONE)
            raise BrokerGone(GONE) from None

    async def _receive(self) -> Message:
        try:
            line = await self._transport.receive()
        except (OSError, ProtocolError):
            line = b""
        if not line:
            raise BrokerGone(GONE)
        try:
            return decode(line.rstrip(b"\n"))
        except ProtocolError:
            raise BrokerGone(
                "the session broker sent something this console cannot read; log in again"
            ) from None

    async def _read_forever(self) -> None:
        try:
            while True:
                self._dispatch(await self._receive())
                # A burst of buffered pages must not starve the screen that draws them.
                await asyncio.sleep(0)
        except BrokerGone as exc:
            self._fail(str(exc))

    def _dispatch(self, message: Message) -> None:
        if isinstance(message, PodsPage | PodsChanged | Failed):
            watch = self._watches.get(message.id)
            if watch is not None:
                item = RequestFailed(message.message) if isinstance(message, Failed) else message
                watch.queue.put_nowait(item)
                return
        request_id = getattr(message, "id", None)
        future = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if future is not None:
            if not future.done():
                future.set_result(message)
            return
        self.on_event(message)

    def _fail(self, reason: str) -> None:
        if self.gone is not None:
            return
        self.gone = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrokerGone(reason))
        self._pending.clear()
        for watch in self._watches.values():
            watch.queue.put_nowait(BrokerGone(reason))
        self.on_gone(reason)

    # ------------------------------------------------------------------ requests
    async def send(self, message: Message) -> None:
        if self.gone is not None:
            raise BrokerGone(self.gone)
        try:
            await self._transport.send(encode(message))
        except OSError:
            self._fail(GONE)
            raise BrokerGone(GONE) from None

    def next_id(self) -> int:
        return next(self._ids)

    async def _ask(self, message: Message, answer: type[_Answer]) -> _Answer:
        request_id = int(getattr(message, "id"))  # noqa: B009 - every request has an id
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.send(message)
            reply: Message = await self.within_timeout(future)
        finally:
            self._pending.pop(request_id, None)
        if isinstance(reply, Failed):
            raise RequestFailed(reply.message)
        if not isinstance(reply, answer):
            raise RequestFailed(f"the broker answered {reply.type} to {message.type}; try again")
        return reply

    async def namespaces(self, cluster: str) -> Namespaces:
        return await self._ask(ListNamespaces(self.next_id(), cluster), Namespaces)

    async def pod(self, cluster: str, namespace: str, pod: str) -> PodDetail:
        return await self._ask(GetPod(self.next_id(), cluster, namespace, pod), PodDetail)

    async def debug_options(
        self, cluster: str, namespace: str, pod: str, container: str
    ) -> DebugOptions:
        request = GetDebugOptions(self.next_id(), cluster, namespace, pod, container)
        return await self._ask(request, DebugOptions)

    async def view(  # noqa: PLR0917 - the request's own fields, in its order
        self, cluster: str, namespace: str, pod: str, container: str, view: str, path: str = ""
    ) -> ViewResult:
        """One read-only view of a container (RequestFailed: refused, with the reason)."""
        request = GetView(self.next_id(), cluster, namespace, pod, container, view, path)
        return await self._ask(request, ViewResult)

    async def watch_pods(self, cluster: str, namespace: str) -> PodWatch:
        request = WatchPods(self.next_id(), cluster, namespace)
        watch = PodWatch(self, request)
        self._watches[request.id] = watch
        await self.send(request)
        return watch

    def forget_watch(self, watch_id: int) -> None:
        self._watches.pop(watch_id, None)

    async def watch_notices(self) -> None:
        """Ask for the notices every operator sees (break-glass sessions): the broker sends
        ``NoticesChanged`` events, at once and at every change, while the console runs.
        Id 0, outside the requests' count from 1: a console has one notices watch."""
        await self.send(WatchNotices(0))

    async def debug(self, request: DebugRequest) -> None:
        """Ask for a debug shell; progress, refusal, handover (or that it awaits approval)
        arrive as events."""
        await self.send(request)

    async def live_sessions(self) -> list[LiveSessionItem]:
        """The live sessions (auditors only: RequestFailed for anyone else)."""
        return (await self._ask(ListSessions(self.next_id()), LiveSessions)).items

    async def watch_session(self, session: str) -> None:
        """Ask to watch ``session``: the broker answers ``Handover`` (an event: the console
        exits) or ``Failed`` (an event too, the refusal's sentence)."""
        await self.send(WatchSession(self.next_id(), session))

    async def approvals(self) -> list[ApprovalItem]:
        """The operator's own approval requests, and those they may decide."""
        return (await self._ask(ListApprovals(self.next_id()), Approvals)).items

    async def decide_approval(self, request_id: str, *, approve: bool, reason: str) -> str:
        """Approve or deny a request; the broker's sentence (RequestFailed: refused)."""
        request = DecideApproval(self.next_id(), request_id, approve, reason)
        return (await self._ask(request, ApprovalDecided)).message
