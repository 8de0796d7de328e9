"""Break-glass end to end, as the on-call engineer lives it at 3 a.m.: Debian's OpenSSH
client (pexpect, and tmux for the Textual console) against the real ``bastion serve``, in
front of kubesim and a real OpenBao; the alerts go to an HTTPS webhook and a syslog-over-TLS
server this test runs; the incident record is read back with ``bastion breakglass report``.

Every wait polls against a deadline: no fixed sleeps."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pexpect
import pytest
import yaml
from audit.receivers import ReceiverCa, SyslogReceiver, WebhookReceiver, make_ca
from front_door.break_glass import REASON, break_glass_section, issue_codes, make_break_glass
from front_door.harness import BastionEnv, Operator, ServedBastion, make_env
from front_door.test_real_clients import spawn_ssh

from bastion.devstack.background import Background
from bastion.devstack.stack import VaultRole
from bastion.policy import Mode
from devstack.kubesim_harness import TOOLBOX, ThreadedStack, stack_sections
from devstack.test_console_e2e import Tmux, known_hosts, oathtool
from devstack.test_debug_shell import read_pod

pytestmark = pytest.mark.slow

FIXTURE: dict[str, Any] = {
    "images": {TOOLBOX: {"command": ["/bin/sh"]}},
    "namespaces": [
        {"name": "payments", "pods": [{"name": "api-1", "labels": {"app": "api"}}]},
        {"name": "checkout", "pods": [{"name": "cart-1", "labels": {"app": "cart"}}]},
    ],
}
# Ordinary operators may debug payments only; the break-glass grant covers every namespace.
GRANT = {
    "name": "oncall",
    "groups": ["oncall"],
    "clusters": ["local"],
    "namespaces": ["payments"],
    "images": [TOOLBOX],
    "vault_role": "debug",
}
WAIT = 20.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    running = ThreadedStack(
        tmp_path_factory.mktemp("stack"),
        FIXTURE,
        roles=[VaultRole("debug", ("payments", "checkout"), modes=(Mode.EPHEMERAL,))],
    )
    info = running.start()
    yield info
    running.stop()


@dataclass
class Receivers:
    """A webhook and a syslog server on a loop of their own (the test itself blocks)."""

    ca: ReceiverCa
    webhook: WebhookReceiver
    syslog: SyslogReceiver

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.webhook.bodies]

    def syslog_alerts(self) -> list[tuple[bytes, dict[str, Any]]]:
        return [(m.split(b" ", 1)[0], json.loads(m.split(b"\xef\xbb\xbf", 1)[1]))
                for m in self.syslog.messages]  # fmt: skip


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receivers]:
    ca = make_ca(tmp_path_factory.mktemp("receivers"))
    background = Background()
    webhook, syslog = WebhookReceiver(ca), SyslogReceiver(ca)

    async def start() -> None:
        await webhook.start()
        await syslog.start()

    async def stop() -> None:
        await webhook.aclose()
        await syslog.aclose()

    background.start(start)
    yield Receivers(ca, webhook, syslog)
    background.stop(stop)


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {WAIT:.0f} s for {what}")
        time.sleep(0.05)


def break_glass_env(
    root: Path, info: dict[str, Any], receivers: Receivers, *, console: str = "line", **box: Any
) -> tuple[BastionEnv, list[Operator]]:
    env = make_env(root, operators=8, console=console)
    data = yaml.safe_load(env.config_path.read_text())
    data.update(stack_sections(info, browse=console == "textual"), grants=[GRANT])
    env.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    section = break_glass_section(
        receivers.ca.ca_file,
        webhook=receivers.webhook.url,
        syslog=f"127.0.0.1:{receivers.syslog.port}",
        **box,
    )
    section["grant"]["images"] = [TOOLBOX]
    accounts = make_break_glass(env, ["op4", "op5", "op6", "op7"], section)
    return env, accounts


@dataclass
class Served:
    env: BastionEnv
    port: int
    accounts: list[Operator]

    def account(self) -> tuple[Operator, list[str]]:
        op = self.accounts.pop(0)
        return op, issue_codes(self.env, op.name)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, stack: dict[str, Any], receivers: Receivers
) -> Iterator[Served]:
    env, accounts = break_glass_env(tmp_path_factory.mktemp("served"), stack, receivers)
    bastion = ServedBastion(env, workers=2).start()
    try:
        yield Served(env, bastion.port, accounts)
    finally:
        assert bastion.stop() == 0


def break_the_glass(child: pexpect.spawn, op: Operator, code: str, *, steps: int = 0) -> None:
    child.expect("Verification code: ")
    child.sendline(op.code(steps))
    child.expect("Break-glass code: ")
    child.sendline(code)
    child.expect("BREAK-GLASS SESSION")
    child.expect("Break-glass reason: ")


def bastion_cli(env: BastionEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args, "--config", str(env.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def session_of(env: BastionEnv, user: str) -> str:
    return str(env.wait_for_event("session.opened", actor=user)["session"])


# ---------------------------------------------------------------------------- the story
def test_break_glass_debug_is_alerted_time_boxed_recorded_and_reported(
    served: Served, stack: dict[str, Any], receivers: Receivers
) -> None:
    env = served.env
    op, codes = served.account()
    # checkout: no ordinary grant covers it; the break-glass grant does.
    child = spawn_ssh(served.port, op, "-t", command="debug checkout/cart-1")
    break_the_glass(child, op, codes[0])
    child.sendline(REASON)
    child.expect("reason recorded")
    child.expect("attaching to dbg-")
    child.sendline("echo BG-$((6*7))")
    child.expect("BG-42")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    session = session_of(env, op.name)
    env.wait_for_event("session.wiped", session=session)

    # Loud: both alerts, at both destinations; syslog at crit.
    eventually(lambda: len(receivers.alerts()) >= 2, "two webhook alerts")
    eventually(lambda: len(receivers.syslog_alerts()) >= 2, "two syslog alerts")
    mine = [a for a in receivers.alerts() if a["user"] == op.name]
    assert [a["event"] for a in mine] == ["breakglass.login", "breakglass.started"]
    assert mine[1]["reason"] == REASON
    assert mine[1]["session"] == session
    by_syslog = [(pri, a) for pri, a in receivers.syslog_alerts() if a["user"] == op.name]
    assert [pri for pri, _ in by_syslog] == [b"<106>1", b"<106>1"]
    assert {a["id"] for _, a in by_syslog} == {a["id"] for a in mine}

    # The session's events are flagged, and the elevated grant (and no other) let it in.
    allowed = env.wait_for_event("session.debug_allowed", session=session)
    assert allowed["grants"] == ["break-glass"]
    assert allowed["break_glass"] is True
    issued = env.wait_for_event("session.credential_issued", session=session)
    assert issued["lease_seconds"] <= 1800  # no longer than the box (30 minutes here)
    attached = env.wait_for_event("session.state", session=session, outcome="attached")
    pod = read_pod(stack, "checkout", "cart-1")
    assert pod is not None
    (status,) = [
        s for s in pod["status"]["ephemeralContainerStatuses"]
        if s["name"] == attached["container"]
    ]  # fmt: skip
    assert "terminated" in status["state"]

    assert_the_report(env, session, op, codes, attached["container"])


def assert_the_report(
    env: BastionEnv, session: str, op: Operator, codes: list[str], container: str
) -> None:
    # The incident record, with the commands' output from the recording.
    result = bastion_cli(env, "breakglass", "report", session, "--json", "--key",
                         str(env.auditor_key))  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["user"] == op.name
    assert record["reason"] == REASON
    assert record["source"] == "127.0.0.1"
    assert record["factors"] == "totp+break_glass_code"
    assert record["targets"][0]["target"] == "local/checkout/cart-1"
    (shell,) = record["debug_shells"]
    assert (shell["container"], shell["pod"], shell["exit_status"]) == (
        container,
        "cart-1",
        0,
    )
    assert {r["kind"]: r["outcome"] for r in shell["resources"]} == {
        "debug_container": "terminated (exit 0)",
        "lease": "revoked",
    }
    (output,) = record["outputs"]
    assert "BG-42" in output["lines"]
    assert any("echo BG-$((6*7))" in line for line in output["input"])  # input recorded too
    assert record["wipe"]["ending"] == "logout"
    assert {a["destination"].split()[0] for a in record["alerts"] if a["delivered"]} == {
        "webhook",
        "syslog",
    }
    assert len([a for a in record["alerts"] if a["delivered"]]) == 4
    assert record["code"]["burnt"] is True
    assert record["code"]["left"] == 2
    assert record["audit"]["chain"] == "verified"
    for code in codes:
        assert code not in result.stdout

    # Without the auditors' key: everything else, and what is missing, in words.
    text = bastion_cli(env, "breakglass", "report", session)
    assert text.returncode == 0, text.stderr
    assert f"Break-glass session {session}" in text.stdout
    assert f"why         {REASON}" in text.stdout
    assert "pass --key with the auditors' private key to include it" in text.stdout
    assert "BG-42" not in text.stdout
    reads = env.audit_events("breakglass.report")
    assert [r["with_output"] for r in reads] == [True, False]


def test_without_the_code_no_entry_and_a_used_code_is_refused(served: Served) -> None:
    env = served.env
    op, codes = served.account()
    child = spawn_ssh(served.port, op)
    break_the_glass(child, op, codes[0])
    child.sendline(REASON)
    child.expect("Press Enter to end this session.")
    child.sendline("")
    child.expect(pexpect.EOF)
    child.close()
    env.wait_for_event("session.wiped", session=session_of(env, op.name))

    # The same code again (with the next TOTP step): refused, and so are made-up ones.
    child = spawn_ssh(served.port, op, "-o", "PasswordAuthentication=no")
    child.expect("Verification code: ")
    child.sendline(op.code(1))
    child.expect("Break-glass code: ")
    child.sendline(codes[0])
    child.expect("the code was not accepted; 2 attempt\\(s\\) left")
    child.expect("Break-glass code: ")
    child.sendline("")
    child.expect("a break-glass code is 20 letters and digits")
    child.expect("Break-glass code: ")
    child.sendline("zzzzz-zzzzz-zzzzz-zzzzz")
    child.expect("Permission denied")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 255
    assert len([e for e in env.audit_events("login.succeeded") if e["user"] == op.name]) == 1
    counted = bastion_cli(env, "breakglass", "codes", op.name)
    assert counted.stdout.startswith(f"{op.name}: 2 of 3 codes left")


def test_a_missing_or_short_reason_ends_the_session_before_anything_starts(
    served: Served, stack: dict[str, Any]
) -> None:
    env = served.env
    op, codes = served.account()
    child = spawn_ssh(served.port, op, "-t", command="debug payments/api-1")
    break_the_glass(child, op, codes[0])
    child.sendline("need access")
    child.expect("the reason is too short")
    child.expect("Break-glass reason: ")
    child.sendline("")
    child.expect("a break-glass session cannot start without a reason, so this session has ended")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    session = session_of(env, op.name)
    env.wait_for_event("session.wiped", session=session)
    refused = env.wait_for_event("breakglass.reason_refused", session=session)
    assert refused["problem"] == "no reason was given"
    states = [e["outcome"] for e in env.audit_events("session.state") if e["session"] == session]
    assert states == ["wiping", "closed"]  # never browsing, never a debug
    assert all(e["session"] != session for e in env.audit_events("session.credential_issued"))
    pod = read_pod(stack, "payments", "api-1")
    assert pod is not None
    assert not any(
        c["name"].startswith("dbg-" + session[:8])
        for c in pod["spec"].get("ephemeralContainers", [])
    )
    assert all(e["session"] != session for e in env.audit_events("breakglass.started"))


def test_another_operators_line_console_is_told_while_it_lasts(served: Served) -> None:
    env = served.env
    watcher = env.fresh()
    other = spawn_ssh(served.port, watcher)
    other.expect("Verification code: ")
    other.sendline(watcher.code())
    other.expect("Press Enter to end this session.")

    op, codes = served.account()
    child = spawn_ssh(served.port, op)
    break_the_glass(child, op, codes[0])
    child.sendline(REASON)
    child.expect("Press Enter to end this session.")
    other.expect(rf"\*\*\* BREAK-GLASS session: {op.name} since \d\d:\d\d:\d\d UTC: ")
    other.expect("INC-4242 payments api answers 500")
    child.sendline("")  # the break-glass session ends ...
    child.expect(pexpect.EOF)
    child.close()
    other.expect(rf"\*\*\* BREAK-GLASS session of {op.name} is over")  # ... and they are told
    other.sendline("")
    other.expect(pexpect.EOF)
    other.close()
    assert other.exitstatus == 0
    assert env.wait_for_event("console.ended", actor=watcher.name)


def test_the_time_box_ends_the_session(
    tmp_path: Path, stack: dict[str, Any], receivers: Receivers
) -> None:
    env, accounts = break_glass_env(tmp_path, stack, receivers, max_session="5s", idle_timeout="5s")
    op = accounts[0]
    codes = issue_codes(env, op.name)
    bastion = ServedBastion(env, workers=1).start()
    try:
        child = spawn_ssh(bastion.port, op)
        break_the_glass(child, op, codes[0])
        child.sendline(REASON)
        child.expect("Press Enter to end this session.")
        # Input does not keep it going: the box is a hard end.
        child.send("h")
        child.expect("the session reached its time limit and has ended")
        child.expect(pexpect.EOF)
        child.close()
    finally:
        assert bastion.stop() == 0
    session = session_of(env, op.name)
    wiped = env.wait_for_event("session.wiped", session=session)
    assert wiped["ending"] == "hard_limit"
    opened = env.wait_for_event("session.opened", session=session)
    started = env.wait_for_event("breakglass.started", session=session)
    opened_at = datetime.fromisoformat(opened["time"].replace("Z", "+00:00")).timestamp()
    assert opened["hard_deadline"] - opened_at > 3600  # limits.session_hard_limit: 12 h
    assert started["hard_deadline"] - opened_at < 10  # the box: 5 s from the start


def test_the_banner_shows_in_another_operators_textual_console(
    tmp_path: Path, stack: dict[str, Any], receivers: Receivers
) -> None:
    env, accounts = break_glass_env(tmp_path, stack, receivers, console="textual")
    op = accounts[0]
    codes = issue_codes(env, op.name)
    watcher = env.fresh()
    bastion = ServedBastion(env, workers=1).start()
    directory = Path(tempfile.mkdtemp(prefix="bg-tmux-"))
    tmux = Tmux(directory)
    try:
        ssh = [
            *("ssh", "-F", "/dev/null", "-p", str(bastion.port), "-i", str(watcher.key_file)),
            *("-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"),
            *("-o", f"UserKnownHostsFile={known_hosts(env, bastion.port)}"),
            *("-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"),
            f"{watcher.name}@127.0.0.1",
        ]
        tmux.start(f"{shlex.join(ssh)}; echo SSH-EXIT=$?; sleep 600")
        tmux.wait_for("Verification code:")
        tmux.type(oathtool(watcher.secret))
        tmux.keys("Enter")
        tmux.wait_for(lambda s: "Namespaces in local" in s, "the watcher's console")

        child = spawn_ssh(bastion.port, op)
        break_the_glass(child, op, codes[0])
        child.sendline(REASON)
        child.expect("reason recorded")
        screen = tmux.wait_for(f"BREAK-GLASS  {op.name} since", "the banner")
        assert "INC-4242 payments api answers 500" in screen
        child.close(force=True)  # the break-glass operator's connection drops: wiped
        env.wait_for_event("session.wiped", session=session_of(env, op.name))
        tmux.wait_for(lambda s: "BREAK-GLASS" not in s, "the banner to go")
        tmux.keys("q")
        tmux.wait_for("SSH-EXIT=0")
    finally:
        tmux.stop()
        shutil.rmtree(directory, ignore_errors=True)
        assert bastion.stop() == 0
