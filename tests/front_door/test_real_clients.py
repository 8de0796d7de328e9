"""The real `bastion serve` (supervisor + 2 workers) against the clients operators use:
Debian's OpenSSH client on a terminal (pexpect) and paramiko."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import paramiko
import pexpect
import pytest

from bastion.ssh.front_door import EXEC_REFUSAL
from front_door.harness import BastionEnv, Operator, ServedBastion, make_env
from front_door.test_login_asyncssh import login

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BastionEnv, int]]:
    env = make_env(tmp_path_factory.mktemp("served"), operators=24)
    bastion = ServedBastion(env, workers=2).start()
    try:
        yield env, bastion.port
    finally:
        assert bastion.stop() == 0


def ssh_argv(port: int, op: Operator, *extra: str, command: str | None = None) -> list[str]:
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-p",
        str(port),
        "-i",
        str(op.key_file),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        *extra,
        f"{op.name}@127.0.0.1",
        *([command] if command else []),
    ]


def spawn_ssh(port: int, op: Operator, *extra: str, command: str | None = None) -> pexpect.spawn:
    argv = ssh_argv(port, op, *extra, command=command)
    return pexpect.spawn(argv[0], argv[1:], encoding="utf-8", timeout=20, dimensions=(30, 100))


def enter_code_and_leave(child: pexpect.spawn, op: Operator) -> None:
    """Answer the code prompt, see the line console's welcome, and leave it."""
    child.sendline(op.code())
    child.expect(f"Welcome, {op.name}.")
    child.expect("Press Enter")
    child.sendline("")
    child.expect(pexpect.EOF)


