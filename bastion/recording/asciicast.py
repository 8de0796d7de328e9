"""asciicast v2 (``../shared/specs/asciicast-v2.md``): the header line and event lines. Pure.

A recording's plaintext is an asciicast v2 file: a JSON header line, then one JSON array per
event, ``[time, code, data]`` with the time in seconds since the start. The bastion writes
``"o"`` (output) and ``"r"`` (resize, ``"COLSxROWS"``) events, and ``"i"`` (input) events
only when the grant asks for keystrokes to be recorded.

Terminal output arrives as bytes cut anywhere, also inside a UTF-8 character. Each stream
(output, input) has its own incremental decoder, so a character split across two chunks is
written whole with the second, and bytes that are not UTF-8 become U+FFFD instead of
breaking the file.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = [
    "CastEncoder",
    "CastHeader",
    "Event",
    "events",
    "parse_event",
    "parse_header",
    "title_for",
]

EventCode = Literal["o", "i", "r", "m"]


@dataclass(frozen=True)
class CastHeader:
    width: int
    height: int
    timestamp: int  # Unix time of the start, whole seconds
    title: str
    term: str = "xterm-256color"

    def line(self) -> bytes:
        header = {
            "version": 2,
            "width": self.width,
            "height": self.height,
            "timestamp": self.timestamp,
            "title": self.title,
            "env": {"TERM": self.term},
        }
        return orjson.dumps(header) + b"\n"


def title_for(
    *, session_id: str, user: str, cluster: str, namespace: str, pod: str, container: str
) -> str:
    """The recording's title: whose session, on which container. Names only, never secrets."""
    return f"bastion session {session_id}: {user} on {cluster}/{namespace}/{pod} ({container})"


@dataclass(frozen=True)
class Event:
    time: float
    code: str
    data: str


class CastEncoder:
    """Turns timed output, input and resizes into asciicast v2 event lines."""

    def __init__(self) -> None:
        self._decoders = {
            "o": codecs.getincrementaldecoder("utf-8")(errors="replace"),
            "i": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        }

    def output(self, time: float, data: bytes) -> bytes:
        return self._text("o", time, data)

    def input(self, time: float, data: bytes) -> bytes:
        return self._text("i", time, data)

    def resize(self, time: float, cols: int, rows: int) -> bytes:
        return _line(time, "r", f"{cols}x{rows}")

    def finish(self, time: float) -> bytes:
        """The end: a character left incomplete becomes U+FFFD."""
        return b"".join(
            _line(time, code, text)
            for code, decoder in self._decoders.items()
            if (text := decoder.decode(b"", final=True))
        )

    def _text(self, code: str, time: float, data: bytes) -> bytes:
        text = self._decoders[code].decode(data)
        return _line(time, code, text) if text else b""


def _line(time: float, code: str, data: str) -> bytes:
    # Microseconds, as asciinema writes them; orjson escapes the C0 controls (ESC is \u001b).
    return orjson.dumps([round(time, 6), code, data]) + b"\n"


# ------------------------------------------------------------------------------ reading
def parse_header(line: bytes) -> CastHeader:
    """The header line; ValueError saying what is wrong."""
    try:
        header: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ValueError("the asciicast header is not JSON") from None
    if not isinstance(header, dict) or header.get("version") != 2:
        raise ValueError("the asciicast header is not a version 2 header")
    width, height = header.get("width"), header.get("height")
    if not isinstance(width, int) or not isinstance(height, int) or width < 1 or height < 1:
        raise ValueError("the asciicast header has no valid width and height")
    env = header.get("env")
    if not isinstance(env, dict):
        env = {}
    return CastHeader(
        width=width,
        height=height,
        timestamp=int(header.get("timestamp") or 0),
        title=str(header.get("title") or ""),
        term=str(env.get("TERM") or ""),
    )


def parse_event(line: bytes) -> Event:
    """One event line; ValueError saying what is wrong."""
    try:
        event: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ValueError("an asciicast event is not JSON") from None
    if (
        not isinstance(event, list)
        or len(event) != 3
        or not isinstance(event[0], int | float)
        or isinstance(event[0], bool)
        or not isinstance(event[1], str)
        or not isinstance(event[2], str)
    ):
        raise ValueError("an asciicast event is not [time, code, data]")
    return Event(float(event[0]), event[1], event[2])


def events(lines: Iterable[bytes]) -> Iterator[Event]:
    """Events of the lines after the header, skipping blank lines."""
    for line in lines:
        if line.strip():
            yield parse_event(line)
