"""Consoles forked from the pre-warmed template (bastion/ssh/zygote.py, tui/zygote.py): each
one a session leader on its pty with nothing but its own descriptors, hung up on close, its
exit status reported although it is not the worker's child, and logins falling back to fresh
processes while a killed template restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from bastion.config import load_config
from bastion.console_protocol import BROKER_FD_ENV
from bastion.ssh import zygote as zygote_module
from bastion.ssh.console import Console, TerminalSize, python_argv
from bastion.ssh.worker import Worker
from bastion.ssh.zygote import Zygote, ZygoteConsole
from front_door.harness import make_env
from front_door.test_console import read_until as read_ssh_until
from front_door.test_login_asyncssh import fresh_login

# A console module: reports what it inherited, echoes lines, reports resizes; "q" returns 7,
# "exit" raises SystemExit(3), "crash" raises; with "ignore-hup" it ignores SIGHUP and waits.
PROBE = r"""
import os, signal, sys

def _fds():
    listed = [int(f) for f in os.listdir("/proc/self/fd")]
    open_fds = []
    for fd in listed:  # the listing's own descriptor is closed by now
        try:
            os.fstat(fd)
        except OSError:
            continue
        open_fds.append(fd)
    return open_fds

def _signals_as_fresh():
    return (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
        and signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
        and signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
        and signal.set_wakeup_fd(-1) == -1
        and not signal.pthread_sigmask(signal.SIG_BLOCK, [])
    )

def say(text):
    # Unbuffered: the SIGWINCH handler may run while the main code is writing.
    os.write(1, text.encode() + b"\r\n")

def main(argv):
    if argv[:1] == ["ignore-hup"]:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    def size(*_):
        s = os.get_terminal_size(0)
        say(f"size {s.columns}x{s.lines}")
    signal.signal(signal.SIGWINCH, size)
    broker = os.environ.get("BASTION_BROKER_FD")
    if broker:
        os.write(int(broker), b"hello broker\n")
    say(
        f"pid {os.getpid()} ppid {os.getppid()} sid {os.getsid(0)} "
        f"ctty {os.tcgetpgrp(0) == os.getpgrp()} signals {_signals_as_fresh()} "
        f"fds {','.join(map(str, _fds()))} env {','.join(sorted(os.environ))} "
        f"argv {','.join(argv)} term {os.environ.get('TERM')}"
    )
    size()
    while argv[:1] == ["ignore-hup"]:  # nor reads the terminal, which fails once hung up
        signal.pause()
    for line in sys.stdin:
        line = line.strip()
        if line == "q":
            return 7
        if line == "exit":
            sys.exit(3)
        if line == "crash":
            raise RuntimeError("probe crashed on purpose")
        say(f"got {line}")
    return 0
"""

# A small Textual console: draws its size, exits with status 5 on "q".
TEXTUAL_PROBE = r"""
from textual import events
from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static

class Probe(App[None]):
    BINDINGS = [("q", "leave", "Leave")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="size")
        yield Footer()

    def on_mount(self) -> None:
        self.show(self.size)

    def on_resize(self, event: events.Resize) -> None:
        self.show(event.size)

    def show(self, size) -> None:
        self.query_one("#size", Static).update(f"probe-app {size.width}x{size.height}")

    def action_leave(self) -> None:
        self.exit(return_code=5)

def main(argv):
    app = Probe()
    app.run()
    return app.return_code or 0
