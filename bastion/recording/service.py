"""A worker's recording process: every recording of the worker, written off its event loop.

    python -I -m bastion.recording.service FD PARENT_PID RECORDINGS_DIR

The worker (:class:`bastion.recording.recorder.RecordingProcess`) starts it with one end of a
socketpair as ``FD`` and sends :mod:`bastion.recording.wire` frames: each recording's
opening, its output, keystrokes and resizes stamped with the time the operator saw them, and
its close. This process redacts, encodes, seals and writes them
(:class:`~bastion.recording.writer.RecordingWriter`), so that that work costs another core and
never the worker's event loop (which every session's keystrokes go through). It answers with
what it has written (``TAKEN``, the worker's flow control), failures, and each recording's
summary at its close.

**Rights.** It needs the recordings directory and nothing else: it reads no config and no key
file (the worker sends the auditors' public key and the signing key with each ``OPEN``), and
before serving it confines itself (:mod:`bastion.recording.confine`): no new privileges, not
dumpable (no core file, no ptrace, no ``/proc/PID/mem`` for other processes of the service
user: it holds the signing key), no child processes, and where the kernel has Landlock, no
file access outside the recordings directory.

**Lifetime.** It ends when the worker closes the socket (EOF), which the worker does at its
stop once every session's recording is closed, and which the kernel does when the worker
dies. Either way it first writes what it was sent, so output the operator saw is on disk
(a recording that was not closed stays incomplete, as the file format says). SIGTERM and
SIGINT are ignored: a service manager's stop signal reaches the whole group at once, and the
worker's own stop closes the recordings first. ``PR_SET_PDEATHSIG`` wakes it when the worker
is gone even if the socket were somehow held open elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import select
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from bastion.recording import confine, wire
from bastion.recording.asciicast import CastEncoder, CastHeader
from bastion.recording.errors import RecordingUnavailable
from bastion.recording.redaction import StreamRedactor
from bastion.recording.sealed import Sealer
from bastion.recording.writer import (
    FLUSH_BYTES,
    RecordingFile,
    RecordingSummary,
    RecordingWriter,
    recording_path,
    utc_text,
)

__all__ = ["RecordingService", "main"]

READ_SIZE: Final = 1024 * 1024
# While someone watches a session, its output is written (and shown to them) this often.
WATCHED_INTERVAL: Final = 0.05


class _Recording:
    """One recording as this process holds it: its writer and how much of it is written."""

    def __init__(self, writer: RecordingWriter, flush_interval: float) -> None:
        self.writer = writer
        self.flush_interval = flush_interval
        self.received = 0  # data payload bytes received
        self.taken = 0  # ... of which written (what TAKEN reports)
        self.due: float | None = None  # when what waits must be written at the latest
        self.watched = False

    def interval(self) -> float:
        """How long output may wait before it is written: a watcher sees it only then."""
        return min(self.flush_interval, WATCHED_INTERVAL) if self.watched else self.flush_interval


class RecordingService:
    """The frames loop: one socket to the worker, one writer per recording."""

    def __init__(self, sock: socket.socket, recordings_dir: Path) -> None:
        self._sock = sock
        self._dir = recordings_dir
        self._reader = wire.FrameReader()
        self._recordings: dict[int, _Recording] = {}
        self._failed: dict[int, RecordingUnavailable] = {}
        self._parent_gone = False

    def parent_gone(self) -> None:
        self._parent_gone = True

    def run(self, wakeup: int | None = None) -> None:
        """Serve until the worker closes the socket (or dies); then write what was sent."""
        watched: list[Any] = [self._sock] if wakeup is None else [self._sock, wakeup]
        try:
            while not self._parent_gone:
                readable, _, _ = select.select(watched, [], [], self._timeout())
                if wakeup is not None and wakeup in readable:
                    with contextlib.suppress(OSError):
                        os.read(wakeup, 512)
                if self._sock in readable and not self._receive():
                    return
                self._write_due()
            # The worker is gone but the socket is not closed: take what is there.
            self._sock.setblocking(False)
            with contextlib.suppress(OSError):
                while self._receive():
                    pass
        finally:
            for recording in self._recordings.values():
                recording.writer.abandon()
            self._recordings.clear()

    def _timeout(self) -> float | None:
        dues = [r.due for r in self._recordings.values() if r.due is not None]
        if not dues:
            return None
        return max(min(dues) - time.monotonic(), 0.0)

    def _receive(self) -> bool:
        """Read and handle what arrived; False at the end of the stream."""
        try:
            data = self._sock.recv(READ_SIZE)
        except ConnectionResetError:
            return False
        if not data:
            return False
        for item in self._reader.feed(data):
            self._handle(item)
        return True

    def _handle(self, item: wire.Frame) -> None:
        kind, number = item.kind, item.number
        if kind == wire.OPEN:
            self._open(number, item.json())
            return
        if number in self._failed:
            if kind == wire.CLOSE:
                self._send_failure(number, self._failed.pop(number), None)
            elif kind == wire.ABANDON:
                del self._failed[number]
            return
        recording = self._recordings.get(number)
        if recording is None:
            return  # a recording this process never opened: nothing to write it to
        writer = recording.writer
        if kind == wire.OUTPUT:
            writer.append(item.payload, item.time)
        elif kind == wire.INPUT:
            writer.input(item.payload, item.time)
        elif kind == wire.RESIZE:
            cols, rows = item.payload.split(b"x")
            writer.resize(int(cols), int(rows), item.time)
        elif kind == wire.SECRET:
            writer.add_secret(item.payload.decode())
        elif kind == wire.CLOSE:
            self._close(number, recording)
            return
        elif kind == wire.ABANDON:
            del self._recordings[number]
            writer.abandon()
        elif kind == wire.WATCH:
            self._watch(number, recording, item.payload == b"1")
            return
        if kind in wire.DATA_KINDS:
            recording.received += len(item.payload)
            if recording.due is None:
                recording.due = time.monotonic() + recording.interval()

    def _write_due(self) -> None:
        now = time.monotonic()
        for number, recording in list(self._recordings.items()):
            waiting = recording.writer.backlog
            if recording.due is None or (waiting < FLUSH_BYTES and recording.due > now):
                continue
            try:
                recording.writer.flush()
            except RecordingUnavailable as exc:
                self._fail(number, recording, exc)
                continue
            recording.due = None
            recording.taken = recording.received
            self._send(
                wire.json_frame(
                    wire.TAKEN,
                    number,
                    {"taken": recording.taken, **_state(recording.writer.summary())},
                )
            )

    def _watch(self, number: int, recording: _Recording, on: bool) -> None:
        """Someone watches this session live: send the output as it is redacted for the
        file, never the worker's own bytes (docs/oversight.md)."""
        recording.watched = on
        if not on:
            recording.writer.on_output = None
            return

        def send(moment: float, redacted: bytes) -> None:
            self._send(wire.frame(wire.WATCHED, number, redacted, moment))

        recording.writer.on_output = send

    def _open(self, number: int, request: dict[str, Any]) -> None:
        try:
            writer = _start(self._dir, request)
        except RecordingUnavailable as exc:
            self._send(
                wire.json_frame(wire.REFUSED, number, {"message": exc.message, "hint": exc.hint})
            )
            return
        self._recordings[number] = _Recording(writer, float(request["flush_interval"]))
        self._send(
            wire.json_frame(
                wire.OPENED, number, {"path": str(writer.path), **_state(writer.summary())}
            )
        )

    def _close(self, number: int, recording: _Recording) -> None:
        del self._recordings[number]
        try:
            summary = recording.writer.close()
        except RecordingUnavailable as exc:
            self._send_failure(number, exc, recording.writer.summary())
            return
        self._send(wire.json_frame(wire.CLOSED, number, _state(summary)))

    def _fail(self, number: int, recording: _Recording, exc: RecordingUnavailable) -> None:
        del self._recordings[number]
        recording.writer.abandon()
        self._failed[number] = exc
        self._send_failure(number, exc, recording.writer.summary())

    def _send_failure(
        self, number: int, exc: RecordingUnavailable, summary: RecordingSummary | None
    ) -> None:
        state = _state(summary) if summary is not None else {}
        self._send(
            wire.json_frame(
                wire.FAILED, number, {"message": exc.message, "hint": exc.hint, **state}
            )
        )

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the worker has gone: nothing to tell
            self._sock.sendall(data)


