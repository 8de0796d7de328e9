"""A recording's output as plain text, for reading rather than replaying. Pure.

What a shell printed, for an incident record: escape sequences (colours, cursor moves,
titles) are dropped, a carriage return starts its line again and a backspace takes the
character before it back, as a terminal would show them; whatever else could act on the
reader's terminal (C0/C1 controls, format and bidi characters) becomes ``?``. Full-screen
programs do not come out readable this way: replay those with ``bastion play``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bastion.terminal_text import printable

__all__ = ["transcript"]

# CSI ... final byte; OSC ... BEL or ST; DCS/PM/APC/SOS ... ST; two-byte ESC sequences.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
)


def transcript(chunks: Iterable[str]) -> list[str]:
    """The lines the output ``chunks`` leave on a plain terminal."""
    text = _ESCAPES.sub("", "".join(chunks)).replace("\r\n", "\n").replace("\t", "    ")
    lines: list[str] = []
    for raw in text.split("\n"):
        line: list[str] = []
        column = 0
        for ch in raw:
            if ch == "\r":
                column = 0
            elif ch == "\b":
                column = max(column - 1, 0)
            elif column < len(line):
                line[column] = ch
                column += 1
            else:
                line.append(ch)
                column += 1
        lines.append(printable("".join(line)).rstrip())
    while lines and not lines[-1]:
        lines.pop()
    return lines
