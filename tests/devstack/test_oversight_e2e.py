"""Live oversight end to end (issue 9): the real OpenSSH client in tmux windows, ``bastion
serve`` with two workers in front of kubesim and a real OpenBao.

* a moderated (approved) shell does not start before an auditor watches: the pod has no
  ephemeral container while it waits; it starts once ``ssh -t auditor@... watch ID`` joins;
* the auditor sees exactly the bytes the recording holds (the watcher's raw output, saved
  with ``tee``, against the exported recording's output events), and the operator is told
  who watches;
* the auditor terminates the session with a reason: the operator is told who and why, and
  the wipe ends the container and revokes the lease;
* a user who is not an auditor is refused before anything is read, and that is audited.

Every wait polls the screen (or the audit log) against a deadline: no fixed sleeps."""

from __future__ import annotations

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
from devstack.test_approvals_e2e import approvals_cli, in_order, request_id, wait_flat
from devstack.test_debug_shell import debug_status, read_pod

pytestmark = pytest.mark.slow

FIXTURE: dict[str, Any] = {
    "images": {TOOLBOX: {"command": ["/bin/sh"]}},
    "namespaces": [{"name": "payments", "pods": [{"name": "api-1", "labels": {"app": "api"}}]}],
}
OPERATOR, LEAD, AUDITOR = "op0", "op1", "op2"
WAITING = re.compile(r"an auditor can run 'watch ([0-9a-f]{16})'")


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


def oversight_env(
    root: Path, info: dict[str, Any], *, moderated: bool = True, console: str = "line"
) -> BastionEnv:
    """op0 debugs payments under a grant whose approval (by op1, a lead) is moderated (or,
    with ``moderated=False``, that needs no approval); op2 is an auditor."""
    env = make_env(root, operators=3, console=console)
    config = yaml.safe_load(env.config_path.read_text())
    config["listener"]["console_zygote"] = console == "textual"
    config.update(
        stack_sections(info, browse=console == "textual"),
        grants=[
            {
                "name": "payments-watched",
                "groups": ["oncall"],
                "clusters": ["local"],
                "namespaces": ["payments"],
                "images": [TOOLBOX],
                "max_session": "30m",
                "vault_role": "debug",
                "approval": {"approvers": {"groups": ["leads"]}, "moderated": True},
            }
        ],
        oversight={"auditors": {"groups": ["auditors"]}, "watcher_wait": "2m"},
    )
    if not moderated:
        del config["grants"][0]["approval"]
    for user in config["users"]:
        if user["name"] == LEAD:
            user["groups"] = ["oncall", "leads"]
        if user["name"] == AUDITOR:
            user["groups"] = ["auditors"]
    env.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return env


def recorded_output(env: BastionEnv, recording: str, out: Path) -> bytes:
    _header, *events = env.export_recording(recording, out)
    return "".join(e[2] for e in events if e[1] == "o").encode()


