"""One recording being written while its session runs, by the worker's recording process.

How a session uses it (the attach bridge's ``on_output`` is :meth:`Recorder.append`)::

    recorder = await open_recorder(config, session_id=sid, title=title_for(...),
                                   width=cols, height=rows, term=term,
                                   secrets=[token, lease_id],
                                   record_input=grant.record_input,
                                   pause=lambda held: bridge.hold_output(held),
                                   on_failure=lambda exc: <end the session with exc>)
    bridge = AttachBridge(stream, write=..., pause_input=..., on_output=recorder.append)
    # resizes: recorder.resize(cols, rows); keystrokes: recorder.input(data)
    # a secret learnt later: recorder.add_secret(value)
    try:
        status = await bridge.run()
    finally:
        summary = await recorder.aclose()   # the recording id and hash go in the audit event

**Where the work happens.** Redaction, asciicast encoding, sealing and writing run in the
worker's **recording process** (:mod:`bastion.recording.service`, one per worker, started
by :class:`RecordingProcess`), never in the worker: there they held the GIL, and every
session's keystrokes wait for the worker's event loop. The worker's share of a recording is
one ``sendmsg`` per output chunk on a Unix socket (:mod:`bastion.recording.wire`), with the
time the operator saw it.

**The hot path** (:meth:`~Recorder.append`, :meth:`~Recorder.input`, :meth:`~Recorder.resize`)
stamps the time (``time.monotonic``, relative to the recording's start) and sends the bytes,
or queues them in order while the socket is full: no redaction, no encoding, no file I/O, so
it never blocks the event loop. It raises
:class:`~bastion.recording.errors.RecordingUnavailable` once the recording has failed (a
write failed, the recording process stopped), or when more than ``max_backlog`` bytes (64
MiB) are not yet written: the bridge then ends and the session with it, never running
unrecorded. Before that, past ``pause_above`` (4 MiB) not yet written, ``pause(True)`` asks
the session to stop reading output until the recording process has written all but
``resume_below`` (1 MiB), when ``pause(False)`` is called: the operator sees nothing that
the recording could not take, and no buffer grows without bound.

**Failure.** A recording whose file cannot be written (``ENOSPC``, ``EFBIG``...) or whose
recording process stopped calls ``on_failure`` once (the session ends), and :meth:`aclose`
raises; :meth:`Recorder.summary` then says how far the file got. A recording that cannot be
opened raises from :func:`open_recorder`: the session must not start. The next recording
after a stopped recording process starts a new one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import os
import secrets as token_source
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from bastion.config import Config
from bastion.keys.recipients import current_recipient
from bastion.recording import wire
from bastion.recording.asciicast import CastHeader
from bastion.recording.errors import RecordingUnavailable
from bastion.recording.key_files import load_or_create_signing_key
from bastion.recording.keys import parse_auditor_public_key, raw_public
from bastion.recording.sealed import Sealer
from bastion.recording.writer import (
    FLUSH_BYTES,
    RecordingFile,
    RecordingSummary,
    RecordingWriter,
    recording_path,
    utc_text,
)

__all__ = [
    "FLUSH_BYTES",
    "MAX_BACKLOG",
    "PAUSE_ABOVE",
    "RESUME_BELOW",
    "Recorder",
    "RecordingProcess",
    "RecordingSummary",
    "open_recorder",
    "open_recording",
    "recording_path",
    "recording_process",
    "start_recording",
    "stop_recording_processes",
]

log = logging.getLogger(__name__)

PAUSE_ABOVE: Final = 4 * 1024 * 1024
RESUME_BELOW: Final = 1024 * 1024
MAX_BACKLOG: Final = 64 * 1024 * 1024
# The worker's end of the socket: what the kernel holds before the worker queues itself.
SEND_BUFFER: Final = 4 * 1024 * 1024
START_TIMEOUT: Final = 20.0  # a fresh interpreter on a busy machine
REPLY_TIMEOUT: Final = 30.0  # opening a file: a few fsyncs
CLOSE_TIMEOUT: Final = 60.0  # writing what waits (at most 64 MiB) and the end
STOP_TIMEOUT: Final = 10.0
# The recording process's nice level. Recording is bulk work: when the host is short of CPU,
# it waits (and the session's output with it, by flow control) while the worker, which every
# session's keystrokes cross, goes first. Nice 10 was not enough: a busy event loop (a worker
# streaming one session's output) shares its core with the recording process, and the
# scheduler (EEVDF, Linux 6.6 on) then gives a nice-10 neighbour slices that the loop's
# wake-ups wait behind. Modelled on the bench machine (a loop busy 60% of the time answering
# a pipe, a CPU-bound process on its core): reply p99 3.5 ms next to nice 10, batch or not,
# 0.35 ms next to nice 19, as with nothing there. In the debug bench, alternating the two
# levels every 200 keystrokes next to a streaming session: echo p99 4.19 ms at nice 10,
# 3.96 ms at nice 19 (p90 1.82 and 1.55), with no throughput lost (bench/README.md).
RECORDING_NICE: Final = 19
_IOV_MAX: Final = 512

_STOPPED_HINT: Final = (
    "the session was ended; the next session starts a new recording process "
    "(the service's log says why this one stopped)"
)


# ------------------------------------------------------------------------------ recorder
class Recorder:
    """One session's recording, written by the recording process; see the module docstring."""

    def __init__(
        self,
        process: RecordingProcess,
        number: int,
        recording_id: str,
        path: Path,
        state: dict[str, Any],
        *,
        record_input: bool = False,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[bool], None] | None = None,
        on_failure: Callable[[RecordingUnavailable], None] | None = None,
        pause_above: int = PAUSE_ABOVE,
        resume_below: int = RESUME_BELOW,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self._process = process
        self._number = number
        self.recording_id = recording_id
        self.path = path
        self._clock = clock
        self._started = clock()
        self._record_input = record_input
        self._pause = pause
        self._on_failure = on_failure
        self._pause_above = pause_above
        self._resume_below = resume_below
        self._max_backlog = max_backlog
        self._sent = 0  # data bytes handed to the recording process
        self._taken = 0  # ... of which it has written
        self._state = state  # the file as the recording process last reported it
        self._failure: RecordingUnavailable | None = None
        self._closing: asyncio.Future[RecordingSummary] | None = None
        self._closed = False
        self._paused = False
        self._feed: Callable[[bytes], None] | None = None

    @property
    def backlog(self) -> int:
        """Bytes handed over and not yet written to the file."""
        return self._sent - self._taken

    # ------------------------------------------------------------------ the hot path
    def append(self, chunk: bytes) -> None:
        """Output from the container, just before it goes to the operator. Never blocks."""
        self._add(wire.OUTPUT, chunk)

    def input(self, data: bytes) -> None:
        """Keystrokes; recorded only when the grant says so (``record_input``)."""
        if self._record_input:
            self._add(wire.INPUT, data)

    def resize(self, cols: int, rows: int) -> None:
        self._add(wire.RESIZE, b"%dx%d" % (cols, rows))

    def add_secret(self, secret: str) -> None:
        """Redact this string too, from everything not written yet on."""
        if self._failure is None and self._closing is None:
            self._process.send(wire.SECRET, self._number, secret.encode())

    def watch(self, feed: Callable[[bytes], None] | None) -> None:
        """Give ``feed`` the output as the recording process redacts it for the file (the
        live view of issue 9); None stops it. Never the bytes :meth:`append` was given."""
        self._feed = feed
        if self._failure is None and self._closing is None:
            self._process.send(wire.WATCH, self._number, b"0" if feed is None else b"1")

    def watched(self, redacted: bytes) -> None:
        """Redacted output from the recording process, for the live view."""
        if self._feed is not None:
            self._feed(redacted)

    def _add(self, kind: int, data: bytes) -> None:
        if self._failure is not None or self._closing is not None:
            raise self._error()
        if not data:
            return
        self._sent += len(data)
        backlog = self._sent - self._taken
        if backlog > self._max_backlog:
            self.fail(
                RecordingUnavailable(
                    f"the recording {self.path} fell more than "
                    f"{self._max_backlog // (1024 * 1024)} MiB behind the session's output: "
                    "the recording process cannot keep up",
                    hint="check the recordings filesystem's speed and the host's load",
                ),
                notify=False,
                abandon=True,
            )
            raise self._error()
        self._process.send(kind, self._number, data, self._clock() - self._started)
        if backlog > self._pause_above and not self._paused and self._pause is not None:
            self._paused = True
            self._pause(True)

    def _error(self) -> RecordingUnavailable:
        if self._failure is None:
            return RecordingUnavailable(f"the recording {self.path} is closed")
        return RecordingUnavailable(self._failure.message, hint=self._failure.hint)

    # ------------------------------------------------------------------ from the process
    def taken(self, taken: int, state: dict[str, Any]) -> None:
        """The recording process has written ``taken`` bytes of what it was sent."""
        self._taken = taken
        self._state = state
        if (
            self._paused
            and self._pause is not None
            and self._sent - self._taken < self._resume_below
        ):
            self._paused = False
            self._pause(False)

    def fail(
        self,
        exc: RecordingUnavailable,
        state: dict[str, Any] | None = None,
        *,
        notify: bool = True,
        abandon: bool = False,
    ) -> None:
        """The recording cannot go on: remembered, the session told once (``on_failure``).
        ``abandon``: the worker gave up on it, so the recording process closes the file
        without its end (it ends the same way when the process itself fails or stops)."""
        if state:
            self._state = {**self._state, **state}
        if self._failure is not None or self._closed:
            return
        self._failure = exc
        self._process.forget(self._number)
        if abandon:
            with contextlib.suppress(RecordingUnavailable):  # a stopped process closed it
                self._process.send(wire.ABANDON, self._number, b"")
        if self._closing is not None and not self._closing.done():
            self._closing.set_exception(self._error())
        elif notify and self._on_failure is not None:
            self._on_failure(exc)

    def closed(self, state: dict[str, Any]) -> None:
        """The recording process wrote everything and the end."""
        self._state = state
        self._taken = self._sent
        self._closed = True
        self._process.forget(self._number)
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(self.summary())

    # ------------------------------------------------------------------ the end
    async def aclose(self) -> RecordingSummary:
        """Have the recording process write the end and close the file. A cancelled caller
        does not cut the end short: the request is sent at once, and it is written anyway.

        Raises RecordingUnavailable when the recording failed before or fails now; the file
        then has no final segment, and :meth:`summary` says how far it got.
        """
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
            # Its outcome is the caller's to see; if the caller was cancelled, nobody asks.
            self._closing.add_done_callback(lambda f: f.cancelled() or f.exception())
            if self._failure is not None:
                self._closing.set_exception(self._error())
            else:
                try:
                    self._process.send(wire.CLOSE, self._number, b"")
                except RecordingUnavailable as exc:
                    self.fail(exc)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                return await asyncio.shield(self._closing)
        except TimeoutError:
            # A recording process stuck (a hung filesystem) must not hold the session's end.
            self.fail(
                RecordingUnavailable(
                    f"the recording process did not close the recording {self.path} "
                    f"within {CLOSE_TIMEOUT:.0f} s",
                    hint="check the recordings filesystem and the host's load",
                ),
                abandon=True,
            )
            return await asyncio.shield(self._closing)

    def summary(self) -> RecordingSummary:
        state = self._state
        return RecordingSummary(
            recording_id=self.recording_id,
            path=self.path,
            complete=bool(state.get("complete", False)),
            segments=int(state.get("segments", 0)),
            digest=str(state.get("digest", "")),
            size=int(state.get("size", 0)),
            redactions={str(k): int(v) for k, v in dict(state.get("redactions", {})).items()},
        )


