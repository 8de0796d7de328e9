"""One recording being written while its session runs.

How a session uses it (the attach bridge's ``on_output`` is :meth:`Recorder.append`)::

    recorder = await open_recorder(config, session_id=sid, title=title_for(...),
                                   width=cols, height=rows, term=term,
                                   secrets=[token, lease_id],
                                   record_input=grant.record_input,
                                   on_failure=lambda exc: <end the session with exc>)
    bridge = AttachBridge(stream, write=..., pause_input=..., on_output=recorder.append)
    # resizes: recorder.resize(cols, rows); keystrokes: recorder.input(data)
    # a secret learnt later: recorder.add_secret(value)
    try:
        status = await bridge.run()
    finally:
        summary = await recorder.aclose()   # the recording id and hash go in the audit event

**The hot path** (:meth:`~Recorder.append`, :meth:`~Recorder.input`, :meth:`~Recorder.resize`)
only stamps the time (``time.monotonic``) and appends to a list under a lock: no redaction,
no encoding, no I/O, so it never blocks the event loop. It raises
:class:`~bastion.recording.errors.RecordingUnavailable` once the recording has failed, or
when more than ``max_backlog`` bytes (64 MiB) wait to be written (the disk cannot keep up):
the bridge then ends and the session with it, never running unrecorded. Before that, past
``pause_above`` (4 MiB) waiting, ``pause(True)`` asks the session to stop reading output
until the backlog is under ``resume_below`` (1 MiB) again, when ``pause(False)`` is called.

**The writer** (:meth:`~Recorder.flush`, blocking, run in a worker thread by the task that
:meth:`~Recorder.start` starts) takes what was appended, redacts it
(:class:`~bastion.recording.redaction.StreamRedactor`), encodes asciicast v2 lines, seals
them into segments of at most 1 MiB and appends them to the file. It runs every
``flush_interval`` (``recording.flush_interval``, 1 s by default), and at once when 256 KiB
are waiting. Secrets added with :meth:`~Recorder.add_secret` apply to everything not yet
written, not only to what comes after.

**Durability.** The file is created with ``O_EXCL`` (mode 0600, directory 0700), its header
written and ``fsync``-ed (file and directory) before :func:`start_recording` returns, so a
session never starts without its recording on disk. Segments are ``fsync``-ed at most once
per ``flush_interval`` and at the close: a crash loses at most the last interval of
output, and the file stays readable up to its last whole segment (a failed write is cut
back). At the close the file becomes read-only (0400).

A failed write (``ENOSPC``, ``EFBIG``, ``EDQUOT``, ``EROFS``, ``EIO``...), a missing key or
an unwritable directory raise :class:`RecordingUnavailable` whose message names the file
and the cause, and the recorder stays failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets as token_source
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from bastion.config import Config
from bastion.recording.asciicast import CastEncoder, CastHeader
from bastion.recording.errors import RecordingUnavailable
from bastion.recording.key_files import load_or_create_signing_key
from bastion.recording.keys import parse_auditor_public_key
from bastion.recording.redaction import StreamRedactor
from bastion.recording.sealed import SEGMENT_MAX, Sealer

__all__ = [
    "Recorder",
    "RecordingFile",
    "RecordingSummary",
    "open_recorder",
    "recording_path",
    "start_recording",
]

FLUSH_BYTES: Final = 256 * 1024
# Output data redacted, encoded and sealed in one step of the writer thread (see _write).
WRITE_BATCH: Final = 256 * 1024
PAUSE_ABOVE: Final = 4 * 1024 * 1024
RESUME_BELOW: Final = 1024 * 1024
MAX_BACKLOG: Final = 64 * 1024 * 1024
_OUTPUT, _INPUT, _RESIZE = 0, 1, 2
_HINTS: Final = {
    errno.ENOSPC: "free space on the recordings filesystem; sessions stay refused until then",
    errno.EDQUOT: "raise the service user's disk quota or free space",
    errno.EFBIG: "the file reached the largest size allowed (a file-size limit on the service?)",
    errno.EROFS: "the recordings filesystem is read-only; remount it read-write",
    errno.EACCES: "the recordings directory must be writable by the service user",
    errno.EPERM: "the recordings directory must be writable by the service user",
}


def recording_path(recordings_dir: Path, recording_id: str) -> Path:
    return recordings_dir / f"{recording_id}.rec"


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _unavailable(action: str, path: Path, exc: OSError) -> RecordingUnavailable:
    return RecordingUnavailable(
        f"cannot {action} the recording {path}: {exc.strerror or exc}",
        hint=_HINTS.get(exc.errno or 0, "check the recordings directory and its filesystem"),
    )


# ------------------------------------------------------------------------------ the file
class RecordingFile:
    """The sealed file on disk: created with its header, then segments, then closed."""

    def __init__(self, path: Path, fd: int, sealer: Sealer, fsync_interval: float) -> None:
        self.path = path
        self._fd: int | None = fd
        self._sealer = sealer
        self._fsync_interval = fsync_interval
        self._synced = time.monotonic()
        self.size = len(sealer.header_record)

    @classmethod
    def create(cls, path: Path, sealer: Sealer, *, fsync_interval: float) -> RecordingFile:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW
            fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _unavailable("create", path, exc) from None
        try:
            _write_all(fd, sealer.header_record)
            os.fsync(fd)
            _fsync_dir(path.parent)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise _unavailable("write", path, exc) from None
        return cls(path, fd, sealer, fsync_interval)

    @property
    def sealer(self) -> Sealer:
        return self._sealer

    def write(self, plaintext: bytes, *, final: bool = False) -> None:
        """Seal and append ``plaintext`` (split into segments); the final segment closes it."""
        fd = self._fd
        if fd is None:
            raise RecordingUnavailable(f"the recording {self.path} is already closed")
        pieces = [plaintext[i : i + SEGMENT_MAX] for i in range(0, len(plaintext), SEGMENT_MAX)]
        if final and not pieces:
            pieces = [b""]
        records = [
            self._sealer.seal(piece, final=final and i == len(pieces) - 1)
            for i, piece in enumerate(pieces)
        ]
        data = b"".join(records)
        try:
            _write_all(fd, data)
            if final or time.monotonic() - self._synced >= self._fsync_interval:
                os.fsync(fd)
                self._synced = time.monotonic()
        except OSError as exc:
            # Never leave a torn segment: cut the file back to its last whole one.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.size)
            raise _unavailable("write", self.path, exc) from None
        self.size += len(data)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._sealer.closed:
                os.fchmod(fd, 0o400)  # finished: nothing is ever appended to it again
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ recorder
@dataclass(frozen=True)
class RecordingSummary:
    """What the session's audit events say about its recording."""

    recording_id: str
    path: Path
    complete: bool  # the final segment is written and signed
    segments: int
    digest: str  # "sha256:<hex>": the chain hash the last segment's signature covers
    size: int  # bytes on disk
    redactions: dict[str, int] = field(default_factory=dict)  # markers written, by kind


