"""Session lifecycle through the real SSH path: states audited, temp directory created and
wiped, deadline notices reaching the console over the broker socket, and every ending —
logout, disconnect, idle, hard limit, an administrator's kill, shutdown — going through the
wipe."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple

import asyncssh
import pytest
import yaml

from bastion.config import load_config
from bastion.ssh.front_door import Identity
from bastion.ssh.worker import Worker
from bastion.state.journal import Journal
from front_door.harness import BastionEnv, bastion_cli, make_env
from front_door.test_console import read_until
from front_door.test_login_asyncssh import fresh_login

# A console that echoes what the broker tells it and exits on "q".
LISTENER = r"""
import fcntl, os, selectors, sys, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
broker = int(os.environ["BASTION_BROKER_FD"])
sys.stdout.write(f"ready\r\n"); sys.stdout.flush()
sel = selectors.DefaultSelector()
sel.register(0, selectors.EVENT_READ); sel.register(broker, selectors.EVENT_READ)
buf = b""
while True:
    for key, _ in sel.select():
        data = os.read(key.fd, 4096)
        if not data:
            sys.exit(0)
        if key.fd == broker:
            for line in data.decode().splitlines():
                sys.stdout.write(f"broker says {line}\r\n"); sys.stdout.flush()
        elif b"q" in data:
            sys.exit(0)