"""

# A console module that would bring an SSH library into every console.
LEAKY = "import asyncssh\n\ndef main(argv):\n    return 0\n"


@dataclass
class Screen:
    """What a console wrote to its terminal."""

    data: bytearray = field(default_factory=bytearray)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, chunk: bytes) -> None:
        self.data += chunk
        self.changed.set()

    async def until(self, text: str) -> str:
        try:
            async with asyncio.timeout(10):
                while text not in self.text():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"{text!r} never shown; the screen: {self.text()!r}") from None
        return self.text()

    def text(self) -> str:
        return self.data.decode(errors="replace")


@dataclass
class Running:
    console: Console
    screen: Screen
    broker: socket.socket
    broker_fd: int

    def facts(self) -> dict[str, str]:
        words = self.screen.text().split("\r\n", 1)[0].split()
        return dict(zip(words[::2], words[1::2], strict=False))


@pytest.fixture
async def zygote(tmp_path: Path) -> AsyncIterator[Zygote]:
    (tmp_path / "zygote_probe.py").write_text(PROBE)
    (tmp_path / "textual_probe.py").write_text(TEXTUAL_PROBE)
    modules = ["zygote_probe", "textual_probe", "bastion.ssh.line_console"]
    template = Zygote(modules, search_path=[tmp_path])
    await template.start()
    try:
        async with asyncio.timeout(30):
            await template.wait_ready()
        yield template
    finally:
        await template.aclose()


async def start(
    zygote: Zygote, module: str, *args: str, size: TerminalSize | None = None
) -> Running:
    ours, theirs = socket.socketpair()
    screen = Screen()
    console = ZygoteConsole(
        python_argv(module, *args),
        zygote=zygote,
        env={"TERM": "xterm-256color", "LANG": "C.UTF-8", BROKER_FD_ENV: str(theirs.fileno())},
        size=size or TerminalSize(100, 30),
        write=screen.write,
        pause_input=lambda _: None,
        pass_fds=(theirs.fileno(),),
    )
    number = theirs.fileno()
    try:
        await console.start()
    finally:
        theirs.close()
    return Running(console, screen, ours, number)


async def finish(running: Running) -> int:
    try:
        async with asyncio.timeout(10):
            return await running.console.wait()
    finally:
        running.console.close()
        running.broker.close()


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


async def until_lost(zygote: Zygote) -> None:
    for _ in range(500):
        if zygote.pid is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the worker did not notice that its template died")


async def until_reparented(pid: int) -> None:
    for _ in range(500):
        if parent_of(pid) == os.getpid():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"process {pid} was not re-parented to {os.getpid()}")


async def test_forked_console_owns_its_pty_sees_resizes_and_returns_its_status(
    zygote: Zygote,
) -> None:
    running = await start(zygote, "zygote_probe", "one", "two")
    await running.screen.until("size 100x30")
    facts = running.facts()
    pid = int(facts["pid"])
    assert running.console.pid == pid
    assert int(facts["ppid"]) == zygote.pid  # forked by the template, not started fresh
    assert int(facts["sid"]) == pid  # a session leader...
    assert facts["ctty"] == "True"  # ...with the pty as its controlling terminal
    assert facts["signals"] == "True"  # dispositions and mask of a fresh interpreter
    assert facts["env"] == f"{BROKER_FD_ENV},LANG,TERM"  # only what the request carried
    assert facts["argv"] == "one,two"
    assert facts["term"] == "xterm-256color"
    running.console.resize(TerminalSize(120, 40))  # the kernel sends SIGWINCH
    await running.screen.until("size 120x40")
    running.console.feed(b"hello\r")
    await running.screen.until("got hello")
    running.console.feed(b"q\r")
    assert await finish(running) == 7


async def test_forked_console_holds_only_stdio_and_its_broker_socket(zygote: Zygote) -> None:
    worker_fds = open_fds()
    running = await start(zygote, "zygote_probe")
    await running.screen.until("size 100x30")
    # At the worker's number, as with subprocess's pass_fds: the environment names it.
    assert running.facts()["fds"] == f"0,1,2,{running.broker_fd}"
    async with asyncio.timeout(5):
        said = await asyncio.get_running_loop().sock_recv(running.broker, 100)
    assert said == b"hello broker\n"
    running.console.feed(b"exit\r")
    assert await finish(running) == 3
    assert open_fds() == worker_fds  # no pidfd or pty left behind


async def test_close_hangs_up_then_kills_what_ignores_the_hangup(zygote: Zygote) -> None:
    polite = await start(zygote, "zygote_probe")
    stubborn = await start(zygote, "zygote_probe", "ignore-hup")
    await polite.screen.until("size 100x30")
    await stubborn.screen.until("size 100x30")
    began = time.monotonic()
    polite.console.close()
    stubborn.console.close()
    assert await finish(polite) == 128 + signal.SIGHUP
    assert await finish(stubborn) == 128 + signal.SIGKILL
    assert 1.5 < time.monotonic() - began < 5


async def test_a_crashing_console_shows_its_traceback_and_exits_1(zygote: Zygote) -> None:
    running = await start(zygote, "zygote_probe")
    await running.screen.until("size 100x30")
    running.console.feed(b"crash\r")
    assert await finish(running) == 1
    assert "RuntimeError: probe crashed on purpose" in running.screen.text()


async def test_a_textual_console_draws_resizes_and_exits(zygote: Zygote) -> None:
    began = time.monotonic()
    running = await start(zygote, "textual_probe", size=TerminalSize(80, 24))
    await running.screen.until("probe-app 80x24")
    print(f"first frame of a forked Textual console: {time.monotonic() - began:.3f} s")
    running.console.resize(TerminalSize(90, 30))
    await running.screen.until("90x30")
    running.console.feed(b"q")
    assert await finish(running) == 5


async def test_commands_the_template_did_not_preload_start_fresh(zygote: Zygote) -> None:
    ours, theirs = socket.socketpair()
    screen = Screen()
    console = ZygoteConsole(
        [sys.executable, "-c", "import os; print('parent', os.getppid())"],
        zygote=zygote,
        env={"LANG": "C.UTF-8"},
        size=TerminalSize(80, 24),
        write=screen.write,
        pause_input=lambda _: None,
        pass_fds=(theirs.fileno(),),
    )
    await console.start()
    theirs.close()
    await screen.until(f"parent {os.getpid()}")
    assert await console.wait() == 0
    console.close()
    ours.close()


async def test_a_killed_template_is_restarted_and_logins_meanwhile_start_fresh(
    zygote: Zygote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zygote_module, "_RESTART_DELAYS", (1.0,))  # a window to log in
    before = await start(zygote, "zygote_probe")
    await before.screen.until("size 100x30")
    first = zygote.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    # The template's console lives on, re-parented to this process (a child subreaper).
    await until_reparented(int(before.facts()["pid"]))
    await until_lost(zygote)
    # A fresh process meanwhile (the test's probe is not importable there: the line console).
    during = await start(zygote, "bastion.ssh.line_console", "alice", "SHA256:k", "totp")
    await during.screen.until("terminal    xterm-256color 100x30")
    assert during.console.pid is not None
    assert parent_of(during.console.pid) == os.getpid()
    async with asyncio.timeout(30):
        await zygote.wait_ready()
    assert zygote.pid not in (None, first)
    assert zygote.starts == 2
    after = await start(zygote, "zygote_probe")
    await after.screen.until("size 100x30")
    assert int(after.facts()["ppid"]) == zygote.pid
    # The orphan's exit status is still known: it is reaped here, through its pidfd.
    before.console.feed(b"hello\r")
    await before.screen.until("got hello")
    before.console.feed(b"q\r")
    assert await finish(before) == 7
    after.console.feed(b"q\r")
    assert await finish(after) == 7
    during.console.feed(b"\r")
    assert await finish(during) == 0


async def test_a_console_module_that_fails_to_import_does_not_slow_the_others(
    tmp_path: Path,
) -> None:
    (tmp_path / "zygote_probe.py").write_text(PROBE)
    (tmp_path / "broken_console.py").write_text("raise ImportError('broken on purpose')\n")
    template = Zygote(["broken_console", "zygote_probe"], search_path=[tmp_path])
    try:
        assert await template.start()
        running = await start(template, "zygote_probe")
        await running.screen.until("size 100x30")
        assert int(running.facts()["ppid"]) == template.pid
        running.console.feed(b"q\r")
        assert await finish(running) == 7
    finally:
        await template.aclose()


def test_the_template_refuses_console_modules_that_pull_in_an_ssh_library(
    tmp_path: Path,
) -> None:
    (tmp_path / "leaky_console.py").write_text(LEAKY)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        result = subprocess.run(
            [
                *(sys.executable, "-I", "-m", "tui.zygote"),
                *("--control-fd", str(theirs.fileno()), "--path", str(tmp_path), "leaky_console"),
            ],
            pass_fds=(theirs.fileno(),),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert "the console modules import asyncssh; refusing to serve" in result.stderr


# ------------------------------------------------------------------ through the worker
def zygote_children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.parametrize("enabled", [True, False])
async def test_the_worker_forks_line_consoles_from_its_template_unless_switched_off(
    tmp_path: Path, enabled: bool
) -> None:
    env = make_env(tmp_path, operators=2)
    config = yaml.safe_load(env.config_path.read_text())
    config["listener"]["console_zygote"] = enabled
    env.config_path.write_text(yaml.safe_dump(config))
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    try:
        if not enabled:
            assert worker.zygote is None
        else:
            assert worker.zygote is not None
            async with asyncio.timeout(30):
                await worker.zygote.wait_ready()
        _, conn = await fresh_login(env, port)
        async with conn:
            process = await conn.create_process(term_type="xterm", term_size=(100, 30))
            await read_ssh_until(process, "terminal    xterm 100x30")
            if worker.zygote is not None and worker.zygote.pid is not None:
                assert len(zygote_children(worker.zygote.pid)) == 1
            process.stdin.write("\n")  # Enter on an empty line ends the session
            await asyncio.wait_for(process.wait_closed(), 10)
        assert process.exit_status == 0
    finally:
        await worker.stop()
    assert worker.zygote is None or worker.zygote.pid is None