class Recorder:
    """One session's recording; see the module docstring."""

    def __init__(
        self,
        file: RecordingFile,
        header: CastHeader,
        *,
        secrets: Iterable[str] = (),
        record_input: bool = False,
        flush_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[bool], None] | None = None,
        on_failure: Callable[[RecordingUnavailable], None] | None = None,
        pause_above: int = PAUSE_ABOVE,
        resume_below: int = RESUME_BELOW,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self._file = file
        self.recording_id = file.sealer.header.recording_id
        self._clock = clock
        self._started = clock()
        self._record_input = record_input
        self._flush_interval = flush_interval
        self._pause = pause
        self._on_failure = on_failure
        self._pause_above = pause_above
        self._resume_below = resume_below
        self._max_backlog = max_backlog
        secret_list = list(secrets)
        self._output = StreamRedactor(secret_list)
        self._input = StreamRedactor(secret_list)
        self._cast = CastEncoder()
        # Shared with the writer thread, under _lock: events not yet taken, and their size.
        self._lock = threading.Lock()
        self._events: list[tuple[float, int, bytes]] = []
        self._backlog = 0
        self._new_secrets: list[str] = []
        # The writer's own state, under _writing: one flush at a time.
        self._writing = threading.Lock()
        self._waiting = header.line()  # plaintext not yet sealed: the header line goes first
        self._last_time = 0.0
        self._failure: tuple[str, str | None] | None = None
        self._stopping = False  # aclose() has begun: nothing more is taken
        self._closed = False
        self._paused = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[RecordingSummary] | None = None

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def backlog(self) -> int:
        """Bytes appended and not yet taken by the writer."""
        return self._backlog

    # ------------------------------------------------------------------ the hot path
    def append(self, chunk: bytes) -> None:
        """Output from the container, just before it goes to the operator. Never blocks."""
        self._add(_OUTPUT, chunk)

    def input(self, data: bytes) -> None:
        """Keystrokes; recorded only when the grant says so (``record_input``)."""
        if self._record_input:
            self._add(_INPUT, data)

    def resize(self, cols: int, rows: int) -> None:
        self._add(_RESIZE, b"%dx%d" % (cols, rows))

    def add_secret(self, secret: str) -> None:
        """Redact this string too, from everything not written yet on."""
        with self._lock:
            self._new_secrets.append(secret)

    def _add(self, kind: int, data: bytes) -> None:
        if self._failure is not None or self._stopping or self._closed:
            raise self._error()
        if not data:
            return
        moment = self._clock() - self._started
        with self._lock:
            self._events.append((moment, kind, data))
            self._backlog += len(data)
            backlog = self._backlog
        if backlog < FLUSH_BYTES:
            return
        if backlog > self._max_backlog:
            self._fail(
                RecordingUnavailable(
                    f"the recording {self.path} fell more than "
                    f"{self._max_backlog // (1024 * 1024)} MiB behind the session's output: "
                    "the disk cannot keep up",
                    hint="check the recordings filesystem's speed and load",
                )
            )
            raise self._error()
        if self._wake is not None:
            self._wake.set()
        if backlog > self._pause_above and not self._paused and self._pause is not None:
            self._paused = True
            self._pause(True)

    def _error(self) -> RecordingUnavailable:
        if self._failure is None:
            return RecordingUnavailable(f"the recording {self.path} is closed")
        message, hint = self._failure
        return RecordingUnavailable(message, hint=hint)

    def _fail(self, exc: RecordingUnavailable) -> None:
        if self._failure is None:
            self._failure = (exc.message, exc.hint)

    # ------------------------------------------------------------------ the writer
    def flush(self) -> None:
        """Write out what was appended (blocking: call it in a worker thread)."""
        self._write(final=False)

    def close(self) -> RecordingSummary:
        """Write the rest and the final, signed segment (blocking). Raises
        RecordingUnavailable if that fails; the file then ends without its final segment."""
        try:
            self._write(final=True)
        finally:
            self._closed = True
            self._file.close()
        return self.summary()

    def summary(self) -> RecordingSummary:
        sealer = self._file.sealer
        counts = self._output.counts + self._input.counts
        return RecordingSummary(
            recording_id=self.recording_id,
            path=self.path,
            complete=sealer.closed,
            segments=sealer.segments,
            digest=sealer.digest,
            size=self._file.size,
            redactions=dict(sorted(counts.items())),
        )

    def _write(self, *, final: bool) -> None:
        with self._writing:
            if self._failure is not None:
                raise self._error()
            if self._file.sealer.closed:
                return
            with self._lock:
                events, self._events = self._events, []
                self._backlog = 0
                added, self._new_secrets = self._new_secrets, []
            for secret in added:
                self._output.add_secret(secret)
                self._input.add_secret(secret)
            # In batches of about WRITE_BATCH: this thread holds the GIL while it redacts,
            # encodes and joins, and the event loop (every session's keystrokes) gets it back
            # only between such steps; a 4 MiB backlog of NUL bytes is 24 MiB of JSON.
            batches = list(_batches(events, WRITE_BATCH)) or [[]]
            for index, batch in enumerate(batches):
                last = final and index == len(batches) - 1
                plaintext = self._encode(batch, final=last)
                if not plaintext and not last:
                    continue
                try:
                    self._file.write(plaintext, final=last)
                except RecordingUnavailable as exc:
                    self._fail(exc)
                    raise

    def _encode(self, events: list[tuple[float, int, bytes]], *, final: bool) -> bytes:
        lines = [self._waiting]
        self._waiting = b""
        cast = self._cast
        for moment, kind, data in events:
            self._last_time = moment
            if kind == _OUTPUT:
                lines.append(cast.output(moment, self._output.feed(data)))
            elif kind == _INPUT:
                lines.append(cast.input(moment, self._input.feed(data)))
            else:
                cols, rows = data.split(b"x")
                lines.append(cast.resize(moment, int(cols), int(rows)))
        if final:
            # What the redactors held back, at the time of the last event, and the end of a
            # character cut short.
            lines.append(cast.output(self._last_time, self._output.flush()))
            if self._record_input:
                lines.append(cast.input(self._last_time, self._input.flush()))
            lines.append(cast.finish(self._last_time))
        return b"".join(lines)

    # ------------------------------------------------------------------ in the event loop
    def start(self) -> None:
        """Write in the background from now on: every flush_interval, or sooner when output
        piles up. Call from the event loop; :meth:`aclose` stops it."""
        if self._task is not None:
            return
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"recording-{self.recording_id}"
        )

    async def _run(self) -> None:
        wake = self._wake
        if wake is None:
            return
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._flush_interval)
            wake.clear()
            if self._stopping:
                return
            try:
                await asyncio.to_thread(self.flush)
            except RecordingUnavailable as exc:
                if self._on_failure is not None:
                    self._on_failure(exc)
                return
            if self._paused and self._backlog < self._resume_below and self._pause is not None:
                self._paused = False
                self._pause(False)

    async def aclose(self) -> RecordingSummary:
        """Stop the background writer, write the end, close the file. A write in progress is
        waited for, and a cancelled caller does not cut the end short: it is written anyway.

        Raises RecordingUnavailable when the recording failed before or fails now; the file
        then has no final segment, and :meth:`summary` says how far it got.
        """
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                self._finish(), name=f"recording-{self.recording_id}-close"
            )
            # Its outcome is the caller's to see; if the caller was cancelled, nobody asks.
            self._closing.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(self._closing)

    async def _finish(self) -> RecordingSummary:
        self._stopping = True
        if self._task is not None:
            task, self._task = self._task, None
            if self._wake is not None:
                self._wake.set()
            await task
        return await asyncio.to_thread(self.close)


