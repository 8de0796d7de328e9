"""The console's requests end to end: an SSH client logs in to a real worker whose console is
a small script speaking the console protocol (it relays JSON lines typed at it to the broker
and prints what comes back); the broker answers from kubesim with a browse credential from a
real OpenBao, filtered by policy and masked, and revokes it at logout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml
from front_door.harness import BastionEnv, make_env
from front_door.test_login_asyncssh import fresh_login
from kubernetes import client

from bastion.config import load_config
from bastion.devstack.background import kube_client
from bastion.devstack.stack import VaultRole
from bastion.policy import Mode
from bastion.ssh.front_door import Identity
from bastion.ssh.worker import Worker
from devstack.kubesim_harness import TOOLBOX, ThreadedStack, stack_sections
from devstack.test_vault import service_account_exists

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJkZW1vIn0.c2lnbmF0dXJlLWRlbW8"
BIG = 50_000
FIXTURE: dict[str, Any] = {
    "images": {TOOLBOX: {"command": ["/bin/sh"]}},
    "namespaces": [
        {
            "name": "payments",
            "pods": [
                {
                    "name": "api-1",
                    "labels": {"app": "api"},
                    "restarts": 3,
                    "containers": [
                        {
                            "name": "api",
                            "env": [
                                {"name": "LOG_LEVEL", "value": "info"},
                                {"name": "API_TOKEN", "value": JWT},
                                {
                                    "name": "DB_PASSWORD",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "db-creds", "key": "password"}
                                    },
                                },
                                {
                                    "name": "FLAGS",
                                    "valueFrom": {
                                        "configMapKeyRef": {"name": "flags", "key": "payments"}
                                    },
                                },
                            ],
                        }
                    ],
                    "events": [
                        {"type": "Warning", "reason": "Unhealthy", "message": "probe failed"}
                    ],
                },
                {"name": "api-2", "labels": {"app": "api"}},
                {"name": "db-0", "labels": {"app": "db"}},
            ],
        },
        {"name": "checkout", "pods": [{"name": "web-1"}]},
        {"name": "big", "generate": {"count": BIG, "prefix": "load-", "labels": {"app": "load"}}},
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
        "name": "load",
        "groups": ["oncall"],
        "clusters": ["local"],
        "namespaces": ["big"],
        "images": [TOOLBOX],
        "modes": ["ephemeral", "copy"],
        "reason_required": True,
        "vault_role": "debug",
    },
]

# The console: relays JSON lines typed at it to the broker, prints small answers whole and
# pages of pods as a summary (so a 50,000-pod list is checked where the console would show
# it, without printing megabytes): the first page's size and the time since the request,
# then at the last page how many rows came, how many names were distinct, whether they came
# in the API's order (by name), the first and last, and the time. A row is an array whose
# first item is the pod's name.
CONSOLE = r"""
import fcntl, json, os, selectors, sys, termios, time
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
attrs = termios.tcgetattr(0)
attrs[3] &= ~termios.ECHO
termios.tcsetattr(0, termios.TCSANOW, attrs)
broker = int(os.environ["BASTION_BROKER_FD"])
out = lambda text: (sys.stdout.write(text + "\r\n"), sys.stdout.flush())
out("ready")
sel = selectors.DefaultSelector()
sel.register(0, selectors.EVENT_READ)
sel.register(broker, selectors.EVENT_READ)
asked, names, hidden, typed, heard = {}, {}, {}, b"", b""
while True:
    for key, _ in sel.select():
        data = os.read(key.fd, 1 << 20)
        if not data:
            sys.exit(0)
        if key.fd == 0:
            typed += data
            *lines, typed = typed.split(b"\n")
            for line in lines:
                if line.strip() == b"q":
                    sys.exit(0)
                asked[json.loads(line).get("id")] = time.monotonic()  # debug has none
                os.write(broker, line.strip() + b"\n")
            continue
        heard += data
        *lines, heard = heard.split(b"\n")
        for line in lines:
            message = json.loads(line)
            if message["type"] != "pods" or message["complete"] and message["id"] not in names:
                out("broker says " + json.dumps(message))
                continue
            i = message["id"]
            ms = round((time.monotonic() - asked[i]) * 1000)
            if i not in names:
                out("broker says " + json.dumps({"type": "first", "id": i, "ms": ms,
                                                 "rows": len(message["rows"])}))
            names.setdefault(i, []).extend(row[0] for row in message["rows"])
            hidden[i] = hidden.get(i, 0) + message["hidden"]
            if message["complete"]:
                got = names.pop(i)
                out("broker says " + json.dumps({
                    "type": "complete", "id": i, "ms": ms, "rows": len(got),
                    "distinct": len(set(got)), "in_order": got == sorted(got),
                    "first_name": got[0], "last_name": got[-1], "hidden": hidden[i]}))