def _state(summary: RecordingSummary) -> dict[str, Any]:
    return {
        "complete": summary.complete,
        "segments": summary.segments,
        "digest": summary.digest,
        "size": summary.size,
        "redactions": summary.redactions,
    }


def _keys(request: dict[str, Any]) -> tuple[X25519PublicKey, Ed25519PrivateKey]:
    try:
        auditor = X25519PublicKey.from_public_bytes(base64.b64decode(request["auditor_key"]))
        signing = Ed25519PrivateKey.from_private_bytes(base64.b64decode(request["signing_key"]))
    except (KeyError, ValueError) as exc:
        raise RecordingUnavailable(f"the recording's keys are not usable: {exc}") from None
    return auditor, signing


def _start(recordings_dir: Path, request: dict[str, Any]) -> RecordingWriter:
    """Create the recording's file with its header, on disk before the session starts."""
    auditor_key, signing_key = _keys(request)
    recording_id = str(request["recording_id"])
    started = datetime.fromtimestamp(float(request["timestamp"]), UTC)
    header = CastHeader(
        width=int(request["width"]),
        height=int(request["height"]),
        timestamp=int(started.timestamp()),
        title=str(request["title"]),
        term=str(request["term"]),
    )
    sealer = Sealer(
        recording_id=recording_id,
        session_id=str(request["session_id"]),
        created=str(request["created"]),
        auditor_key=auditor_key,
        signing_key=signing_key,
    )
    file = RecordingFile.create(
        recording_path(recordings_dir, recording_id),
        sealer,
        fsync_interval=float(request["flush_interval"]),
    )
    return RecordingWriter(
        file,
        header,
        secrets=[str(s) for s in request["secrets"]],
        record_input=bool(request["record_input"]),
    )


