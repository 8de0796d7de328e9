"""The client side of ``pods/{name}/attach`` over a WebSocket: a container's TTY as a stream.

The protocol is the one in ``shared/specs/kubernetes-streaming-protocol.md`` (§ below refers to
it): ``v5.channel.k8s.io`` (the API server's stream translator), falling back to
``v4.channel.k8s.io`` (a kubelet reached directly); binary frames whose first byte is the
channel; the terminal size as JSON on channel 4; a ``metav1.Status`` on channel 3 when the
stream ends; under v5, ``[255, 0]`` closes stdin and output keeps flowing until the end.

The bearer token goes only into the upgrade request's ``Authorization`` header, never into a
URL, a message or a log line. Every failure to attach is one sentence for the operator
(:class:`~bastion.errors.BackendUnavailable` or :class:`~bastion.errors.PolicyDenied`).

Flow control, as checked in aiohttp 3.14 (``_websocket/reader_py.py``, ``client.py``):

* **Output.** The socket's frames go to a ``WebSocketDataQueue`` whose high-water mark is
  2 x ``DEFAULT_CHUNK_SIZE`` = 512 KiB of payload. Past it the reader stops parsing, keeps the
  unparsed rest of that socket read (at most one TLS read, 256 KiB) and pauses the transport;
  it resumes when :meth:`AttachStream.read` has drained the queue to half. So a caller that
  stops calling ``read()`` makes the bastion stop reading the socket, and TCP pushes back to
  the API server. What aiohttp can hold is the queue, one frame in progress (at most
  ``_MAX_FRAME``) and that rest: bounded, without a limit of ours on top.
* **Input.** ``send_bytes`` writes the frame into the transport at once and waits for the
  transport to drain once it has written more than 64 KiB since the last check while the
  transport is over its high-water mark; :meth:`AttachStream.write` therefore waits while the
  socket's buffer is full, with at most 64 KiB of overshoot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from aiohttp import WSMsgType

from bastion.errors import BackendUnavailable, BastionError, PolicyDenied
from bastion.terminal_text import printable
from bastion.vault import KubeToken

__all__ = [
    "PROTOCOLS",
    "READ_BATCH",
    "V4",
    "V5",
    "AttachStream",
    "ExecResult",
    "open_attach",
    "run_exec",
]

V5: Final = "v5.channel.k8s.io"
V4: Final = "v4.channel.k8s.io"
# Most capable first; a real cluster picks v5 whenever it is offered (§2).
PROTOCOLS: Final = (V5, V4)

_STDOUT: Final = 1
_STDERR: Final = 2
_ERROR: Final = 3
_RESIZE: Final = 4
_CLOSE_STDIN: Final = bytes((255, 0))  # §7: CLOSE signal for channel 0
_STDIN_PREFIX: Final = b"\x00"
_RESIZE_PREFIX: Final = bytes((_RESIZE,))

# The API server copies output in 32 KiB reads and kubesim in 64 KiB ones: a frame this big is
# not a terminal's output, and refusing it bounds what one frame can make the bastion hold.
_MAX_FRAME: Final = 1 << 20
# A Status is a few hundred bytes; more on channel 3 is not one.
_MAX_STATUS: Final = 64 * 1024
# What one read() joins at most: OpenSSH's largest channel packet (CHAN_SES_PACKET_DEFAULT),
# so that a read goes out as one full packet.
READ_BATCH: Final = 32 * 1024
# How long closing waits for the server's answering close frame (kubesim waits 2 s too).
_CLOSE_HANDSHAKE: Final = 2.0
# Kubernetes object names: namespaces and containers are DNS labels, pods DNS subdomains.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# A cluster's message is cut to this many characters before it reaches a terminal.
_MESSAGE_LIMIT: Final = 200
_REASON = re.compile(r"[A-Za-z]{1,64}")


class AttachStream:
    """One attach WebSocket: the container's terminal output in, keystrokes and sizes out.

    Made by :func:`open_attach`. ``read()`` is for one task; ``write()``, ``resize()`` and
    ``close_stdin()`` may be called from another one meanwhile.

    After ``read()`` returned ``None``: ``exit_status`` is 0 for a ``Success`` status and the
    ``ExitCode`` cause of a ``NonZeroExitCode`` one; ``failure`` is one sentence when the
    status (or the stream itself) was an error; both stay ``None`` when the connection ended
    without a status (it broke, or this side closed it). The kubelet's *attach* reports
    ``Success`` however the container ended (only exec carries exit codes): the container's
    own exit code is in the pod's status (``state.terminated.exitCode``).
    """

    protocol: str
    exit_status: int | None
    failure: str | None

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[Any], protocol: str, target: str):
        self.protocol = protocol
        self.exit_status = None
        self.failure = None
        self._ws = ws
        self._target = target
        self._status = bytearray()
        self._ended = False
        self._stdin_closed = False
        self._close_lock = asyncio.Lock()
        self._connection_closed = _connection_closed(ws)
        self._frames_waiting = _frames_waiting(ws)
        self._carried: memoryview | None = None  # output read past a limit, for the next read

    async def read(self, limit: int = READ_BATCH) -> bytes | None:
        """The next piece of terminal output, at most ``limit`` bytes; ``None`` at the end.

        One frame's payload, or several: the output frames already received are joined, up
        to ``limit`` bytes, without waiting for more (a frame that would pass the limit waits
        for the next read; one larger than the limit comes alone). A PTY gives its output in
        reads of about 4 KiB (kubesim's come as 4,095 bytes then 1), one frame each; written
        one by one they become one small SSH packet each, and the packets, not the bytes, are
        what the bastion pays for (bench/README.md, "Debug shells"). Joined, they go out as
        packets of the size the client asked for.
        """
        parts: list[memoryview] = []
        size = 0
        if self._carried is not None:
            parts.append(self._carried)
            size = len(self._carried)
            self._carried = None
        while not self._ended:
            if parts and (size >= limit or not self._frames_waiting()):
                break
            msg = await self._ws.receive()
            if msg.type is WSMsgType.BINARY:
                data: bytes = msg.data
                # Empty frames (the "ready" marker of §4, or nothing at all) are skipped, and
                # so are channels a server must not write to (§3).
                if len(data) > 1:
                    channel = data[0]
                    if channel in (_STDOUT, _STDERR):
                        if parts and size + len(data) - 1 > limit:
                            self._carried = memoryview(data)[1:]
                            break
                        parts.append(memoryview(data)[1:])
                        size += len(data) - 1
                    elif channel == _ERROR:
                        self._collect_status(data)
            elif msg.type is WSMsgType.TEXT:
                # Only the base64 protocols use text frames, and they were not offered.
                self._end(f"the cluster broke the {self.protocol} protocol (a text frame)")
            elif msg.type not in (WSMsgType.PING, WSMsgType.PONG):
                self._end_with_status(msg)
        if not parts:
            return None
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the container's stdin; waits while the socket's buffer is full.

        BackendUnavailable once stdin was closed or the connection is closing or closed.
        """
        if not data:
            return
        if self._stdin_closed or self._ws.closed:
            raise self._gone()
        try:
            await self._ws.send_bytes(_STDIN_PREFIX + data)
        except ConnectionError:
            raise self._gone() from None

    async def resize(self, cols: int, rows: int) -> None:
        """Tell the container's terminal its new size (§5); sizes outside 1-65535 are ignored.

        A window-change with a zero size carries no size, and Go's uint16 would wrap a larger
        one into a wrong one.
        """
        if not (0 < cols <= 0xFFFF and 0 < rows <= 0xFFFF) or self._ws.closed:
            return
        # json.Encoder ends each value with a newline; the server reads a stream of values.
        payload = json.dumps({"Width": cols, "Height": rows}, separators=(",", ":")) + "\n"
        try:
            await self._ws.send_bytes(_RESIZE_PREFIX + payload.encode())
        except ConnectionError:
            raise self._gone() from None

    async def close_stdin(self) -> None:
        """End the container's input (an EOF); idempotent.

        v5 sends the CLOSE signal and the output keeps flowing until the container's status.
        v4 has no way to close stdin alone (§7), so the connection is closed: the output ends
        here, and a container with ``stdinOnce`` sees its stdin closed.
        """
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self.protocol != V5:
            await self.aclose()
            return
        if self._ws.closed:
            return
        try:
            await self._ws.send_bytes(_CLOSE_STDIN)
        except ConnectionError:
            raise self._gone() from None

    async def aclose(self) -> None:
        """Close the connection; idempotent. Output not read yet is dropped."""
        async with self._close_lock:
            if not self._ws.closed:
                await self._ws.close()
            # aiohttp closes the TLS connection in the background (close_notify both ways);
            # waiting for it means a closed stream holds no socket, even briefly.
            closed = self._connection_closed
            if closed is not None:
                await asyncio.wait({closed}, timeout=_CLOSE_HANDSHAKE)
                if closed.done() and not closed.cancelled():
                    closed.exception()  # retrieved: a broken connection is no news here

    async def __aenter__(self) -> AttachStream:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ the end
    def _collect_status(self, frame: bytes) -> None:
        if len(self._status) + len(frame) - 1 > _MAX_STATUS:
            self._end("the cluster sent a final status too large to be one")
            return
        self._status += memoryview(frame)[1:]

    def _end_with_status(self, msg: aiohttp.WSMessage) -> None:
        if msg.type is WSMsgType.ERROR and isinstance(msg.data, aiohttp.WebSocketError):
            # aiohttp's own verdict on the frames (too large, malformed), not a broken socket.
            self._end(f"the cluster broke the {self.protocol} protocol ({type(msg.data).__name__})")
            return
        if self._status:
            self.exit_status, self.failure = _parse_status(bytes(self._status), self._target)
        self._end(None)

    def _end(self, failure: str | None) -> None:
        self._ended = True
        if failure is not None:
            self.failure = f"the attach to {self._target} failed: {failure}"

    def _gone(self) -> BackendUnavailable:
        return BackendUnavailable(f"the connection to {self._target} has closed")


def _connection_closed(ws: aiohttp.ClientWebSocketResponse[Any]) -> asyncio.Future[None] | None:
    """The future aiohttp sets once the WebSocket's connection is closed, if it can be found.

    aiohttp 3.14 keeps it on the connection's protocol (``ResponseHandler.closed``, what
    ``ClientSession.close()`` waits for on pooled connections); a WebSocket's connection is
    never pooled, so only this way can anyone wait for it. None if aiohttp moved it.
    """
    connection = getattr(getattr(ws, "_response", None), "connection", None)
    closed = getattr(getattr(connection, "protocol", None), "closed", None)
    return closed if isinstance(closed, asyncio.Future) else None


def _frames_waiting(ws: aiohttp.ClientWebSocketResponse[Any]) -> Callable[[], bool]:
    """A test for "a frame has been received and not read yet", if aiohttp's queue is found.

    aiohttp 3.14 parses frames into ``ws._reader`` (a ``WebSocketDataQueue``) whose
    ``_buffer`` deque holds them until ``receive()`` takes one; ``receive()`` then returns
    without suspending. Nothing public says whether one is there. If aiohttp moved it, reads
    are one frame each: slower, never wrong.
    """
    buffer = getattr(getattr(ws, "_reader", None), "_buffer", None)
    if isinstance(buffer, deque):
        queued: deque[object] = buffer
        return lambda: bool(queued)
    return lambda: False


def _parse_status(payload: bytes, target: str) -> tuple[int | None, str | None]:
    """``(exit_status, failure)`` from the channel 3 Status (§6), as client-go reads it."""
    try:
        status = json.loads(payload)
    except ValueError:
        status = None
    if not isinstance(status, dict):
        return None, f"the attach to {target} ended with an unreadable status"
    if status.get("status") == "Success":
        return 0, None
    if status.get("status") != "Failure":
        return None, f"the attach to {target} ended with a status neither Success nor Failure"
    if status.get("reason") == "NonZeroExitCode":
        details = status.get("details")
        causes = details.get("causes") if isinstance(details, dict) else None
        for cause in causes if isinstance(causes, list) else []:
            if not isinstance(cause, dict) or cause.get("reason") != "ExitCode":
                continue
            code = cause.get("message")
            # client-go: strconv.ParseUint(message, 10, 8)
            if isinstance(code, str) and code.isascii() and code.isdigit() and int(code) < 256:
                return int(code), None
        return None, f"{target} ended with a non-zero exit code the cluster did not state"
    message = status.get("message")
    said = _cut(message) if isinstance(message, str) and message else "no reason given"
    return None, f"the attach to {target} failed: {said}"


def _cut(text: str) -> str:
    """A cluster's text made safe for a terminal (bastion.terminal_text) and cut short."""
    cut = text[:_MESSAGE_LIMIT] + ("..." if len(text) > _MESSAGE_LIMIT else "")
    return printable(cut)


# ---------------------------------------------------------------------------- opening
@dataclass(frozen=True, slots=True)
class _Target:
    namespace: str
    pod: str
    container: str

    def __str__(self) -> str:
        return f"container {self.container} of pod {self.namespace}/{self.pod}"

    @property
    def pod_path(self) -> str:
        return f"/api/v1/namespaces/{quote(self.namespace)}/pods/{quote(self.pod)}"


async def open_attach(
    http: aiohttp.ClientSession,
    token: KubeToken,
    *,
    namespace: str,
    pod: str,
    container: str,
    cols: int,
    rows: int,
    timeout: float,  # noqa: ASYNC109 - bounds the opening only, not the stream
    protocols: tuple[str, ...] = PROTOCOLS,
) -> AttachStream:
    """Attach to ``container``'s TTY (stdin, stdout, tty) and send the terminal's size.

    ``http``'s ``base_url`` is the cluster's API and its connector pins the cluster's CA.
    ``timeout`` bounds the opening (twice that when a refusal is explained from the pod).
    ``protocols`` is for tests (offer v4 alone); the order is the preference. The stream must
    be closed (``aclose()`` or ``async with``).
    """
    for value, what, pattern in (
        (namespace, "namespace", _LABEL),
        (pod, "pod", _NAME),
        (container, "container", _LABEL),
    ):
        if not pattern.fullmatch(value):
            raise PolicyDenied(f"{value!r} is not a valid {what} name")
    if not protocols or not set(protocols) <= set(PROTOCOLS):
        raise ValueError(f"protocols must be taken from {PROTOCOLS}, got {protocols!r}")
    target = _Target(namespace, pod, container)
    query = {"container": container, "stdin": "true", "stdout": "true", "tty": "true"}
    ws, protocol = await _connect(
        http, token, target, "attach", list(query.items()), timeout=timeout, protocols=protocols
    )
    stream = AttachStream(ws, protocol, str(target))
    try:
        await stream.resize(cols, rows)
    except BaseException:
        await stream.aclose()
        raise
    return stream


@dataclass(frozen=True)
class ExecResult:
    output: bytes  # stdout, at most the limit asked for
    exit_status: int | None  # None when the stream ended without a status
    failure: str | None  # one sentence when the cluster said the command failed to run
    truncated: bool


async def run_exec(
    http: aiohttp.ClientSession,
    token: KubeToken,
    *,
    namespace: str,
    pod: str,
    container: str,
    argv: tuple[str, ...],
    timeout: float,  # noqa: ASYNC109 - bounds the whole command: a view is short
    max_output: int,
) -> ExecResult:
    """Run ``argv`` in ``container`` without a terminal or stdin (``pods/exec``) and collect
    its stdout, up to ``max_output`` bytes (the rest ends the command: the stream is closed).

    ``argv`` goes as one ``command`` parameter per element: the kubelet runs it without a
    shell, so no element is ever interpreted."""
    for value, what, pattern in (
        (namespace, "namespace", _LABEL),
        (pod, "pod", _NAME),
        (container, "container", _LABEL),
    ):
        if not pattern.fullmatch(value):
            raise PolicyDenied(f"{value!r} is not a valid {what} name")
    if not argv:
        raise ValueError("argv must name a program")
    target = _Target(namespace, pod, container)
    query = [
        ("container", container),
        *(("command", part) for part in argv),
        ("stdout", "true"),
        ("stderr", "false"),
    ]
    ws, protocol = await _connect(
        http, token, target, "exec", query, timeout=timeout, protocols=PROTOCOLS
    )
    parts: list[bytes] = []
    size = 0
    truncated = False
    async with AttachStream(ws, protocol, str(target)) as stream:
        try:
            async with asyncio.timeout(timeout):
                while (chunk := await stream.read()) is not None:
                    if size + len(chunk) > max_output:
                        parts.append(chunk[: max_output - size])
                        truncated = True
                        break
                    parts.append(chunk)
                    size += len(chunk)
        except TimeoutError:
            raise BackendUnavailable(
                f"the command in {target} did not finish within {timeout:g} s",
                hint="the pod may be overloaded; try again",
            ) from None
        return ExecResult(b"".join(parts), stream.exit_status, stream.failure, truncated)


async def _connect(
    http: aiohttp.ClientSession,
    token: KubeToken,
    target: _Target,
    subresource: str,
    query: list[tuple[str, str]],
    *,
    timeout: float,  # noqa: ASYNC109 - bounds the opening only, not the stream
    protocols: tuple[str, ...],
) -> tuple[aiohttp.ClientWebSocketResponse[Any], str]:
    """Open the WebSocket of ``pods/{name}/{subresource}``; the socket and its protocol."""
    doing = "attach to" if subresource == "attach" else "run a command in"
    headers = {"Authorization": f"Bearer {token.reveal()}"}
    try:
        async with asyncio.timeout(timeout):
            ws = await http.ws_connect(
                f"{target.pod_path}/{subresource}",
                params=query,
                headers=headers,
                protocols=protocols,
                # No receive timeout: an idle shell is silent for hours (the session's idle
                # deadline ends it). No heartbeat either: aiohttp would close a connection
                # whose pong sits unread behind output the operator's terminal is not taking.
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_CLOSE_HANDSHAKE),
                heartbeat=None,
                compress=0,
                max_msg_size=_MAX_FRAME,
            )
    except aiohttp.WSServerHandshakeError as refused:
        problem = None
        if refused.status == 400 and subresource == "attach":
            # aiohttp drops the body of a refused upgrade; the pod itself says what is wrong.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    problem = await _container_problem(http, headers, target)
        raise problem or _refusal(refused.status, target, doing) from None
    except (aiohttp.ClientSSLError, ssl.SSLError):
        raise BackendUnavailable(
            f"could not {doing} {target}: the cluster's API certificate is not signed by its "
            "configured CA",
            hint="check clusters[].ca_file",
        ) from None
    except TimeoutError:
        raise BackendUnavailable(
            f"could not {doing} {target}: the cluster's API did not answer within {timeout:g} s",
            hint="check that the API server is up and reachable from the bastion",
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise BackendUnavailable(
            f"could not {doing} {target}: the cluster's API did not answer ({type(exc).__name__})",
            hint="check that the API server is up and reachable from the bastion",
        ) from None
    protocol = ws.protocol
    if protocol is None or protocol not in protocols:
        await ws.close()
        raise BackendUnavailable(
            f"could not {doing} {target}: the cluster's API speaks neither "
            f"{' nor '.join(protocols)}",
            hint="the bastion needs Kubernetes 1.30 or later (WebSocket streaming, KEP-4006)",
        )
    return ws, protocol


def _refusal(status: int, target: _Target, doing: str = "attach to") -> BastionError:
    """The error for an upgrade answered with ``status`` instead of 101."""
    subresource = "pods/attach" if doing == "attach to" else "pods/exec"
    if status == 404:
        return PolicyDenied(f"could not {doing} {target}: the pod does not exist (any more)")
    if status == 401:
        return BackendUnavailable(
            f"could not {doing} {target}: the session's credential was refused (401)",
            hint="the credential expired or was revoked; start the debug session again",
        )
    if status == 403:
        return BackendUnavailable(
            f"could not {doing} {target}: the session's credential may not "
            f"{'attach' if subresource == 'pods/attach' else 'run commands'} there (403)",
            hint=f"the Vault role's Kubernetes rules must allow get and create on {subresource} "
            "(bastion.kube_permissions)",
        )
    if status == 400:
        needs = "have stdin and tty set" if subresource == "pods/attach" else "be running"
        return PolicyDenied(
            f"could not {doing} {target}: the cluster refused it (400)",
            hint=f"the container must exist and {needs}",
        )
    return BackendUnavailable(
        f"could not {doing} {target}: the cluster's API answered {status}",
        hint="see the API server's logs",
    )


async def _container_problem(
    http: aiohttp.ClientSession, headers: dict[str, str], target: _Target
) -> BastionError | None:
    """Why the container cannot be attached to, read from its pod; None if that says nothing."""
    try:
        async with http.get(target.pod_path, headers=headers, allow_redirects=False) as answer:
            body: Any = await answer.json(content_type=None) if answer.status == 200 else None
    except (aiohttp.ClientError, OSError, ValueError):
        return None
    return _problem_in_pod(body, target) if isinstance(body, dict) else None


def _problem_in_pod(pod: dict[str, Any], target: _Target) -> BastionError | None:
    spec: Any = pod.get("spec") or {}
    status: Any = pod.get("status") or {}
    if not isinstance(spec, dict) or not isinstance(status, dict):
        return None
    declared: Any = None
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for item in spec.get(key) or []:
            if isinstance(item, dict) and item.get("name") == target.container:
                declared = item
    if declared is None:
        return PolicyDenied(
            f"could not attach: pod {target.namespace}/{target.pod} has no container "
            f"{target.container}"
        )
    state: Any = {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for item in status.get(key) or []:
            if isinstance(item, dict) and item.get("name") == target.container:
                state = item.get("state") or {}
    if not isinstance(state, dict):
        return None
    if isinstance(state.get("terminated"), dict):
        code = state["terminated"].get("exitCode")
        ended = f" (exit code {code})" if isinstance(code, int) else ""
        return PolicyDenied(f"could not attach: {target} has already ended{ended}")
    if isinstance(state.get("waiting"), dict):
        reason = state["waiting"].get("reason")
        why = f" ({reason})" if isinstance(reason, str) and _REASON.fullmatch(reason) else ""
        return BackendUnavailable(
            f"could not attach: {target} is not running yet{why}",
            hint="wait for it to start, or see the pod's events",
        )
    if not declared.get("stdin") or not declared.get("tty"):
        return PolicyDenied(
            f"could not attach: {target} was not started with stdin and tty, so a terminal "
            "cannot be attached to it"
        )
    return None
