"""Key rotation as a running worker sees it (in-process worker, asyncssh clients): a new
host key announced alongside the old one and taken up without a restart, retirement by
the operator or when the overlap has passed, no login over a retired key, and the lockdown
of a compromise rotation."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bastion.audit.log import key_id
from bastion.cli import keys as keys_cli
from bastion.config import load_config
from bastion.keys.host import next_path
from bastion.keys.lockdown import LOGIN_REFUSAL, lift, lockdown
from bastion.keys.model import KeyKind
from bastion.keys.rotate import KeyContext, start_host_rotation
from bastion.recording.key_files import generate_auditor_keys, load_or_create_signing_key
from bastion.ssh.key_watch import STALE_HOST_KEY
from bastion.ssh.worker import Worker
from front_door.harness import BastionEnv, Operator, bastion_cli, make_env, serving
from front_door.test_console import read_until
from front_door.test_login_asyncssh import Answers
from front_door.test_sessions import open_console, wiped
from front_door.test_sessions import start as start_with_listener


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[BastionEnv, Worker]]:
    env = make_env(tmp_path, operators=8)
    async with serving(env) as worker:
        yield env, worker


class Learner(Answers):
    """Logs in, and keeps what the server's host key announcement (hostkeys-00) added."""

    def __init__(self, answers: Sequence[str]) -> None:
        super().__init__(answers)
        self.announced: asyncio.Future[tuple[list[Any], list[Any], list[Any]]] = (
            asyncio.get_running_loop().create_future()
        )

    def report(self, added: list[Any], removed: list[Any], retained: list[Any], _: Any) -> None:
        if not self.announced.done():
            self.announced.set_result((added, removed, retained))


async def connect(
    port: int, op: Operator, trusted: Sequence[asyncssh.SSHKey], client: Answers, **extra: Any
) -> asyncssh.SSHClientConnection:
    known = asyncssh.import_known_hosts(
        "".join(f"[127.0.0.1]:{port} {k.export_public_key().decode()}" for k in trusted)
    )
    return await asyncssh.connect(
        "127.0.0.1",
        port,
        username=op.name,
        client_keys=[op.key],
        known_hosts=known,
        agent_path=None,
        client_factory=lambda: client,
        preferred_auth="publickey,keyboard-interactive",
        **extra,
    )


async def offered(worker: Worker, count: int) -> list[asyncssh.SSHKey]:
    """The keys the worker offers, once it offers ``count`` (it looks every second)."""
    assert worker.host_keys is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        keys = worker.host_keys.keys.offered
        if len(keys) == count:
            return keys
        await asyncio.sleep(0.1)
    raise AssertionError(f"the worker never offered {count} host keys")


async def rotate(env: BastionEnv, *args: str, **kwargs: Any) -> None:
    await asyncio.to_thread(keys_cli.rotate, env.config_path, *args, **kwargs)


async def test_a_new_host_key_is_announced_alongside_the_old_one_then_replaces_it(
    running: tuple[BastionEnv, Worker],
) -> None:
    env, worker = running
    port = worker.port
    [old] = await offered(worker, 1)
    await rotate(env, kind=KeyKind.HOST)
    _, new = await offered(worker, 2)
    assert new.public_data != old.public_data

    # A client that knows only the old key logs in over it and is told of the new one.
    op = env.fresh()
    learner = Learner([op.code()])
    async with await connect(port, op, [old], learner, server_host_keys_handler=learner.report):
        added, removed, retained = await asyncio.wait_for(learner.announced, 10)
    assert [k.public_data for k in added] == [new.public_data]
    assert [k.public_data for k in retained] == [old.public_data]
    assert removed == []
    started = await env.event("keys.rotation_started", kind="host")
    assert started["key"] == new.get_fingerprint("sha256")
    assert started["replaces"] == old.get_fingerprint("sha256")

    # The operator retires the old key: from now on only the new one is offered, and a
    # client that learned it logs in; one that knows only the old key does not.
    await rotate(env, kind=KeyKind.HOST, finish=True)
    [active] = await offered(worker, 1)
    assert active.public_data == new.public_data
    assert not next_path(env.state_dir / "host_ed25519").exists()
    op = env.fresh()
    async with await connect(port, op, [new], Answers([op.code()])):
        pass
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await connect(port, env.fresh(), [old], Answers([]))
    finished = await env.event("keys.rotated", kind="host")
    assert (finished["key"], finished["retired"]) == (
        new.get_fingerprint("sha256"),
        old.get_fingerprint("sha256"),
    )
    assert finished["how"] == "finished by an operator"


async def test_a_worker_retires_the_old_key_when_the_overlap_has_passed(
    running: tuple[BastionEnv, Worker],
) -> None:
    env, worker = running
    [old] = await offered(worker, 1)
    config = load_config(env.config_path)

    def started_long_ago() -> None:
        # The rotation began eight days ago, with a seven-day overlap: it is due now.
        ctx = KeyContext(
            config,
            lambda event, **fields: None,
            actor="root",
            clock=lambda: time.time() - 8 * 86400,
        )
        start_host_rotation(ctx, timedelta(days=7))

    await asyncio.to_thread(started_long_ago)
    finished = await env.event("keys.rotated", kind="host")
    assert finished["actor"] == "bastion"
    assert finished["how"] == "overlap ended"
    assert finished["retired"] == old.get_fingerprint("sha256")
    [active] = await offered(worker, 1)
    assert active.get_fingerprint("sha256") == finished["key"]


