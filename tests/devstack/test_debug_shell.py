"""Debug shells end to end: an SSH client logs in to a real worker, asks for a debug shell
(``ssh bastion debug NS/POD`` or the line console), and gets a real shell in a kubesim
container, through a credential from a real OpenBao; at the end the container is checked
Terminated (or its pod deleted) and the credential revoked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml
from front_door.harness import BastionEnv, ServedBastion, make_env, serving
from front_door.test_login_asyncssh import fresh_login, login
from front_door.test_real_clients import _children
from kubernetes import client
from kubernetes.client.rest import ApiException

from bastion.config import load_config
from bastion.debug_container import DebugPlan, ephemeral_container
from bastion.devstack.background import kube_client
from bastion.devstack.stack import VaultRole
from bastion.policy import Mode
from bastion.session.lifecycle import Ending
from bastion.ssh.worker import Worker
from devstack.kubesim_harness import TOOLBOX, ThreadedStack, stack_sections
from devstack.test_vault import service_account_exists

FIXTURE: dict[str, Any] = {
    "images": {TOOLBOX: {"command": ["/bin/sh"]}},
    "namespaces": [
        {
            "name": "payments",
            "pods": [
                {"name": "api-1", "labels": {"app": "api"}},
                {"name": "api-2", "labels": {"app": "api"}},
                {"name": "db-0", "labels": {"app": "db"}},
            ],
        },
        {"name": "checkout", "pods": [{"name": "web-1", "labels": {"app": "web"}}]},
    ],
}
GRANTS = [
    {
        "name": "oncall",
        "groups": ["oncall"],
        "clusters": ["local"],
        "namespaces": ["payments"],
        "pod_selector": "app=api",
        "images": [TOOLBOX],
        "max_session": "30m",
        "vault_role": "debug",
    },
    {
        "name": "oncall-pods",
        "groups": ["oncall"],
        "clusters": ["local"],
        "namespaces": ["checkout"],
        "modes": ["copy", "pod"],
        "images": [TOOLBOX],
        "max_session": "30m",
        "vault_role": "debug-pods",
    },
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    running = ThreadedStack(
        tmp_path_factory.mktemp("stack"),
        FIXTURE,
        roles=[
            VaultRole("debug", ("payments",), modes=(Mode.EPHEMERAL,)),
            VaultRole("debug-pods", ("checkout",), modes=(Mode.COPY, Mode.POD)),
        ],
    )
    info = running.start()
    yield info
    running.stop()


def stack_env(root: Path, info: dict[str, Any], **limits: Any) -> BastionEnv:
    """Operators with keys and TOTP secrets, and a config pointing at the local stack."""
    env = make_env(root, operators=6, **limits)
    config = yaml.safe_load(env.config_path.read_text())
    config.update(stack_sections(info), grants=GRANTS)
    env.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return env


@pytest.fixture
async def served(tmp_path: Path, stack: dict[str, Any]) -> AsyncIterator[tuple[BastionEnv, Worker]]:
    env = stack_env(tmp_path, stack)
    async with serving(env) as worker:
        yield env, worker


def admin(info: dict[str, Any]) -> client.ApiClient:
    return kube_client(info["kube_api"], info["kube_ca"], info["kube_admin_token"])


def read_pod(info: dict[str, Any], namespace: str, name: str) -> dict[str, Any] | None:
    with admin(info) as api:
        try:
            answer = client.CoreV1Api(api).read_namespaced_pod(
                name, namespace, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        body: dict[str, Any] = json.loads(answer.data)
        return body


def debug_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    statuses = pod["status"].get("ephemeralContainerStatuses") or []
    return next(s for s in statuses if s["name"] == name)


async def expect(process: asyncssh.SSHClientProcess[str], text: str, within: float = 20) -> str:
    seen = ""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while text not in seen:
                chunk = await process.stdout.read(4096)
                if not chunk:
                    break
                seen += chunk
    assert text in seen, f"{text!r} not in {seen!r}"
    return seen


async def shell_ready(process: asyncssh.SSHClientProcess[str]) -> None:
    process.stdin.write("echo READY-$((6*7))\n")
    await expect(process, "READY-42")


async def test_ssh_debug_command_gives_a_shell_with_resize_and_exit_status(
    served: tuple[BastionEnv, Worker], stack: dict[str, Any]
) -> None:
    env, worker = served
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        process = await conn.create_process(
            "debug payments/api-1", term_type="xterm", term_size=(100, 30)
        )
        await expect(process, "attaching to dbg-")
        await shell_ready(process)
        process.stdin.write("stty size\n")
        await expect(process, "30 100")
        if os.geteuid() == 0:  # kubesim can run the restricted profile's user only as root
            process.stdin.write("echo uid=$(id -u)\n")
            await expect(process, "uid=65532")
        process.change_terminal_size(120, 40)
        await asyncio.sleep(0.2)
        process.stdin.write("stty size\n")
        await expect(process, "40 120")
        process.stdin.write("exit 3\n")
        await process.wait_closed()
        assert process.exit_status == 3
    ended = await env.event("session.debug_ended")
    assert ended["exit_status"] == 3
    container = ended["container"]
    assert container.startswith("dbg-" + ended["session"][:8])
    by_kind = {r["kind"]: r for r in ended["resources"]}
    assert by_kind["debug_container"]["outcome"] == "terminated (exit 3)"
    assert by_kind["lease"]["outcome"] == "revoked"
    issued = await env.event("session.credential_issued", session=ended["session"])
    assert not service_account_exists(stack, "payments", issued["service_account"])
    pod = read_pod(stack, "payments", "api-1")
    assert pod is not None
    status = debug_status(pod, container)
    assert status["state"]["terminated"]["exitCode"] == 3
    states = [
        e["outcome"] for e in env.audit_events("session.state") if e["session"] == ended["session"]
    ]
    assert states == ["browsing", "starting_debug", "attached", "browsing", "wiping", "closed"]
    attached = next(
        e
        for e in env.audit_events("session.state")
        if e["session"] == ended["session"] and e["outcome"] == "attached"
    )
    assert attached["protocol"] == "v5.channel.k8s.io"
    spent = attached["startup_ms"]
    steps = ("vault", "pod_read", "create", "running", "attach", "bastion")
    assert set(spent) == {*steps, "total"}
    assert all(spent[step] >= 0 for step in steps)
    assert abs(sum(spent[step] for step in steps) - spent["total"]) < 1


async def test_the_line_console_hands_over_and_comes_back(
    served: tuple[BastionEnv, Worker], stack: dict[str, Any]
) -> None:
    env, worker = served
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        process = await conn.create_process(term_type="xterm", term_size=(90, 25))
        assert "Press Enter to end this session." in await expect(process, "> ")
        # A refusal is one line; the session stays usable for another choice.
        process.stdin.write("debug payments/db-0\n")
        refusal = await expect(process, "\n> ")
        assert "bastion: " in refusal  # the next prompt comes after the answer
        process.stdin.write("debug payments/nope\n")
        await expect(process, "does not exist")
        process.stdin.write("debug payments/api-2 --reason 'checking the cache\x1b[2J'\n")
        await expect(process, "attaching your terminal")
        await shell_ready(process)
        process.stdin.write("exit 0\n")
        back = await expect(process, "ended with exit status 0")
        assert "Press Enter to end this session." in back  # a new console greets first
        process.stdin.write("\n")
        await process.wait_closed()
        assert process.exit_status == 0
    console = env.audit_events("console.ended")
    assert [e["handed_over"] for e in console[-2:]] == [True, False]
    starting = [e for e in env.audit_events("session.state") if e["outcome"] == "starting_debug"]
    assert "reason" not in starting[0]  # none given
    assert starting[-1]["reason"] == "checking the cache?[2J"  # the operator's, made inert


async def test_the_shell_is_recorded_sealed_and_redacted_and_exports_for_asciinema(
    served: tuple[BastionEnv, Worker], tmp_path: Path
) -> None:
    env, worker = served
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvcHMifQ.c2lnbmF0dXJlLXJlY29yZGluZw"
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        process = await conn.create_process(
            "debug payments/api-1", term_type="xterm", term_size=(100, 30)
        )
        await shell_ready(process)
        # The secret is made by the shell, so that only the output can carry it whole.
        half = len(jwt) // 2
        process.stdin.write(f"A={jwt[:half]}; echo MARK-$((6*7)) ${{A}}{jwt[half:]}\n")
        await expect(process, "MARK-42")
        process.change_terminal_size(120, 40)
        await asyncio.sleep(0.2)
        process.stdin.write("exit 0\n")
        await process.wait_closed()
    ended = await env.event("session.debug_ended")
    attached = await env.event("session.state", session=ended["session"], outcome="attached")
    assert ended["recording"] == attached["recording"]
    assert ended["recording_complete"] is True
    assert ended["recording_digest"].startswith("sha256:")
    # On disk: sealed (neither the secret nor the marker in the clear).
    (sealed,) = [p for p in env.recordings_dir.iterdir() if ended["recording"] in p.name]
    assert b"MARK-42" not in sealed.read_bytes()
    cast = tmp_path / "shell.cast"
    header, *events = await asyncio.to_thread(env.export_recording, ended["recording"], cast)
    assert (header["version"], header["width"], header["height"]) == (2, 100, 30)
    output = "".join(e[2] for e in events if e[1] == "o")
    assert "MARK-42 [REDACTED:jwt]" in output
    assert jwt not in cast.read_text()
    # The attach's first size (the header's) is recorded too, then the window change.
    assert [e[2] for e in events if e[1] == "r"] == ["100x30", "120x40"]
    assert not [e for e in events if e[1] == "i"]  # input is recorded only if a grant says so
    assert ended["redactions"] == {"jwt": 1}
    # Debian's asciinema reads it.
    shown = await asyncio.to_thread(
        subprocess.run,
        ["asciinema", "play", "-i", "0.01", str(cast)],
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert shown.returncode == 0, shown.stderr
    assert b"MARK-42 [REDACTED:jwt]" in shown.stdout


async def test_a_shell_that_cannot_be_recorded_is_refused_and_nothing_is_left(
    served: tuple[BastionEnv, Worker], stack: dict[str, Any]
) -> None:
    env, worker = served
    if env.recordings_dir.is_dir():
        shutil.rmtree(env.recordings_dir)
    env.recordings_dir.write_text("a file where the recordings directory should be\n")
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        result = await conn.run("debug payments/api-1", term_type="xterm", timeout=30)
    assert result.exit_status == 1
    assert "record" in str(result.stderr)
    refused = await env.event("session.debug_refused")
    released = {r["kind"]: r["outcome"] for r in refused["released"]}
    assert released["lease"] == "revoked"
    assert released["debug_container"].startswith("terminated")
    assert not env.audit_events("session.debug_ended")
    assert "attached" not in [e["outcome"] for e in env.audit_events("session.state")]


@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("debug payments/api-1 --privileged", "privileged"),
        ("debug payments/api-1 --uid 0", "root"),
        ("debug payments/api-1 --cap-add SYS_ADMIN", "SYS_ADMIN"),
        ("debug payments/api-1 --image registry.example.com/debug-toolbox:latest", "approved"),
    ],
)
async def test_more_than_the_restricted_profile_is_refused_before_any_call(
    served: tuple[BastionEnv, Worker], command: str, said: str
) -> None:
    env, worker = served
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        result = await conn.run(command, term_type="xterm", timeout=20)
    assert result.exit_status == 1
    assert said in str(result.stderr)
    refused = await env.event("session.debug_refused")
    assert said in refused["reason"]
    assert env.audit_events("session.credential_issued") == []


async def test_a_pod_outside_the_grant_is_refused_after_reading_it_and_the_credential_revoked(
    served: tuple[BastionEnv, Worker], stack: dict[str, Any]
) -> None:
    env, worker = served
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        result = await conn.run("debug payments/db-0", term_type="xterm", timeout=20)
    assert result.exit_status == 1
    assert "app=api" in str(result.stderr) or "no grant" in str(result.stderr)
    refused = await env.event("session.debug_refused")
    released = {r["kind"]: r["outcome"] for r in refused["released"]}
    assert released == {"lease": "revoked"}
    pod = read_pod(stack, "payments", "db-0")
    assert pod is not None
    assert not pod["spec"].get("ephemeralContainers")


@pytest.mark.parametrize("mode", ["copy", "pod"])
async def test_copy_and_toolbox_pods_are_deleted_at_the_end(
    served: tuple[BastionEnv, Worker], stack: dict[str, Any], mode: str
) -> None:
    env, worker = served
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        process = await conn.create_process(
            f"debug checkout/web-1 --mode {mode}", term_type="xterm", term_size=(80, 24)
        )
        await expect(process, "attaching to")
        await shell_ready(process)
        process.stdin.write("exit 5\n")
        await process.wait_closed()
        assert process.exit_status == 5
    ended = await env.event("session.debug_ended")
    pod = {r["kind"]: r for r in ended["resources"]}["debug_pod"]
    assert pod["outcome"] == "deleted"
    assert pod["mode"] == mode
    assert read_pod(stack, "checkout", pod["pod"]) is None


async def test_an_administrator_kill_ends_the_attached_shell_and_the_wipe_checks_it(
    served: tuple[BastionEnv, Worker], stack: dict[str, Any]
) -> None:
    env, worker = served
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        process = await conn.create_process(
            "debug payments/api-1", term_type="xterm", term_size=(80, 24)
        )
        await shell_ready(process)
        assert worker.broker is not None
        (session,) = worker.broker.sessions.values()
        session.end_soon(Ending.ADMIN_KILL)
        await expect(process, "an administrator ended this session")
        await process.wait_closed()
    wiped = await env.event("session.wiped", session=session.id)
    by_kind = {r["kind"]: r for r in wiped["resources"]}
    assert by_kind["debug_container"]["outcome"].startswith("terminated")
    assert by_kind["lease"]["outcome"] == "revoked"
    pod = read_pod(stack, "payments", "api-1")
    assert pod is not None
    assert "terminated" in debug_status(pod, by_kind["debug_container"]["container"])["state"]


async def test_a_running_debug_container_of_the_session_is_reattached(
    served: tuple[BastionEnv, Worker], stack: dict[str, Any]
) -> None:
    env, worker = served
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        process = await conn.create_process(term_type="xterm", term_size=(80, 24))
        assert "Press Enter to end this session." in await expect(process, "> ")
        session = (await env.event("session.opened"))["session"]
        # Left running by an attach that broke: this session's container, never attached.
        plan = DebugPlan(
            session_id=session,
            user="op0",
            mode=Mode.EPHEMERAL,
            image=TOOLBOX,
            namespace="payments",
            pod="api-2",
            target_container="app",
            watchdog_seconds=600,
        )
        with admin(stack) as api:
            client.CoreV1Api(api).patch_namespaced_pod_ephemeralcontainers(
                "api-2", "payments", {"spec": {"ephemeralContainers": [ephemeral_container(plan)]}}
            )
        for _ in range(100):
            pod = read_pod(stack, "payments", "api-2")
            if pod and "running" in debug_status(pod, plan.container)["state"]:
                break
            await asyncio.sleep(0.05)
        process.stdin.write("debug payments/api-2\n")
        await expect(process, f"reattaching to {plan.container}")
        await expect(process, "attaching your terminal")
        await shell_ready(process)
        process.stdin.write("exit 4\n")
        await expect(process, "ended with exit status 4")
        process.stdin.write("\n")
        await process.wait_closed()
    ended = await env.event("session.debug_ended", session=session)
    assert ended["container"] == plan.container
    assert {r["kind"]: r["outcome"] for r in ended["resources"]}["debug_container"] == (
        "terminated (exit 4)"
    )
    pod = read_pod(stack, "payments", "api-2")
    assert pod is not None
    assert [c["name"] for c in pod["spec"]["ephemeralContainers"]].count(plan.container) == 1


async def test_a_deadline_warning_reaches_the_attached_shell_as_one_line(
    tmp_path: Path, stack: dict[str, Any]
) -> None:
    env = stack_env(tmp_path, stack, console_idle_timeout="31s")
    worker = Worker(load_config(env.config_path))
    await worker.start()
    try:
        _, conn = await fresh_login(env, worker.port)
        async with conn:
            process = await conn.create_process(
                "debug payments/api-1", term_type="xterm", term_size=(80, 24)
            )
            await shell_ready(process)
            # 30 s before the idle deadline: one second without typing.
            seen = await expect(process, "unless you type something", within=10)
            assert "\a\r\n\x1b[7m bastion: no input: the session ends in" in seen
            await shell_ready(process)  # the shell is untouched and still answers
            process.stdin.write("exit\n")
            await process.wait_closed()
            assert process.exit_status == 0
        warning = await env.event("session.warning", deadline="idle")
        assert warning["seconds_left"] <= 31  # the 2-minute warning, due at once
    finally:
        await worker.stop()


def test_after_kill_9_in_an_attached_shell_the_restart_cleans_everything(
    tmp_path: Path, stack: dict[str, Any]
) -> None:
    env = stack_env(tmp_path, stack)
    op = env.fresh()
    bastion = ServedBastion(env, workers=1).start()
    assert bastion.proc is not None

    async def attach_and_kill() -> str:
        conn, _ = await login(bastion.port, op.name, op.key, [op.code()])
        assert conn is not None
        process = await conn.create_process(
            "debug payments/api-1", term_type="xterm", term_size=(80, 24)
        )
        await shell_ready(process)
        attached = env.wait_for_event("session.state", outcome="attached")
        assert bastion.proc is not None
        for pid in _children(bastion.proc.pid) | {bastion.proc.pid}:
            os.kill(pid, signal.SIGKILL)  # no wipe: the processes just vanish
        conn.abort()
        return str(attached["session"])

    session = asyncio.run(attach_and_kill())
    bastion.stop()
    temp = env.state_dir / "sessions" / session
    assert temp.is_dir()  # nobody wiped it
    issued = env.wait_for_event("session.credential_issued", session=session)
    assert service_account_exists(stack, "payments", issued["service_account"])
    restarted = ServedBastion(env, workers=1).start()
    try:
        started = time.monotonic()
        reaped = env.wait_for_event("session.reaped", timeout=10, session=session)
        assert time.monotonic() - started < 10
        cleaned = {
            e["kind"]: e for e in env.audit_events("reaper.cleaned") if e["session"] == session
        }
        assert set(cleaned) == {"debug_container", "lease", "temp_dir"}
        assert cleaned["debug_container"]["result"].startswith("terminated (exit")
        assert reaped["session"] == session
        assert not temp.exists()
        assert not service_account_exists(stack, "payments", issued["service_account"])
        pod = read_pod(stack, "payments", "api-1")
        assert pod is not None
        container = cleaned["debug_container"]["ref"]["container"]
        assert "terminated" in debug_status(pod, container)["state"]
    finally:
        assert restarted.stop() == 0


async def test_sigterm_wipes_an_attached_shell_within_the_grace(
    tmp_path: Path, stack: dict[str, Any]
) -> None:
    env = stack_env(tmp_path, stack)
    worker = Worker(load_config(env.config_path))
    await worker.start()
    stopped = False
    try:
        _, conn = await fresh_login(env, worker.port)
        async with conn:
            process = await conn.create_process(
                "debug payments/api-1", term_type="xterm", term_size=(80, 24)
            )
            await shell_ready(process)
            started = time.monotonic()
            await worker.stop()  # what SIGTERM runs
            stopped = True
            assert time.monotonic() - started < 20
            seen = await expect(process, "shutting down")
            assert "this session has ended" in seen
    finally:
        if not stopped:
            await worker.stop()
    wiped = env.audit_events("session.wiped")[-1]
    assert wiped["ending"] == "shutdown"
    by_kind = {r["kind"]: r["outcome"] for r in wiped["resources"]}
    assert by_kind["debug_container"].startswith("terminated")
    assert by_kind["lease"] == "revoked"
    assert by_kind["temp_dir"] == "removed"
