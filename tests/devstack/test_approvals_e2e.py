"""Four-eyes approval end to end, as operators and administrators do it: the real OpenSSH
client in tmux windows, ``bastion serve`` in front of kubesim and a real OpenBao, and
``bastion approvals`` run as a command.

* an operator's debug waits for approval; another operator approves it in their console;
  the requester starts the shell from the "waiting for approval" screen;
* nobody approves their own request: refused in the console and from the command line;
* ``ssh -t ... debug NS/POD`` waits, and the shell starts once an administrator approves;
* an approval covers one pod, once: another pod is another request, and a used approval
  is gone;
* a denial and an expiry reach the waiting operator in one sentence.

Every wait polls the screen (or the audit log) against a deadline: no fixed sleeps."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from front_door.harness import BastionEnv, ServedBastion, make_env

from bastion.devstack.stack import VaultRole
from bastion.policy import Mode
from devstack.kubesim_harness import TOOLBOX, ThreadedStack, stack_sections
from devstack.terminals import Terminals
from devstack.test_console_e2e import Tmux, toast_text

pytestmark = pytest.mark.slow

FIXTURE: dict[str, Any] = {
    "images": {TOOLBOX: {"command": ["/bin/sh"]}},
    "namespaces": [
        {
            "name": "payments",
            "pods": [
                {"name": "api-1", "labels": {"app": "api"}},
                {"name": "api-2", "labels": {"app": "api"}},
            ],
        },
    ],
}
# op0 asks; op1 is a lead: they approve, and may ask too (and are refused their own).
REQUESTER, LEAD = "op0", "op1"
REQUEST_ID = re.compile(r"request ([0-9a-f]{12}) (?:waits|is still waiting)")


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


def approval_env(
    root: Path, info: dict[str, Any], *, console: str = "textual", expires_after: str = "10m"
) -> BastionEnv:
    """Operators op0..op2 in group oncall (op1 also in leads); one grant over payments that
    needs a lead's approval."""
    env = make_env(root, operators=3, console=console)
    config = yaml.safe_load(env.config_path.read_text())
    config["listener"]["console_zygote"] = True
    config.update(
        stack_sections(info, browse=True),
        grants=[
            {
                "name": "payments-four-eyes",
                "groups": ["oncall"],
                "clusters": ["local"],
                "namespaces": ["payments"],
                "images": [TOOLBOX],
                "max_session": "30m",
                "vault_role": "debug",
                "approval": {
                    "approvers": {"groups": ["leads"]},
                    "expires_after": expires_after,
                },
            }
        ],
    )
    for user in config["users"]:
        if user["name"] == LEAD:
            user["groups"] = ["oncall", "leads"]
    env.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return env


def approvals_cli(
    env: BastionEnv, *args: str, sudo_user: str | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
    if sudo_user is not None:
        environment["SUDO_USER"] = sudo_user
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "approvals", *args,
         "--config", str(env.config_path)],
        capture_output=True, text=True, timeout=30, check=False, env=environment,
    )  # fmt: skip


def listed(env: BastionEnv) -> dict[str, dict[str, Any]]:
    """Every request of the last week, by id, as ``bastion approvals list --all --json``."""
    result = approvals_cli(env, "list", "--all", "--json")
    assert result.returncode == 0, result.stderr
    return {r["id"]: r for r in json.loads(result.stdout)}


def flat(window: Tmux) -> str:
    """The window's text with wrapped lines joined and runs of spaces as one."""
    return " ".join(window.run("capture-pane", "-p", "-J", "-t", "e2e").split())


def wait_flat(window: Tmux, wanted: str) -> str:
    """The joined text once ``wanted`` is in it (a long line may wrap on the screen)."""
    window.wait_for(lambda _screen: wanted in flat(window), wanted)
    return flat(window)


def request_id(text: str) -> str:
    found = REQUEST_ID.findall(text)
    assert found, f"no request id in: {text}"
    return str(found[-1])