def test_openssh_key_then_code_with_partial_success(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    child = spawn_ssh(port, op, "-v")
    child.expect('Authenticated using "publickey" with partial success')
    child.expect("Verification code: ")
    child.sendline(op.code())
    child.expect(f"Welcome, {op.name}.")
    child.expect("100x30")
    child.expect("Press Enter")
    child.sendline("")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    event = env.wait_for_event("login.succeeded", user=op.name)
    assert event["key"] == op.fingerprint


def test_openssh_wrong_code_is_told_and_asked_again(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    child = spawn_ssh(port, op)
    child.expect("Verification code: ")
    child.sendline(op.wrong_codes(1)[0])
    child.expect("the code was not accepted; 2 attempt\\(s\\) left")
    child.expect("Verification code: ")
    enter_code_and_leave(child, op)


def test_openssh_key_alone_is_denied(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    result = subprocess.run(
        ssh_argv(port, op, "-o", "BatchMode=yes", "-T"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 255
    assert "Permission denied (keyboard-interactive)" in result.stderr


def test_openssh_exec_gets_an_explanation_and_status_1(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    child = spawn_ssh(port, op, command="id")
    child.expect("Verification code: ")
    child.sendline(op.code())
    child.expect(EXEC_REFUSAL)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    refused = env.wait_for_event("channel.refused", user=op.name, request="exec")
    assert refused["detail"] == "id"


def test_openssh_forwardings_and_env_are_refused_and_audited(
    served: tuple[BastionEnv, int],
) -> None:
    env, port = served
    op = env.fresh()
    child = spawn_ssh(
        port,
        op,
        "-o",
        "SetEnv=SECRET_MODE=1",
        "-o",
        "ForwardAgent=yes",
        "-o",
        "ExitOnForwardFailure=no",
        "-R",
        "127.0.0.1:0:127.0.0.1:9",
    )
    child.expect("Verification code: ")
    enter_code_and_leave(child, op)
    requests = {
        (e["request"], e["detail"])
        for e in env.audit_events("channel.refused")
        if e["user"] == op.name
    }
    assert ("env", "variable SECRET_MODE") in requests
    assert ("tcpip-forward", "127.0.0.1:0") in requests
    # ForwardAgent without an agent is not sent by OpenSSH; paramiko covers agent requests.


def test_sftp_is_refused(served: tuple[BastionEnv, int], tmp_path: Path) -> None:
    env, port = served
    op = env.fresh()
    argv = ["sftp", *ssh_argv(port, op)[1:]]
    argv[argv.index("-p")] = "-P"
    child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", timeout=20)
    child.expect("Verification code: ")
    child.sendline(op.code())
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus != 0
    env.wait_for_event("channel.refused", user=op.name, request="subsystem", detail="sftp")


# ---------------------------------------------------------------------------- paramiko
def paramiko_login(port: int, op: Operator) -> paramiko.Transport:
    transport = paramiko.Transport(("127.0.0.1", port))
    transport.start_client(timeout=10)
    key = paramiko.Ed25519Key.from_private_key_file(str(op.key_file))
    remaining = transport.auth_publickey(op.name, key)
    assert remaining == ["keyboard-interactive"]
    shown: list[str] = []

    def answer(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        shown.append(instructions)
        return [op.code() for _ in prompts]

    assert transport.auth_interactive(op.name, answer) == []
    assert transport.is_authenticated()
    return transport


def test_paramiko_key_and_code(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    transport = paramiko_login(port, op)
    try:
        chan = transport.open_session()
        chan.get_pty(term="vt100", width=90, height=20)
        chan.invoke_shell()
        chan.send(b"\n")  # the placeholder ends the session at Enter
        out = b""
        while not chan.exit_status_ready() or chan.recv_ready():
            data = chan.recv(4096)
            if not data:
                break
            out += data
        assert f"Welcome, {op.name}.".encode() in out
        assert b"vt100 90x20" in out
        assert chan.recv_exit_status() == 0
    finally:
        transport.close()


def test_paramiko_refused_channels_are_audited(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    transport = paramiko_login(port, op)
    try:
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", ("10.0.0.1", 5432), ("127.0.0.1", 40000))
        with pytest.raises(paramiko.SSHException):
            transport.request_port_forward("0.0.0.0", 8080)  # noqa: S104 - asked of the server
        chan = transport.open_session()
        paramiko.agent.AgentRequestHandler(chan)  # sent without wanting a reply
        with pytest.raises(paramiko.ChannelException):
            transport.open_session()  # one session per connection
        chan.exec_command("cat /etc/shadow")
        assert chan.recv_exit_status() == 1
        assert EXEC_REFUSAL.encode() in chan.recv_stderr(4096)
    finally:
        transport.close()
    # paramiko closes a session whose request was refused: one connection (and operator) each.
    for request in (
        lambda chan: chan.invoke_subsystem("sftp"),
        lambda chan: chan.request_x11(auth_cookie=b"00" * 16),
    ):
        transport = paramiko_login(port, env.fresh())
        try:
            with pytest.raises(paramiko.SSHException):
                request(transport.open_session())
        finally:
            transport.close()
    transport = paramiko_login(port, env.fresh())
    try:
        # paramiko sends env without wanting a reply; the refusal shows in the audit log.
        transport.open_session().update_environment({"LD_PRELOAD": "/tmp/x.so"})
    finally:
        transport.close()
    wanted = {
        ("direct-tcpip", "10.0.0.1:5432"),
        ("tcpip-forward", "0.0.0.0:8080"),
        ("auth-agent-req@openssh.com", ""),
        ("session", "a second session on one connection"),
        ("exec", "cat /etc/shadow"),
        ("subsystem", "sftp"),
        ("env", "variable LD_PRELOAD"),
        ("x11-req", ""),
    }
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = {(e["request"], e["detail"]) for e in env.audit_events("channel.refused")}
        if wanted <= seen:
            break
        time.sleep(0.05)
    assert wanted <= seen


# ---------------------------------------------------------------------------- the service
def test_host_key_is_ed25519_and_private(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    key_file = env.state_dir / "host_ed25519"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    scan = subprocess.run(
        ["ssh-keyscan", "-p", str(port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    key_types = {line.split()[1] for line in scan.stdout.splitlines() if line.strip()}
    assert key_types == {"ssh-ed25519"}


def test_idle_tcp_connection_is_closed_at_login_timeout(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=1, login_timeout="1s")
    bastion = ServedBastion(env, workers=1).start()
    try:
        with socket.create_connection(("127.0.0.1", bastion.port), timeout=10) as sock:
            assert sock.recv(64).startswith(b"SSH-2.0-bastion")
            started = time.monotonic()
            assert sock.recv(64) == b""  # closed by the server
            assert time.monotonic() - started < 5
        env.wait_for_event("login.failed", reason="login timeout (no accepted key)")
    finally:
        assert bastion.stop() == 0


def test_racing_code_across_workers_exactly_one_wins(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    code = op.code()

    async def race() -> list[bool]:
        # Four racers: the three losers' failures stay under the lockout threshold (5).
        results = await asyncio.gather(*(login(port, op.name, op.key, [code]) for _ in range(4)))
        for conn, _ in results:
            if conn is not None:
                conn.close()
        return [conn is not None for conn, _ in results]

    assert sorted(asyncio.run(race())) == [False] * 3 + [True]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        replayed = [e for e in env.audit_events("login.failed") if e["user"] == op.name]
        if len(replayed) == 3:
            break
        time.sleep(0.05)
    assert {e["mfa"] for e in replayed} == {"replayed"}


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def _wait_gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {
            p
            for p in alive
            if Path(f"/proc/{p}").exists()
            and "Z (zombie)" not in Path(f"/proc/{p}/status").read_text()
        }
        time.sleep(0.05)
    return alive


def test_a_dead_worker_is_replaced_and_the_port_keeps_serving(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=1)
    bastion = ServedBastion(env, workers=2).start()
    try:
        assert bastion.proc is not None
        workers = _children(bastion.proc.pid)
        assert len(workers) == 2
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = _children(bastion.proc.pid)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.1)
        assert len(now) == 2
        assert victim not in now
        for _ in range(6):  # whichever worker the kernel picks answers
            with socket.create_connection(("127.0.0.1", bastion.port), timeout=10) as sock:
                assert sock.recv(64).startswith(b"SSH-2.0-bastion")
    finally:
        assert bastion.stop() == 0


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=1)
    bastion = ServedBastion(env, workers=2).start()
    assert bastion.proc is not None
    workers = _children(bastion.proc.pid)
    assert len(workers) == 2
    os.kill(bastion.proc.pid, signal.SIGKILL)
    bastion.stop()
    assert _wait_gone(workers) == set()


def test_after_kill_9_the_next_start_reaps_the_session(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=1)
    op = env.fresh()
    bastion = ServedBastion(env, workers=1).start()
    assert bastion.proc is not None

    async def open_session() -> asyncssh.SSHClientConnection:
        conn, _ = await login(bastion.port, op.name, op.key, [op.code()])
        assert conn is not None
        process = await conn.create_process(term_type="xterm", term_size=(80, 24))
        async with asyncio.timeout(10):
            while "Press Enter" not in await process.stdout.read(4096):
                pass
        return conn

    async def hold_and_kill() -> str:
        conn = await open_session()
        opened = env.wait_for_event("session.opened", actor=op.name)
        assert bastion.proc is not None
        for pid in _children(bastion.proc.pid) | {bastion.proc.pid}:
            os.kill(pid, signal.SIGKILL)  # no wipe: the processes just vanish
        conn.abort()
        return str(opened["session"])

    session = asyncio.run(hold_and_kill())
    bastion.stop()
    temp = env.state_dir / "sessions" / session
    assert temp.is_dir()  # nobody wiped it
    assert not env.audit_events("session.wiped")
    restarted = ServedBastion(env, workers=1).start()
    try:
        started = time.monotonic()
        reaped = env.wait_for_event("session.reaped", timeout=10, session=session)
        assert time.monotonic() - started < 10
        assert not temp.exists()
        cleaned = env.wait_for_event("reaper.cleaned", session=session)
        assert cleaned["kind"] == "temp_dir"
        assert reaped["session"] == session
    finally:
        assert restarted.stop() == 0
