"""Playing a recording in a terminal: timing, speed, idle limit, pause.

The output events are written to the terminal exactly as recorded, escape sequences and
all: a recording *is* the operator's terminal, so neutralising it would show something
else. Only what the bastion prints around it (the title from the header, which names pods)
is made printable first. Do not play recordings you did not get from a bastion.

Keys, when standard input is a terminal: space pauses and resumes, ``q`` (or Ctrl-C)
stops.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, Protocol

from bastion.recording.asciicast import Event

__all__ = ["Keys", "TerminalKeys", "play", "split_lines", "terminal_keys"]


class Keys(Protocol):
    def wait(self, timeout: float | None) -> bytes:
        """A key pressed within ``timeout`` seconds (None: wait for one), or b""."""
        ...


class TerminalKeys:
    """Single key presses from a terminal on ``fd``, without echo, for the playback."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._saved: list[Any] | None = None

    def __enter__(self) -> TerminalKeys:
        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)
        return self

    def __exit__(self, *_: object) -> None:
        if self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def wait(self, timeout: float | None) -> bytes:
        ready, _, _ = select.select([self._fd], [], [], timeout)
        return os.read(self._fd, 16) if ready else b""


class _NoKeys:
    def __init__(self, sleep: Callable[[float], None]) -> None:
        self._sleep = sleep

    def wait(self, timeout: float | None) -> bytes:
        if timeout:
            self._sleep(timeout)
        return b""


def play(
    events: Iterable[Event],
    out: BinaryIO,
    *,
    speed: float = 1.0,
    idle_limit: float | None = None,
    keys: Keys | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Write the output events to ``out`` in time; False when the viewer stopped it early."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    source = keys if keys is not None else _NoKeys(sleep)
    previous = 0.0  # the time of the last output written
    for event in events:
        if event.code != "o":
            continue  # input and markers are not replayed; a terminal cannot be resized here
        delay = max(0.0, event.time - previous)
        previous = max(previous, event.time)
        if idle_limit is not None:
            delay = min(delay, idle_limit)
        if not _wait(delay / speed, source, clock):
            return False
        out.write(event.data.encode("utf-8", errors="replace"))
        out.flush()
    return True


_CLOSE_ENOUGH = 1e-4  # seconds: less than any terminal could show


def _wait(seconds: float, keys: Keys, clock: Callable[[], float]) -> bool:
    """Wait ``seconds`` of playing time, paused time not counted; False on quit."""
    left = seconds
    paused = False
    while paused or left > _CLOSE_ENOUGH:
        started = clock()
        key = keys.wait(None if paused else left)
        if not paused:
            left -= clock() - started
        if key[:1] in (b"q", b"Q", b"\x03"):
            return False
        if key[:1] == b" ":
            paused = not paused
    return True


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines of text arriving in chunks cut anywhere (segments of a recording)."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        lines = data.split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


@contextlib.contextmanager
def terminal_keys() -> Iterator[Keys | None]:
    """Key presses from standard input when it is a terminal, else None."""
    stdin = sys.stdin
    if not stdin.isatty():
        yield None
        return
    with TerminalKeys(stdin.fileno()) as keys:
        yield keys