def in_order(env: BastionEnv, *steps: tuple[str, str]) -> list[dict[str, Any]]:
    """The events ``(event, actor)`` in this order in the audit log; those events."""
    events = env.audit_events()
    found, position = [], 0
    for event, actor in steps:
        at = next(
            (i for i in range(position, len(events))
             if events[i]["event"] == event and events[i]["actor"] == actor),
            None,
        )  # fmt: skip
        assert at is not None, f"({event}, {actor}) missing or out of order"
        found.append(events[at])
        position = at + 1
    return found


def open_pod(window: Tmux, pod: str) -> None:
    """In the console: the namespace payments, the pod, ``d``, then the confirmation."""
    window.wait_for(lambda s: "Namespaces in local" in s and "payments" in s)
    window.keys("Enter")
    window.wait_for(lambda s: " 2 pods" in s and "api-2" in s, "the pods of payments")
    if pod == "api-2":
        window.keys("Down")
    window.keys("Enter")
    window.wait_for(lambda s: f"Pod {pod}" in s and "debug: d" in s, "the pod's details")
    window.keys("d")
    screen = window.wait_for("Needs another operator's approval")
    assert "(groups leads)" in " ".join(screen.split())


# ---------------------------------------------------------------------------- console
def test_another_operator_approves_in_their_console_and_the_requester_starts_the_shell(
    tmp_path: Path, stack: dict[str, Any], terminals: Terminals
) -> None:
    env = approval_env(tmp_path, stack)
    bastion = ServedBastion(env, workers=2).start()
    try:
        alice = terminals.login(env, bastion, env.operators[REQUESTER])
        open_pod(alice, "api-1")
        alice.keys("Enter")  # the Debug button: no reason needed here
        alice.wait_for(lambda s: "Waiting for approval" in s and "status     pending" in s)
        wanted = request_id(flat(alice))

        lead = terminals.login(env, bastion, env.operators[LEAD])
        lead.wait_for("1 to approve (a)", "the count in the lead's top line")
        lead.keys("a")
        screen = lead.wait_for(lambda s: wanted in s and "y approve, n deny" in s)
        assert f"{wanted}  {REQUESTER}  local/payments/api-1 (app)  ephemeral 30:00" in screen
        lead.keys("y")
        lead.wait_for(f"Approve request {wanted} of {REQUESTER}?")
        lead.type("checked with the payments team")
        lead.keys("Enter")
        lead.wait_for(lambda s: f"Request {wanted} of {REQUESTER} approved" in toast_text(s))

        screen = alice.wait_for("Enter starts the debug shell", "the approval to reach alice")
        assert f"decided by {LEAD}: checked with the payments team" in screen
        alice.keys("Enter")
        alice.wait_for(lambda s: "Waiting for approval" not in s and "Starting" not in s)
        alice.type("echo READY-$((6*7))")
        alice.keys("Enter")
        alice.wait_for("READY-42")
        alice.type("exit")
        alice.keys("Enter")
        alice.wait_for(lambda s: "exit status 0" in toast_text(s), "the shell's end")
        alice.keys("q")
        alice.wait_for("SSH-EXIT=0")
        lead.keys("escape")  # alone: ESC and a key at once read as Alt+key
        lead.wait_for(lambda s: "Approval requests" not in s, "the lead's console back")
        lead.keys("q")
        lead.wait_for("SSH-EXIT=0")
    finally:
        assert bastion.stop() == 0
    requested, approved, used, allowed = in_order(
        env,
        ("approval.requested", REQUESTER),
        ("approval.approved", LEAD),
        ("approval.used", REQUESTER),
        ("session.debug_allowed", REQUESTER),
    )
    assert {e["request"] for e in (requested, approved, used)} == {wanted}
    assert (requested["pod"], requested["container"], requested["duration_seconds"]) == (
        "api-1", "app", 1800,
    )  # fmt: skip
    assert requested["approvers"] == "groups leads"
    assert requested["pod_uid"]  # the pod itself, not any pod of that name
    assert (approved["via"], approved["reason"]) == ("console", "checked with the payments team")
    assert (allowed["approval"], allowed["approved_by"]) == (wanted, LEAD)
    assert listed(env)[wanted]["status"] == "used"