# ------------------------------------------------------------------------------ the process
class RecordingProcess:
    """A worker's recording process and the socket to it: the worker's end.

    Started with :meth:`start` (from the event loop's thread: the kernel signals the process
    when the thread that started it ends), stopped with :meth:`aclose`. When it stops on
    its own, every recording it was writing fails (their sessions end), and
    :func:`recording_process` starts a new one for the next recording."""

    def __init__(self, recordings_dir: Path) -> None:
        self.recordings_dir = recordings_dir
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader = wire.FrameReader()
        self._queue: deque[memoryview] = deque()  # what the socket did not take yet, in order
        self._writing = False
        self._numbers = 0
        self._recorders: dict[int, Recorder] = {}
        self._opening: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._failure: RecordingUnavailable | None = None
        self._reaping: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def stopped(self) -> bool:
        return self._failure is not None

    async def start(self) -> None:
        """Start the process and wait until it serves; RecordingUnavailable if it cannot."""
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(
                self._start(), name="recording-process-start"
            )
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(OSError):
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        try:
            # Popen returns once the child has exec'ed (vfork): about a millisecond; the new
            # interpreter then starts on its own while the loop runs.
            self._proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own interpreter, module
                [
                    sys.executable,
                    "-I",
                    "-m",
                    "bastion.recording.service",
                    str(theirs.fileno()),
                    str(os.getpid()),
                    str(self.recordings_dir),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
                env={"LANG": "C.UTF-8"},
            )
        except OSError as exc:
            ours.close()
            self._failure = RecordingUnavailable(
                f"cannot start the recording process: {exc.strerror or exc}",
                hint="check the service's limits on processes and memory",
            )
            raise self._failure from None
        finally:
            theirs.close()
        with contextlib.suppress(OSError):  # a priority is a preference, not a right
            if RECORDING_NICE:
                os.setpriority(os.PRIO_PROCESS, self._proc.pid, RECORDING_NICE)
            # SCHED_BATCH: the kernel takes it for the CPU-bound bulk work it is and does not
            # let its wake-ups preempt a worker (or anything interactive) that is running.
            os.sched_setscheduler(self._proc.pid, os.SCHED_BATCH, os.sched_param(0))
        ours.setblocking(False)
        self._sock = ours
        self._ready = loop.create_future()
        loop.add_reader(ours, self._readable)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await self._ready
        except TimeoutError:
            self._gone(f"it did not start within {START_TIMEOUT:.0f} s")
        if self._failure is not None:
            raise self._error("cannot start the recording process")

    # ------------------------------------------------------------------ recordings
    async def open(
        self,
        request: dict[str, Any],
        *,
        record_input: bool,
        pause: Callable[[bool], None] | None,
        on_failure: Callable[[RecordingUnavailable], None] | None,
    ) -> Recorder:
        """Have the recording process create a recording (its file and header on disk)."""
        await self.start()
        loop = asyncio.get_running_loop()
        self._numbers += 1
        number = self._numbers
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._opening[number] = answer
        try:
            self.send(wire.OPEN, number, orjson.dumps(request))
            async with asyncio.timeout(REPLY_TIMEOUT):
                state = await answer
        except TimeoutError:
            raise RecordingUnavailable(
                f"the recording process did not open a recording within {REPLY_TIMEOUT:.0f} s",
                hint="check the recordings filesystem and the host's load",
            ) from None
        finally:
            self._opening.pop(number, None)
        recorder = Recorder(
            self,
            number,
            str(request["recording_id"]),
            Path(str(state.pop("path"))),
            state,
            record_input=record_input,
            pause=pause,
            on_failure=on_failure,
        )
        if self._failure is not None:  # it stopped right after opening it
            raise self._error(f"the recording {recorder.path} cannot be written")
        self._recorders[number] = recorder
        return recorder

    def forget(self, number: int) -> None:
        self._recorders.pop(number, None)

    # ------------------------------------------------------------------ sending
    def send(self, kind: int, number: int, payload: bytes, moment: float = 0.0) -> None:
        """One frame, in order; never blocks (what the socket cannot take yet is queued)."""
        if self._failure is not None:
            raise self._error("the recording cannot be written")
        header = wire.HEADER.pack(kind, number, len(payload), moment)
        if self._writing:
            self._queue.append(memoryview(header))
            self._queue.append(memoryview(payload))
            return
        sock = self._sock
        if sock is None:
            raise RecordingUnavailable("the recording process is not started")
        try:
            sent = sock.sendmsg((header, payload))
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._gone(exc.strerror or str(exc))
            raise self._error("the recording cannot be written") from None
        if sent < len(header) + len(payload):
            if sent < len(header):
                self._queue.append(memoryview(header)[sent:])
                self._queue.append(memoryview(payload))
            else:
                self._queue.append(memoryview(payload)[sent - len(header) :])
            self._writing = True
            if self._loop is not None:
                self._loop.add_writer(sock, self._drain)

    def _drain(self) -> None:
        sock, queue = self._sock, self._queue
        if sock is None:
            return
        while queue:
            batch = list(itertools.islice(queue, _IOV_MAX))
            try:
                sent = sock.sendmsg(batch)
            except BlockingIOError:
                return
            except OSError as exc:
                self._gone(exc.strerror or str(exc))
                return
            while sent:
                head = queue[0]
                if sent >= len(head):
                    sent -= len(head)
                    queue.popleft()
                else:
                    queue[0] = head[sent:]
                    sent = 0
        self._writing = False
        if self._loop is not None:
            self._loop.remove_writer(sock)

    # ------------------------------------------------------------------ receiving
    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(256 * 1024)
        except BlockingIOError:
            return
        except OSError as exc:
            self._gone(exc.strerror or str(exc))
            return
        if not data:
            self._gone("its end of the socket closed")
            return
        try:
            frames = self._reader.feed(data)
        except ValueError as exc:
            self._gone(str(exc))
            return
        for item in frames:
            self._dispatch(item)

    def _dispatch(self, item: wire.Frame) -> None:
        kind, number = item.kind, item.number
        if kind == wire.READY:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            return
        if kind == wire.WATCHED:
            watched = self._recorders.get(number)
            if watched is not None:
                watched.watched(item.payload)
            return
        body = item.json()
        if kind in (wire.OPENED, wire.REFUSED):
            answer = self._opening.get(number)
            if answer is None or answer.done():
                return
            if kind == wire.OPENED:
                answer.set_result(body)
            else:
                answer.set_exception(RecordingUnavailable(str(body["message"]), hint=body["hint"]))
            return
        recorder = self._recorders.get(number)
        if recorder is None:
            return
        if kind == wire.TAKEN:
            recorder.taken(int(body.pop("taken")), body)
        elif kind == wire.FAILED:
            exc = RecordingUnavailable(str(body.pop("message")), hint=body.pop("hint", None))
            recorder.fail(exc, body)
        elif kind == wire.CLOSED:
            recorder.closed(body)

    # ------------------------------------------------------------------ the end
    def _error(self, what: str) -> RecordingUnavailable:
        failure = self._failure
        if failure is None:
            return RecordingUnavailable(what)
        return RecordingUnavailable(f"{what}: {failure.message}", hint=failure.hint)

    def _gone(self, detail: str) -> None:
        """The process stopped (or cannot be talked to): every recording it wrote fails."""
        if self._failure is not None:
            return
        self._failure = RecordingUnavailable("the recording process stopped", hint=_STOPPED_HINT)
        log.error("the recording process %s stopped (%s)", self.pid, detail)
        _forget_process(self)
        self._detach()
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        for answer in self._opening.values():
            if not answer.done():
                answer.set_exception(self._error("cannot open the recording"))
        for recorder in list(self._recorders.values()):
            recorder.fail(
                RecordingUnavailable(
                    f"the recording process stopped before the recording {recorder.path} "
                    "was closed",
                    hint=_STOPPED_HINT,
                )
            )
        self._recorders.clear()
        if self._proc is not None and self._loop is not None:
            self._reaping = self._loop.create_task(self._reap(), name="recording-process-reap")

    def _detach(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock)
            if self._writing:
                self._loop.remove_writer(sock)
        self._writing = False
        self._queue.clear()
        sock.close()

    async def _reap(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            status = await asyncio.to_thread(proc.wait, STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = await asyncio.to_thread(proc.wait)
        if status < 0:
            log.info("the recording process %d ended by %s", proc.pid, signal.Signals(-status).name)
        elif status:
            log.info("the recording process %d exited with status %d", proc.pid, status)

    async def aclose(self) -> None:
        """Stop it: what was sent is written first (recordings still open stay incomplete),
        then the socket is closed and the process waited for."""
        _forget_process(self)
        sock = self._sock
        if sock is not None and self._failure is None:
            if self._loop is not None:
                self._loop.remove_reader(sock)
                if self._writing:
                    self._loop.remove_writer(sock)
            rest = b"".join(self._queue)
            self._queue.clear()
            self._writing = False
            self._sock = None
            sock.setblocking(True)
            sock.settimeout(STOP_TIMEOUT)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(sock.sendall, rest)
            sock.close()  # its end of the stream: it finishes and exits
            self._failure = RecordingUnavailable("the recording process was stopped")
            for recorder in list(self._recorders.values()):
                recorder.fail(
                    RecordingUnavailable(
                        f"the worker stopped before the recording {recorder.path} was closed"
                    )
                )
            self._recorders.clear()
            await self._reap()
        elif self._reaping is not None:
            await self._reaping


# ------------------------------------------------------------------------------ one per worker
# A worker's recording processes by event loop (a worker is one loop; tests run several in
# one interpreter) and recordings directory.
_processes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, RecordingProcess]]
_processes = weakref.WeakKeyDictionary()


