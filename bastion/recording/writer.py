"""One recording's file and the work that fills it: redaction, asciicast, sealing, writing.

This runs in the worker's recording process (:mod:`bastion.recording.service`), one
:class:`RecordingWriter` per recording, so that none of it takes the worker's CPU or holds
its event loop; tools and tests may use it directly. Everything here is blocking and
single-threaded.

**The writer** takes events with the time the operator saw them (``append``, ``input``,
``resize``), and :meth:`RecordingWriter.flush` redacts them
(:class:`~bastion.recording.redaction.StreamRedactor`), encodes asciicast v2 lines, seals
them into segments of at most 1 MiB and appends them to the file. Secrets added with
:meth:`~RecordingWriter.add_secret` apply to everything not yet written, not only to what
comes after.

**Durability.** The file is created with ``O_EXCL`` (mode 0600, directory 0700), its header
written and ``fsync``-ed (file and directory) before :meth:`RecordingFile.create` returns, so
a session never starts without its recording on disk. Segments are ``fsync``-ed at most once
per ``fsync_interval`` and at the close: a crash loses at most the last interval of output,
and the file stays readable up to its last whole segment (a failed write is cut back). At
the close the file becomes read-only (0400).

A failed write (``ENOSPC``, ``EFBIG``, ``EDQUOT``, ``EROFS``, ``EIO``...) or an unwritable
directory raise :class:`RecordingUnavailable` whose message names the file and the cause,
and the writer stays failed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from bastion.durable import fsync_dir, write_all
from bastion.recording.asciicast import CastEncoder, CastHeader
from bastion.recording.errors import RecordingUnavailable
from bastion.recording.redaction import StreamRedactor
from bastion.recording.sealed import SEGMENT_MAX, Sealer

__all__ = [
    "FLUSH_BYTES",
    "RecordingFile",
    "RecordingSummary",
    "RecordingWriter",
    "recording_path",
    "utc_text",
]

# Output waiting past this is written at once rather than at the next flush interval.
FLUSH_BYTES: Final = 256 * 1024
# Output data redacted, encoded and sealed in one step (bounds the plaintext held at once).
WRITE_BATCH: Final = 256 * 1024
# Output chunks this close to the first of a run are one asciicast event (at most this big).
COALESCE_WINDOW: Final = 0.01
COALESCE_BYTES: Final = 256 * 1024
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


def utc_text(moment: datetime) -> str:
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
            write_all(fd, sealer.header_record)
            os.fsync(fd)
            fsync_dir(path.parent)
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
        data = records[0] if len(records) == 1 else b"".join(records)
        try:
            write_all(fd, data)
            if final or time.monotonic() - self._synced >= self._fsync_interval:
                os.fsync(fd)
                self._synced = time.monotonic()
        except OSError as exc:
            # Never leave a torn segment: cut the file back to its last whole one.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.size)
            raise _unavailable("write", self.path, exc) from None
        self.size += len(data)

    def sync(self) -> None:
        """fsync what was written (the recording is left as it is: incomplete)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._sealer.closed:
                os.fchmod(fd, 0o400)  # finished: nothing is ever appended to it again
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------ writer
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


