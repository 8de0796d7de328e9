"""The line console: greets the operator and takes ``debug NAMESPACE/POD`` at a prompt.

The console of a bastion configured with ``listener.console: line``, for operators whose
terminals or scripts cannot use the full-screen Textual console (:mod:`tui.app`, the
default). It runs as the session's console process on its own PTY (in cooked mode: the kernel echoes
and edits the line) and asks the broker for debug shells over the socket named by
``BASTION_BROKER_FD`` (:mod:`bastion.console_protocol`). It never sees credentials or
talks to a cluster: when a shell is ready it prints one line and exits, the broker attaches
the terminal, and a new console is started when the shell ends. Its arguments come from the
configuration (validated names, a fingerprint), not from the client.

    python -m bastion.ssh.line_console USER FINGERPRINT METHOD [GROUP ...]
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import socket
import sys
import termios
from datetime import UTC, datetime

from bastion.console_protocol import (
    BROKER_FD_ENV,
    AwaitsApproval,
    DeadlinesChanged,
    DebugEnded,
    DebugProgress,
    DebugRefused,
    DebugRequest,
    Handover,
    Message,
    Notice,
    NoticeItem,
    NoticesChanged,
    ProtocolError,
    WatchNotices,
    Welcome,
    decode,
    encode,
)
from bastion.debug_command import USAGE, parse_debug_command
from bastion.terminal_text import printable

PROMPT = "> "
HELP = [
    "Open a debug shell with: debug NAMESPACE/POD [-c CONTAINER] [--mode ephemeral|copy|pod]",
    "  [--image REF] [--reason TEXT] [--cluster NAME]; 'help' shows the full usage.",
]


def _say(*lines: str) -> None:
    sys.stdout.write("".join(f"{printable(line)}\r\n" for line in lines))
    sys.stdout.flush()


class _Broker:
    """The console's end of the socketpair: messages in and out, one JSON line each."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self._buffer = b""

    def send(self, message: Message) -> None:
        self.sock.sendall(encode(message))

    def receive(self) -> list[Message]:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [decode(line) for line in lines]


class _Banners:
    """The notices in force (break-glass sessions): each printed when it goes up, and once
    more when it comes down, since a line console cannot keep a banner on screen."""

    def __init__(self) -> None:
        self.shown: dict[str, NoticeItem] = {}

    def update(self, notices: list[NoticeItem]) -> None:
        now = {n.id: n for n in notices}
        for notice in now.values():
            if notice.id not in self.shown:
                since = datetime.fromtimestamp(notice.since, UTC)
                _say(
                    f"\a*** {_label(notice.kind)}: {notice.user} since {since:%H:%M:%S} UTC: "
                    f"{notice.text}"
                )
        for notice in self.shown.values():
            if notice.id not in now:
                _say(f"*** {_label(notice.kind)} of {notice.user} is over")
        self.shown = now


def _label(kind: str) -> str:
    return "BREAK-GLASS session" if kind == "break_glass" else kind.replace("_", " ")


def _show(message: Message, banners: _Banners) -> bool:
    """Print a broker message; True when the console must exit (the handover)."""
    if isinstance(message, NoticesChanged):
        banners.update(message.notices)
    elif isinstance(message, Notice):
        _say(f"\a*** {message.message}")
    elif isinstance(message, DebugProgress):
        _say(f"  ... {message.message}")
    elif isinstance(message, (DebugRefused, DebugEnded)):
        _say(f"bastion: {message.message}")
    elif isinstance(message, AwaitsApproval):
        # This console cannot follow the request: the operator asks again once approved.
        _say(
            f"bastion: {message.message}",
            "  once it is approved, type the same debug command again to start the shell",
        )
    elif isinstance(message, Handover):
        _say(f"bastion: {message.message}")
        return True
    return False


def _prompt() -> None:
    sys.stdout.write(PROMPT)
    sys.stdout.flush()


def _run(broker: _Broker) -> int:
    events = selectors.DefaultSelector()
    events.register(sys.stdin.fileno(), selectors.EVENT_READ, "operator")
    events.register(broker.sock, selectors.EVENT_READ, "broker")
    waiting = False  # a debug was asked for: no prompt until it is refused (or handed over)
    banners = _Banners()
    broker.send(WatchNotices(0))
    _prompt()
    while True:
        for key, _ in events.select():
            if key.data == "broker":
                try:
                    messages = broker.receive()
                except (EOFError, ProtocolError):
                    _say("\r\nbastion: the session broker stopped answering; this session ends")
                    return 1
                # Welcome and deadline changes are for the full console: nothing to show.
                messages = [m for m in messages if not isinstance(m, (Welcome, DeadlinesChanged))]
                if not messages:
                    continue
                sys.stdout.write("\r")  # over the prompt, which comes back below
                for message in messages:
                    if _show(message, banners):
                        return 0
                    waiting = waiting and not isinstance(message, DebugRefused | AwaitsApproval)
                if not waiting:
                    _prompt()
                continue
            # os.read, not sys.stdin: a buffered reader could hold a line select cannot see.
            data = os.read(0, 4096)
            for line in data.decode(errors="replace").splitlines() or [""]:
                if not line.strip():  # Enter on an empty line, or end of input
                    return 0
                if waiting:
                    _say("bastion: a debug shell is starting; wait for it or for its refusal")
                elif line.strip() in ("help", "?"):
                    _say(USAGE)
                else:
                    waiting = _ask(broker, line)
            if not waiting:
                _prompt()


def _ask(broker: _Broker, line: str) -> bool:
    """Send a debug request; False (and the reason shown) when the line is not one."""
    try:
        command = parse_debug_command(line.strip())
    except ValueError as exc:
        _say(f"bastion: {exc}")
        return False
    broker.send(
        DebugRequest(
            cluster=command.cluster,
            namespace=command.namespace,
            pod=command.pod,
            container=command.container,
            mode=command.mode.value,
            image=command.image,
            reason=command.reason,
            run_as_user=command.run_as_user,
            privileged=command.privileged,
            add_capabilities=list(command.add_capabilities),
        )
    )
    return True


def main(argv: list[str]) -> int:
    with contextlib.suppress(OSError):
        # Take the pty as controlling terminal (we are a session leader): resizes then
        # reach us as SIGWINCH and a hang-up as SIGHUP, as for any login shell.
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if len(argv) < 3:
        sys.stderr.write(
            "usage: python -m bastion.ssh.line_console USER FINGERPRINT METHOD [GROUP ...]\n"
        )
        return 2
    user, fingerprint, method, *groups = argv
    size = os.get_terminal_size(1)
    _say(
        f"Welcome, {user}.",
        f"  key         {fingerprint}",
        f"  code        {method.replace('_', ' ')}",
        f"  groups      {', '.join(groups) or '(none)'}",
        f"  terminal    {os.environ.get('TERM', 'unknown')} {size.columns}x{size.lines}",
        "",
        *HELP,
        "Press Enter to end this session.",
    )
    fd = os.environ.get(BROKER_FD_ENV, "")
    if not fd.isdigit():
        _say("bastion: this console was started without its broker; the session ends")
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        return _run(_Broker(int(fd)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
