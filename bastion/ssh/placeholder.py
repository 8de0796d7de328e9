"""The console placeholder: says who the operator is, and ends the session at Enter.

It runs as the session's console process on its own pty until the Textual console lands;
it is deliberately tiny and reads nothing from the operator. Its arguments come from the
configuration (validated names, a fingerprint), not from the client.

    python -m bastion.ssh.placeholder USER FINGERPRINT METHOD [GROUP ...]
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import termios


def main(argv: list[str]) -> int:
    with contextlib.suppress(OSError):
        # Take the pty as controlling terminal (we are a session leader): resizes then
        # reach us as SIGWINCH and a hang-up as SIGHUP, as for any login shell.
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if len(argv) < 3:
        sys.stderr.write(
            "usage: python -m bastion.ssh.placeholder USER FINGERPRINT METHOD [GROUP ...]\n"
        )
        return 2
    user, fingerprint, method, *groups = argv
    size = os.get_terminal_size(1)
    lines = [
        f"Welcome, {user}.",
        f"  key         {fingerprint}",
        f"  code        {method.replace('_', ' ')}",
        f"  groups      {', '.join(groups) or '(none)'}",
        f"  terminal    {os.environ.get('TERM', 'unknown')} {size.columns}x{size.lines}",
        "",
        "The debug console is not installed on this bastion yet.",
        "Press Enter to end this session.",
    ]
    sys.stdout.write("\r\n".join(lines) + "\r\n")
    sys.stdout.flush()
    sys.stdin.readline()  # Enter, or end of input (the connection went away)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
