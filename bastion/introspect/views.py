"""The read-only views: for each, the fixed command it runs and the parser of its output. Pure.

Every command is a constant argv of the toolbox image's own tools (images/debug-toolbox/
tools.txt), run by exec in the session's debug container; the ``files`` view adds one
element, the operator's path, already checked by :mod:`bastion.introspect.paths` and prefixed
with the target's root as the shared process namespace shows it. Nothing here builds a
command string, and nothing runs through a shell.

Parsers turn output into rows of strings, every cell neutralised for a terminal
(:func:`bastion.terminal_text.printable`), and stop at :data:`MAX_ROWS`: a pod with a huge
directory or a socket storm gives a truncated table, said so, never a stalled console.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bastion.policy import Scope
from bastion.redact import redact
from bastion.terminal_text import printable

__all__ = [
    "MAX_CELL",
    "MAX_OUTPUT",
    "MAX_ROWS",
    "TARGET_ROOT",
    "VIEW_SCOPES",
    "ViewTable",
    "command_for",
    "parse_files",
    "parse_logs",
    "parse_processes",
    "parse_sockets",
]

# The views that exist; shell is the other scope.
VIEW_SCOPES: tuple[Scope, ...] = (
    Scope.PROCESSES,
    Scope.ENV,
    Scope.FILES,
    Scope.SOCKETS,
    Scope.LOGS,
)
MAX_ROWS = 2000
# What a view reads of a command's output (or of a log) at most, in bytes.
MAX_OUTPUT = 1 << 20
MAX_CELL = 512
# The debug container shares the target container's process namespace, in which the target's
# entrypoint is PID 1: its filesystem is this directory (docs/toolbox.md).
TARGET_ROOT = "/proc/1/root"

_COMMANDS: dict[Scope, tuple[str, ...]] = {
    # busybox ps lists every process of the (shared) namespace; -e is for procps' ps.
    Scope.PROCESSES: ("ps", "-e", "-o", "pid,ppid,user,etime,args"),
    # iproute2: TCP and UDP, numeric, no header; the parser keeps listening and established.
    Scope.SOCKETS: ("ss", "-H", "-t", "-u", "-a", "-n"),
    # busybox ls: numeric owners, every entry but . and .., and never an option after --.
    Scope.FILES: ("ls", "-l", "-n", "-A", "--"),
}


@dataclass(frozen=True)
class ViewTable:
    """A view's result, as the console and ``ssh ... view`` show it."""

    view: str
    target: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    truncated: bool = False
    note: str = ""


def command_for(scope: Scope, path: str = "") -> tuple[str, ...]:
    """The argv of a view that runs in the debug container; ``path`` only for ``files`` (and
    checked by the caller). ValueError for a view that runs no command."""
    argv = _COMMANDS.get(scope)
    if argv is None:
        raise ValueError(f"the {scope.value} view runs no command in the debug container")
    if scope is Scope.FILES:
        if not path.startswith("/"):
            raise ValueError("the files view needs an absolute, checked path")
        return (*argv, TARGET_ROOT + path)
    return argv


def _cell(text: str) -> str:
    shown = printable(text)
    return shown if len(shown) <= MAX_CELL else shown[: MAX_CELL - 1] + "…"


def _rows(
    lines: Sequence[str], parse: Callable[[str], tuple[str, ...] | None]
) -> tuple[tuple[tuple[str, ...], ...], bool]:
    rows: list[tuple[str, ...]] = []
    for line in lines:
        row = parse(line)
        if row is None:
            continue
        if len(rows) == MAX_ROWS:
            return tuple(rows), True
        rows.append(tuple(_cell(c) for c in row))
    return tuple(rows), False


PROCESS_COLUMNS = ("PID", "PPID", "USER", "ELAPSED", "COMMAND")
_PS_LINE = re.compile(r"\s*(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(.*)")


def parse_processes(output: str) -> tuple[tuple[tuple[str, ...], ...], bool]:
    """``ps -o pid,ppid,user,etime,args``: the header is skipped, then one row a process.
    Command lines are shown redacted: arguments are where secrets leak most."""

    def row(line: str) -> tuple[str, ...] | None:
        match = _PS_LINE.fullmatch(line)
        if match is None:
            return None
        pid, ppid, user, elapsed, args = match.groups()
        return pid, ppid, user, elapsed, redact(args)[0]

    return _rows(output.splitlines(), row)


SOCKET_COLUMNS = ("PROTO", "STATE", "LOCAL", "PEER", "RECV-Q", "SEND-Q")
# ss says UNCONN for a bound UDP socket: that is UDP's "listening".
_SOCKET_STATES = {"LISTEN": "listening", "UNCONN": "listening", "ESTAB": "established"}


def parse_sockets(output: str) -> tuple[tuple[tuple[str, ...], ...], bool]:
    """``ss -H -tuan``: Netid State Recv-Q Send-Q Local Peer; listening and established only."""

    def row(line: str) -> tuple[str, ...] | None:
        fields = line.split()
        if len(fields) < 6 or fields[1] not in _SOCKET_STATES:
            return None
        proto, state, recv_q, send_q, local, peer = fields[:6]
        return proto, _SOCKET_STATES[state], local, peer, recv_q, send_q

    return _rows(output.splitlines(), row)


FILE_COLUMNS = ("MODE", "OWNER", "GROUP", "SIZE", "MODIFIED", "NAME")
# mode, links, uid, gid, size (or "major, minor" for a device), three date words, the name.
_LS_LINE = re.compile(
    r"([-bcdlps][-rwxsStT]{9}[.+]?)\s+\d+\s+(\d+)\s+(\d+)\s+(\d+,\s*\d+|\d+)\s+"
    r"(\S+\s+\S+\s+\S+) (.+)"
)


def parse_files(output: str) -> tuple[tuple[tuple[str, ...], ...], bool]:
    """``ls -lnA``: metadata only (the view never reads a file's content). A symbolic link's
    name keeps its `` -> target``, which is metadata too."""

    def row(line: str) -> tuple[str, ...] | None:
        match = _LS_LINE.fullmatch(line)
        if match is None:
            return None
        mode, uid, gid, size, modified, name = match.groups()
        return mode, uid, gid, size.replace(" ", ""), modified, name

    return _rows(output.splitlines(), row)


LOG_COLUMNS = ("LINE",)
ENV_COLUMNS = ("NAME", "VALUE", "SOURCE")


def parse_logs(text: str) -> tuple[tuple[tuple[str, ...], ...], int, bool]:
    """A container's recent log: one row a line, redacted as recordings are; also how many
    secrets were replaced."""
    rows: list[tuple[str, ...]] = []
    redactions = 0
    lines = text.splitlines()
    for line in lines[-MAX_ROWS:]:
        shown, kinds = redact(line)
        redactions += len(kinds)
        rows.append((_cell(shown),))
    return tuple(rows), redactions, len(lines) > MAX_ROWS
