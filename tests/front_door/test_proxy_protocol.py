"""PROXY protocol on the listener (``listener.proxy_protocol``): the real OpenSSH client
through a test relay standing in for the load balancer (``bastion serve``, two workers), and
raw connections to an in-process worker for the refusals and the throttle."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pexpect
import pytest
import yaml
from audit.receivers import WebhookReceiver, make_ca

from bastion.config import load_config
from bastion.ssh.worker import Worker
from front_door.break_glass import break_glass_section
from front_door.harness import BastionEnv, ServedBastion, make_env
from front_door.proxy_relay import v1_header, v2_header
from front_door.test_login_asyncssh import login
from front_door.test_real_clients import enter_code_and_leave, spawn_ssh

RELAY = Path(__file__).with_name("proxy_relay.py")
CLIENT = ("203.0.113.7", 40000)  # what the load balancer's header says
BASTION = ("127.0.0.1", 2222)


def proxy_env(root: Path, trusted: list[str], operators: int = 0, **limits: Any) -> BastionEnv:
    env = make_env(root, operators=operators, **limits)
    config = yaml.safe_load(env.config_path.read_text())
    config["listener"]["proxy_protocol"] = {"trusted": trusted, "timeout": "1s"}
    env.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return env


class Relay:
    """tests/front_door/proxy_relay.py as a process; stopped by PID."""

    def __init__(self, to: int, header: str, bind: str, client: str = "203.0.113.7:40000") -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(RELAY),
                "--to",
                str(to),
                "--header",
                header,
                "--bind",
                bind,
                "--client",
                client,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"the relay did not start: {line!r}")
        self.port = int(line.split()[-1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# ------------------------------------------------------------------ OpenSSH through a relay
@pytest.fixture(scope="module")
def behind_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BastionEnv, int]]:
    # The load balancer is 127.0.0.2; 127.0.0.1 is any other host on the network.
    env = proxy_env(tmp_path_factory.mktemp("proxied"), ["127.0.0.2/32"], operators=4)
    bastion = ServedBastion(env, workers=2).start()
    try:
        yield env, bastion.port
    finally:
        assert bastion.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_openssh_login_through_the_load_balancer_shows_the_real_address(
    behind_relay: tuple[BastionEnv, int], version: str
) -> None:
    env, port = behind_relay
    relay = Relay(port, version, bind="127.0.0.2")
    op = env.fresh()
    try:
        child = spawn_ssh(relay.port, op)
        child.expect("Verification code: ")
        enter_code_and_leave(child, op)
        child.close()
        assert child.exitstatus == 0
    finally:
        relay.stop()
    login = env.wait_for_event("login.succeeded", user=op.name)
    assert (login["source"], login["source_port"], login["via"]) == (*CLIENT, "127.0.0.2")
    opened = env.wait_for_event("session.opened", connection=login["connection"])
    assert opened["source"] == "203.0.113.7:40000"
    closed = env.wait_for_event("connection.closed", connection=login["connection"])
    assert (closed["source"], closed["via"]) == ("203.0.113.7", "127.0.0.2")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("header", "bind", "reason"),
    [
        # 127.0.0.1 is not a trusted load balancer: its header is a forgery.
        ("v1", "127.0.0.1", "PROXY protocol header from 127.0.0.1, not a trusted peer"),
        # The load balancer without send-proxy: refused, not attributed to the balancer.
        ("none", "127.0.0.2", "from trusted load balancer 127.0.0.2: the connection did not"),
    ],
)
def test_openssh_through_a_forging_or_headerless_relay_is_refused(
    behind_relay: tuple[BastionEnv, int], header: str, bind: str, reason: str
) -> None:
    env, port = behind_relay
    relay = Relay(port, header, bind=bind, client="198.51.100.66:1")
    op = env.fresh()
    try:
        child = spawn_ssh(relay.port, op, "-o", "BatchMode=yes")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 255
    finally:
        relay.stop()
    refused = env.wait_for_event("connection.proxy_refused", source=bind)
    assert reason in refused["reason"]
    assert "198.51.100.66" not in env.audit_log.read_text()  # the forged address is never read


# ------------------------------------------------------------------ raw connections, in-process
async def exchange(port: int, first: bytes, *, source: str = "127.0.0.1") -> bytes:
    """Connect from ``source``, send ``first``, and return all the server sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(first)
        async with asyncio.timeout(10):
            return await reader.read(4096)
    finally:
        writer.close()


async def banner(port: int, first: bytes) -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(first)
    async with asyncio.timeout(10):
        return await reader.read(64), writer


async def test_throttle_counts_the_real_address_not_the_load_balancers(tmp_path: Path) -> None:
    env = proxy_env(tmp_path, ["127.0.0.1/32"], connections_per_source=2)
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    writers = []
    try:
        for _ in range(2):
            got, writer = await banner(port, v1_header(CLIENT, BASTION))
            writers.append(writer)
            assert got.startswith(b"SSH-2.0-bastion")
        got, writer = await banner(port, v2_header(CLIENT, BASTION))
        writers.append(writer)
        assert got == b""  # a third from 203.0.113.7: closed before the SSH banner
        # Through the same load balancer, another operator is still let in.
        got, writer = await banner(port, v1_header(("203.0.113.8", 40001), BASTION))
        writers.append(writer)
        assert got.startswith(b"SSH-2.0-bastion")
        throttled = await env.event("connection.throttled", source="203.0.113.7")
        assert throttled["via"] == "127.0.0.1"
        assert "from 203.0.113.7" in throttled["reason"]
    finally:
        for writer in writers:
            writer.close()
        await worker.stop()


