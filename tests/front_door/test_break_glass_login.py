"""A break-glass account's login through the real server (in-process worker), driven by
asyncssh clients: key, TOTP code and one-time code; each code once, racing connections
included; wrong codes count towards the lock; the reason before anything else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from audit.receivers import WebhookReceiver, make_ca, until

from bastion.config import load_config
from bastion.ssh.front_door import BREAK_GLASS_PROMPT, PROMPT
from bastion.ssh.worker import Worker
from bastion.state.logins import LoginGuard
from front_door.break_glass import REASON, break_glass_section, issue_codes, make_break_glass
from front_door.harness import BastionEnv, Operator, make_env
from front_door.test_login_asyncssh import login


class Served:
    def __init__(self, env: BastionEnv, worker: Worker, webhook: WebhookReceiver) -> None:
        self.env, self.worker, self.webhook = env, worker, webhook
        self.accounts: list[Operator] = []

    @property
    def port(self) -> int:
        return self.worker.port

    def account(self) -> tuple[Operator, list[str]]:
        """A break-glass account not used yet, and its codes."""
        op = self.accounts.pop(0)
        return op, issue_codes(self.env, op.name)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    ca = make_ca(tmp_path / "ca")
    webhook = await WebhookReceiver(ca).start()
    env = make_env(tmp_path, operators=8, lockout_after_failures=5)
    accounts = make_break_glass(
        env,
        ["op4", "op5", "op6", "op7"],
        break_glass_section(ca.ca_file, webhook=webhook.url, max_session="10m"),
    )
    worker = Worker(load_config(env.config_path))
    await worker.start()
    served = Served(env, worker, webhook)
    served.accounts = accounts
    try:
        yield served
    finally:
        await worker.stop()
        await webhook.aclose()


async def read_until(process: asyncssh.SSHClientProcess[str], text: str) -> str:
    seen = ""
    async with asyncio.timeout(15):
        while text not in seen:
            chunk = await process.stdout.read(4096)
            assert chunk, f"the session ended before {text!r}: {seen!r}"
            seen += chunk
    return seen


def failures(env: BastionEnv, user: str) -> int:
    guard = LoginGuard(env.state_dir / "logins.db")
    try:
        return guard.failures(user).failures
    finally:
        guard.close()


async def test_key_totp_and_a_code_then_the_reason_before_the_console(served: Served) -> None:
    env = served.env
    op, codes = served.account()
    conn, client = await login(served.port, op.name, op.key, [op.code(), codes[0]])
    assert conn is not None, client.shown
    assert client.prompts == [PROMPT, BREAK_GLASS_PROMPT]
    assert any("break-glass account" in shown for shown in client.shown)
    event = await env.event("login.succeeded", user=op.name)
    assert event["mfa"] == "totp+break_glass_code"
    assert event["break_glass"] is True
    assert event["break_glass_codes_left"] == 2
    # The login is announced at once, before the session even opens.
    await until(lambda: bool(served.webhook.json_lines()), "the login's alert")
    alert = served.webhook.json_lines()[0]
    assert (alert["event"], alert["user"], alert["codes_left"]) == ("breakglass.login", op.name, 2)
    assert alert["connection"] == event["connection"]

    async with conn:
        process = await conn.create_process(term_type="xterm", term_size=(100, 30))
        seen = await read_until(process, "Break-glass reason: ")
        assert "BREAK-GLASS SESSION" in seen
        assert "Welcome" not in seen  # no console before the reason
        process.stdin.write("too short\r")
        seen = await read_until(process, "Break-glass reason: ")
        assert "bastion: the reason is too short" in seen
        process.stdin.write(REASON + "\r")
        seen = await read_until(process, "Press Enter to end this session.")
        assert f"Welcome, {op.name}." in seen
        assert "totp+break glass code" in seen
        # Its own console shows the banner too.
        seen += await read_until(process, "*** BREAK-GLASS session: ")
        process.stdin.write("\n")
        await process.wait_closed()

    started = await env.event("breakglass.started", actor=op.name)
    assert started["reason"] == REASON
    assert started["outcome"] == "alert"
    assert started["break_glass"] is True
    session = started["session"]
    opened = await env.event("session.opened", session=session)
    assert opened["break_glass"] is True
    await env.event("session.wiped", session=session)
    mine = [e for e in env.audit_events() if e.get("session") == session and e["actor"] == op.name]
    assert all(e.get("break_glass") is True for e in mine), [e["event"] for e in mine]
    # The box was applied before the reason was asked (10 minutes, idle 10 minutes).
    narrowed = await env.event("session.deadlines", session=session)
    assert narrowed["idle_timeout_seconds"] == 600
    await until(lambda: len(served.webhook.json_lines()) == 2, "the start's alert")
    alert = served.webhook.json_lines()[1]
    assert (alert["event"], alert["reason"], alert["session"]) == (
        "breakglass.started",
        REASON,
        session,
    )


async def test_without_its_code_a_break_glass_account_does_not_get_in(served: Served) -> None:
    env = served.env
    op, _codes = served.account()
    conn, client = await login(served.port, op.name, op.key, [op.code()])  # no code to give
    assert conn is None
    assert client.prompts == [PROMPT, BREAK_GLASS_PROMPT]
    failed = await env.event("login.failed", user=op.name)
    assert failed["mfa"] == "none"
    assert not env.audit_events("session.opened")
    assert served.webhook.bodies == []  # no login, no alert


async def test_wrong_codes_count_towards_the_lock_and_the_totp_code_does_not_clear_them(
    served: Served,
) -> None:
    env = served.env
    op, codes = served.account()
    wrong = ["aaaaa-bbbbb-ccccc-ddddd", "22222-33333-44444-55555", "zzzzz-yyyyy-xxxxx-wwwww"]
    conn, client = await login(served.port, op.name, op.key, [op.code(), *wrong])
    assert conn is None
    assert client.shown[-1] == "the code was not accepted"  # the third: no prompt after it
    assert failures(env, op.name) == 3
    # The next connection's good TOTP code leaves the count alone; two more wrong codes
    # make five, and the account is locked: its real code no longer gets in.
    conn, client = await login(served.port, op.name, op.key, [op.code(1), *wrong[:2]])
    assert conn is None
    assert failures(env, op.name) == 5
    assert client.shown[-1] == "too many failed logins: try again in 30 s"
    conn, client = await login(served.port, op.name, op.key, [op.code(1), codes[0]])
    assert conn is None
    assert client.prompts == []  # locked out before any prompt
    assert client.shown[0].startswith("too many failed logins: try again in ")
    # Failures are audited in the background: wait for the lock's.
    await env.event("login.failed", user=op.name, mfa="locked")
    assert (await env.event("login.failed", user=op.name))["mfa"] == "wrong"


async def test_a_used_code_is_refused(served: Served) -> None:
    op, codes = served.account()
    conn, client = await login(served.port, op.name, op.key, [op.code(), codes[0]])
    assert conn is not None, client.shown
    conn.close()
    # A later TOTP step (the one just used cannot be used again), the same break-glass code.
    conn, client = await login(served.port, op.name, op.key, [op.code(1), codes[0]])
    assert conn is None
    assert client.shown[-1].startswith("the code was not accepted; ")


async def test_racing_connections_with_one_code_exactly_one_gets_in(served: Served) -> None:
    env = served.env
    op, codes = served.account()
    # Two scratch codes (the second factor without the phone), so that both connections
    # reach the break-glass code at the same time with the same code.
    guard = LoginGuard(env.state_dir / "logins.db")
    from bastion.enrolment import new_scratch_codes, scratch_code_digest  # noqa: PLC0415

    scratch = new_scratch_codes(2)
    guard.replace_scratch_codes(op.name, [scratch_code_digest(op.name, c) for c in scratch])
    guard.close()
    results: list[Any] = await asyncio.gather(
        *(login(served.port, op.name, op.key, [s, codes[1]]) for s in scratch)
    )
    winners = [conn for conn, _ in results if conn is not None]
    assert len(winners) == 1
    for conn in winners:
        conn.close()
    succeeded = [e for e in env.audit_events("login.succeeded") if e["user"] == op.name]
    assert [e["mfa"] for e in succeeded] == ["scratch_code+break_glass_code"]