def _batches(
    events: list[tuple[float, int, bytes]], size: int
) -> Iterator[list[tuple[float, int, bytes]]]:
    """``events`` in order, cut into lists of about ``size`` bytes of data each."""
    batch: list[tuple[float, int, bytes]] = []
    held = 0
    for event in events:
        batch.append(event)
        held += len(event[2])
        if held >= size:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


# ------------------------------------------------------------------------------ starting
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
    pause: Callable[[bool], None] | None = None,
    on_failure: Callable[[RecordingUnavailable], None] | None = None,
) -> Recorder:
    """Create the session's recording file (blocking: a few fsyncs). Raises
    RecordingUnavailable when there is no auditor key, no signing key, or no file."""
    settings = config.recording
    if settings is None:
        raise RecordingUnavailable(
            "sessions cannot be recorded: the config has no recording.auditor_public_key",
            hint="run 'bastion recordings keygen NAME' on an auditor's machine and put the "
            "line it prints in the config's recording section",
        )
    try:
        auditor_key = parse_auditor_public_key(settings.auditor_public_key)
    except ValueError as exc:
        raise RecordingUnavailable(f"recording.auditor_public_key: {exc}") from None
    signing_key = load_or_create_signing_key(config.paths.state_dir)
    recording_id = token_source.token_hex(8)
    started = now or datetime.now(UTC)
    header = CastHeader(
        width=width, height=height, timestamp=int(started.timestamp()), title=title, term=term
    )
    sealer = Sealer(
        recording_id=recording_id,
        session_id=session_id,
        created=_utc_text(started),
        auditor_key=auditor_key,
        signing_key=signing_key,
    )
    interval = settings.flush_interval.total_seconds()
    file = RecordingFile.create(
        recording_path(config.paths.recordings_dir, recording_id), sealer, fsync_interval=interval
    )
    return Recorder(
        file,
        header,
        secrets=secrets,
        record_input=record_input,
        flush_interval=interval,
        pause=pause,
        on_failure=on_failure,
    )


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
    """:func:`start_recording` off the event loop, then :meth:`Recorder.start`."""
    recorder = await asyncio.to_thread(
        start_recording,
        config,
        session_id=session_id,
        title=title,
        width=width,
        height=height,
        term=term,
        secrets=list(secrets),
        record_input=record_input,
        pause=pause,
        on_failure=on_failure,
    )
    recorder.start()
    return recorder
