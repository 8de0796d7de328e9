"""What a login gets by default: the Textual console (tui.app), forked from the worker's
console template, or started fresh (``python -I -m tui.app USER``) when the template is
switched off; it follows resizes, quits with ``q``, and tells a dumb terminal what to do.

The screens themselves are tested headless in tests/tui; the debug shell and the way back
to the pod list, over the real OpenSSH client, in tests/devstack/test_console_e2e.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
import yaml

from bastion.config import load_config
from bastion.ssh.worker import Worker
from front_door.harness import BastionEnv, make_env
from front_door.test_login_asyncssh import fresh_login
from front_door.test_zygote import zygote_children

# Escape sequences (CSI with its private and intermediate bytes, OSC, charset selection):
# what is left of Textual's output is the text of the lines it drew.
_ESCAPES = re.compile(
    rb"\x1b\[[0-9;?<>=$ ]*[A-Za-z~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Z]|\x1b[=>]"
)


_MOVE = re.compile(rb"\x1b\[(\d+);(\d+)H")


def screen_lines(output: bytes, width: int | None = None) -> list[str]:
    """The screen as Textual's output leaves it, row by row, escape sequences removed.

    Textual places each line it draws with a cursor move (``CSI row;col H``), in the order
    its updates come (the top line may follow the rest of a first frame): text goes where
    the last move put it, over what was there. ``width``: the terminal's, after a resize
    (what a wider frame left past it is gone, as on a real terminal)."""
    rows: dict[int, str] = {}
    pieces = _MOVE.split(output)
    for i in range(1, len(pieces) - 2, 3):
        row, col = int(pieces[i]), int(pieces[i + 1])
        text = _ESCAPES.sub(b"", pieces[i + 2]).decode(errors="replace")
        for k, part in enumerate(text.split("\r\n")):
            at = col - 1 if k == 0 else 0
            line = rows.get(row + k, "").ljust(at)
            rows[row + k] = line[:at] + part + line[at + len(part) :]
    return [rows[row][:width] for row in sorted(rows)]


async def read_until_line(
    process: asyncssh.SSHClientProcess[bytes],
    wanted: re.Pattern[str],
    within: float = 15,
    *,
    width: int | None = None,
) -> list[str]:
    """Output until a drawn line matches ``wanted``; the lines seen so far (``width``: the
    terminal's, after a resize)."""
    seen = b""
    try:
        async with asyncio.timeout(within):
            while not any(wanted.fullmatch(line) for line in screen_lines(seen, width)):
                chunk = await process.stdout.read(65536)
                if not chunk:
                    break
                seen += chunk
    except TimeoutError:
        pass
    lines = screen_lines(seen, width)
    assert any(wanted.fullmatch(line) for line in lines), lines[-40:]
    return lines


def console_pids(user: str) -> list[int]:
    """Fresh consoles of ``user``: processes running ``-m tui.app USER``."""
    wanted = b"\0-m\0tui.app\0" + user.encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if wanted in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def configured(tmp_path: Path, **listener: object) -> BastionEnv:
    env = make_env(tmp_path, operators=2, console="textual")
    config = yaml.safe_load(env.config_path.read_text())
    config["listener"].update(listener)
    env.config_path.write_text(yaml.safe_dump(config))
    return env


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[tuple[BastionEnv, Worker]]:
    env = configured(tmp_path)
    running = Worker(load_config(env.config_path))
    await running.start()
    try:
        yield env, running
    finally:
        await running.stop()


@pytest.mark.parametrize("zygote", [True, False])
async def test_a_login_gets_the_textual_console_which_follows_resizes_and_quits(
    tmp_path: Path, zygote: bool
) -> None:
    env = configured(tmp_path, console_zygote=zygote)
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    try:
        if worker.zygote is not None:
            async with asyncio.timeout(30):
                await worker.zygote.wait_ready()
        op, conn = await fresh_login(env, port)
        async with conn:
            process = await conn.create_process(
                term_type="xterm-256color", term_size=(100, 30), encoding=None
            )
            # The top line (user, cluster) and the title, drawn 100 columns wide. The one
            # cluster opens at once; this test's cluster has no browse role, which the
            # console says in a notification rather than failing.
            await read_until_line(process, re.compile(rf" {op.name}  prod-eu   session .{{60,}}"))
            if zygote:
                assert worker.zygote is not None
                assert worker.zygote.pid is not None
                assert len(zygote_children(worker.zygote.pid)) == 1
                assert console_pids(op.name) == []
            else:
                # python -I -m tui.app USER: the module runs safely as __main__ (its screens
                # found their app, or the top line above would not be there).
                assert len(console_pids(op.name)) == 1
            process.change_terminal_size(80, 24)
            # Drawn again 80 columns wide (at 100 the title's line has 78 spaces).
            await read_until_line(process, re.compile(r" Namespaces in prod-eu {58}"), width=80)
            process.stdin.write(b"q")
            await asyncio.wait_for(process.wait_closed(), 10)
        assert process.exit_status == 0
        ended = await env.event("console.ended", actor=op.name)
        assert (ended["exit_status"], ended["handed_over"]) == (0, False)
        async with asyncio.timeout(10):
            while console_pids(op.name):  # noqa: ASYNC110 - an exit has no event to wait on
                await asyncio.sleep(0.02)
    finally:
        await worker.stop()


async def test_a_dumb_terminal_is_told_what_to_do(worker: tuple[BastionEnv, Worker]) -> None:
    env, running = worker
    op, conn = await fresh_login(env, running.port)
    async with conn:
        result = await conn.run(term_type="dumb", term_size=(80, 24), timeout=20)
    out = str(result.stdout)
    assert "this terminal (TERM=dumb) cannot show the console" in out
    assert "ssh -t BASTION debug NAMESPACE/POD" in out
    assert "\x1b[" not in out  # not a single escape sequence reached it
    assert result.exit_status == 1
    ended = await env.event("console.ended", actor=op.name)
    assert ended["exit_status"] == 1


async def test_the_line_console_is_a_configuration_choice(tmp_path: Path) -> None:
    env = configured(tmp_path, console="line")
    running = Worker(load_config(env.config_path))
    port = await running.start()
    try:
        op, conn = await fresh_login(env, port)
        async with conn:
            result = await conn.run(term_type="xterm", term_size=(80, 24), input="\n", timeout=20)
        assert f"Welcome, {op.name}." in str(result.stdout)
        assert result.exit_status == 0
    finally:
        await running.stop()
