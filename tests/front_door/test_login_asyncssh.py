"""Key + code logins through the real server (in-process worker), driven by asyncssh clients:
both factors, every way of getting them wrong, replays, races, lockout and the audit trail."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bastion.config import load_config
from bastion.ssh.front_door import PROMPT
from bastion.ssh.worker import Worker
from bastion.state.logins import LoginGuard
from front_door.harness import BastionEnv, Operator, bastion_cli, make_env


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[BastionEnv, int]]:
    env = make_env(tmp_path, operators=6)
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    try:
        yield env, port
    finally:
        await worker.stop()


class Answers(asyncssh.SSHClient):
    """Answers keyboard-interactive prompts from a list and remembers what it was shown."""

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.shown: list[str] = []
        self.prompts: list[str] = []

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str] | None:
        self.shown.append(instructions)
        self.prompts += [p for p, _ in prompts]
        if not prompts:
            return []
        if not self.answers:
            return None
        return [self.answers.pop(0)]


async def login(
    port: int,
    user: str,
    key: asyncssh.SSHKey | None,
    answers: Sequence[str],
    **options: Any,
) -> tuple[asyncssh.SSHClientConnection | None, Answers]:
    client = Answers(answers)
    options.setdefault("preferred_auth", "publickey,keyboard-interactive")
    try:
        conn = await asyncssh.connect(
            "127.0.0.1",
            port,
            username=user,
            client_keys=[key] if key else [],
            known_hosts=None,
            agent_path=None,
            client_factory=lambda: client,
            **options,
        )
    except asyncssh.PermissionDenied:
        return None, client
    return conn, client


async def fresh_login(env: BastionEnv, port: int) -> tuple[Operator, asyncssh.SSHClientConnection]:
    """A fresh operator, logged in with key and code."""
    op = env.fresh()
    conn, client = await login(port, op.name, op.key, [op.code()])
    assert conn is not None, client.shown
    return op, conn


async def shell_output(conn: asyncssh.SSHClientConnection) -> tuple[str, int | None]:
    result = await conn.run(term_type="xterm", term_size=(100, 30), input="\n", timeout=20)
    out = result.stdout if isinstance(result.stdout, str) else ""
    return out, result.exit_status


async def test_key_and_code_log_in_and_the_console_runs_on_a_pty(
    served: tuple[BastionEnv, int],
) -> None:
    env, port = served
    op = env.fresh()
    conn, client = await login(port, op.name, op.key, [op.code()])
    assert conn is not None, client.shown
    assert client.prompts == [PROMPT]
    async with conn:
        out, status = await shell_output(conn)
    assert f"Welcome, {op.name}." in out
    assert op.fingerprint in out
    assert "xterm 100x30" in out  # the console saw the client's terminal type and size
    assert status == 0
    event = await env.event("login.succeeded", user=op.name)
    assert event["key"] == op.fingerprint
    assert event["mfa"] == "totp"
    assert event["source"] == "127.0.0.1"
    assert isinstance(event["source_port"], int)
    await env.event("console.ended", actor=op.name)


async def test_a_key_alone_is_not_a_login(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    conn, _ = await login(port, op.name, op.key, [], preferred_auth="publickey")
    assert conn is None
    failed = await env.event("login.failed", user=op.name)
    assert failed["key"] == op.fingerprint
    assert failed["mfa"] == "none"


async def test_a_code_alone_is_not_offered(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    conn, client = await login(port, op.name, None, [op.code()])
    assert conn is None
    assert client.prompts == []  # keyboard-interactive is not offered before a key
    assert (await env.event("login.failed", user=op.name))["mfa"] == "not_reached"


async def test_someone_elses_key_is_refused(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op, other = env.fresh(), env.fresh()
    conn, client = await login(port, op.name, other.key, [op.code()])
    assert conn is None
    assert client.prompts == []
    failed = await env.event("login.failed", user=op.name)
    assert failed["key"] == other.fingerprint
    assert failed["reason"] == "no accepted key"


async def test_unknown_user_looks_like_a_wrong_key(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    conn, client = await login(port, "mallory", op.key, ["123456"])
    assert conn is None
    assert client.prompts == []
    await env.event("login.failed", user="mallory")


async def test_wrong_code_then_right_code_on_the_same_connection(
    served: tuple[BastionEnv, int],
) -> None:
    env, port = served
    op = env.fresh()
    conn, client = await login(port, op.name, op.key, [*op.wrong_codes(1), op.code()])
    assert conn is not None
    conn.close()
    await conn.wait_closed()
    assert "the code was not accepted; 2 attempt(s) left" in client.shown
    assert (await env.event("login.failed", user=op.name))["mfa"] == "wrong"
    await env.event("login.succeeded", user=op.name)
    guard = LoginGuard(env.state_dir / "logins.db")
    assert guard.failures(op.name).failures == 0  # success resets the count
    guard.close()


async def test_three_wrong_codes_end_the_connection(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    conn, client = await login(port, op.name, op.key, [*op.wrong_codes(3), op.code()])
    assert conn is None
    assert client.prompts == [PROMPT] * 3
    assert client.shown[-1] == "the code was not accepted"


async def test_full_width_digits_are_malformed_and_consume_nothing(
    served: tuple[BastionEnv, int],
) -> None:
    env, port = served
    op = env.fresh()
    code = op.code()
    full_width = "".join(chr(0xFF10 + int(d)) for d in code)  # FULLWIDTH DIGIT ZERO + d
    conn, client = await login(port, op.name, op.key, [full_width, f" {code}", code])
    assert conn is not None  # the right code still works: nothing was consumed
    conn.close()
    await conn.wait_closed()
    assert client.shown[1].startswith("a verification code is six digits")
    malformed = [e for e in env.audit_events("login.failed") if e["user"] == op.name]
    assert [e["mfa"] for e in malformed] == ["malformed", "malformed"]
    guard = LoginGuard(env.state_dir / "logins.db")
    assert guard.failures(op.name).failures == 0
    guard.close()


async def test_a_code_is_accepted_once(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    code = op.code()
    first, _ = await login(port, op.name, op.key, [code])
    assert first is not None
    first.close()
    second, _ = await login(port, op.name, op.key, [code])
    assert second is None
    replayed = await env.event("login.failed", user=op.name, mfa="replayed")
    assert replayed["key"] == op.fingerprint


async def test_racing_connections_with_one_code_exactly_one_wins(
    served: tuple[BastionEnv, int],
) -> None:
    env, port = served
    op = env.fresh()
    code = op.code()
    # Four racers: the three losers' failures stay under the lockout threshold (5).
    results = await asyncio.gather(*(login(port, op.name, op.key, [code]) for _ in range(4)))
    winners = [conn for conn, _ in results if conn is not None]
    assert len(winners) == 1
    for conn in winners:
        conn.close()
    for _ in range(200):  # the losers' events are written in the background
        verdicts = [e["mfa"] for e in env.audit_events("login.failed") if e["user"] == op.name]
        if len(verdicts) >= 3:
            break
        await asyncio.sleep(0.02)
    assert verdicts == ["replayed"] * 3


async def test_lockout_after_five_failures_says_for_how_long(
    served: tuple[BastionEnv, int],
) -> None:
    env, port = served
    op = env.fresh()
    wrong = op.wrong_codes(5)
    await login(port, op.name, op.key, wrong[:3])
    conn, client = await login(port, op.name, op.key, [*wrong[3:], op.code()])
    assert conn is None
    assert client.prompts == [PROMPT] * 2  # the fifth failure locked the account
    assert client.shown[-1].startswith("too many failed logins: try again in ")
    # Locked: a new connection is told so before it is asked for anything.
    conn, client = await login(port, op.name, op.key, [op.code()])
    assert conn is None
    assert client.prompts == []
    assert client.shown[0].startswith("too many failed logins: try again in ")
    assert await env.event("login.failed", user=op.name, mfa="locked")


async def test_hard_lock_until_an_administrator_unlocks(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    guard = LoginGuard(env.state_dir / "logins.db")
    for _ in range(20):
        guard.record_failure(op.name, 0.0)  # long ago: only the hard lock is left
    guard.close()
    conn, client = await login(port, op.name, op.key, [op.code()])
    assert conn is None
    assert client.shown == ["account locked after too many failed logins: ask an administrator"]
    unlock = await bastion_cli(env, "user", "unlock", op.name)
    out, _ = await unlock.communicate()
    assert unlock.returncode == 0, out
    conn, client = await login(port, op.name, op.key, [op.code()])
    assert conn is not None
    conn.close()
    await env.event("user.unlocked")


async def test_login_with_an_rsa_sha1_signature_is_refused(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=0)
    key = asyncssh.generate_private_key("ssh-rsa", key_size=3072)
    _add_user(env, "rsa-user", key)
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    try:
        conn, _ = await login(port, "rsa-user", key, [], signature_algs=["ssh-rsa"])
        assert conn is None
        # The same key signing with rsa-sha2-256 gets as far as the code prompt.
        conn, client = await login(port, "rsa-user", key, [], signature_algs=["rsa-sha2-256"])
        assert conn is None
        assert client.prompts == [PROMPT]
    finally:
        await worker.stop()


def _add_user(env: BastionEnv, name: str, key: asyncssh.SSHKey) -> Operator:
    import yaml  # noqa: PLC0415

    data = yaml.safe_load(env.config_path.read_text())
    secret_file = env.root / "totp" / name
    secret_file.parent.mkdir(exist_ok=True)
    secret_file.write_text("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n")
    secret_file.chmod(0o600)
    data["users"].append(
        {
            "name": name,
            "public_keys": [key.export_public_key().decode().strip()],
            "totp_secret_file": f"totp/{name}",
        }
    )
    env.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return Operator(name, key, env.root / "unused", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")


async def test_a_connection_that_opens_no_session_is_closed(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=1, session_open_timeout="1s")
    worker = Worker(load_config(env.config_path))
    port = await worker.start()
    try:
        op = env.fresh()
        conn, _ = await login(port, op.name, op.key, [op.code()])
        assert conn is not None
        async with asyncio.timeout(10):
            await conn.wait_closed()
        closed = await env.event("connection.closed", actor=op.name)
        assert "no session was opened" in closed["reason"]
    finally:
        await worker.stop()


async def test_enrolled_secret_and_scratch_codes_log_in(served: tuple[BastionEnv, int]) -> None:
    env, port = served
    op = env.fresh()
    enroll = await bastion_cli(env, "user", "enroll", op.name)
    out, _ = await enroll.communicate()
    assert enroll.returncode == 0
    text = out.decode()
    secret = re.search(r"secret=([A-Z2-7]+)", text)
    scratch = re.findall(r"^  ([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4})$", text, re.M)
    assert secret is not None
    assert len(scratch) == 10
    # The old secret is gone; a scratch code works once, in either case and without dashes.
    conn, _ = await login(port, op.name, op.key, [op.code()])
    assert conn is None
    conn, _ = await login(port, op.name, op.key, [scratch[0].upper().replace("-", "")])
    assert conn is not None
    conn.close()
    used = await env.event("login.succeeded", user=op.name)
    assert used["mfa"] == "scratch_code"
    assert used["scratch_codes_left"] == 9
    conn, _ = await login(port, op.name, op.key, [scratch[0]])
    assert conn is None
    # And the new secret's codes work (an authenticator app scanning the QR code).
    op.secret = secret.group(1)
    conn, _ = await login(port, op.name, op.key, [op.code()])
    assert conn is not None
    conn.close()