def listed_watchers(env: BastionEnv, session: str) -> str:
    """The WATCHERS column of ``bastion sessions list`` for ``session``."""
    listing = subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "sessions", "list",
         "--config", str(env.config_path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    header, *rows = listing.stdout.splitlines()
    assert header.split()[-2:] == ["BREAK-GLASS", "WATCHERS"]
    (row,) = [r for r in rows if r.startswith(session)]
    return row.split()[-1]


def no_debug_container(info: dict[str, Any], session: str) -> bool:
    pod = read_pod(info, "payments", "api-1")
    assert pod is not None
    return not any(
        c["name"].startswith(f"dbg-{session[:8]}")
        for c in pod["spec"].get("ephemeralContainers", [])
    )


def test_a_moderated_shell_waits_for_a_watcher_who_sees_the_recorded_bytes_and_terminates_it(
    tmp_path: Path, stack: dict[str, Any], terminals: Terminals
) -> None:
    env = oversight_env(tmp_path, stack)
    bastion = ServedBastion(env, workers=2).start()
    watched_bytes = tmp_path / "watched.bin"
    try:
        op = terminals.login(env, bastion, env.operators[OPERATOR], "debug", "payments/api-1")
        wanted = request_id(wait_flat(op, "(Ctrl-C stops waiting)"))
        approved = approvals_cli(env, "approve", wanted, "--reason", "INC-9")
        assert approved.returncode == 0, approved.stderr
        text = wait_flat(op, "Ctrl-C gives up)")
        assert "waiting for a watcher: grant 'payments-watched' requires an auditor" in text
        session = WAITING.findall(text)[-1]
        waiting = env.wait_for_event("session.awaiting_watcher", session=session)
        assert waiting["reason"] == "grant 'payments-watched' requires an auditor to watch"
        # The gate holds before anything of the shell exists in the cluster.
        assert no_debug_container(stack, session)
        assert not [e for e in env.audit_events("session.state")
                    if e["session"] == session and e["outcome"] == "attached"]  # fmt: skip

        auditor = terminals.login(
            env, bastion, env.operators[AUDITOR], "watch", session, tee=watched_bytes
        )
        wait_flat(auditor, f"watching session {session} of {OPERATOR} on local/payments/api-1")
        wait_flat(op, f"auditor {AUDITOR} is watching this session")
        assert listed_watchers(env, session) == AUDITOR
        op.wait_for("attaching to dbg-")
        attached = env.wait_for_event("session.state", session=session, outcome="attached")
        assert not no_debug_container(stack, session)
        op.type("echo WATCHED-$((6*7)) TOKEN=abcdefghijklmnop")
        op.keys("Enter")
        op.wait_for("WATCHED-42")
        auditor.wait_for("WATCHED-42")
        # The auditor's keys never reach the shell: only q and t mean anything.
        auditor.type("echo INJECTED-$((5*5))")
        auditor.keys("Enter")

        auditor.type("t")
        auditor.wait_for("why terminate this session?")
        auditor.type("INC-9 looks like data exfiltration")
        auditor.keys("Enter")
        wait_flat(op, f"auditor {AUDITOR} ended this session: INC-9 looks like data exfiltration")
        op.wait_for("SSH-EXIT=")
        wait_flat(auditor, f"session {session} has ended; the watch is over")
        auditor.wait_for("SSH-EXIT=0")
    finally:
        assert bastion.stop() == 0

    assert_wiped(env, stack, session)
    events = in_order(
        env,
        ("session.awaiting_watcher", OPERATOR),
        ("oversight.watch_started", AUDITOR),
        ("session.watcher_joined", OPERATOR),
        ("oversight.terminate_requested", AUDITOR),
        ("session.terminated", OPERATOR),
        ("oversight.watch_ended", AUDITOR),
    )
    in_order(env, ("session.terminated", OPERATOR), ("session.wiped", OPERATOR))
    assert events[1]["watched"] == session
    assert events[3]["reason"] == events[4]["reason"] == "INC-9 looks like data exfiltration"
    assert events[4]["by"] == AUDITOR

    assert_watched_as_recorded(env, watched_bytes, attached["recording"], tmp_path)


def assert_watched_as_recorded(
    env: BastionEnv, watched_bytes: Path, recording: str, tmp_path: Path
) -> None:
    """Byte for byte what the recording holds: the watcher joined before the shell began,
    so what it got is the recording's output from its start (the end, written after the
    watch closed, may be longer)."""
    raw = watched_bytes.read_bytes()
    start = raw.index(b"\r\n", raw.index(b"watching session")) + 2
    seen = raw[start : raw.index(b"\r\nbastion: why terminate")]
    recorded = recorded_output(env, recording, tmp_path / "shell.cast")
    assert b"WATCHED-42 TOKEN=[REDACTED:assignment]" in seen
    assert b"abcdefghijklmnop" not in raw
    assert recorded.startswith(seen)
    assert b"INJECTED" not in recorded


def assert_wiped(env: BastionEnv, stack: dict[str, Any], session: str) -> None:
    """The wipe's own account, and the cluster's: the container ended, the lease revoked."""
    wiped = env.wait_for_event("session.wiped", session=session)
    by_kind = {r["kind"]: r for r in wiped["resources"]}
    assert by_kind["debug_container"]["outcome"].startswith("terminated")
    assert by_kind["lease"]["outcome"] == "revoked"
    pod = read_pod(stack, "payments", "api-1")
    assert pod is not None
    assert "terminated" in debug_status(pod, by_kind["debug_container"]["container"])["state"]


def test_a_user_who_is_not_an_auditor_is_refused_and_that_is_audited(
    tmp_path: Path, stack: dict[str, Any], terminals: Terminals
) -> None:
    env = oversight_env(tmp_path, stack)
    bastion = ServedBastion(env, workers=1).start()
    try:
        lead = terminals.login(env, bastion, env.operators[LEAD], "watch", "0123456789abcdef")
        text = wait_flat(lead, "SSH-EXIT=1")
        assert "only auditors may watch sessions, and you are not one" in text
    finally:
        assert bastion.stop() == 0
    (refused,) = env.audit_events("oversight.refused")
    assert (refused["actor"], refused["watched"]) == (LEAD, "0123456789abcdef")
    assert not env.audit_events("oversight.watch_started")


def test_an_auditor_watches_from_the_console_and_comes_back_to_it(
    tmp_path: Path, stack: dict[str, Any], terminals: Terminals
) -> None:
    env = oversight_env(tmp_path, stack, moderated=False, console="textual")
    bastion = ServedBastion(env, workers=2).start()
    try:
        op = terminals.login(env, bastion, env.operators[OPERATOR], "debug", "payments/api-1")
        op.wait_for("attaching to dbg-")
        session = env.wait_for_event("session.state", actor=OPERATOR, outcome="attached")["session"]
        auditor = terminals.login(env, bastion, env.operators[AUDITOR])
        # An auditor needs no grant of their own: the console has no cluster for them.
        auditor.wait_for("o Sessions")
        auditor.keys("o")
        auditor.wait_for(lambda s: session in s and "unwatched" in s, "the live sessions")
        auditor.keys("Enter")  # the operator's session is the oldest: the first row
        wait_flat(auditor, f"watching session {session} of {OPERATOR}")
        wait_flat(op, f"auditor {AUDITOR} is watching this session")
        op.type("echo CONSOLE-$((6*7))")
        op.keys("Enter")
        auditor.wait_for("CONSOLE-42")
        auditor.type("q")
        auditor.wait_for(f"The watch of session {session} ended")
        wait_flat(op, f"auditor {AUDITOR} stopped watching this session")
        op.type("exit")
        op.keys("Enter")
        op.wait_for("SSH-EXIT=0")
    finally:
        assert bastion.stop() == 0
    in_order(env, ("oversight.watch_started", AUDITOR), ("oversight.watch_ended", AUDITOR))