def _forget_process(process: RecordingProcess) -> None:
    for running in _processes.values():
        for directory, known in list(running.items()):
            if known is process:
                del running[directory]


async def recording_process(recordings_dir: Path) -> RecordingProcess:
    """This worker's recording process for ``recordings_dir``, started if there is none (or
    the last one stopped). The worker starts it at its own start; a session that finds none
    starts one."""
    running = _processes.setdefault(asyncio.get_running_loop(), {})
    process = running.get(recordings_dir)
    if process is None or process.stopped:
        process = running[recordings_dir] = RecordingProcess(recordings_dir)
    await process.start()
    return process


async def stop_recording_processes(recordings_dir: Path | None = None) -> None:
    """Stop the recording process of the running loop for ``recordings_dir`` (the worker's
    stop), or all of them."""
    running = _processes.get(asyncio.get_running_loop(), {})
    for directory, process in list(running.items()):
        if recordings_dir is None or directory == recordings_dir:
            await process.aclose()


# ------------------------------------------------------------------------------ opening
def _settings(config: Config) -> tuple[X25519PublicKey, float]:
    settings = config.recording
    if settings is None:
        raise RecordingUnavailable(
            "sessions cannot be recorded: the config has no recording.auditor_public_key",
            hint="run 'bastion recordings keygen NAME' on an auditor's machine and put the "
            "line it prints in the config's recording section",
        )
    # The configured key, or the key a rotation handed over to (bastion/keys/recipients.py).
    recipient = current_recipient(config.paths.state_dir, settings.auditor_public_key)
    try:
        auditor_key = parse_auditor_public_key(recipient)
    except ValueError as exc:
        raise RecordingUnavailable(f"recording.auditor_public_key: {exc}") from None
    return auditor_key, settings.flush_interval.total_seconds()


