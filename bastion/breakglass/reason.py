"""The reason a break-glass session must give before anything else. Pure.

:func:`check_reason` decides whether a typed line is a reason (at least the configured
number of characters and :data:`MIN_WORDS` words, at most :data:`MAX_REASON_CHARS`) and
returns it neutralised: every character a terminal could act on (C0/C1 controls, ESC, DEL,
format and bidi characters) becomes ``?`` and runs of spaces become one, so what the audit
log, the alert and every operator's banner show is what was typed, and nothing more.

:class:`LineEditor` reads that line from a raw terminal (the SSH channel has no line
discipline of its own): printable characters are echoed, Backspace/DEL and Ctrl-U edit,
Enter ends the line, Ctrl-C and Ctrl-D refuse. Escape sequences (arrow keys and the like)
are swallowed whole rather than echoed.
"""

from __future__ import annotations

import codecs
import re
from enum import Enum

from bastion.policy import MAX_REASON_CHARS
from bastion.terminal_text import printable

__all__ = ["MAX_REASON_CHARS", "MIN_WORDS", "LineEditor", "Status", "check_reason"]

MIN_WORDS = 3
_WORD = re.compile(r"[^\W_]{2,}")  # two letters or digits: "a b c" is not three words


def check_reason(text: str, min_length: int) -> str:
    """The reason as it will be recorded; ValueError with one sentence when it is not one."""
    # Whitespace (line breaks included) folds to one space; any other character a terminal
    # could act on becomes "?".
    cleaned = " ".join(printable(word) for word in text.split())
    if not cleaned:
        raise ValueError("no reason was given")
    if len(cleaned) > MAX_REASON_CHARS:
        raise ValueError(
            f"the reason is {len(cleaned)} characters long; say why in at most "
            f"{MAX_REASON_CHARS} (a ticket link and a sentence are enough)"
        )
    if len(cleaned) < min_length or len(_WORD.findall(cleaned)) < MIN_WORDS:
        raise ValueError(
            f"the reason is too short: say what is broken and why you need this, in at "
            f"least {MIN_WORDS} words and {min_length} characters"
        )
    return cleaned


class Status(Enum):
    TYPING = "typing"
    DONE = "done"  # Enter: ``line`` is what was typed
    REFUSED = "refused"  # Ctrl-C or Ctrl-D


class LineEditor:
    """One line typed on a raw terminal; :meth:`feed` returns what to echo."""

    def __init__(self, max_chars: int = MAX_REASON_CHARS) -> None:
        self._max = max_chars
        self._chars: list[str] = []
        self._escape = ""  # an escape sequence being swallowed
        # A UTF-8 character may be cut between two reads; bytes that are not UTF-8 become
        # U+FFFD, which is then kept like any other printable character.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.status = Status.TYPING

    @property
    def line(self) -> str:
        return "".join(self._chars)

    def feed(self, data: bytes) -> bytes:
        echo: list[str] = []
        for ch in self._decoder.decode(data):
            if self.status is not Status.TYPING:
                break
            echo.append(self._key(ch))
        return "".join(echo).encode()

    def _key(self, ch: str) -> str:
        if self._escape:
            self._escape += ch
            # CSI and SS3 sequences end with a letter or '~' (arrows, Home, F-keys...).
            if (len(self._escape) > 2 and (ch.isalpha() or ch == "~")) or len(self._escape) > 16:
                self._escape = ""
            elif len(self._escape) == 2 and ch not in "[O":
                self._escape = ""  # Alt+key: both dropped
            return ""
        if ch == "\x1b":
            self._escape = ch
            return ""
        if ch in "\r\n":
            self.status = Status.DONE
            return "\r\n"
        if ch in "\x03\x04":  # Ctrl-C, Ctrl-D
            self.status = Status.REFUSED
            return "^C\r\n" if ch == "\x03" else "\r\n"
        if ch in "\x7f\x08":  # DEL, Backspace
            if self._chars:
                self._chars.pop()
                return "\b \b"
            return ""
        if ch == "\x15":  # Ctrl-U: the whole line
            erased = len(self._chars)
            self._chars.clear()
            return "\b \b" * erased
        if ch == "\t":
            ch = " "
        if not ch.isprintable() or len(self._chars) >= self._max:
            return "\a"
        self._chars.append(ch)
        return ch