def test_nobody_approves_their_own_request_in_the_console_or_from_the_command_line(
    tmp_path: Path, stack: dict[str, Any], terminals: Terminals
) -> None:
    env = approval_env(tmp_path, stack)
    bastion = ServedBastion(env, workers=1).start()
    try:
        lead = terminals.login(env, bastion, env.operators[LEAD])
        open_pod(lead, "api-2")
        lead.keys("Enter")
        lead.wait_for("Waiting for approval")
        wanted = request_id(flat(lead))
        lead.keys("escape")  # the request stays open
        lead.wait_for(lambda s: "Waiting for approval" not in s)
        lead.keys("a")
        lead.wait_for(lambda s: wanted in s and "(yours)" in s)
        lead.keys("y")
        lead.wait_for(f"Approve request {wanted} of {LEAD}?")
        lead.keys("Enter")
        screen = lead.wait_for(lambda s: "nobody approves their own" in toast_text(s))
        assert f"request {wanted} is your own" in toast_text(screen)
        if os.geteuid() == 0:
            # Through sudo: root runs the command, but op1 asked for it.
            refused = approvals_cli(env, "approve", wanted, sudo_user=LEAD)
            assert refused.returncode == 1
            assert f"request {wanted} is your own" in refused.stderr
        assert listed(env)[wanted]["status"] == "pending"
        lead.keys("escape")  # alone: ESC and a key at once read as Alt+key
        lead.wait_for(lambda s: "Approval requests" not in s, "the lead's console back")
        lead.keys("q")
        lead.wait_for("SSH-EXIT=0")
    finally:
        assert bastion.stop() == 0
    refusals = env.audit_events("approval.self_approval_refused")
    assert [(e["actor"], e["via"], e["request"]) for e in refusals] == [
        (LEAD, "console", wanted),
        *([("root", "cli", wanted)] if os.geteuid() == 0 else []),
    ]
    assert not env.audit_events("approval.approved")


# ---------------------------------------------------------------------------- ssh ... debug
def test_the_direct_command_waits_and_the_shell_starts_once_an_administrator_approves(
    tmp_path: Path, stack: dict[str, Any], terminals: Terminals
) -> None:
    env = approval_env(tmp_path, stack)
    bastion = ServedBastion(env, workers=1).start()
    try:
        op = terminals.login(env, bastion, env.operators[REQUESTER], "debug", "payments/api-1")
        text = wait_flat(op, "(Ctrl-C stops waiting)")
        wanted = request_id(text)
        assert "this debug needs the approval of another operator (groups leads)" in text
        assert f"bastion approvals approve {wanted}" in text
        approved = approvals_cli(env, "approve", wanted, "--reason", "INC-7")
        assert approved.returncode == 0, approved.stderr
        assert approved.stdout.startswith(f"approved request {wanted} of {REQUESTER} (local/")
        wait_flat(op, f"request {wanted} was approved by root: INC-7")
        op.wait_for("attaching to dbg-")
        op.type("echo READY-$((6*7))")
        op.keys("Enter")
        op.wait_for("READY-42")
        op.type("exit 3")
        op.keys("Enter")
        op.wait_for("SSH-EXIT=3")
    finally:
        assert bastion.stop() == 0
    in_order(
        env,
        ("approval.requested", REQUESTER),
        ("approval.approved", "root"),
        ("approval.used", REQUESTER),
        ("session.debug_ended", REQUESTER),
    )