"""


def script_console(identity: Identity) -> list[str]:
    return [sys.executable, "-c", CONSOLE]


class ScriptConsole:
    """The test's side of the script console: typed requests, parsed answers."""

    def __init__(self, process: asyncssh.SSHClientProcess[str]) -> None:
        self.process = process
        self.heard: list[dict[str, Any]] = []
        self._text = ""
        self._next = 1

    async def start(self) -> dict[str, Any]:
        return await self.wait(lambda m: m["type"] == "welcome")

    def send(self, kind: str, **fields: Any) -> int:
        request_id = fields.pop("id", None) or self._next
        self._next = max(self._next, request_id) + 1
        line = json.dumps({"type": kind, "id": request_id, **fields})
        self.process.stdin.write(line + "\n")
        return int(request_id)

    async def ask(self, kind: str, **fields: Any) -> dict[str, Any]:
        request_id = self.send(kind, **fields)
        return await self.wait(lambda m: m.get("id") == request_id)

    async def wait(self, match: Any, within: float = 20) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for index, message in enumerate(self.heard):
                    if match(message):
                        return self.heard.pop(index)
                chunk = await self.process.stdout.read(65536)
                assert chunk, f"the console ended; heard {self.heard}"
                self._text += chunk
                *lines, self._text = self._text.split("\n")
                self.heard += [
                    json.loads(line.strip().removeprefix("broker says "))
                    for line in lines
                    if line.startswith("broker says ")
                ]

    async def quiet(self, match: Any, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            found = await self.wait(match, within=seconds)
            raise AssertionError(f"unexpected {found}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    running = ThreadedStack(
        tmp_path_factory.mktemp("stack"),
        FIXTURE,
        roles=[VaultRole("debug", ("payments", "big"), modes=(Mode.EPHEMERAL, Mode.COPY))],
    )
    info = running.start()
    yield info
    running.stop()


def browse_env(root: Path, info: dict[str, Any]) -> BastionEnv:
    env = make_env(root, operators=4)
    config = yaml.safe_load(env.config_path.read_text())
    config.update(stack_sections(info, browse=True), grants=GRANTS)
    env.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return env


@pytest.fixture
async def console(
    tmp_path: Path, stack: dict[str, Any]
) -> AsyncIterator[tuple[BastionEnv, ScriptConsole]]:
    env = browse_env(tmp_path, stack)
    worker = Worker(load_config(env.config_path))
    await worker.start()
    assert worker.door is not None
    worker.door.console_command = script_console
    try:
        _, conn = await fresh_login(env, worker.port)
        async with conn:
            process = await conn.create_process(term_type="xterm", term_size=(80, 24))
            yield env, ScriptConsole(process)
            with contextlib.suppress(BrokenPipeError):  # a test may have logged out
                process.stdin.write("q\n")
            await process.wait_closed()
    finally:
        await worker.stop()


def admin(info: dict[str, Any]) -> client.CoreV1Api:
    return client.CoreV1Api(
        kube_client(info["kube_api"], info["kube_ca"], info["kube_admin_token"])
    )


def create(
    core: client.CoreV1Api, name: str, labels: dict[str, str], namespace: str = "payments"
) -> None:
    pod = {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": TOOLBOX}]},
    }
    core.create_namespaced_pod(namespace, pod)


def delete(core: client.CoreV1Api, name: str, namespace: str = "payments") -> None:
    with contextlib.suppress(client.ApiException):
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


async def test_welcome_and_the_namespaces_policy_shows_and_hides(
    console: tuple[BastionEnv, ScriptConsole],
) -> None:
    _, con = console
    welcome = await con.start()
    assert welcome["clusters"] == ["local"]
    assert welcome["groups"] == ["oncall"]
    assert welcome["idle_timeout"] > 0
    assert welcome["hard_deadline"] > 0

    namespaces = await con.ask("list_namespaces", cluster="local")
    assert namespaces["type"] == "namespaces"
    assert namespaces["allowed"] == ["big", "payments"]
    hidden = {h["name"]: h["reason"] for h in namespaces["hidden"]}
    assert set(hidden) == {"checkout", "default", "kube-system"}
    assert "no grant" in hidden["checkout"]
    other = await con.ask("list_namespaces", cluster="elsewhere")
    assert other["type"] == "failed"
    assert "'elsewhere'" in other["message"]


async def test_pods_and_details_are_filtered_and_masked(
    console: tuple[BastionEnv, ScriptConsole],
) -> None:
    _, con = console
    await con.start()
    page = await con.ask("watch_pods", cluster="local", namespace="payments")
    assert page["type"] == "pods"
    assert page["complete"] is True
    # Rows are arrays: name, ready, status, restarts, created, node, labels, containers.
    assert [r[0] for r in page["rows"]] == ["api-1", "api-2"]
    assert page["hidden"] == 1
    assert "app=api" in page["hidden_reason"]
    assert page["rows"][0][1:4] == ["1/1", "Running", 3]
    assert page["rows"][0][6:] == [["app=api"], ["api"]]

    pod = await con.ask("get_pod", cluster="local", namespace="payments", pod="api-1")
    assert pod["type"] == "pod"
    (container,) = pod["containers"]
    env_vars = {v["name"]: v["value"] for v in container["env"]}
    assert env_vars == {
        "LOG_LEVEL": "info",
        "API_TOKEN": "<redacted>",
        "DB_PASSWORD": "<secret db-creds/password>",
        "FLAGS": "<configmap flags/payments>",
    }
    assert JWT not in json.dumps(pod)
    assert container["config_maps"] == ["flags"]
    assert container["debuggable"] is True
    events = pod["events"]
    seen = [e["last_seen"] for e in events]
    assert seen == sorted(seen, reverse=True)
    assert {e["reason"] for e in events if e["type"] == "Warning"} == {"BackOff", "Unhealthy"}
    assert {"Scheduled", "Started"} <= {e["reason"] for e in events}

    for name, said in (("db-0", "hidden"), ("nope", "does not exist")):
        failed = await con.ask("get_pod", cluster="local", namespace="payments", pod=name)
        assert failed["type"] == "failed"
        assert said in failed["message"]
    elsewhere = await con.ask("get_pod", cluster="local", namespace="checkout", pod="web-1")
    assert "no grant" in elsewhere["message"]

    options = await con.ask(
        "get_debug_options", cluster="local", namespace="payments", pod="api-1", container=""
    )
    assert options == {
        "type": "debug_options",
        "id": options["id"],
        "images": [TOOLBOX],
        "modes": ["ephemeral"],
        "target_container": "api",
        "max_session_seconds": 1800.0,
        "reason_required": False,
        "recorded": True,
        "approval": "",  # no grant here requires approval
    }


async def test_live_changes_arrive_until_the_watch_stops(
    console: tuple[BastionEnv, ScriptConsole], stack: dict[str, Any]
) -> None:
    _, con = console
    await con.start()
    watch = con.send("watch_pods", cluster="local", namespace="payments")
    await con.wait(lambda m: m.get("id") == watch and m["type"] == "pods")
    core = admin(stack)
    try:
        # A new pod the grant covers arrives, one it does not stays hidden, deletes go.
        await asyncio.to_thread(create, core, "api-3", {"app": "api"})
        await asyncio.to_thread(create, core, "db-1", {"app": "db"})
        changed = await con.wait(lambda m: m["type"] == "pods_changed")
        assert changed["id"] == watch
        assert [r[0] for r in changed["upserts"]] == ["api-3"]
        await asyncio.to_thread(delete, core, "api-3")
        gone = await con.wait(lambda m: m["type"] == "pods_changed" and m["deletes"])
        assert gone["deletes"] == ["api-3"]
        con.send("stop_watch", id=watch)
        await asyncio.sleep(0.2)
        con.heard.clear()
        await asyncio.to_thread(create, core, "api-4", {"app": "api"})
        await con.quiet(lambda m: m["type"] == "pods_changed", 1.0)
    finally:
        for name in ("db-1", "api-4"):
            await asyncio.to_thread(delete, core, name)
        core.api_client.close()


async def test_the_browse_lease_is_revoked_at_logout(
    console: tuple[BastionEnv, ScriptConsole], stack: dict[str, Any]
) -> None:
    env, con = console
    await con.start()
    await con.ask("list_namespaces", cluster="local")
    await con.ask("list_namespaces", cluster="local")  # one credential for both
    (issued,) = env.audit_events("session.browse_credential_issued")
    home = stack["vault_browse_namespace"]
    assert service_account_exists(stack, home, issued["service_account"])
    con.process.stdin.write("q\n")
    wiped = await env.event("session.wiped", session=issued["session"])
    (lease,) = [r for r in wiped["resources"] if r["kind"] == "lease"]
    assert lease["purpose"] == "browse"
    assert lease["outcome"] == "revoked"
    assert not service_account_exists(stack, home, issued["service_account"])


async def test_a_refused_debug_revokes_its_own_lease_and_not_the_browse_one(
    console: tuple[BastionEnv, ScriptConsole], stack: dict[str, Any]
) -> None:
    env, con = console
    await con.start()
    await con.ask("list_namespaces", cluster="local")
    (browse,) = env.audit_events("session.browse_credential_issued")
    # db-0 is app=db: the grant's app=api selector refuses it once the pod has been read
    # with the debug's own credential, which is then revoked.
    request = {
        "cluster": "local",
        "namespace": "payments",
        "pod": "db-0",
        "container": "",
        "mode": "ephemeral",
        "image": "",
        "reason": "",
        "run_as_user": 65532,
        "privileged": False,
        "add_capabilities": [],
    }
    con.process.stdin.write(json.dumps({"type": "debug", **request}) + "\n")  # has no id
    refused = await con.wait(lambda m: m["type"] == "refused")
    assert "app=api" in refused["message"]
    event = await env.event("session.debug_refused", session=browse["session"])
    assert [(r["kind"], r["outcome"]) for r in event["released"]] == [("lease", "revoked")]
    debug = next(
        e
        for e in env.audit_events("session.credential_issued")
        if e["session"] == browse["session"]
    )
    assert not service_account_exists(stack, "payments", debug["service_account"])
    # The console's credential lives on: the next listing uses it, no new one is issued.
    home = stack["vault_browse_namespace"]
    assert service_account_exists(stack, home, browse["service_account"])
    watch = con.send("watch_pods", cluster="local", namespace="payments")
    pods = await con.wait(lambda m: m.get("id") == watch and m["type"] == "pods")
    assert [r[0] for r in pods["rows"]] == ["api-1", "api-2"]
    assert len(env.audit_events("session.browse_credential_issued")) == 1


async def test_a_50000_pod_namespace_arrives_whole_in_order_then_follows_changes(
    console: tuple[BastionEnv, ScriptConsole], stack: dict[str, Any]
) -> None:
    # How long this takes is measured by bench/tui_bench.py (--broker), not asserted here.
    _, con = console
    await con.start()
    watch = con.send("watch_pods", cluster="local", namespace="big")
    first = await con.wait(lambda m: m["type"] == "first" and m["id"] == watch)
    complete = await con.wait(lambda m: m["type"] == "complete" and m["id"] == watch, 60)
    assert first["rows"] == 500  # the first page is small, to be shown at once
    assert complete["rows"] == complete["distinct"] == BIG  # every pod, once
    assert complete["in_order"]
    assert (complete["first_name"], complete["last_name"]) == ("load-00000", f"load-{BIG - 1:05d}")
    assert complete["hidden"] == 0
    core = admin(stack)
    try:
        await asyncio.to_thread(create, core, "load-new", {"app": "load"}, "big")
        changed = await con.wait(lambda m: m["type"] == "pods_changed" and m["id"] == watch)
        assert [r[0] for r in changed["upserts"]] == ["load-new"]
        await asyncio.to_thread(delete, core, "load-new", "big")
        gone = await con.wait(lambda m: m["type"] == "pods_changed" and m["deletes"])
        assert gone["deletes"] == ["load-new"]
    finally:
        await asyncio.to_thread(delete, core, "load-new", "big")
        core.api_client.close()
    options = await con.ask(
        "get_debug_options", cluster="local", namespace="big", pod="load-00001", container="app"
    )
    assert options["modes"] == ["ephemeral", "copy"]
    assert options["reason_required"] is True
    assert options["max_session_seconds"] == 3600.0