class RecordingWriter:
    """One recording's events, redacted, encoded and sealed into its file; see the module
    docstring. Times are seconds since the recording started: given by the caller (the
    worker's clock, when the operator saw the output), or read from ``clock`` if not."""

    def __init__(
        self,
        file: RecordingFile,
        header: CastHeader,
        *,
        secrets: Iterable[str] = (),
        record_input: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._file = file
        self.recording_id = file.sealer.header.recording_id
        self._clock = clock
        self._started = clock()
        self._record_input = record_input
        secret_list = list(secrets)
        self._output = StreamRedactor(secret_list)
        self._input = StreamRedactor(secret_list)
        self._cast = CastEncoder()
        self._events: list[tuple[float, int, bytes]] = []
        self._backlog = 0
        self._new_secrets: list[str] = []
        self._waiting = header.line()  # plaintext not yet sealed: the header line goes first
        self._last_time = 0.0
        self._failure: RecordingUnavailable | None = None
        # A live watcher's feed (issue 9): the redacted output of each "o" event as it is
        # encoded, so that what is watched is byte for byte what is recorded.
        self.on_output: Callable[[float, bytes], None] | None = None

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def backlog(self) -> int:
        """Bytes of events taken and not yet written."""
        return self._backlog

    @property
    def failure(self) -> RecordingUnavailable | None:
        return self._failure

    def append(self, chunk: bytes, at: float | None = None) -> None:
        """Output, as the operator saw it ``at`` seconds into the recording."""
        self._add(_OUTPUT, chunk, at)

    def input(self, data: bytes, at: float | None = None) -> None:
        """Keystrokes; recorded only when the grant says so (``record_input``)."""
        if self._record_input:
            self._add(_INPUT, data, at)

    def resize(self, cols: int, rows: int, at: float | None = None) -> None:
        self._add(_RESIZE, b"%dx%d" % (cols, rows), at)

    def add_secret(self, secret: str) -> None:
        """Redact this string too, from everything not written yet on."""
        self._new_secrets.append(secret)

    def _add(self, kind: int, data: bytes, at: float | None) -> None:
        if not data:
            return
        moment = self._clock() - self._started if at is None else at
        self._events.append((moment, kind, data))
        self._backlog += len(data)

    def flush(self) -> None:
        """Write out what was taken. Raises RecordingUnavailable, and stays failed."""
        self._write(final=False)

    def close(self) -> RecordingSummary:
        """Write the rest and the final, signed segment. Raises RecordingUnavailable if that
        fails; the file then ends without its final segment."""
        try:
            self._write(final=True)
        finally:
            self._file.close()
        return self.summary()

    def abandon(self) -> None:
        """The worker has gone: write what was taken, without the end (the file says the
        bastion stopped before closing it), and close the file."""
        with contextlib.suppress(RecordingUnavailable):
            self._write(final=False)
            self._file.sync()
        self._file.close()

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
        if self._failure is not None:
            raise self._failure
        if self._file.sealer.closed:
            return
        events, self._events = self._events, []
        self._backlog = 0
        added, self._new_secrets = self._new_secrets, []
        for secret in added:
            self._output.add_secret(secret)
            self._input.add_secret(secret)
        # In batches of about WRITE_BATCH, so that the plaintext held at once stays small
        # (a 4 MiB backlog of NUL bytes is 24 MiB of JSON).
        batches = list(_batches(events, WRITE_BATCH)) or [[]]
        for index, batch in enumerate(batches):
            last = final and index == len(batches) - 1
            plaintext = self._encode(batch, final=last)
            if not plaintext and not last:
                continue
            try:
                self._file.write(plaintext, final=last)
            except RecordingUnavailable as exc:
                self._failure = exc
                raise

    def _encode(self, events: list[tuple[float, int, bytes]], *, final: bool) -> bytes:
        lines = [self._waiting]
        self._waiting = b""
        cast = self._cast
        for moment, kind, data in _coalesced(events):
            self._last_time = moment
            if kind == _OUTPUT:
                lines.append(cast.output(moment, self._watched(moment, self._output.feed(data))))
            elif kind == _INPUT:
                lines.append(cast.input(moment, self._input.feed(data)))
            else:
                cols, rows = data.split(b"x")
                lines.append(cast.resize(moment, int(cols), int(rows)))
        if final:
            # What the redactors held back, at the time of the last event, and the end of a
            # character cut short.
            held = self._watched(self._last_time, self._output.flush())
            lines.append(cast.output(self._last_time, held))
            if self._record_input:
                lines.append(cast.input(self._last_time, self._input.flush()))
            lines.append(cast.finish(self._last_time))
        return b"".join(lines)

    def _watched(self, moment: float, redacted: bytes) -> bytes:
        if redacted and self.on_output is not None:
            self.on_output(moment, redacted)
        return redacted


def _coalesced(events: list[tuple[float, int, bytes]]) -> Iterator[tuple[float, int, bytes]]:
    """``events`` with runs of output chunks that came within COALESCE_WINDOW of the run's
    first made one event at that first time. Bulk output (``cat`` of a large file arrives
    in 32 KiB chunks a fraction of a millisecond apart) is then redacted, encoded and played
    as a few large events instead of thousands of small ones: the redactor's cost per call
    is paid once per run; typed echoes, which come further apart, stay events of their own."""
    run: list[bytes] = []
    started = 0.0
    size = 0
    for event in events:
        moment, kind, data = event
        if run and (
            kind != _OUTPUT or moment - started > COALESCE_WINDOW or size >= COALESCE_BYTES
        ):
            yield started, _OUTPUT, run[0] if len(run) == 1 else b"".join(run)
            run, size = [], 0
        if kind != _OUTPUT:
            yield event
            continue
        if not run:
            started = moment
        run.append(data)
        size += len(data)
    if run:
        yield started, _OUTPUT, run[0] if len(run) == 1 else b"".join(run)


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