def test_a_denial_reaches_the_waiting_operator(
    tmp_path: Path, stack: dict[str, Any], terminals: Terminals
) -> None:
    env = approval_env(tmp_path, stack)
    bastion = ServedBastion(env, workers=1).start()
    try:
        op = terminals.login(env, bastion, env.operators[REQUESTER], "debug", "payments/api-2")
        wanted = request_id(wait_flat(op, "(Ctrl-C stops waiting)"))
        denied = approvals_cli(env, "deny", wanted, "--reason", "not during the freeze")
        assert denied.returncode == 0, denied.stderr
        text = wait_flat(op, "SSH-EXIT=1")
        assert f"request {wanted} was denied by root: not during the freeze" in text
        assert "attaching" not in text
    finally:
        assert bastion.stop() == 0
    [event] = env.audit_events("approval.denied")
    assert (event["request"], event["reason"], event["pod"]) == (
        wanted, "not during the freeze", "api-2",
    )  # fmt: skip
    assert not env.audit_events("approval.used")


def test_an_unanswered_request_expires(
    tmp_path: Path, stack: dict[str, Any], terminals: Terminals
) -> None:
    env = approval_env(tmp_path, stack, expires_after="5s")
    bastion = ServedBastion(env, workers=1).start()
    try:
        op = terminals.login(env, bastion, env.operators[REQUESTER], "debug", "payments/api-1")
        wanted = request_id(wait_flat(op, "(Ctrl-C stops waiting)"))
        text = wait_flat(op, "SSH-EXIT=1")
        assert f"request {wanted} expired without a decision" in text
        expired = env.wait_for_event("approval.expired", request=wanted)
        late = approvals_cli(env, "approve", wanted)
        assert late.returncode == 1
        assert f"request {wanted} of {REQUESTER} has expired" in late.stderr
    finally:
        assert bastion.stop() == 0
    assert (expired["actor"], expired["was"], expired["pod"]) == ("bastion", "pending", "api-1")


# ---------------------------------------------------------------------------- what it covers
def test_an_approval_opens_one_pod_once(
    tmp_path: Path, stack: dict[str, Any], terminals: Terminals
) -> None:
    """One login, the line console (it asks again where the Textual console would follow):
    api-1 approved; api-2 is another request; api-1 starts; a second api-1 asks anew."""
    env = approval_env(tmp_path, stack, console="line")
    bastion = ServedBastion(env, workers=1).start()
    try:
        op = terminals.login(env, bastion, env.operators[REQUESTER])
        op.wait_for(f"Welcome, {REQUESTER}.")

        def ask(pod: str, seen: set[str]) -> str:
            op.type(f"debug payments/{pod}")
            op.keys("Enter")
            op.wait_for(lambda _screen: bool(set(REQUEST_ID.findall(flat(op))) - seen))
            return next(iter(set(REQUEST_ID.findall(flat(op))) - seen))

        first = ask("api-1", set())
        assert approvals_cli(env, "approve", first).returncode == 0
        other = ask("api-2", {first})
        state = listed(env)
        assert (state[first]["status"], state[other]["status"]) == ("approved", "pending")
        assert state[other]["pod"] == "api-2"
        assert "attaching" not in op.screen()

        op.type("debug payments/api-1")
        op.keys("Enter")
        # Lines typed before the handover are the line console's, not the shell's.
        op.wait_for("attaching your terminal to the debug shell")
        op.type("echo READY-$((6*7))")
        op.keys("Enter")
        op.wait_for("READY-42")
        op.type("exit")
        op.keys("Enter")
        op.wait_for("ended with exit status 0")
        again = ask("api-1", {first, other})
        state = listed(env)
        assert (state[first]["status"], state[again]["status"]) == ("used", "pending")
        op.keys("Enter")  # an empty line ends the session
        op.wait_for("SSH-EXIT=0")
    finally:
        assert bastion.stop() == 0
    assert [e["request"] for e in env.audit_events("approval.used")] == [first]
    assert [e["request"] for e in env.audit_events("approval.requested")] == [first, other, again]