def _warm_up() -> None:
    """Run every code path a recording takes once, in memory: once confined, this process
    can import nothing more (a module loaded on first use would fail then)."""
    auditor = X25519PrivateKey.generate().public_key()
    signing = Ed25519PrivateKey.generate()
    request = {
        "auditor_key": base64.b64encode(auditor.public_bytes_raw()).decode(),
        "signing_key": base64.b64encode(signing.private_bytes_raw()).decode(),
    }
    _keys(request)
    sealer = Sealer(
        recording_id="0" * 16,
        session_id="warm-up",
        created=utc_text(datetime.fromtimestamp(time.time(), UTC)),
        auditor_key=auditor,
        signing_key=signing,
    )
    cast = CastEncoder()
    redactor = StreamRedactor(["warm-up-secret"])
    text = b"PASSWORD=x eyJhbGciOiJI.eyJzdWIi.c2ln warm-up-secret \x00\xff\r\n"
    line = cast.output(0.5, redactor.feed(text)) + cast.output(1.0, redactor.flush())
    line += cast.resize(1.0, 80, 24) + cast.input(1.0, b"x") + cast.finish(1.0)
    sealer.seal(CastHeader(80, 24, 0, "t").line() + line, final=True)
    wire.FrameReader().feed(wire.json_frame(wire.TAKEN, 1, {"taken": 1}))
    str(RecordingUnavailable("warm-up", hint=os.strerror(errno.ENOSPC)))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        sys.stderr.write("usage: python -m bastion.recording.service FD PARENT_PID DIR\n")
        return 2
    fd, parent, recordings_dir = int(args[0]), int(args[1]), Path(args[2])
    # Stop signals are for the worker, which closes the recordings and then this socket.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A file-size limit fails the one recording that reached it (EFBIG), as a full disk
    # does, instead of killing the process and every other recording with it.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    service = RecordingService(sock, recordings_dir)
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGHUP, lambda *_: service.parent_gone())
    with contextlib.suppress(OSError):  # if it cannot be made, each opening says why
        recordings_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _warm_up()
    confine.confine(recordings_dir, parent_death=signal.SIGHUP)
    if os.getppid() != parent:
        service.parent_gone()  # the worker died before the death signal was set up
    with contextlib.suppress(OSError):
        sock.sendall(wire.frame(wire.READY, 0, b""))
    service.run(wake_read)
    return 0


if __name__ == "__main__":
    sys.exit(main())