"""


def listener_console(identity: Identity) -> list[str]:
    return [sys.executable, "-c", LISTENER]


async def start(env: BastionEnv) -> Worker:
    worker = Worker(load_config(env.config_path))
    await worker.start()
    assert worker.door is not None
    worker.door.console_command = listener_console
    return worker


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[BastionEnv, Worker]]:
    env = make_env(tmp_path, operators=4)
    worker = await start(env)
    try:
        yield env, worker
    finally:
        await worker.stop()


class Console(NamedTuple):
    conn: asyncssh.SSHClientConnection
    process: asyncssh.SSHClientProcess[str]
    session: str
    seen: str  # what the console printed up to and including "ready"


async def open_console(env: BastionEnv, worker: Worker) -> Console:
    _, conn = await fresh_login(env, worker.port)
    process = await conn.create_process(term_type="xterm", term_size=(80, 24))
    seen = await read_until(process, "ready")
    opened = await env.event("session.opened", connection=_connection_of(env))
    return Console(conn, process, str(opened["session"]), seen)


def _connection_of(env: BastionEnv) -> str:
    return str(env.audit_events("login.succeeded")[-1]["connection"])


def session_events(env: BastionEnv, session: str) -> list[dict[str, Any]]:
    return [e for e in env.audit_events() if e.get("session") == session]


async def wiped(env: BastionEnv, session: str) -> dict[str, Any]:
    event = await env.event("session.wiped", session=session)
    await env.event("session.state", session=session, outcome="closed")
    return event


async def test_a_session_opens_browses_and_is_wiped_at_logout(
    served: tuple[BastionEnv, Worker],
) -> None:
    env, worker = served
    conn, process, session, _ = await open_console(env, worker)
    temp = env.state_dir / "sessions" / session
    assert temp.is_dir()
    assert temp.stat().st_mode & 0o777 == 0o700
    journal = Journal(env.state_dir / "journal.db")
    live = {s.id: s for s in journal.live_sessions()}
    assert live[session].state == "browsing"
    process.stdin.write("q\n")
    await process.wait(check=False)
    conn.close()
    event = await wiped(env, session)
    assert event["ending"] == "logout"
    assert event["resources"] == [{"kind": "temp_dir", "path": str(temp), "outcome": "removed"}]
    assert not temp.exists()
    states = [e["outcome"] for e in session_events(env, session) if e["event"] == "session.state"]
    assert states == ["browsing", "wiping", "closed"]
    assert journal.session(session).state == "closed"  # type: ignore[union-attr]
    assert journal.pending(session) == []
    journal.close()


async def test_a_dropped_connection_wipes_the_session(served: tuple[BastionEnv, Worker]) -> None:
    env, worker = served
    conn, _, session, _ = await open_console(env, worker)
    conn.abort()
    assert (await wiped(env, session))["ending"] == "disconnect"
    assert not (env.state_dir / "sessions" / session).exists()


async def ended_with_notice(
    env: BastionEnv, edit: Callable[[dict[str, Any]], None], tmp_path: Path
) -> tuple[str, dict[str, Any]]:
    data = yaml.safe_load(env.config_path.read_text())
    edit(data["limits"])
    env.config_path.write_text(yaml.safe_dump(data))
    worker = await start(env)
    try:
        conn, process, session, seen = await open_console(env, worker)
        seen += await read_until(process, "has ended")
        conn.close()
        return seen, await wiped(env, session)
    finally:
        await worker.stop()


async def test_idle_timeout_warns_over_the_broker_socket_then_wipes(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=1)
    seen, event = await ended_with_notice(
        env, lambda limits: limits.update(console_idle_timeout="2s"), tmp_path
    )
    # Every console hears Welcome first; the notice follows.
    notice = next(
        line
        for line in seen.splitlines()
        if line.startswith("broker says") and '"type":"notice"' in line
    )
    message = json.loads(notice.removeprefix("broker says "))
    assert message["type"] == "notice"
    assert message["kind"] == "idle"
    assert 0 < message["seconds_left"] <= 2
    assert "unless you type something" in message["message"]
    assert "\abastion: the session was idle too long and has ended" in seen
    assert event["ending"] == "idle_timeout"
    await env.event("session.warning", deadline="idle")


async def test_hard_limit_ends_the_session_even_with_input(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=1)

    def limits(data: dict[str, Any]) -> None:
        data.update(console_idle_timeout="1h", session_hard_limit="2s")

    seen, event = await ended_with_notice(env, limits, tmp_path)
    assert '"kind":"hard"' in seen
    assert "the session reached its time limit and has ended" in seen
    assert event["ending"] == "hard_limit"


async def test_input_keeps_an_idle_session_alive(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=1, console_idle_timeout="2s")
    worker = await start(env)
    try:
        conn, process, session, _ = await open_console(env, worker)
        for _ in range(6):  # 3 s of typing, longer than the idle timeout
            process.stdin.write("x\n")
            await asyncio.sleep(0.5)
        assert not env.audit_events("session.wiped")
        conn.close()
        assert (await wiped(env, session))["ending"] == "disconnect"
    finally:
        await worker.stop()


async def test_an_administrator_kills_a_session(served: tuple[BastionEnv, Worker]) -> None:
    env, worker = served
    conn, process, session, seen = await open_console(env, worker)
    listing = await bastion_cli(env, "sessions", "list")
    out, _ = await listing.communicate()
    assert session in out.decode()
    assert "browsing" in out.decode()
    killer = await bastion_cli(env, "sessions", "kill", session, "--reason", "INC-7 leaked key")
    seen = await read_until(process, "ended this session: INC-7 leaked key")
    out, _ = await killer.communicate()
    assert killer.returncode == 0, out
    assert f"session {session}" in out.decode()
    assert "\a" in seen
    conn.close()
    assert (await wiped(env, session))["ending"] == "admin_kill"
    requested = await env.event("session.kill_requested", session=session)
    assert requested["reason"] == "INC-7 leaked key"


async def test_killing_an_unknown_session_says_so(served: tuple[BastionEnv, Worker]) -> None:
    env, _ = served
    killer = await bastion_cli(
        env, "sessions", "kill", "0123456789abcdef", "--reason", "a stale session"
    )
    _, err = await killer.communicate()
    assert killer.returncode == 1
    assert "session 0123456789abcdef does not exist" in err.decode()
    assert "bastion sessions list" in err.decode()


async def test_shutdown_wipes_live_sessions_and_tells_the_operator(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=1)
    worker = await start(env)
    conn, process, session, seen = await open_console(env, worker)
    stopping = asyncio.get_running_loop().create_task(worker.stop())
    seen = await read_until(process, "the bastion is shutting down")
    await stopping
    conn.close()
    assert "\a" in seen
    assert (await wiped(env, session))["ending"] == "shutdown"
    assert not (env.state_dir / "sessions" / session).exists()
