"""The toolbox shell's in-band command reports, and the filter that takes them out. Pure.

The debug shell's prompt reports the command line it just ran, in the output stream, as a
private OSC escape (no terminal acts on number 7770)::

    ESC ] 7770 ; <nonce> ; <exit status> ; <length> ; <history line> BEL

``<nonce>`` is the session's: 32 hex digits the bastion puts into the container's command
(:func:`shell_setup`), so output that a program prints cannot pass for a report unless that
program learnt the nonce. ``<length>`` is the byte length of ``<history line>``, the shell's
``history`` entry for the last command (``"  12  ls -l"``), which may itself hold any byte,
BEL and ESC included: the filter reads exactly that many bytes, so a command line cannot end
its own report early.

:class:`MarkerFilter` is fed the output chunks of one shell, in order, and returns the bytes
with every report of its nonce removed, and the reports. Cut anywhere, the stream gives the
same result (property-tested): the filter holds back the end of a chunk that could be the
start of a report, at most :data:`MAX_REPORT` bytes, and nothing for ordinary output. The hot
path is one ``bytes.find`` per chunk.

What is not a report of this session passes through untouched, and the scan goes on from the
byte after its ``ESC ] 7770 ;``: a report with another nonce (counted in
:attr:`MarkerFilter.forged`), a malformed one, or one longer than :data:`MAX_REPORT`. So
printed output can neither hide a real report (a forged header never swallows the bytes after
it) nor make one, without the nonce.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "MAX_COMMAND",
    "MAX_REPORT",
    "PREFIX",
    "CommandReport",
    "MarkerFilter",
    "encode_report",
    "new_nonce",
    "shell_setup",
]

PREFIX: Final = b"\x1b]7770;"
MAX_COMMAND: Final = 4096  # busybox ash's line editor stops at 1024 bytes
_NONCE = re.compile(r"[0-9a-f]{32}")
# nonce ; status ; length ; — the status as the shell's $? (0-255, more digits tolerated).
_HEADER: Final = re.compile(rb"\x1b\]7770;([0-9a-f]{32});([0-9]{1,5});([0-9]{1,5});")
# What could still grow into a header: held back while the chunk ends inside it.
_PARTIAL_HEADER: Final = re.compile(rb"\x1b\]7770;[0-9a-f]{0,32}(?:;[0-9]{0,5}(?:;[0-9]{0,5})?)?")
_HEADER_MAX: Final = len(PREFIX) + 32 + 1 + 5 + 1 + 5 + 1
MAX_REPORT: Final = _HEADER_MAX + MAX_COMMAND + 1
# A history entry: its number (bash marks an edited one with *), then the command line.
_HISTORY_LINE: Final = re.compile(r"\s*([0-9]+)\*?\s(.*)", re.DOTALL)


@dataclass(frozen=True)
class CommandReport:
    """One prompt's report: the history entry it names and the status of the last command.

    ``number`` is None for a prompt before any command (an empty history)."""

    number: int | None
    command: str
    exit_status: int
    # Where the report was in the output :meth:`MarkerFilter.feed` returned with it (where
    # the prompt starts): a notice about the command goes there, before the next prompt.
    at: int = field(default=0, compare=False)


def new_nonce() -> str:
    return secrets.token_hex(16)


def encode_report(nonce: str, exit_status: int, history_line: bytes) -> bytes:
    """A report as the shell writes it (for tests and the bench)."""
    return PREFIX + f"{nonce};{exit_status};{len(history_line)};".encode() + history_line + b"\x07"


def shell_setup(nonce: str) -> str:
    """The ``sh -c`` script that starts the toolbox's interactive shell with the reporting
    prompt: the same for busybox ash (the image) and bash (kubesim's stand-in).

    The prompt hook is read through ``ENV`` from a here-document on descriptor 3, so nothing
    is written to the read-only filesystem, the image needs no extra file, and the nonce is
    neither in the shell's environment nor in its argument list (``ps``, ``/proc/*/cmdline``):
    only in the container's spec. ``$1`` is the watchdog's seconds.

    The hook runs in the prompt's command substitution (so its variables and ``LC_ALL`` stay
    out of the operator's shell) and writes the report to stderr, the terminal, not into the
    prompt: busybox ash applies the prompt's backslash escapes (``\\t``, ``\\033``...) to
    what a substitution returns, which would change the command line and its length, and
    line editing would count the report's bytes as columns. ``LC_ALL=C`` makes ``${#h}`` a
    byte count."""
    if not _NONCE.fullmatch(nonce):
        raise ValueError("a command-report nonce is 32 lowercase hex digits")
    rc = (
        "unset ENV HISTFILE\n"
        "exec 3<&-\n"
        # A shell without a history (dash) cannot say what ran: no hook, its plain prompt.
        # An `if`, not `&&`: the shell's first $? (what a bare `exit` returns) stays 0.
        "if command -v history >/dev/null 2>&1; then\n"
        "__bastion_report() { __h=$(history | tail -n 1); LC_ALL=C; "
        f'printf \'\\033]7770;{nonce};%s;%s;%s\\007\' "$1" "${{#__h}}" "$__h" >&2; }}\n'
        "PS1='$(__bastion_report $?)'\"${PS1:-\\$ }\"\n"
        "fi\n"
    )
    return (
        f"exec 3<<'BASTION_RC'\n{rc}BASTION_RC\n"
        "export ENV=/dev/fd/3\n"
        'exec timeout -s KILL "$1" sh -i'
    )


class MarkerFilter:
    """Removes one session's command reports from its output stream; see the module
    docstring. Not thread-safe: one user."""

    def __init__(self, nonce: str) -> None:
        if not _NONCE.fullmatch(nonce):
            raise ValueError("a command-report nonce is 32 lowercase hex digits")
        self._nonce = nonce.encode()
        self._held = b""
        self.forged = 0  # well-formed reports with another nonce, passed through

    @property
    def held(self) -> int:
        return len(self._held)

    def feed(self, chunk: bytes) -> tuple[bytes, list[CommandReport]]:
        """The chunk without this session's reports (minus what is held back), and them."""
        if self._held:
            buf = self._held + chunk
            self._held = b""
        elif PREFIX[0] not in chunk:
            return chunk, []  # the hot path: no ESC at all
        else:
            buf = chunk
        return self._scan(buf)

    def flush(self) -> tuple[bytes, list[CommandReport]]:
        """At the end of the stream: what was held back, as output (it was no report)."""
        buf, self._held = self._held, b""
        return buf, []

    def _scan(self, buf: bytes) -> tuple[bytes, list[CommandReport]]:
        out: list[bytes] = []
        reports: list[CommandReport] = []
        pos = 0
        written = 0  # bytes in out
        size = len(buf)
        while True:
            at = buf.find(PREFIX, pos)
            if at < 0:
                keep = _partial_prefix_at_end(buf, pos)
                out.append(buf[pos:keep])
                self._held = buf[keep:]
                break
            out.append(buf[pos:at])
            written += at - pos
            header = _HEADER.match(buf, at)
            if header is None:
                if _PARTIAL_HEADER.fullmatch(buf, at) and size - at < _HEADER_MAX:
                    self._held = buf[at:]  # may still become a header
                    break
                out.append(PREFIX)  # not a report: passed through, scanned on
                written += len(PREFIX)
                pos = at + len(PREFIX)
                continue
            nonce, status, length = header.groups()
            body_start = header.end()
            body_end = body_start + int(length)
            if nonce != self._nonce or int(length) > MAX_COMMAND:
                if nonce != self._nonce:
                    self.forged += 1
                out.append(PREFIX)
                written += len(PREFIX)
                pos = at + len(PREFIX)
                continue
            if body_end >= size:
                self._held = buf[at:]  # the rest of this report is still to come
                break
            if buf[body_end] != 0x07:
                out.append(PREFIX)
                written += len(PREFIX)
                pos = at + len(PREFIX)
                continue
            reports.append(_report(buf[body_start:body_end], int(status), written))
            pos = body_end + 1
        return b"".join(out), reports


def _partial_prefix_at_end(buf: bytes, pos: int) -> int:
    """Where a possible start of :data:`PREFIX` begins at the end of ``buf`` (else its end)."""
    size = len(buf)
    esc = buf.rfind(b"\x1b", max(pos, size - len(PREFIX) + 1))
    if esc >= 0 and PREFIX.startswith(buf[esc:]):
        return esc
    return size


def _report(line: bytes, status: int, at: int) -> CommandReport:
    text = line.decode("utf-8", "replace")
    found = _HISTORY_LINE.fullmatch(text)
    if found is None:
        return CommandReport(None, text.strip(), status, at)
    return CommandReport(int(found.group(1)), found.group(2).strip(), status, at)
