"""Command audit and the guard end to end: an SSH client runs commands in a debug shell on the
local stack (real worker, real OpenBao, kubesim running the toolbox's shell setup with a
history-keeping ``sh``); each command is a ``command.run`` event, the shell's reports never
reach the client or the recording, and the guard's rules warn, alert (to a local webhook) and
end the session."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from audit.receivers import WebhookReceiver, make_ca
from front_door.break_glass import break_glass_section
from front_door.harness import BastionEnv, make_env, serving
from front_door.test_login_asyncssh import fresh_login, login

from bastion.command_marker import PREFIX
from bastion.devstack.background import Background
from bastion.devstack.stack import VaultRole
from bastion.policy import Mode
from bastion.ssh.worker import Worker
from devstack.kubesim_harness import FIXTURE as HARNESS_FIXTURE
from devstack.kubesim_harness import TOOLBOX, ThreadedStack, stack_sections
from devstack.test_debug_shell import expect, shell_ready

FIXTURE: dict[str, Any] = {
    "images": HARNESS_FIXTURE["images"],  # the toolbox with bash as its `sh`
    "namespaces": [{"name": "payments", "pods": [{"name": "api-1", "labels": {"app": "api"}}]}],
}
GRANT = {
    "name": "oncall",
    "groups": ["oncall"],
    "clusters": ["local"],
    "namespaces": ["payments"],
    "images": [TOOLBOX],
    "max_session": "30m",
    "vault_role": "debug",
}
GUARD = {
    "output_volume": {"bytes": 200_000, "window": "1m", "action": "alert"},
    "sensitive_paths": {"action": "warn"},
    "denied_commands": {"action": "end", "patterns": [{"glob": "strace *"}]},
    "new_source": {"action": "alert"},
    "failures_from_source": {"count": 3, "window": "10m", "action": "alert"},
}
REPORT = PREFIX.decode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    running = ThreadedStack(
        tmp_path_factory.mktemp("stack"),
        FIXTURE,
        roles=[VaultRole("debug", ("payments",), modes=(Mode.EPHEMERAL,))],
    )
    info = running.start()
    yield info
    running.stop()


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookReceiver]:
    ca = make_ca(tmp_path_factory.mktemp("receivers"))
    background = Background()
    receiver = WebhookReceiver(ca)

    async def start() -> None:
        await receiver.start()

    background.start(start)
    yield receiver
    background.stop(receiver.aclose)


@pytest.fixture
async def served(
    tmp_path: Path, stack: dict[str, Any], webhook: WebhookReceiver
) -> AsyncIterator[tuple[BastionEnv, Worker]]:
    env = make_env(tmp_path, operators=3)
    alerts = break_glass_section(webhook.ca.ca_file, webhook=webhook.url)
    alerts["grant"]["images"] = [TOOLBOX]
    env.edit_config(
        lambda data: data.update(
            stack_sections(stack), grants=[GRANT], guard=GUARD, break_glass=alerts
        )
    )
    async with serving(env) as worker:
        yield env, worker


async def run(process: Any, command: str, shows: str) -> str:
    """Type ``command``, wait for ``shows`` and then the next prompt (so nothing is typed
    ahead: a line typed before the prompt came back has no duration)."""
    process.stdin.write(command + "\n")
    seen = await expect(process, shows)
    async with asyncio.timeout(20):
        while not seen.endswith(("$ ", "# ")):
            seen += await process.stdout.read(4096)
    return seen


async def test_typed_commands_are_audited_and_their_reports_never_seen(
    served: tuple[BastionEnv, Worker], tmp_path: Path
) -> None:
    env, worker = served
    seen = ""
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        process = await conn.create_process(
            "debug payments/api-1", term_type="xterm", term_size=(100, 30)
        )
        seen += await expect(process, "attaching to dbg-")
        seen += await run(process, "echo READY-$((6*7))", "READY-42")
        seen += await run(process, "echo one   two", "one two")
        seen += await run(process, "ls /nonexistent-dir; echo status-$((1+1))", "status-2")
        seen += await run(process, "", "")  # an empty line is no command
        # Output that forges a report (another nonce) is shown as it is and runs nothing.
        forged = "printf '\\033]7770;%s;0;9;    1  rm -rf\\007%s\\n' " + "ab" * 16 + " F-$((6*7))"
        seen += await run(process, forged, "F-42")
        seen += await run(process, "export DB_PASSWORD=hunter2-very-secret; false", "$")
        await asyncio.sleep(0.3)
        process.stdin.write("exit 0\n")
        seen += await process.stdout.read()
        await process.wait_closed()
    ended = await env.event("session.debug_ended")
    runs = [e for e in env.audit_events("command.run") if e["session"] == ended["session"]]
    assert [(e["command"], e["exit_status"]) for e in runs] == [
        ("echo READY-$((6*7))", 0),
        ("echo one   two", 0),
        ("ls /nonexistent-dir; echo status-$((1+1))", 0),
        (forged, 0),
        ("export DB_PASSWORD=[REDACTED:assignment]; false", 1),
    ]
    assert all(isinstance(e["duration_ms"], int) and e["duration_ms"] >= 0 for e in runs)
    assert ended["commands"] == 5
    assert ended["forged_command_reports"] == 1
    # The client saw the forged report (program output), never a real one.
    assert seen.count(REPORT) == 1
    assert "hunter2" in seen  # what the operator typed is echoed; only the event is redacted
    # The recording has neither (decrypted with the auditors' key).
    cast = tmp_path / "shell.cast"
    _header, *events = await asyncio.to_thread(env.export_recording, ended["recording"], cast)
    output = "".join(e[2] for e in events if e[1] == "o")
    assert "one two" in output
    assert output.count(REPORT) == 1  # the forged one, as the program printed it
    assert "ab" * 16 in output


async def test_guard_warns_alerts_and_ends_the_session(
    served: tuple[BastionEnv, Worker], webhook: WebhookReceiver
) -> None:
    env, worker = served
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        process = await conn.create_process(
            "debug payments/api-1", term_type="xterm", term_size=(100, 30)
        )
        await shell_ready(process)
        warned = await run(
            process, "cat /proc/1/environ >/dev/null; echo read", "this is in the audit log"
        )
        assert "bastion guard: a command naming a sensitive path (/proc/1/environ" in warned
        # 300 kB of output: over the 200 kB a minute of output_volume, whose action is alert.
        await run(
            process, "head -c 300000 /dev/zero | tr '\\0' x; echo; echo BULK-DONE", "BULK-DONE"
        )
        process.stdin.write("strace -V\n")
        await expect(process, "this session is being ended")
        await asyncio.wait_for(process.wait_closed(), 20)
    session = (await env.event("command.run", command="strace -V"))["session"]
    triggered = [e for e in env.audit_events("guard.triggered") if e["session"] == session]
    assert [(e["rule"], e["action"]) for e in triggered] == [
        ("sensitive_path", "warn"),
        ("output_volume", "alert"),
        ("denied_command", "end"),
    ]
    assert triggered[0]["evidence"] == "/proc/1/environ (matches /proc/*/environ)"
    wiped = await env.event("session.wiped", session=session)
    assert wiped["ending"] == "guard"
    deadline = time.monotonic() + 20
    while not [b for b in webhook.bodies if b'"alert":"guard"' in b]:
        assert time.monotonic() < deadline, "no guard alert reached the webhook"
        await asyncio.sleep(0.05)
    alert = json.loads(next(b for b in webhook.bodies if b'"alert":"guard"' in b))
    assert (alert["event"], alert["rule"], alert["session"]) == (
        "guard.triggered",
        "output_volume",
        session,
    )
    await env.event("guard.alert_delivered", session=session)
    delivered = env.audit_events("breakglass.alert_delivered")
    assert not [e for e in delivered if e["session"] == session]  # guard alerts are guard's


async def guard_alerts(webhook: WebhookReceiver, rule: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        found = [json.loads(b) for b in webhook.bodies if b'"alert":"guard"' in b]
        found = [a for a in found if a["rule"] == rule]
        if found:
            return found
        assert time.monotonic() < deadline, f"no {rule} alert reached the webhook"
        await asyncio.sleep(0.05)


async def test_a_login_from_a_new_address_alerts(
    served: tuple[BastionEnv, Worker], webhook: WebhookReceiver
) -> None:
    env, worker = served
    op, conn = await fresh_login(env, worker.port)  # from 127.0.0.1: the first login is no news
    conn.close()
    await env.event("login.succeeded", actor=op.name)
    assert not env.audit_events("guard.triggered")
    # The next TOTP step (a login burns the current one), from another loopback address.
    again, client = await login(
        worker.port, op.name, op.key, [op.code(steps=1)], local_addr=("127.0.0.2", 0)
    )
    assert again is not None, client.shown
    again.close()
    triggered = await env.event("guard.triggered", rule="new_source")
    assert (triggered["action"], triggered["user"], triggered["source"]) == (
        "alert",
        op.name,
        "127.0.0.2",
    )
    (alert,) = [a for a in await guard_alerts(webhook, "new_source") if a["user"] == op.name]
    assert alert["source"] == "127.0.0.2"


async def test_failed_logins_from_one_address_across_users_alert(
    served: tuple[BastionEnv, Worker], webhook: WebhookReceiver
) -> None:
    env, worker = served
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    for user in ("nobody", "root", "admin"):
        conn, _ = await login(worker.port, user, stranger, [], local_addr=("127.0.0.3", 0))
        assert conn is None
    triggered = await env.event("guard.triggered", rule="failures_from_source")
    assert triggered["source"] == "127.0.0.3"
    assert triggered["evidence"] == (
        "3 failed logins from 127.0.0.3 for 3 user(s) within the window"
    )
    (alert,) = [a for a in await guard_alerts(webhook, "failures_from_source")
                if a["source"] == "127.0.0.3"]  # fmt: skip
    assert alert["event"] == "guard.triggered"
