"""``bastion demo``: the real bastion on the local stack, logged in to with asyncssh (the
console) and with the OpenSSH client exactly as the demo prints it (a debug shell), then
stopped without leftovers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncssh
import pexpect
import pyotp
import pytest
from front_door.test_textual_console import read_until_line
from live_processes import processes_mentioning

from bastion.config import load_config

START_TIMEOUT = 60.0
INFO_KEYS = {
    "ssh_host",
    "ssh_port",
    "username",
    "identity_file",
    "known_hosts",
    "totp_secret",
    "audit_log",
    "recordings_dir",
    "config",
    "bastion_pid",
    "pids",
}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Demo:
    """``bastion demo --port 0`` as a real process; its output goes to files."""

    def __init__(self, root: Path) -> None:
        self.state = root / "demo"
        self.out = root / "demo.out"
        self.err = root / "demo.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bastion.cli.main",
                    "demo",
                    "--state-dir",
                    str(self.state),
                    "--port",
                    "0",
                ],
                stdout=out,
                stderr=err,
            )

    def wait_ready(self) -> dict[str, Any]:
        info_file = self.state / "demo.json"
        deadline = time.monotonic() + START_TIMEOUT
        while not info_file.exists():
            assert self.proc.poll() is None, f"the demo exited early:\n{self.err.read_text()}"
            assert time.monotonic() < deadline, f"no demo.json:\n{self.out.read_text()}"
            time.sleep(0.1)
        info: dict[str, Any] = json.loads(info_file.read_text())
        return info

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path)
    try:
        yield running
    finally:
        running.stop()  # a no-op once the test has stopped it


class Codes(asyncssh.SSHClient):
    """Answers the keyboard-interactive prompt with one code."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.prompts: list[str] = []

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str]:
        self.prompts += [prompt for prompt, _ in prompts]
        return [self.code] * len(prompts)


async def asyncssh_login(
    info: dict[str, Any], code: str
) -> tuple[list[str], list[str], int | None]:
    """Log in, wait for the console to draw its first screen, quit it with ``q``; the
    prompts answered, the lines the console drew, and the exit status."""
    client = Codes(code)
    async with asyncssh.connect(
        info["ssh_host"],
        info["ssh_port"],
        username=info["username"],
        client_keys=[asyncssh.read_private_key(info["identity_file"])],
        known_hosts=info["known_hosts"],  # the demo's file: the host key is checked
        agent_path=None,
        preferred_auth="publickey,keyboard-interactive",
        client_factory=lambda: client,
    ) as conn:
        process = await conn.create_process(
            term_type="xterm-256color", term_size=(100, 30), encoding=None
        )
        # The demo's one cluster opens at once: its namespaces, under the top line.
        lines = await read_until_line(process, re.compile(r" demo  local   session .*"))
        assert any(re.fullmatch(r" Namespaces in local *", line) for line in lines), lines
        process.stdin.write(b"q")
        await asyncio.wait_for(process.wait_closed(), 20)
    return client.prompts, lines, process.exit_status


