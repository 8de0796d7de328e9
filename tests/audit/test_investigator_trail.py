"""What an investigator reads about one real debug session: every field issue 8 lists is in
the audit trail, found from the session id alone (the session's events and the login of
the connection it came from, as `bastion audit search --session` shows them), and the log
that holds them verifies with its signed checkpoints.

A real worker, a real OpenBao issuing the credential, kubesim running the pod; the operator
logs in with key and code and runs ``debug payments/api-1 --reason ...`` over SSH.

The recording's id and digest are left out: the session's recording is wired in by the
recordings work, which adds them to the debug's end event.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml
from devstack.kubesim_harness import TOOLBOX, ThreadedStack, stack_sections
from front_door.harness import BastionEnv, Operator, make_env
from front_door.test_login_asyncssh import fresh_login
from kubernetes import client

from bastion.cli.audit import Query, search
from bastion.config import load_config
from bastion.devstack.background import kube_client
from bastion.devstack.stack import VaultRole
from bastion.policy import Mode
from bastion.ssh.worker import Worker

FIXTURE: dict[str, Any] = {
    "images": {TOOLBOX: {"command": ["/bin/sh"]}},
    "namespaces": [{"name": "payments", "pods": [{"name": "api-1", "labels": {"app": "api"}}]}],
}
GRANT = {
    "name": "oncall-payments",
    "groups": ["oncall"],
    "clusters": ["local"],
    "namespaces": ["payments"],
    "images": [TOOLBOX],
    "max_session": "30m",
    "vault_role": "debug",
}
REASON = "INC-4821 checkout latency"


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


def stack_env(root: Path, info: dict[str, Any]) -> BastionEnv:
    env = make_env(root, operators=2)
    config = yaml.safe_load(env.config_path.read_text())
    config.update(stack_sections(info), grants=[GRANT])
    env.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return env


def pod_uid(info: dict[str, Any]) -> str:
    with kube_client(info["kube_api"], info["kube_ca"], info["kube_admin_token"]) as api:
        answer = client.CoreV1Api(api).read_namespaced_pod(
            "api-1", "payments", _preload_content=False
        )
        return str(json.loads(answer.data)["metadata"]["uid"])


async def expect(process: asyncssh.SSHClientProcess[str], text: str) -> None:
    seen = ""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            while text not in seen:
                chunk = await process.stdout.read(4096)
                if not chunk:
                    break
                seen += chunk
    assert text in seen, f"{text!r} not in {seen!r}"


def the_story(log: Path, session: str) -> list[dict[str, Any]]:
    """The events `bastion audit search --session` shows, as the log holds them."""
    out = io.StringIO()
    search(Path("/unused.yaml"), query=Query(session=session), log=log, out=out)
    shown = {int(line.split()[2].lstrip("#")) for line in out.getvalue().splitlines()}
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return [e for e in events if e["seq"] in shown]


def verify_cli(log: Path, pubkey: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "bastion.cli.main", "audit", "verify", str(log)]
    return subprocess.run(
        [*argv, "--pubkey", str(pubkey)], capture_output=True, text=True, check=False
    )


async def debug_once(env: BastionEnv) -> tuple[Operator, str]:
    """Log in, debug api-1 with a reason, run a command, exit: (operator, session id)."""
    worker = Worker(load_config(env.config_path))
    await worker.start()
    try:
        op, conn = await fresh_login(env, worker.port)
        async with conn:
            process = await conn.create_process(
                f"debug payments/api-1 --reason '{REASON}'", term_type="xterm", term_size=(100, 30)
            )
            await expect(process, "attaching to dbg-")
            process.stdin.write("echo READY-$((6*7))\n")
            await expect(process, "READY-42")
            process.stdin.write("exit 0\n")
            await process.wait_closed()
        closed = await env.event("session.state", outcome="closed")
    finally:
        await worker.stop()
    return op, str(closed["session"])


class Story:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def one(self, event: str, **match: Any) -> dict[str, Any]:
        found = [
            e
            for e in self.events
            if e["event"] == event and all(e.get(k) == v for k, v in match.items())
        ]
        assert len(found) == 1, (event, match, [e["event"] for e in self.events])
        return found[0]


def who_how_from_where(story: Story, op: Operator) -> None:
    """The login of the session's connection: user, key, second factor, source."""
    login = story.one("login.succeeded")
    opened = story.one("session.opened")
    assert login["connection"] == opened["connection"]
    assert (login["actor"], login["user"]) == (op.name, op.name)
    assert login["key"] == op.fingerprint
    assert (login["mfa"], login["outcome"]) == ("totp", "allowed")
    assert login["source"] == "127.0.0.1"
    assert opened["source"].startswith("127.0.0.1:")
    assert all(e["actor"] in (op.name, "bastion") for e in story.events)


