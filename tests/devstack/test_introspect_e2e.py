"""Introspection scopes end to end: operators log in over SSH to a real worker, and views run
through a credential from a real OpenBao in kubesim; an introspect-only grant gets every
view and no shell, and a request outside the grant makes no API call at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pexpect
import pytest
import yaml
from front_door.harness import BastionEnv, make_env
from front_door.test_login_asyncssh import login
from front_door.test_real_clients import spawn_ssh
from kubernetes import client

from bastion.config import load_config
from bastion.devstack.background import kube_client
from bastion.devstack.stack import VaultRole
from bastion.policy import Mode, Scope
from bastion.ssh.worker import Worker
from devstack.kubesim_harness import TOOLBOX, ThreadedStack, stack_sections
from devstack.test_browse import ScriptConsole, script_console
from devstack.test_vault import service_account_exists

SECRET_LINE = "db_password=hunter2hunter2"
FIXTURE: dict[str, Any] = {
    "images": {TOOLBOX: {"command": ["/bin/sh"]}},
    "namespaces": [
        {
            "name": "payments",
            "pods": [
                {
                    "name": "api-1",
                    "labels": {"app": "api"},
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.example.com/api@sha256:" + "c" * 64,
                            "command": [
                                "/bin/sh",
                                "-c",
                                f"echo starting-up; echo {SECRET_LINE}; exec sleep 86400",
                            ],
                            "env": [
                                {"name": "LOG_LEVEL", "value": "info"},
                                {"name": "API_TOKEN", "value": "s3cr3t-value-1234"},
                                {
                                    "name": "DB_PASSWORD",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "db-creds", "key": "password"}
                                    },
                                },
                                {"name": "HOSTILE", "value": "x\x1b]0;owned\x07[b]y[/b]"},
                            ],
                            # The debug container's user: the files view reads the target's
                            # root through /proc: same uid and gid (docs/toolbox.md).
                            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532},
                        }
                    ],
                }
            ],
        }
    ],
}
VIEWS = ["processes", "env", "files", "sockets", "logs"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    running = ThreadedStack(
        tmp_path_factory.mktemp("stack"),
        FIXTURE,
        roles=[VaultRole("debug", ("payments",), modes=(Mode.EPHEMERAL,), scopes=tuple(Scope))],
    )
    info = running.start()
    running.info = info  # type: ignore[attr-defined]
    # The target's process starts on first use in kubesim: its log read starts it, as a
    # running pod on a real node has its container running.
    with kube_client(info["kube_api"], info["kube_ca"], info["kube_admin_token"]) as api:
        client.CoreV1Api(api).read_namespaced_pod_log("api-1", "payments", container="app")
    yield running
    running.stop()


class Served:
    def __init__(self, env: BastionEnv, worker: Worker, stack: ThreadedStack) -> None:
        self.env, self.worker, self.stack = env, worker, stack
        # A login burns its user's TOTP step: each run logs in as another of the group.
        self.lookers = [env.fresh() for _ in range(9)]  # every view, no shell
        self.env_only = [env.fresh() for _ in range(2)]  # the env view only
        self.approved = [env.fresh()]  # processes, with another operator's approval
        self.requests: list[tuple[str, str]] = []

    def next(self, group: str) -> str:
        return getattr(self, group).pop(0).name

    @property
    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.stack.info  # type: ignore[attr-defined]
        return info


def grants(lookers: list[str], env_only: list[str], approved: list[str]) -> list[dict[str, Any]]:
    common = {
        "clusters": ["local"],
        "namespaces": ["payments"],
        "images": [TOOLBOX],
        "vault_role": "debug",
    }
    return [
        {
            "name": "look",
            "users": lookers,
            "scopes": VIEWS,
            "path_prefixes": ["/etc"],
            **common,
        },
        {"name": "env-only", "users": env_only, "scopes": ["env"], **common},
        {
            "name": "look-approved",
            "users": approved,
            "scopes": ["processes"],
            "approval": {"approvers": {"groups": ["oncall"]}},
            **common,
        },
    ]


@pytest.fixture
async def served(tmp_path: Path, stack: ThreadedStack) -> AsyncIterator[Served]:
    info = stack.info  # type: ignore[attr-defined]
    env = make_env(tmp_path, operators=12)
    config = yaml.safe_load(env.config_path.read_text())
    worker_env = Served(env, None, stack)  # type: ignore[arg-type]
    config.update(
        stack_sections(info),
        grants=grants(
            [op.name for op in worker_env.lookers],
            [op.name for op in worker_env.env_only],
            [op.name for op in worker_env.approved],
        ),
    )
    env.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    worker = Worker(load_config(env.config_path))
    await worker.start()
    worker_env.worker = worker
    observers = stack.stack.kubesim.api.observers

    def seen(method: str, path: str, *_: object) -> None:
        worker_env.requests.append((method, path))

    observers.append(seen)
    try:
        yield worker_env
    finally:
        observers.remove(seen)
        await worker.stop()


async def run(
    served: Served, group: str, command: str, **options: Any
) -> tuple[str, asyncssh.SSHCompletedProcess]:
    op = served.env.operators[served.next(group)]
    conn, answers = await login(served.worker.port, op.name, op.key, [op.code()])
    assert conn is not None, answers.shown
    async with conn:
        return op.name, await conn.run(command, timeout=60, **options)


def table(stdout: Any) -> list[list[str]]:
    assert isinstance(stdout, str)
    return [line.split("\t") for line in stdout.splitlines() if not line.startswith("#")]


async def test_an_introspect_only_grant_gets_every_view(served: Served) -> None:
    _, result = await run(served, "lookers", "view processes payments/api-1")
    assert result.exit_status == 0, result.stderr
    rows = table(result.stdout)
    assert rows[0] == ["PID", "PPID", "USER", "ELAPSED", "COMMAND"]
    assert any(row[4] == "sleep 86400" for row in rows[1:])
    # What the refusal tests rely on: the calls of the bastion and of OpenBao are seen
    # (streams, exec among them, are not: they come after these).
    assert ("GET", "/api/v1/namespaces/payments/pods/api-1") in served.requests
    assert ("POST", "/api/v1/namespaces/payments/serviceaccounts") in served.requests

    _, result = await run(served, "lookers", "view env payments/api-1")
    assert result.exit_status == 0, result.stderr
    env = {row[0]: (row[1], row[2]) for row in table(result.stdout)[1:]}
    assert env["LOG_LEVEL"] == ("info", "value")
    assert env["DB_PASSWORD"] == ("<secret db-creds/password>", "secret")
    assert env["API_TOKEN"][1] == "redacted"
    assert "s3cr3t" not in str(result.stdout)
    assert "\x1b" not in str(result.stdout)
    assert "\x07" not in str(result.stdout)

    _, result = await run(served, "lookers", "view files payments/api-1 --path /etc")
    assert result.exit_status == 0, result.stderr
    rows = table(result.stdout)
    assert rows[0] == ["MODE", "OWNER", "GROUP", "SIZE", "MODIFIED", "NAME"]
    passwd = next(row for row in rows if row[5] == "passwd")
    assert passwd[0].startswith("-r")

    _, result = await run(served, "lookers", "view sockets payments/api-1")
    assert result.exit_status == 0, result.stderr
    port = served.info["kube_api"].rsplit(":", 1)[1]
    assert any(r[1] == "listening" and r[2].endswith(":" + port) for r in table(result.stdout))

    _, result = await run(served, "lookers", "view logs payments/api-1")
    assert result.exit_status == 0, result.stderr
    lines = [row[0] for row in table(result.stdout)[1:]]
    assert "starting-up" in lines
    assert "db_password=[REDACTED:assignment]" in lines
    assert "hunter2" not in str(result.stdout)

    views = served.env.audit_events("introspect.view")  # this test's own bastion
    assert [(e["view"], e["outcome"]) for e in views] == [(v, "shown") for v in VIEWS]
    assert all(e["rows"] > 0 for e in views)
    assert views[2]["path"] == "/etc"
    # A view that ran a command had its own debug container, ended like a shell's, and
    # every view's credential was revoked (its service account is gone).
    for event in views:
        kinds = {r["kind"]: r["outcome"] for r in event["resources"]}
        assert kinds["lease"] == "revoked"
        if event["view"] in ("processes", "files", "sockets"):
            assert kinds["debug_container"].startswith("terminated")
        issued = next(
            e
            for e in served.env.audit_events("session.credential_issued")
            if e["session"] == event["session"]
        )
        assert not service_account_exists(served.info, "payments", issued["service_account"])


async def test_an_introspect_only_grant_cannot_get_a_shell(served: Served) -> None:
    served.requests.clear()
    who, result = await run(
        served, "lookers", "debug payments/api-1", term_type="xterm", term_size=(80, 24)
    )
    assert result.exit_status == 1
    assert (
        f"the grants for {who} in local/payments allow only the read-only views "
        "(env, files, logs, processes, sockets), not a debug shell"
    ) in str(result.stderr)
    assert served.requests == []
    refused = served.env.audit_events("session.debug_refused")[-1]
    assert "not a debug shell" in refused["reason"]


@pytest.mark.parametrize(
    ("who", "command", "reason"),
    [
        (
            "env_only",
            "view processes payments/api-1",
            "the processes view is not allowed for {user} in local/payments; allowed: env",
        ),
        (
            "lookers",
            "view files payments/api-1 --path /etc/../root",
            "the path '/etc/../root' contains '..': name the directory itself",
        ),
        (
            "lookers",
            "view files payments/api-1 --path /root",
            "/root is outside the paths your grant lets you list (/etc): pick one of those",
        ),
        (
            "lookers",
            "view files payments/api-1 --path /etcetera",
            "/etcetera is outside the paths your grant lets you list (/etc): pick one of those",
        ),
        (
            "lookers",
            "view files payments/api-1 --path '/etc/\x1b[2J'",
            "the path contains control or invisible characters: type it plainly",
        ),
        (
            "lookers",
            "view processes payments/api-1 --path /etc",
            "only the files view takes a path, not the processes view",
        ),
    ],
)
async def test_a_view_outside_the_grant_is_refused_before_any_api_call(
    served: Served, who: str, command: str, reason: str
) -> None:
    served.requests.clear()
    user, result = await run(served, who, command)
    assert result.exit_status == 1
    assert str(result.stderr) == f"bastion: {reason.format(user=user)}\n"
    assert served.requests == []  # neither the bastion nor OpenBao called the cluster
    refused = served.env.audit_events("introspect.view")[-1]
    assert refused["outcome"] == "refused"
    assert refused["reason"] == reason.format(user=user)
    assert refused["target"] == "?/payments/api-1"
    issued = served.env.audit_events("session.credential_issued")
    assert not [e for e in issued if e["session"] == refused["session"]]


def _openssh(port: int, op: Any, command: str) -> tuple[str, int | None]:
    child = spawn_ssh(port, op, "-T", command=command)
    child.expect("Verification code: ")
    child.sendline(op.code())
    child.expect(pexpect.EOF, timeout=60)
    child.close()
    return str(child.before), child.exitstatus


async def test_openssh_client_gets_a_view_for_scripts(served: Served) -> None:
    op = served.lookers.pop(0)
    out, status = await asyncio.to_thread(
        _openssh, served.worker.port, op, "view env payments/api-1 -c app"
    )
    assert status == 0, out
    assert "NAME\tVALUE\tSOURCE" in out
    assert "DB_PASSWORD\t<secret db-creds/password>\tsecret" in out
    assert "s3cr3t" not in out
    op = served.lookers.pop(0)
    out, status = await asyncio.to_thread(
        _openssh, served.worker.port, op, "view files payments/api-1 --path /etc/../root"
    )
    assert status == 1
    assert "bastion: the path '/etc/../root' contains '..'" in out


async def test_an_approval_of_a_view_names_the_view_and_so_never_opens_a_shell(
    served: Served,
) -> None:
    _, result = await run(served, "approved", "view processes payments/api-1")
    assert result.exit_status == 1
    assert "bastion: this debug needs the approval of another operator" in str(result.stderr)
    requested = served.env.audit_events("approval.requested")[-1]
    # The approval store matches a debug by its whole key: a shell's mode is "ephemeral".
    assert requested["mode"] == "ephemeral view processes"
    assert requested["container"] == "app"
    view = served.env.audit_events("introspect.view")[-1]
    assert (view["view"], view["outcome"]) == ("processes", "awaiting_approval")


async def test_the_console_gets_the_allowed_views_and_tables_through_the_broker(
    served: Served,
) -> None:
    """The console's requests, as a (possibly forged) console sends them on the socketpair."""
    info = served.info
    config = yaml.safe_load(served.env.config_path.read_text())
    config.update(stack_sections(info, browse=True))
    served.env.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    worker = Worker(load_config(served.env.config_path))
    await worker.start()
    assert worker.door is not None
    worker.door.console_command = script_console
    op = served.lookers.pop(0)
    try:
        conn, answers = await login(worker.port, op.name, op.key, [op.code()])
        assert conn is not None, answers.shown
        async with conn:
            process = await conn.create_process(term_type="xterm", term_size=(80, 24))
            con = ScriptConsole(process)
            await con.start()
            pod = await con.ask("get_pod", cluster="local", namespace="payments", pod="api-1")
            assert pod["views"] == VIEWS
            assert [c["debuggable"] for c in pod["containers"]] == [False]
            table = await con.ask(
                "get_view",
                cluster="local",
                namespace="payments",
                pod="api-1",
                container="app",
                view="files",
                path="/etc",
            )
            assert table["type"] == "view"
            assert table["columns"][-1] == "NAME"
            assert any(r["cells"][5] == "passwd" for r in table["rows"])
            refused = await con.ask(
                "get_view",
                cluster="local",
                namespace="payments",
                pod="api-1",
                container="app",
                view="shell",
                path="",
            )
            assert refused["type"] == "failed"
            assert refused["message"].startswith("'shell' is not a view")
            process.stdin.write("q\n")
            await process.wait_closed()
    finally:
        await worker.stop()
