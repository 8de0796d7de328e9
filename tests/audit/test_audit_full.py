"""A full disk under a running session: the audit log stops taking events (a real ``EFBIG``
from a file-size limit put on the worker process while it serves), so the session that
needs an event ends, the worker lives on, the log keeps only whole events, and once the
disk has room again the log's first event says what it could not take."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest
from front_door.harness import BastionEnv, make_env
from front_door.test_login_asyncssh import fresh_login

from bastion.audit.chain import verify
from bastion.audit.log import AuditLog, head_path, read_head

WORKER = textwrap.dedent(
    """
    import asyncio, signal, sys
    from pathlib import Path
    from bastion.config import load_config
    from bastion.ssh.worker import Worker

    # A write past the file-size limit fails with EFBIG instead of killing the process,
    # as it would on a full disk (ENOSPC).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    async def main():
        worker = Worker(load_config(Path(sys.argv[1])))
        port = await worker.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print(port, flush=True)
        await stop.wait()
        await worker.stop()

    asyncio.run(main())
    """
)


def prefill(path: Path) -> None:
    """2 MB of old events, so that the limit put at the log's size lies above every other
    file the worker writes (its SQLite databases), and only the audit log hits it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = AuditLog(path, hmac_key=b"k" * 32)  # the HMAC key plays no part in this test
    log.open()
    try:
        for _ in range(4):
            log.record_now("old.event", actor="-", outcome="ok", pad=[0] * 250_000)
    finally:
        log.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[BastionEnv, subprocess.Popen[str], int]]:
    env = make_env(tmp_path, operators=2)
    prefill(env.audit_log)
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(env.config_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        port = int(proc.stdout.readline())
        yield env, proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        proc.stdout.close()


@contextlib.asynccontextmanager
async def console(env: BastionEnv, port: int) -> AsyncIterator[asyncssh.SSHClientProcess[str]]:
    _, conn = await fresh_login(env, port)
    async with conn:
        process = await conn.create_process(term_type="xterm", term_size=(100, 30))
        yield process


async def read_until(process: asyncssh.SSHClientProcess[str], text: str) -> str:
    seen = ""
    async with asyncio.timeout(15):
        while text not in seen:
            chunk = await process.stdout.read(4096)
            if not chunk:
                break
            seen += chunk
    return seen


def events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def log_is_whole(path: Path) -> bool:
    lines = path.read_bytes().splitlines(keepends=True)
    return verify(lines, read_head(head_path(path))).ok


async def test_a_full_disk_ends_the_session_and_the_log_says_so_once_it_has_room(
    served: tuple[BastionEnv, subprocess.Popen[str], int],
) -> None:
    env, proc, port = served
    async with console(env, port) as process:
        assert "> " in await read_until(process, "> ")
        opened = [e for e in events(env.audit_log) if e["event"] == "session.opened"][-1]
        full = env.audit_log.stat().st_size
        last = events(env.audit_log)[-1]["seq"]
        # The disk is full from now on, for the audit log.
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (full, resource.RLIM_INFINITY))
        process.stdin.write("debug payments/api-1\n")  # its first step is an audit event
        seen = await read_until(process, "\0never")  # until the session ends the channel
        await asyncio.wait_for(process.wait_closed(), 15)
    assert seen.endswith("bastion: the session could not be recorded and has ended\r\n")
    assert proc.poll() is None, "the worker must live on"
    assert env.audit_log.stat().st_size == full  # nothing half-written
    assert log_is_whole(env.audit_log)
    # The session was wiped all the same (its temp directory is gone).
    assert not (env.state_dir / "sessions" / str(opened["session"])).exists()
    # Room again: the next event (the next login) comes after the log's own account.
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    async with console(env, port) as process:
        assert "> " in await read_until(process, "> ")
        process.stdin.write("\n")  # an empty line logs out
        await asyncio.wait_for(process.wait_closed(), 15)
    after = [e for e in events(env.audit_log) if int(str(e["seq"])) > int(str(last))]
    outage = after[0]
    assert outage["event"] == "audit.unavailable"
    assert outage["outcome"] == "alert"
    assert "File too large" in str(outage["error"])
    assert int(str(outage["refused_events"])) >= 2  # at least the debug's start and the end
    assert after[1]["event"] in ("login.succeeded", "audit.checkpoint")
    assert log_is_whole(env.audit_log)
    os.kill(proc.pid, 0)  # still serving
