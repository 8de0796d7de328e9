"""The guard's login rules end to end, with Debian's OpenSSH client on a terminal (pexpect)
logging in from other loopback addresses (``ssh -b``) to a real worker:

* ``new_source: end``: the login from a new address is ended after both factors, before any
  session, and every later one from there too, until ``bastion user allow-source``;
* ``failures_from_source: end``: after the failed logins, an operator with a good key and
  code from that address is refused before the key is even looked at;
* ``warn`` for both: the operator's line console shows the guard's banner.

``alert`` for both is in tests/devstack/test_command_audit_e2e.py (to a local webhook)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pexpect
import pytest

from bastion.ssh.worker import Worker
from bastion.state.sources import SourceHistory, sources_db_path
from front_door.harness import BastionEnv, Operator, bastion_cli, make_env, serving
from front_door.test_login_asyncssh import login
from front_door.test_real_clients import spawn_ssh

pytestmark = pytest.mark.slow


@asynccontextmanager
async def guarded(root: Path, guard: dict[str, Any]) -> AsyncIterator[tuple[BastionEnv, Worker]]:
    env = make_env(root, operators=4)
    env.edit_config(lambda data: data.update(guard=guard))
    async with serving(env) as worker:
        yield env, worker


def openssh_refused(port: int, op: Operator, source: str, code: str | None, shows: str) -> str:
    """OpenSSH from ``source``: the code (if asked), then ``shows``, then the end; what it
    printed. The client must fail (exit status 255)."""
    child = spawn_ssh(port, op, "-b", source)
    if code is not None:
        child.expect("Verification code: ")
        child.sendline(code)
    child.expect(shows)
    seen = str(child.before) + str(child.after)
    child.expect(pexpect.EOF)
    seen += str(child.before)
    child.close()
    assert child.exitstatus == 255, seen
    return seen


def openssh_console(port: int, op: Operator, source: str, code: str, shows: str) -> str:
    """OpenSSH from ``source`` into the line console; waits for ``shows``, then leaves."""
    child = spawn_ssh(port, op, "-b", source)
    child.expect("Verification code: ")
    child.sendline(code)
    child.expect(f"Welcome, {op.name}.")
    child.expect(shows)
    seen = str(child.before) + str(child.after)
    child.sendline("")
    child.expect(pexpect.EOF)
    child.close()
    return seen


async def test_openssh_login_from_a_new_address_is_ended_until_an_admin_allows_it(
    tmp_path: Path,
) -> None:
    async with guarded(tmp_path, {"new_source": {"action": "end"}}) as (env, worker):
        op = env.fresh()
        # The first login ever (from 127.0.0.1) is no news. Each login burns its TOTP step,
        # so the three logins use three steps, in order.
        conn, client = await login(worker.port, op.name, op.key, [op.code(steps=-1)])
        assert conn is not None, client.shown
        conn.close()
        await env.event("login.succeeded", user=op.name, source="127.0.0.1")
        shown = await asyncio.to_thread(
            openssh_refused, worker.port, op, "127.0.0.2", op.code(), "ask an administrator"
        )
        assert f"127.0.0.2 is a new address for {op.name}" in shown
        assert "Welcome" not in shown
        triggered = await env.event("guard.triggered", rule="new_source")
        assert (triggered["action"], triggered["user"], triggered["source"]) == (
            "end",
            op.name,
            "127.0.0.2",
        )
        ended = await env.event("login.ended", user=op.name)
        assert (ended["source"], ended["rule"]) == ("127.0.0.2", "new_source")
        # Both factors were accepted, and audited, before the guard ended it; nothing after.
        succeeded = await env.event("login.succeeded", user=op.name, source="127.0.0.2")
        assert succeeded["connection"] == ended["connection"]
        after = [e for e in env.audit_events() if e.get("connection") == ended["connection"]]
        assert [e["event"] for e in after] == ["login.succeeded", "guard.triggered", "login.ended"]
        assert not env.audit_events("session.opened")
        assert not env.audit_events("session.credential_issued")

        allow = await bastion_cli(env, "user", "allow-source", op.name, "127.0.0.2")
        out, err = await allow.communicate()
        assert allow.returncode == 0, err
        assert f"{op.name} may now log in from 127.0.0.2" in out.decode()
        await env.event("user.source_allowed", user=op.name, source="127.0.0.2")
        await asyncio.to_thread(
            openssh_console, worker.port, op, "127.0.0.2", op.code(steps=1), "> "
        )
        assert len(env.audit_events("guard.triggered")) == 1


async def wait_blocked(env: BastionEnv, source: str) -> None:
    """Until the guard's block on ``source`` is in the sources database (it is written just
    after its guard.triggered event)."""
    history = SourceHistory(sources_db_path(env.state_dir))
    try:
        deadline = time.monotonic() + 10
        while await asyncio.to_thread(history.blocked_until, source, time.time()) is None:
            assert time.monotonic() < deadline, f"{source} was never blocked"
            await asyncio.sleep(0.02)
    finally:
        history.close()


async def test_openssh_is_refused_from_an_address_that_failed_too_often(tmp_path: Path) -> None:
    guard = {"failures_from_source": {"count": 3, "window": "10m", "action": "end"}}
    async with guarded(tmp_path, guard) as (env, worker):
        stranger = asyncssh.generate_private_key("ssh-ed25519")
        for user in ("nobody", "root", "admin"):
            conn, _ = await login(worker.port, user, stranger, [], local_addr=("127.0.0.4", 0))
            assert conn is None
        triggered = await env.event("guard.triggered", rule="failures_from_source")
        assert (triggered["action"], triggered["source"]) == ("end", "127.0.0.4")
        await wait_blocked(env, "127.0.0.4")
        op = env.fresh()
        # Refused when the login begins: no code is asked for, whatever the key.
        shown = await asyncio.to_thread(
            openssh_refused, worker.port, op, "127.0.0.4", None, "refused until"
        )
        assert "logins from 127.0.0.4 are refused until" in shown
        assert "Verification code" not in shown
        refused = await env.event("login.failed", user=op.name, source="127.0.0.4")
        assert refused["reason"].startswith("bastion guard: logins from 127.0.0.4 are refused")
        assert not env.audit_events("login.succeeded")
        # Another address is not affected.
        await asyncio.to_thread(openssh_console, worker.port, op, "127.0.0.1", op.code(), "> ")


async def test_openssh_consoles_show_the_login_rules_warnings(tmp_path: Path) -> None:
    guard = {
        "new_source": {"action": "warn"},
        "failures_from_source": {"count": 3, "window": "10m", "action": "warn"},
    }
    async with guarded(tmp_path, guard) as (env, worker):
        op, other = env.fresh(), env.fresh()
        conn, client = await login(worker.port, op.name, op.key, [op.code(steps=-1)])
        assert conn is not None, client.shown
        conn.close()
        await env.event("login.succeeded", user=op.name)
        shown = await asyncio.to_thread(
            openssh_console, worker.port, op, "127.0.0.2", op.code(), "if it was not you"
        )
        assert f"*** guard: {op.name} since" in shown
        assert f"a login for {op.name} from 127.0.0.2, an address never seen" in shown
        warned = await env.event("guard.triggered", rule="new_source")
        assert warned["action"] == "warn"

        # Three failed logins from 127.0.0.5, one of them for `other`'s name: `other` is told
        # at their next login, wherever from.
        stranger = asyncssh.generate_private_key("ssh-ed25519")
        for user in ("root", other.name, "admin"):
            conn, _ = await login(worker.port, user, stranger, [], local_addr=("127.0.0.5", 0))
            assert conn is None
        await env.event("guard.triggered", rule="failures_from_source")
        shown = await asyncio.to_thread(
            openssh_console, worker.port, other, "127.0.0.1", other.code(), "tell security"
        )
        assert "*** guard: 127.0.0.5 since" in shown
        assert "3 failed logins from 127.0.0.5 within 10m, some for your user name" in shown