async def test_refusals_behind_a_load_balancer(tmp_path: Path) -> None:
    # A long window: the three refusals from the load balancer below fall in one.
    env = proxy_env(tmp_path, ["127.0.0.1/32"], connection_window="5m")
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    try:
        # A forged header from a host that is not the load balancer: SSH had started (the
        # bastion speaks first), then the header ends the connection.
        got = await exchange(port, v1_header(("198.51.100.9", 1), BASTION), source="127.0.0.3")
        assert got.startswith(b"SSH-2.0-bastion")
        forged = await env.event("connection.proxy_refused", source="127.0.0.3")
        assert "PROXY protocol header from 127.0.0.3, not a trusted peer" in forged["reason"]
        await exchange(port, v2_header(("198.51.100.9", 1), BASTION), source="127.0.0.4")
        await env.event("connection.proxy_refused", source="127.0.0.4")
        # An SSH client straight from that host is served as without a load balancer.
        got = await exchange(port, b"SSH-2.0-OpenSSH_9.2\r\n", source="127.0.0.5")
        assert got.startswith(b"SSH-2.0-bastion")

        # From the load balancer: no header, a malformed one, or none in time.
        assert await exchange(port, b"SSH-2.0-OpenSSH_9.2\r\n") == b""
        missing = await env.event("connection.proxy_refused", source="127.0.0.1")
        assert "did not start with a PROXY protocol header" in missing["reason"]
        assert await exchange(port, b"PROXY TCP4 203.0.113.7 127.0.0.1 022 22\r\n") == b""
        assert await exchange(port, b"") == b""  # the header timeout (1 s)
    finally:
        await worker.stop()
    assert "198.51.100.9" not in env.audit_log.read_text()
    # A refused header is not also a failed login; the plain SSH client's is.
    assert [e["source"] for e in env.audit_events("login.failed")] == ["127.0.0.5"]
    # One event per source and window: the load balancer's later refusals are folded in.
    refused = env.audit_events("connection.proxy_refused")
    assert sorted(e["source"] for e in refused) == ["127.0.0.1", "127.0.0.3", "127.0.0.4"]


async def test_a_timed_out_header_is_refused_and_audited(tmp_path: Path) -> None:
    env = proxy_env(tmp_path, ["127.0.0.0/8"])
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    try:
        assert await exchange(port, b"PROXY TCP4 203.0.113.7") == b""
        refused = await env.event("connection.proxy_refused", source="127.0.0.1")
        assert refused["reason"] == (
            "from trusted load balancer 127.0.0.1: no PROXY protocol header within 1 s"
        )
    finally:
        await worker.stop()


async def test_health_check_local_keeps_the_balancers_address(tmp_path: Path) -> None:
    env = proxy_env(tmp_path, ["127.0.0.1/32"])
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    try:
        # The header and the client's first line in one segment: the line reaches SSH.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(v2_header(None, None) + b"SSH-2.0-healthcheck\r\n")
        async with asyncio.timeout(10):
            assert (await reader.readline()).startswith(b"SSH-2.0-bastion")
            writer.write(b"not an SSH packet" * 10)
            await reader.read()  # the server closes: the bytes after the header were SSH's
        writer.close()
        # A health check names no user: no failed login, nothing for the guard to count.
        # A client that does try to log in behind a LOCAL header is audited as any other.
        stranger = asyncssh.generate_private_key("ssh-ed25519")
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(v2_header(None, None))
        conn, _ = await login(port, "mallory", stranger, [], sock=sock)
        assert conn is None
        failed = await env.event("login.failed", source="127.0.0.1")
        assert failed["via"] == "127.0.0.1"
        assert failed["user"] == "mallory"
        assert [e["user"] for e in env.audit_events("login.failed")] == ["mallory"]
    finally:
        await worker.stop()


async def test_the_guard_and_its_alert_see_the_real_address(tmp_path: Path) -> None:
    env = proxy_env(tmp_path, ["127.0.0.1/32"])
    receiver = await WebhookReceiver(make_ca(tmp_path / "receivers")).start()
    data = yaml.safe_load(env.config_path.read_text())
    data["break_glass"] = break_glass_section(receiver.ca.ca_file, webhook=receiver.url)
    data["guard"] = {"failures_from_source": {"count": 2, "action": "alert"}}
    env.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    try:
        for user in ("root", "admin"):
            # The SSH client's socket, with the load balancer's header written first.
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(v2_header(CLIENT, BASTION))
            conn, _ = await login(port, user, stranger, [], sock=sock)
            assert conn is None
        triggered = await env.event("guard.triggered", rule="failures_from_source")
        assert triggered["source"] == "203.0.113.7"
        assert triggered["evidence"].startswith("2 failed logins from 203.0.113.7")
        failed = await env.event("login.failed", user="admin")
        assert (failed["source"], failed["via"]) == ("203.0.113.7", "127.0.0.1")
    finally:
        await worker.stop()
        await receiver.aclose()