async def test_no_login_over_a_host_key_retired_while_logging_in(
    running: tuple[BastionEnv, Worker],
) -> None:
    env, worker = running
    [old] = await offered(worker, 1)
    await rotate(env, kind=KeyKind.HOST)
    await offered(worker, 2)
    op = env.fresh()

    class Slow(Answers):
        """Gives its code only after the host key it connected with was retired."""

        async def kbdint_challenge_received(  # type: ignore[override]
            self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
        ) -> list[str] | None:
            if prompts and self.answers:
                await rotate(env, kind=KeyKind.HOST, finish=True)
            return super().kbdint_challenge_received(name, instructions, lang, prompts)

    client = Slow([op.code()])
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(worker.port, op, [old], client)
    assert STALE_HOST_KEY in client.shown
    failed = await env.event("login.failed", user=op.name, mfa="retired_host_key")
    assert failed["reason"] == STALE_HOST_KEY


async def test_logins_are_refused_during_a_lockdown_and_allowed_after(
    running: tuple[BastionEnv, Worker],
) -> None:
    env, worker = running
    [key] = await offered(worker, 1)
    await asyncio.to_thread(lockdown, env.state_dir, since=time.time(), actor="root")
    op = env.fresh()
    client = Answers([op.code()])
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(worker.port, op, [key], client)
    assert LOGIN_REFUSAL in client.shown
    assert client.prompts == []  # refused before the code is asked: no TOTP step is spent
    await env.event("login.failed", user=op.name, mfa="lockdown")
    await asyncio.to_thread(lift, env.state_dir)
    async with await connect(worker.port, op, [key], Answers([op.code()])):
        pass


async def test_a_compromise_rotation_ends_sessions_and_replaces_every_key(
    tmp_path: Path,
) -> None:
    env = make_env(tmp_path / "env", operators=4)
    worker = await start_with_listener(env)
    try:
        [old_host] = await offered(worker, 1)
        old_audit_pub = tmp_path / "audit-signing.pub"
        old_audit_pub.write_bytes((env.state_dir / "audit-signing.pub").read_bytes())
        old_signing = key_id(load_or_create_signing_key(env.state_dir))
        conn, process, session, _ = await open_console(env, worker)
        generate_auditor_keys(tmp_path / "audit-2027.key", tmp_path / "audit-2027.pub")

        rotation = await bastion_cli(
            env, "keys", "rotate", "--all", "--compromised",
            "--recipient", str(tmp_path / "audit-2027.pub"),
        )  # fmt: skip
        await read_until(process, "an administrator ended this session")
        out, err = await rotation.communicate()
        assert rotation.returncode == 0, err
        conn.close()
        text = out.decode()
        assert "logins are refused until every key is replaced" in text
        assert "ended 1 live session(s)" in text
        assert "every key is replaced: logins are allowed again" in text
        assert (await wiped(env, session))["ending"] == "admin_kill"

        events = [e["event"] for e in env.audit_events()]
        order = [
            "keys.compromise_rotation_started",
            "session.kill_requested",
            "audit.key_rotation",
            "keys.compromise_rotation_finished",
        ]
        assert [events.index(name) for name in order] == sorted(
            events.index(name) for name in order
        )
        kinds = {e["kind"]: e for e in env.audit_events("keys.rotated")}
        assert set(kinds) == {"host", "recording-signing", "recording-recipient"}
        assert all(e["compromised"] and e["outcome"] == "alert" for e in kinds.values())
        assert kinds["host"]["retired"] == old_host.get_fingerprint("sha256")
        [handover] = env.audit_events("audit.key_rotation")
        assert handover["compromised"] is True
        assert not (env.state_dir / "keys" / "lockdown.json").exists()
        assert kinds["recording-signing"]["retired"] == old_signing

        # The workers serve the new host key at once (no overlap), and logins work again.
        assert worker.host_keys is not None
        deadline = time.monotonic() + 10
        while worker.host_keys.keys.active.public_data == old_host.public_data:
            assert time.monotonic() < deadline, "the worker kept the compromised host key"
            await asyncio.sleep(0.1)
        op = env.fresh()
        async with await connect(
            worker.port, op, [worker.host_keys.keys.active], Answers([op.code()])
        ):
            pass
    finally:
        await worker.stop()
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bastion.cli.main", "audit", "verify", str(env.audit_log),
        "--pubkey", str(old_audit_pub),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await verify.communicate()
    assert verify.returncode == 0, err
    assert "(the old key declared compromised)" in out.decode()


async def test_a_login_just_before_a_lockdown_opens_no_session_during_it(
    running: tuple[BastionEnv, Worker],
) -> None:
    env, worker = running
    [key] = await offered(worker, 1)
    op = env.fresh()
    async with await connect(worker.port, op, [key], Answers([op.code()])) as conn:
        await asyncio.to_thread(lockdown, env.state_dir, since=time.time(), actor="root")
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(term_type="xterm", term_size=(80, 24))
    refused = await env.event("channel.refused", user=op.name, request="session")
    assert refused["detail"] == LOGIN_REFUSAL