def what_why_and_with_what(story: Story, uid: str) -> dict[str, Any]:
    """The request and its reason, the credential, the exact pod, grant and image."""
    starting = story.one("session.state", outcome="starting_debug")
    assert starting["target"] == {"cluster": "local", "namespace": "payments", "pod": "api-1"}
    assert (starting["mode"], starting["reason"]) == ("ephemeral", REASON)
    issued = story.one("session.credential_issued")
    assert issued["vault_role"] == "debug"
    assert issued["service_account"]
    assert issued["lease_id"].startswith("hmac-sha256:")  # a reference, never the lease
    expires = datetime.fromisoformat(issued["token_expires"])
    assert 1700 <= (expires - datetime.fromisoformat(issued["time"])).total_seconds() <= 1801
    allowed = story.one("session.debug_allowed")
    where = (allowed["cluster"], allowed["namespace"], allowed["pod"])
    assert where == ("local", "payments", "api-1")
    assert allowed["pod_uid"] == uid
    assert allowed["target_container"] == "app"
    assert allowed["image"] == TOOLBOX
    assert allowed["image_digest"] == TOOLBOX.rsplit("@", 1)[1]
    assert allowed["grants"] == ["oncall-payments"]
    assert allowed["mode"] == "ephemeral"
    return issued


def start_end_and_wipe(story: Story, session: str, issued: dict[str, Any]) -> None:
    attached = story.one("session.state", outcome="attached")
    assert attached["container"].startswith("dbg-" + session[:8])  # the debug container
    assert (attached["pod"], attached["image"]) == ("api-1", TOOLBOX)
    ended = story.one("session.debug_ended")
    assert ended["exit_status"] == 0  # how the shell ended
    assert ended["container"] == attached["container"]
    wiped = {r["kind"]: r for r in ended["resources"]}
    assert wiped["debug_container"]["outcome"] == "terminated (exit 0)"
    assert wiped["lease"]["outcome"] == "revoked"
    assert wiped["lease"]["lease_id"] == issued["lease_id"]  # the same lease, by reference
    session_end = story.one("session.wiped")
    assert session_end["ending"] == "logout"
    assert {r["kind"]: r["outcome"] for r in session_end["resources"]} == {"temp_dir": "removed"}
    closed = story.one("session.state", outcome="closed")
    assert attached["time"] < ended["time"] <= closed["time"]


async def test_one_debug_session_tells_an_investigator_everything(
    tmp_path: Path, stack: dict[str, Any]
) -> None:
    env = stack_env(tmp_path, stack)
    op, session = await debug_once(env)
    story = Story(the_story(env.audit_log, session))
    who_how_from_where(story, op)
    issued = what_why_and_with_what(story, pod_uid(stack))
    start_end_and_wipe(story, session, issued)
    # The log that says all this verifies, signatures included (closing signed its tail).
    result = verify_cli(env.audit_log, env.state_dir / "audit-signing.pub")
    assert result.returncode == 0, result.stderr
    assert "not signed yet" not in result.stdout
