"""``pods/{name}/attach`` and ``pods/{name}/exec`` over WebSocket, as a real API server does.

The protocol is the one in ``shared/specs/kubernetes-streaming-protocol.md`` (section numbers
below refer to it). kubesim plays the API server and the kubelet at once, so a client gets what
a real cluster gives it:

* a protocol list that includes ``v5.channel.k8s.io`` gets v5, whatever its position (the API
  server's stream translator takes every such request, §2);
* any other request is what the kubelet's own WebSocket server would answer: the first offered
  protocol among ``channel.k8s.io``, ``base64.channel.k8s.io``, ``v4.channel.k8s.io`` and
  ``v4.base64.channel.k8s.io``, or no subprotocol at all when none was offered (§2);
* an offer with none of these is refused with ``403 Forbidden`` and an empty body, before the
  upgrade. The spec names the accepted lists; the status is what the library behind both Go
  servers (``golang.org/x/net/websocket``, ``newServerConn``) writes when the handshake callback
  rejects the protocols.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import json
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import WSCloseCode, WSMsgType, web

from bastion.devstack.kubesim.processes import (
    STDERR,
    STDOUT,
    ContainerProcess,
    StdinClosedError,
    SubscriberTooSlowError,
    Subscription,
)

__all__ = [
    "CHANNEL_CLOSE",
    "CHANNEL_ERROR",
    "CHANNEL_RESIZE",
    "CHANNEL_STDERR",
    "CHANNEL_STDIN",
    "CHANNEL_STDOUT",
    "SUPPORTED_PROTOCOLS",
    "select_subprotocol",
    "serve_stream",
]

CHANNEL_STDIN: Final = 0
CHANNEL_STDOUT: Final = 1
CHANNEL_STDERR: Final = 2
CHANNEL_ERROR: Final = 3
CHANNEL_RESIZE: Final = 4
CHANNEL_CLOSE: Final = 255
# The server opens channels 0-4 (§3); a frame for any other channel is dropped.
_CHANNEL_COUNT: Final = 5

V5: Final = "v5.channel.k8s.io"
V4: Final = "v4.channel.k8s.io"
V4_BASE64: Final = "v4.base64.channel.k8s.io"
V1: Final = "channel.k8s.io"
V1_BASE64: Final = "base64.channel.k8s.io"
# What the kubelet's WebSocket server accepts ("" = no subprotocol offered), §2.
_KUBELET_PROTOCOLS: Final = ("", V1, V1_BASE64, V4, V4_BASE64)
SUPPORTED_PROTOCOLS: Final = (V5, *_KUBELET_PROTOCOLS[1:])

# §8: the API server gives the final status write 10 s.
_STATUS_WRITE_TIMEOUT: Final = 10.0
# How long close() waits for the client's answering close frame. Go's x/net/websocket does
# not wait at all; a short wait lets well-behaved clients finish the handshake cleanly.
_CLOSE_HANDSHAKE_TIMEOUT: Final = 2.0
# An exec whose client went away is ended: SIGTERM, then SIGKILL after this long.
_EXEC_KILL_GRACE: Final = 2.0


@dataclass(frozen=True, slots=True)
class _Protocol:
    name: str
    base64: bool  # text frames, ASCII digit channel, base64 payload
    status_json: bool  # v4+: a metav1.Status on channel 3; before: text on failure only
    close_signal: bool  # v5: [255, channel] half-closes a stream
    via_api_server: bool  # v5 is answered by the API server's translator, the rest by the kubelet


_PROTOCOLS: Final = {
    V5: _Protocol(V5, base64=False, status_json=True, close_signal=True, via_api_server=True),
    V4: _Protocol(V4, base64=False, status_json=True, close_signal=False, via_api_server=False),
    V4_BASE64: _Protocol(
        V4_BASE64, base64=True, status_json=True, close_signal=False, via_api_server=False
    ),
    V1: _Protocol(V1, base64=False, status_json=False, close_signal=False, via_api_server=False),
    V1_BASE64: _Protocol(
        V1_BASE64, base64=True, status_json=False, close_signal=False, via_api_server=False
    ),
    "": _Protocol("", base64=False, status_json=False, close_signal=False, via_api_server=False),
}


def select_subprotocol(offered: Sequence[str]) -> str | None:
    """The subprotocol a real cluster would choose for this offer; ``None`` means refuse.

    ``offered`` is the client's list in order (the ``Sec-WebSocket-Protocol`` values, split at
    commas). ``""`` is returned for an empty offer: accepted, with no subprotocol echoed.
    """
    names = [name.strip() for name in offered if name.strip()]
    if V5 in names:
        return V5
    if not names:
        return ""
    for name in names:  # x/net/websocket: the client's first one that the server allows
        if name in _KUBELET_PROTOCOLS:
            return name
    return None


# ---------------------------------------------------------------------------- status objects
def _go_list(argv: Sequence[str]) -> str:
    return "[" + " ".join(argv) + "]"  # fmt's %v of a []string


def _success_status() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def _exit_status(exit_code: int, argv: Sequence[str], protocol: _Protocol) -> dict[str, Any]:
    """The Status for a non-zero exit (§6); keys in metav1.Status field order, as Go marshals.

    ``message`` wraps the runtime's error text. Behind the v5 translator that error is the one
    client-go's SPDY v4 decoder built from the kubelet's status ("command terminated with exit
    code N"); talking to the kubelet directly it is the CRI runtime's own (containerd and
    CRI-O: "error executing command [argv], exit code N").
    """
    if protocol.via_api_server:
        runtime_error = f"command terminated with exit code {exit_code}"
    else:
        runtime_error = f"error executing command {_go_list(argv)}, exit code {exit_code}"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {runtime_error}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def _internal_error_status(error: str) -> dict[str, Any]:
    """apierrors.NewInternalError, as the kubelet writes when the command cannot be run."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {error}",
        "reason": "InternalError",
        "details": {"causes": [{"message": error}]},
        "code": 500,
    }