def audit_events(path: Path, event: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        found = [e for e in map(json.loads, filter(None, lines)) if e["event"] == event]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def assert_recorded(info: dict[str, Any]) -> None:
    """The debug shell was recorded, sealed, into the demo's recordings directory."""
    (ended,) = audit_events(Path(info["audit_log"]), "session.debug_ended", 1)
    assert ended["recording_complete"] is True
    recordings = Path(info["recordings_dir"])
    assert [p for p in recordings.iterdir() if ended["recording"] in p.name]


def debug_shell(child: pexpect.spawn) -> None:
    """A debug shell through the real OpenSSH client: a command, the size, a resize that
    reaches the shell, and the shell's exit status as the connection's."""
    child.expect("attaching to dbg-")
    child.sendline("echo DEMO-$((6*7)); stty size")
    child.expect("DEMO-42")
    child.expect("24 80")
    child.setwinsize(30, 100)
    # The window change travels ssh -> bastion -> websocket -> pty: ask until it has arrived.
    deadline = time.monotonic() + 10
    while True:
        child.sendline("stty size")
        if child.expect(["30 100", pexpect.TIMEOUT], timeout=1) == 0:
            break
        assert time.monotonic() < deadline, "the resize never reached the debug shell"
    child.sendline("exit 7")
    child.expect(pexpect.EOF)


def printed_commands(demo: Demo, info: dict[str, Any]) -> list[str]:
    """The ssh command lines the demo printed: to the console, and straight to a shell."""
    out = demo.out.read_text()
    printed = [line.strip() for line in out.splitlines() if line.strip().startswith("ssh ")]
    assert printed[0] == info["ssh_command"]
    assert printed[1].startswith("ssh -t ")
    assert printed[1].endswith(" debug checkout/frontend-6c9d-abcde")
    assert len(printed) == 2
    assert f"oathtool --totp -b {info['totp_secret']}" in out
    return printed


def test_demo_logs_in_with_asyncssh_and_openssh_then_stops_clean(demo: Demo) -> None:
    info = demo.wait_ready()
    stack = json.loads((demo.state / "stack" / "devstack.json").read_text())
    assert set(info) >= INFO_KEYS | set(stack)
    assert all(info[key] == value for key, value in stack.items() if key != "pids")
    assert info["username"] == "demo"
    assert info["ssh_host"] == "127.0.0.1"
    assert info["ssh_port"] > 0

    # The config is a real one: what `bastion serve` loads, secret files 0600, dir 0700.
    config = load_config(Path(info["config"]), check_files=True)
    assert config.paths.recordings_dir == Path(info["recordings_dir"])
    assert [c.name for c in config.clusters] == ["local"]
    assert config.clusters[0].api_url == info["kube_api"]
    assert config.vault.address == info["vault_addr"]
    assert config.grants[0].groups == ["oncall"]
    assert config.grants[0].vault_role in info["vault_roles"]
    user = config.users[0]
    assert (user.name, user.groups) == ("demo", ["oncall"])
    secret_file = config.totp_secret_path(user)
    assert secret_file.read_text().strip() == info["totp_secret"]
    for private in (secret_file, Path(info["identity_file"]), demo.state / "demo.json"):
        assert private.stat().st_mode & 0o777 == 0o600, private
    assert demo.state.stat().st_mode & 0o777 == 0o700

    # A second demo on the same directory is refused while this one runs.
    second = run_demo("--state-dir", str(demo.state))
    assert second.returncode == 1
    assert "another `bastion demo` is running" in second.stderr

    # 1. asyncssh: key, then the code; the host key is checked against the demo's known_hosts.
    # The console draws the demo's cluster for the demo user, and q logs out.
    totp = pyotp.TOTP(info["totp_secret"])
    prompts, lines, status = asyncio.run(asyncssh_login(info, totp.now()))
    assert prompts == ["Verification code: "]
    assert any(line.startswith(" demo  local   session ") for line in lines), lines
    assert status == 0

    # 2. The OpenSSH client, run exactly as printed: the console's command, and the one that
    # goes straight to a debug shell (used here; the console over OpenSSH is
    # tests/devstack/test_console_e2e.py). No question about the host key.
    printed = printed_commands(demo, info)
    argv = shlex.split(printed[1])
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", timeout=20, env=env)
    seen = child.expect(["Verification code: ", "continue connecting", "IDENTIFICATION"])
    assert seen == 0, child.before
    # The first login used this time step; the server accepts the next one too (±1 step).
    child.sendline(totp.at(time.time() + 30))
    debug_shell(child)
    child.close()
    assert child.exitstatus == 7

    audit_log = Path(info["audit_log"])
    logins = audit_events(audit_log, "login.succeeded", 2)
    assert [e["user"] for e in logins] == ["demo", "demo"]
    assert_recorded(info)

    # 3. SIGTERM: everything stops, nothing is left.
    assert demo.stop(signal.SIGTERM) == 0, demo.err.read_text()
    assert (
        demo.out.read_text().rstrip().endswith("stopped: the bastion, OpenBao and kubesim are down")
    )
    for name, pid in info["pids"].items():
        assert not alive(pid), f"{name} (pid {pid}) is still running"
    assert processes_mentioning(info["config"]) == []
    assert not (demo.state / "demo.json").exists()
    verified = subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "audit", "verify", str(audit_log)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.slow
def test_demo_says_when_the_bastion_dies_and_stops_the_stack(demo: Demo) -> None:
    info = demo.wait_ready()
    os.kill(info["bastion_pid"], signal.SIGKILL)
    assert demo.proc.wait(timeout=30) == 1
    err = demo.err.read_text()
    assert "the server stopped on its own (killed by SIGKILL)" in err
    for name, pid in info["pids"].items():
        assert not alive(pid), f"{name} (pid {pid}) is still running"
    assert processes_mentioning(info["config"]) == []  # its workers too


@pytest.mark.slow
def test_demo_reports_a_bastion_that_cannot_start_and_stops_the_stack(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_demo("--state-dir", str(state), "--port", str(port), timeout=60)
    assert result.returncode == 1, result.stdout
    assert "the bastion stopped before it listened (exit status 1)" in result.stderr
    assert f"cannot use 127.0.0.1:{port}: Address already in use" in result.stderr
    assert result.stdout.rstrip().endswith("stopped: the bastion, OpenBao and kubesim are down")
    assert processes_mentioning(str(state)) == []  # OpenBao's command line names it
    assert not (state / "demo.json").exists()


def run_demo(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_refuses_a_port_that_is_not_one(tmp_path: Path) -> None:
    result = run_demo("--state-dir", str(tmp_path / "d"), "--port", "70000")
    assert result.returncode == 1
    assert result.stderr.startswith("bastion: --port 70000 is not a TCP port")
    assert not (tmp_path / "d").exists()


def test_demo_refuses_a_state_dir_others_can_read(tmp_path: Path) -> None:
    state = tmp_path / "open"
    state.mkdir()
    state.chmod(0o755)
    result = run_demo("--state-dir", str(state))
    assert result.returncode == 1
    assert "is open to other users (mode 0755)" in result.stderr
    assert "chmod 700" in result.stderr
    assert list(state.iterdir()) == []
