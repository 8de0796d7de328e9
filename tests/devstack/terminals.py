"""Terminal windows for end-to-end tests: the real OpenSSH client logging in to a served
bastion, each in a tmux server of its own (``terminals`` fixture in conftest.py)."""

from __future__ import annotations

import shlex
import shutil
import tempfile
from pathlib import Path

from front_door.harness import BastionEnv, Operator, ServedBastion

from devstack.test_console_e2e import Tmux, known_hosts, oathtool


class Terminals:
    """Terminal windows, each its own tmux server, closed at the end of the test."""

    def __init__(self) -> None:
        self._open: list[tuple[Tmux, Path]] = []

    def login(
        self,
        env: BastionEnv,
        bastion: ServedBastion,
        op: Operator,
        *command: str,
        tee: Path | None = None,
    ) -> Tmux:
        """A window where ``op`` logs in (key, then the code from oathtool); with
        ``command``, ``ssh -t ... COMMAND``; with ``tee``, what the bastion sends is also
        saved, byte for byte, in that file. The pane stays after ssh ends, with its status."""
        # A short directory: a Unix socket's path is limited to about 100 bytes.
        directory = Path(tempfile.mkdtemp(prefix="e2e-tmux-"))
        window = Tmux(directory)
        self._open.append((window, directory))
        ssh = [
            *("ssh", "-F", "/dev/null", "-p", str(bastion.port), "-i", str(op.key_file)),
            *("-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"),
            *("-o", f"UserKnownHostsFile={known_hosts(env, bastion.port)}"),
            *("-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"),
            *(["-t"] if command else []),
            f"{op.name}@127.0.0.1",
            *command,
        ]
        line = shlex.join(ssh)
        if tee is not None:
            line = f"{line} | tee {shlex.quote(str(tee))}; echo SSH-EXIT=${{PIPESTATUS[0]}}"
        else:
            line = f"{line}; echo SSH-EXIT=$?"
        window.start(f"bash -c {shlex.quote(line + '; sleep 600')}")
        window.wait_for("Verification code:")
        window.type(oathtool(op.secret))
        window.keys("Enter")
        return window

    def close(self) -> None:
        for window, directory in self._open:
            window.stop()
            shutil.rmtree(directory, ignore_errors=True)
