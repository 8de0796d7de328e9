"""The frames between a worker and its recording process (:mod:`bastion.recording.service`).
Pure: no I/O here, both ends import it.

One stream socket carries every recording of the worker, as frames::

    u8 kind, u32 recording number, u32 payload length, f64 time (seconds), payload

The recording number is the worker's own (1, 2, ...); the time is when the operator saw the
output (the worker's clock, relative to the recording's start), so what the recording process
does later never moves an event. Worker → recording process:

* ``OPEN``: JSON: what the recording is (ids, title, size, the auditors' public key and the
  signing key, the session's secrets...); answered by ``OPENED`` or ``REFUSED``;
* ``OUTPUT``, ``INPUT``: the bytes; ``RESIZE``: ``b"COLSxROWS"``; ``SECRET``: a string to
  redact from everything not yet written;
* ``CLOSE``: write the end; answered by ``CLOSED`` (or ``FAILED``);
* ``ABANDON``: the worker gave up on the recording (it fell too far behind, or did not
  close in time): write what was sent, no end, and close the file; not answered.
* ``WATCH``: ``b"1"`` while someone watches the session live (issue 9), ``b"0"`` when nobody
  does: the recording process then also sends the output it writes, as redacted, in
  ``WATCHED`` frames, and writes it at once rather than at the flush interval.

Recording process → worker: ``READY`` (once, when it has confined itself and serves),
``OPENED``, ``REFUSED`` (JSON ``message``, ``hint``), ``TAKEN``
(JSON ``taken``: the bytes of ``OUTPUT``/``INPUT``/``RESIZE`` payloads written to the file so
far, and the file's state: ``segments``, ``size``, ``digest``), ``FAILED`` (``message``,
``hint`` and the file's state; nothing more is written for that recording) and ``CLOSED``
(the summary), and ``WATCHED``: redacted output exactly as it goes into the recording's
``"o"`` events, with the event's time.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = [
    "ABANDON",
    "CLOSE",
    "CLOSED",
    "DATA_KINDS",
    "FAILED",
    "HEADER",
    "INPUT",
    "OPEN",
    "OPENED",
    "OUTPUT",
    "READY",
    "REFUSED",
    "RESIZE",
    "SECRET",
    "TAKEN",
    "WATCH",
    "WATCHED",
    "Frame",
    "FrameReader",
    "frame",
    "json_frame",
]

HEADER: Final = struct.Struct("!BIId")
MAX_PAYLOAD: Final = 64 * 1024 * 1024  # a frame claiming more is a broken stream

# worker -> recording process
OPEN, OUTPUT, INPUT, RESIZE, SECRET, CLOSE, ABANDON, WATCH = 1, 2, 3, 4, 5, 6, 7, 8
# recording process -> worker
READY, OPENED, REFUSED, TAKEN, FAILED, CLOSED, WATCHED = 10, 11, 12, 13, 14, 15, 16
# What the flow control counts: the recording process says how much of these it has written.
DATA_KINDS: Final = frozenset({OUTPUT, INPUT, RESIZE})


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    number: int
    time: float
    payload: bytes

    def json(self) -> dict[str, Any]:
        value = orjson.loads(self.payload)
        if not isinstance(value, dict):
            raise TypeError("a JSON frame must hold an object")
        return value


def frame(kind: int, number: int, payload: bytes, time: float = 0.0) -> bytes:
    return HEADER.pack(kind, number, len(payload), time) + payload


def json_frame(kind: int, number: int, value: dict[str, Any]) -> bytes:
    return frame(kind, number, orjson.dumps(value))


class FrameReader:
    """Frames out of a byte stream that arrives in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not make a whole frame yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """The whole frames that ``data`` completes; raises ValueError on a broken stream."""
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        start = 0
        end = len(buffer)
        size = HEADER.size
        while end - start >= size:
            kind, number, length, time = HEADER.unpack_from(buffer, start)
            if length > MAX_PAYLOAD:
                raise ValueError(f"a frame of {length} bytes is longer than any the worker sends")
            if end - start - size < length:
                break
            body = start + size
            frames.append(Frame(kind, number, time, bytes(buffer[body : body + length])))
            start = body + length
        del buffer[:start]
        return frames
