"""Per-source connection rate and the cap on connections still authenticating, through the
real server, and the throttle's bookkeeping across workers."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.ssh.throttle import SourceThrottle, source_key
from bastion.ssh.worker import Worker
from front_door.harness import make_env


async def banner_from(port: int, source: str) -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    async with asyncio.timeout(5):
        banner = await reader.read(64)
    return banner, writer


async def test_new_connections_per_source_are_limited(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=0, connections_per_source=3, connection_window="10s")
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    writers = []
    try:
        for _ in range(3):
            banner, writer = await banner_from(port, "127.0.0.2")
            writers.append(writer)
            assert banner.startswith(b"SSH-2.0-bastion")
        for _ in range(3):
            banner, writer = await banner_from(port, "127.0.0.2")
            writers.append(writer)
            assert banner == b""  # closed before the SSH banner
        banner, writer = await banner_from(port, "127.0.0.3")  # another source is fine
        writers.append(writer)
        assert banner.startswith(b"SSH-2.0-")
        throttled = await env.event("connection.throttled", source="127.0.0.2")
        assert "more than 3 new connections from 127.0.0.2" in throttled["reason"]
        # One event per source per window, not one per refused connection.
        assert len(env.audit_events("connection.throttled")) == 1
    finally:
        for writer in writers:
            writer.close()
        await worker.stop()


async def test_connections_still_authenticating_are_capped(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=0, max_unauthenticated=2)
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    try:
        first = await banner_from(port, "127.0.0.4")
        second = await banner_from(port, "127.0.0.5")
        assert first[0]
        assert second[0]
        refused, extra = await banner_from(port, "127.0.0.6")
        assert refused == b""
        extra.close()
        first[1].close()
        await first[1].wait_closed()
        await asyncio.sleep(0.2)  # the server sees the close and frees the slot
        again, writer = await banner_from(port, "127.0.0.7")
        assert again.startswith(b"SSH-2.0-")
        writer.close()
        second[1].close()
    finally:
        await worker.stop()


def test_source_key_counts_ipv6_per_64() -> None:
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::9")
    assert source_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"


def test_rows_of_dead_workers_are_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "throttle.db"
    throttle = SourceThrottle(
        path, per_source=10, window=10, max_authenticating=1, login_timeout=30
    )
    assert throttle.admit("c1", "192.0.2.1").admitted
    throttle.close()
    # Pretend the row belongs to a process that has exited.
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE authenticating SET pid = ?", (pid,))
    db.close()
    fresh = SourceThrottle(path, per_source=10, window=10, max_authenticating=1, login_timeout=30)
    assert fresh.authenticating() == 0
    assert fresh.admit("c2", "192.0.2.2").admitted
    fresh.close()


@pytest.mark.parametrize("clock_step", [0.0, 11.0])
def test_the_window_slides(tmp_path: Path, clock_step: float) -> None:
    now = [1000.0]
    throttle = SourceThrottle(
        tmp_path / "t.db",
        per_source=2,
        window=10,
        max_authenticating=100,
        login_timeout=30,
        clock=lambda: now[0],
    )
    assert throttle.admit("a", "192.0.2.1").admitted
    assert throttle.admit("b", "192.0.2.1").admitted
    now[0] += clock_step
    assert throttle.admit("c", "192.0.2.1").admitted is (clock_step > 10)
    throttle.close()