def start_recording(
    config: Config,
    *,
    session_id: str,
    title: str,
    width: int,
    height: int,
    term: str = "xterm-256color",
    secrets: Iterable[str] = (),
    record_input: bool = False,
    now: datetime | None = None,
) -> RecordingWriter:
    """A recording written in this process, blocking (tools and tests; sessions use
    :func:`open_recorder`): the same file, the same work, no recording process."""
    auditor_key, interval = _settings(config)
    signing_key = load_or_create_signing_key(config.paths.state_dir)
    recording_id = token_source.token_hex(8)
    started = now or datetime.now(UTC)
    sealer = Sealer(
        recording_id=recording_id,
        session_id=session_id,
        created=utc_text(started),
        auditor_key=auditor_key,
        signing_key=signing_key,
    )
    file = RecordingFile.create(
        recording_path(config.paths.recordings_dir, recording_id), sealer, fsync_interval=interval
    )
    header = CastHeader(
        width=width, height=height, timestamp=int(started.timestamp()), title=title, term=term
    )
    return RecordingWriter(file, header, secrets=secrets, record_input=record_input)


async def open_recorder(
    config: Config,
    *,
    session_id: str,
    title: str,
    width: int,
    height: int,
    term: str = "xterm-256color",
    secrets: Iterable[str] = (),
    record_input: bool = False,
    pause: Callable[[bool], None] | None = None,
    on_failure: Callable[[RecordingUnavailable], None] | None = None,
) -> Recorder:
    """Create the session's recording (its file and header on disk, through the worker's
    recording process). Raises RecordingUnavailable when there is no auditor key, no signing
    key, no recording process, or no file: the session must not start."""
    auditor_key, interval = _settings(config)
    # Read (and checked) for each recording, as every secret file is each time it is used.
    signing_key = await asyncio.to_thread(load_or_create_signing_key, config.paths.state_dir)
    return await open_recording(
        config.paths.recordings_dir,
        auditor_key=auditor_key,
        signing_key=signing_key,
        flush_interval=interval,
        session_id=session_id,
        title=title,
        width=width,
        height=height,
        term=term,
        secrets=secrets,
        record_input=record_input,
        pause=pause,
        on_failure=on_failure,
    )


async def open_recording(
    recordings_dir: Path,
    *,
    auditor_key: X25519PublicKey,
    signing_key: Ed25519PrivateKey,
    flush_interval: float,
    session_id: str,
    title: str,
    width: int,
    height: int,
    term: str = "xterm-256color",
    secrets: Iterable[str] = (),
    record_input: bool = False,
    pause: Callable[[bool], None] | None = None,
    on_failure: Callable[[RecordingUnavailable], None] | None = None,
) -> Recorder:
    """:func:`open_recorder` with the keys and settings given rather than read from the
    config (benchmarks)."""
    process = await recording_process(recordings_dir)
    started = datetime.now(UTC)
    request = {
        "recording_id": token_source.token_hex(8),
        "session_id": session_id,
        "created": utc_text(started),
        "timestamp": started.timestamp(),
        "title": title,
        "width": width,
        "height": height,
        "term": term,
        "secrets": list(secrets),
        "record_input": record_input,
        "flush_interval": flush_interval,
        "auditor_key": base64.b64encode(raw_public(auditor_key)).decode(),
        "signing_key": base64.b64encode(signing_key.private_bytes_raw()).decode(),
    }
    return await process.open(
        request, record_input=record_input, pause=pause, on_failure=on_failure
    )
