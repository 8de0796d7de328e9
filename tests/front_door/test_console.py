"""The console runs in its own process, as a session leader on its own pty: input, output,
resizes and exit status cross the bridge, and a dropped connection ends the process."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
import yaml

from bastion.config import load_config
from bastion.ssh.front_door import Identity
from bastion.ssh.worker import Worker
from front_door.harness import BastionEnv, make_env
from front_door.test_login_asyncssh import fresh_login

# A console that reports its process facts, echoes lines, reports resizes, exits on "q".
PROBE = r"""
import os, signal, sys, termios
fd = sys.stdin.fileno()
# os.write, not sys.stdout: a resize's handler may run while a write is under way, and a
# buffered stream refuses to be entered twice.
def say(text):
    os.write(1, text.encode() + b"\r\n")
def size(*_):
    s = os.get_terminal_size(fd)
    say(f"size {s.columns}x{s.lines}")
signal.signal(signal.SIGWINCH, size)
say(f"pid {os.getpid()} sid {os.getsid(0)} tty {os.isatty(fd)} "
    f"ctty {os.tcgetpgrp(fd) == os.getpgrp()} term {os.environ['TERM']}")
size()
for line in sys.stdin:
    line = line.strip()
    if line == "q":
        sys.exit(7)
    say(f"got {line}")
"""


def probe_console(identity: Identity) -> list[str]:
    # The probe claims the pty as its controlling terminal, as the real console does.
    claim = "import fcntl, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    return [sys.executable, "-c", claim + PROBE]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[BastionEnv, int]]:
    env = make_env(tmp_path, operators=3)
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    assert worker.door is not None
    worker.door.console_command = probe_console
    try:
        yield env, port
    finally:
        await worker.stop()


async def read_until(process: asyncssh.SSHClientProcess[str], text: str) -> str:
    seen = ""
    async with asyncio.timeout(10):
        while text not in seen:
            chunk = await process.stdout.read(1024)
            if not chunk:
                break
            seen += chunk
    assert text in seen, seen
    return seen


async def test_console_process_pty_resize_input_and_exit_status(
    served: tuple[BastionEnv, int],
) -> None:
    env, port = served
    op, conn = await fresh_login(env, port)
    async with conn:
        process = await conn.create_process(term_type="screen-256color", term_size=(120, 40))
        banner = await read_until(process, "size 120x40")
        fields = banner.split()
        pid, sid = int(fields[1]), int(fields[3])
        assert pid == sid != os.getsid(0)  # its own session, not the server's
        assert "tty True ctty True term screen-256color" in banner
        process.change_terminal_size(90, 20)
        await read_until(process, "size 90x20")
        process.stdin.write("hello\n")
        await read_until(process, "got hello")
        process.stdin.write("q\n")
        result = await process.wait(check=False)
        assert result.exit_status == 7
    ended = await env.event("console.ended", actor=op.name)
    assert ended["exit_status"] == 7


async def test_what_the_console_draws_is_recorded_with_its_resizes(
    served: tuple[BastionEnv, int], tmp_path: Path
) -> None:
    env, port = served
    op, conn = await fresh_login(env, port)
    async with conn:
        process = await conn.create_process(term_type="xterm", term_size=(120, 40))
        await read_until(process, "size 120x40")
        process.change_terminal_size(90, 20)
        await read_until(process, "size 90x20")
        process.stdin.write("hello\n")
        await read_until(process, "got hello")
        process.stdin.write("q\n")
        await process.wait(check=False)
    closed = await env.event("session.console_recording", actor=op.name, outcome="closed")
    assert closed["recording_complete"] is True
    cast = tmp_path / "console.cast"
    header, *events = await asyncio.to_thread(env.export_recording, closed["recording"], cast)
    assert (header["width"], header["height"]) == (120, 40)
    output = "".join(e[2] for e in events if e[1] == "o")
    assert "size 120x40" in output
    assert "got hello" in output
    assert [e[2] for e in events if e[1] == "r"] == ["90x20"]


async def test_without_a_recording_key_no_console_starts(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=1)
    config = yaml.safe_load(env.config_path.read_text())
    del config["recording"]
    env.config_path.write_text(yaml.safe_dump(config))
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    assert worker.door is not None
    worker.door.console_command = probe_console
    try:
        _, conn = await fresh_login(env, port)
        async with conn:
            process = await conn.create_process(term_type="xterm", term_size=(80, 24))
            result = await process.wait(check=False, timeout=20)
        assert result.exit_status == 1
        assert "no recording.auditor_public_key" in str(result.stderr)
        assert "pid " not in str(result.stdout)  # the console never ran
        failed = await env.event("session.recording_failed")
        assert failed["outcome"] == "alert"
    finally:
        await worker.stop()


async def test_a_dropped_connection_ends_the_console(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op, conn = await fresh_login(env, port)
    process = await conn.create_process(term_type="xterm", term_size=(80, 24))
    banner = await read_until(process, "size 80x24")
    pid = int(banner.split()[1])
    conn.abort()
    await env.event("console.ended", actor=op.name)
    async with asyncio.timeout(10):
        while _running(pid):  # noqa: ASYNC110 - a process ending has no event to wait on
            await asyncio.sleep(0.02)


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "zombie" not in status


async def test_a_shell_without_a_terminal_is_refused(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op, conn = await fresh_login(env, port)
    async with conn:
        result = await conn.run(check=False)  # no pty requested
    assert result.exit_status == 1
    assert "connect with a terminal" in str(result.stderr)
    await env.event("channel.refused", user=op.name, request="shell without a terminal")


async def test_unix_sockets_tunnels_signals_and_breaks_are_refused(
    served: tuple[BastionEnv, int],
) -> None:
    env, port = served
    _, conn = await fresh_login(env, port)
    async with conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_unix_connection("/run/containerd/containerd.sock")
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.start_unix_server(asyncssh.SSHUNIXSession, "/tmp/bastion-listen.sock")
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_tun(0)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_tap(0)
        process = await conn.create_process(term_type="xterm", term_size=(80, 24))
        await read_until(process, "size 80x24")
        process.send_signal("INT")
        process.send_break(100)
        process.stdin.write("still here\n")
        await read_until(process, "got still here")  # neither reached the console
        process.stdin.write("q\n")
        await process.wait(check=False)
    wanted = {
        ("direct-streamlocal", "/run/containerd/containerd.sock"),
        ("streamlocal-forward", "/tmp/bastion-listen.sock"),
        ("tun", "0"),
        ("tap", "0"),
        ("signal", "SIGINT"),
        ("break", ""),
    }
    async with asyncio.timeout(10):
        while True:
            seen = {(e["request"], e["detail"]) for e in env.audit_events("channel.refused")}
            if wanted <= seen:
                break
            await asyncio.sleep(0.02)