def _status_body(text: str, reason: str, code: int) -> str:
    """A metav1.Status body for an HTTP error answered before the upgrade."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": text,
        "reason": reason,
        "code": code,
    }
    return json.dumps(body, separators=(",", ":"))


# ---------------------------------------------------------------------------- the session
_GONE: Final = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})


class _End(enum.Enum):
    EXITED = "the process ended and its output was delivered"
    DISCONNECTED = "the client closed the connection or it broke"
    PROTOCOL_ERROR = "the client broke the protocol"
    TOO_SLOW = "the client did not keep up with the output"


async def serve_stream(
    request: web.Request,
    process: ContainerProcess,
    *,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    on_stdin_closed: Callable[[], None] | None = None,
    report_exit: bool = True,
    owns_process: bool,
    heartbeat: float | None = None,
) -> web.WebSocketResponse:
    """Serve one attach or exec WebSocket for ``process``; return when the stream is over.

    Exec: pass a new, *not yet started* process with ``owns_process=True``; it is started after
    the upgrade, once subscribed, so no output is lost (there is no replay), and a start
    failure is reported on the error channel as the kubelet does. Attach: pass the running
    container process with ``owns_process=False, report_exit=False``. ``owns_process`` has no
    default on purpose: guessing wrong either kills a container when a viewer leaves or leaves
    an exec running without its client.

    ``report_exit``: the final status reflects the exit code (exec). Without it the stream ends
    with Success however the process ended, as the kubelet's attach does.

    ``owns_process``: the process belongs to this stream (exec): a v5 CLOSE of stdin closes
    its stdin and a client that goes away gets it stopped. Otherwise (attach) the process is
    never touched; ``on_stdin_closed`` decides (e.g. ``stdinOnce``). ``on_stdin_closed`` is
    called at most once, when this stream's stdin ends by a v5 CLOSE or by the client going
    away, and only if ``stdin`` was requested.

    ``tty`` turns stderr off (§1); pass the process's own ``tty`` for attach. ``heartbeat``
    makes the server ping too; a real API server only answers pings (client-go sends them
    every 5 s), which happens regardless.

    Before the upgrade this raises ``web.HTTPException``: 400 when no stream is requested or
    the request is no WebSocket upgrade, 403 when no offered subprotocol is supported.
    """
    if not (stdin or stdout or stderr):
        # The kubelet's wording; the API server rejects the same request with a 400 too.
        raise web.HTTPBadRequest(
            text=_status_body(
                "you must specify at least 1 of stdin, stdout, stderr", "BadRequest", 400
            ),
            content_type="application/json",
        )
    offered = [
        part
        for value in request.headers.getall("Sec-WebSocket-Protocol", [])
        for part in value.split(",")
    ]
    chosen = select_subprotocol(offered)
    if chosen is None:
        raise web.HTTPForbidden()  # x/net/websocket's answer: bare 403, empty body
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise web.HTTPBadRequest(
            text=_status_body("Upgrade request required", "BadRequest", 400),
            content_type="application/json",
        )

    ws = web.WebSocketResponse(
        protocols=(chosen,) if chosen else (),
        autoping=True,
        heartbeat=heartbeat,
        # x/net/websocket has no permessage-deflate; clients must not rely on it here either.
        compress=False,
        timeout=_CLOSE_HANDSHAKE_TIMEOUT,
    )
    session = _StreamSession(
        ws,
        process,
        _PROTOCOLS[chosen],
        stdin=stdin,
        stdout=stdout,
        stderr=stderr and not tty,
        tty=tty,
        on_stdin_closed=on_stdin_closed,
        report_exit=report_exit,
        owns_process=owns_process,
    )
    try:
        await ws.prepare(request)
        await session.run()
    finally:
        session.detach()
    return ws


class _StreamSession:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        process: ContainerProcess,
        protocol: _Protocol,
        *,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
        on_stdin_closed: Callable[[], None] | None,
        report_exit: bool,
        owns_process: bool,
    ) -> None:
        self._ws = ws
        self._process = process
        self._protocol = protocol
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr
        self._tty = tty
        self._on_stdin_closed = on_stdin_closed
        self._report_exit = report_exit
        self._owns_process = owns_process
        self._stdin_ended = False
        self._resize_ended = False
        self._resize_buffer = ""
        # Subscribe now, before any start(): attach has no replay, exec must miss nothing.
        self._subscription: Subscription | None = process.subscribe() if stdout or stderr else None

    def detach(self) -> None:
        if self._subscription is not None:
            self._subscription.close()

    async def run(self) -> None:
        # §4: an empty frame on the lowest writable stream says "ready".
        if self._stdout:
            ready = CHANNEL_STDOUT
        elif self._stderr:
            ready = CHANNEL_STDERR
        else:
            ready = CHANNEL_ERROR
        if not await self._send(ready, b""):
            self._disconnected()
            await self._stop_owned_process()
            return
        if not self._process.started:
            try:
                await self._process.start()
            except OSError as error:
                await self._finish(
                    _internal_error_status(f"error executing command in container: {error}")
                )
                return

        reader = asyncio.create_task(self._read_client(), name="kubesim-stream-in")
        writer = asyncio.create_task(self._forward_output(), name="kubesim-stream-out")
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer in done and writer.result() is _End.EXITED:
                await self._finish(await self._final_status())
                # The reader sees the close (or the process's stdin closing) and returns.
                await asyncio.wait({reader}, timeout=_CLOSE_HANDSHAKE_TIMEOUT)
                return
            end = writer.result() if writer in done else reader.result()
            writer.cancel()
            reader.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            self._disconnected()
            if end is _End.PROTOCOL_ERROR:
                await self._ws.close(code=WSCloseCode.PROTOCOL_ERROR)
            elif end is _End.TOO_SLOW:
                await self._ws.close(
                    code=WSCloseCode.INTERNAL_ERROR, message=b"client too slow, output dropped"
                )
            else:
                await self._ws.close()
            await self._stop_owned_process()
        except BaseException:
            # Cancelled (server shutting down) or failed: awaiting is no longer safe here, so
            # an owned process gets the hard signal now rather than outliving its stream.
            if self._owns_process:
                self._process.kill(signal.SIGKILL)
            raise
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)

    # -------------------------------------------------------------------- endings
    async def _final_status(self) -> dict[str, Any]:
        await self._process.wait()
        code = self._process.exit_code
        if not self._report_exit or code == 0 or code is None:
            return _success_status()
        return _exit_status(code, self._process.argv, self._protocol)

    async def _finish(self, status: dict[str, Any]) -> None:
        """Write the status on the error channel (§6), then close normally."""
        if self._protocol.status_json:
            payload = json.dumps(status, separators=(",", ":")).encode()
        elif status["status"] != "Success":
            payload = str(status["message"]).encode()  # before v4: the error text only
        else:
            payload = b""
        if payload:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STATUS_WRITE_TIMEOUT):
                    await self._send(CHANNEL_ERROR, payload)
        await self._ws.close()

    def _disconnected(self) -> None:
        # An owned process is about to be stopped, so its stdin is left alone (closing it
        # first would let it exit "successfully" on EOF); the callback still hears of it.
        if self._stdin and not self._stdin_ended:
            self._stdin_ended = True
            if self._on_stdin_closed is not None:
                self._on_stdin_closed()

    async def _stop_owned_process(self) -> None:
        if self._owns_process and self._process.started:
            await self._process.stop(_EXEC_KILL_GRACE)

    def _end_stdin(self) -> None:
        if self._stdin_ended:
            return
        self._stdin_ended = True
        if self._owns_process and self._process.started:
            self._process.close_stdin()
        if self._on_stdin_closed is not None:
            self._on_stdin_closed()

    # -------------------------------------------------------------------- output
    async def _forward_output(self) -> _End:
        if self._subscription is not None:
            try:
                async for chunk in self._subscription:
                    if chunk.channel == STDOUT and self._stdout:
                        sent = await self._send(CHANNEL_STDOUT, chunk.data)
                    elif chunk.channel == STDERR and self._stderr:
                        sent = await self._send(CHANNEL_STDERR, chunk.data)
                    else:
                        continue
                    if not sent:
                        return _End.DISCONNECTED
            except SubscriberTooSlowError:
                return _End.TOO_SLOW
        await self._process.wait()
        return _End.EXITED

    async def _send(self, channel: int, payload: bytes) -> bool:
        """Send one frame; False if the connection is gone."""
        if self._ws.closed:
            return False
        try:
            if self._protocol.base64:
                await self._ws.send_str(
                    chr(ord("0") + channel) + base64.b64encode(payload).decode()
                )
            else:
                await self._ws.send_bytes(bytes((channel,)) + payload)
        except ConnectionError:
            return False
        return True

    # -------------------------------------------------------------------- input
    async def _read_client(self) -> _End:
        # One message at a time, and the next only once stdin has taken this one: aiohttp
        # stops reading the socket when its small queue is full, so a program that does not
        # read its stdin slows the client down instead of filling our memory.
        while True:
            msg = await self._ws.receive()
            if msg.type is WSMsgType.BINARY:
                frame = self._decode(bytes(msg.data))
            elif msg.type is WSMsgType.TEXT:
                # x/net/websocket hands text and binary messages over alike, and the Python
                # client sends str data as text frames: chr(channel) + text.
                frame = self._decode(str(msg.data).encode())
            elif msg.type in _GONE:
                return _End.DISCONNECTED
            else:
                continue
            if frame is None:
                continue
            channel, payload = frame
            if channel == CHANNEL_CLOSE and self._protocol.close_signal:
                # §7: exactly [255, channel]; anything else stops the reading for good.
                if len(payload) != 1 or payload[0] >= _CHANNEL_COUNT:
                    return _End.PROTOCOL_ERROR
                self._half_close(payload[0])
            elif channel == CHANNEL_STDIN:
                await self._write_stdin(payload)
            elif channel == CHANNEL_RESIZE:
                self._resize(payload)
            # Channels 1-3 are write-only and others do not exist: dropped (§3).

    def _decode(self, data: bytes) -> tuple[int, bytes] | None:
        if not data:
            return None  # §3: zero-length messages are skipped
        if not self._protocol.base64:
            return data[0], data[1:]
        try:
            return data[0] - ord("0"), base64.b64decode(data[1:], validate=True)
        except (binascii.Error, ValueError):
            return None  # the Go server logs the decoding error and drops the frame

    def _half_close(self, channel: int) -> None:
        if channel == CHANNEL_STDIN and self._stdin:
            self._end_stdin()
        elif channel == CHANNEL_RESIZE:
            self._resize_ended = True

    async def _write_stdin(self, payload: bytes) -> None:
        if not self._stdin or self._stdin_ended or not payload:
            return
        # Closed by another attachment, or the process is gone: the data is dropped.
        with contextlib.suppress(StdinClosedError):
            await self._process.write_stdin(payload)

    def _resize(self, payload: bytes) -> None:
        if not self._tty or self._resize_ended or not self._process.tty:
            return
        # §5: a stream of JSON values, not one per message.
        self._resize_buffer += payload.decode("utf-8", errors="replace")
        decoder = json.JSONDecoder()
        while True:
            text = self._resize_buffer.lstrip()
            if not text:
                self._resize_buffer = ""
                return
            try:
                value, end = decoder.raw_decode(text)
            except json.JSONDecodeError:
                if len(text) > 4096:  # not an incomplete object, just garbage
                    self._resize_ended = True
                    self._resize_buffer = ""
                else:
                    self._resize_buffer = text
                return
            self._resize_buffer = text[end:]
            size = _terminal_size(value)
            if size is None:
                # The kubelet's json.Decoder stops at the first bad value; so do we.
                self._resize_ended = True
                self._resize_buffer = ""
                return
            width, height = size
            if width and height:
                self._process.resize(cols=width, rows=height)


def _terminal_size(value: object) -> tuple[int, int] | None:
    """Decode a TerminalSize as Go would: field names match case-insensitively, uint16."""
    if not isinstance(value, dict):
        return None
    fields = {str(key).lower(): item for key, item in value.items()}
    size: list[int] = []
    for name in ("width", "height"):
        item = fields.get(name, 0)
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 0xFFFF:
            return None
        size.append(item)
    return size[0], size[1]
