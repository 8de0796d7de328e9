"""The operator's whole job, end to end, as an operator does it: the real OpenSSH client in a
tmux window, the key from a file and the code from Debian's ``oathtool``, the Textual console
served by the real ``bastion serve`` (forked from its console template) in front of kubesim
and a real OpenBao. Filter the pods, pick one, press ``d``, give the reason policy asks for,
run ``id`` and ``stty size`` in the debug shell, resize the window, exit, land back on the pod
list with the news, quit; then the audit log tells that story in order, wipe included.

Every wait polls ``tmux capture-pane`` against a deadline: no fixed sleeps."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml
from front_door.harness import BastionEnv, ServedBastion, make_env

from bastion.debug_command import DEFAULT_UID
from bastion.devstack.stack import VaultRole
from bastion.policy import Mode
from devstack.kubesim_harness import TOOLBOX, ThreadedStack, stack_sections
from devstack.test_debug_shell import debug_status, read_pod
from devstack.test_vault import service_account_exists

pytestmark = pytest.mark.slow

FIXTURE: dict[str, Any] = {
    "images": {TOOLBOX: {"command": ["/bin/sh"]}},
    "namespaces": [
        {
            "name": "payments",
            "pods": [
                {"name": "api-1", "labels": {"app": "api"}},
                {"name": "api-2", "labels": {"app": "api"}},
                {"name": "db-0", "labels": {"app": "db"}},
                {"name": "web-1", "labels": {"app": "web"}},
                {"name": "web-2", "labels": {"app": "web"}},
            ],
        },
        {"name": "checkout", "pods": [{"name": "cart-1"}]},
    ],
}
GRANT = {
    "name": "oncall",
    "groups": ["oncall"],
    "clusters": ["local"],
    "namespaces": ["payments"],
    "images": [TOOLBOX],
    "max_session": "30m",
    "reason_required": True,
    "vault_role": "debug",
}
REASON = "e2e: checking the cache"
WIDTH, HEIGHT = 120, 40
WAIT = 15.0  # seconds any one step may take on a busy two-core machine


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


def console_env(root: Path, info: dict[str, Any]) -> BastionEnv:
    """One operator; the product's default console; a cluster the console can browse."""
    env = make_env(root, operators=1, console="textual")
    config = yaml.safe_load(env.config_path.read_text())
    config["listener"]["console_zygote"] = True
    config.update(stack_sections(info, browse=True), grants=[GRANT])
    env.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return env


# ---------------------------------------------------------------------------- tmux
class Tmux:
    """One tmux server of our own (its own socket and config), one window."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "tmux.sock"
        self.conf = directory / "tmux.conf"
        # No status line (the pane is the whole window), no wait after Escape.
        self.conf.write_text("set -g status off\nset -g escape-time 0\n")

    def run(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return result.stdout

    def start(self, command: str) -> None:
        self.run(
            "new-session", "-d", "-s", "e2e", "-x", str(WIDTH), "-y", str(HEIGHT), command
        )  # fmt: skip

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "e2e")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "e2e", *keys)

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "e2e", "-l", text)

    def poll(self, wanted: Callable[[str], bool] | str, within: float) -> str | None:
        """The screen once ``wanted`` holds (a string: is on it), or None after ``within`` s."""
        test = (lambda screen: wanted in screen) if isinstance(wanted, str) else wanted
        deadline = time.monotonic() + within
        while True:
            screen = self.screen()
            if test(screen):
                return screen
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def wait_for(self, wanted: Callable[[str], bool] | str, what: str = "") -> str:
        screen = self.poll(wanted, WAIT)
        if screen is None:
            raise AssertionError(f"waited {WAIT:.0f} s for {what or wanted!r}:\n{self.screen()}")
        return screen

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.run("kill-server")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    # A short directory: a Unix socket's path is limited to about 100 bytes.
    directory = Path(tempfile.mkdtemp(prefix="e2e-tmux-"))
    running = Tmux(directory)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(directory, ignore_errors=True)


def toast_text(screen: str) -> str:
    """The notifications on screen as one line: each sits right of a ``▌`` border."""
    parts = [line.rsplit("▌", 1)[1].strip() for line in screen.splitlines() if "▌" in line]
    return " ".join(part for part in parts if part)


# ---------------------------------------------------------------------------- processes
def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def console_template(serve_pid: int) -> int:
    """The pid of the console template under ``bastion serve`` (supervisor, worker, template)."""
    for worker in children(serve_pid):
        for child in children(worker):
            if "-m tui.zygote" in cmdline(child):
                return child
    raise AssertionError("no console template under bastion serve")


def oathtool(secret: str) -> str:
    result = subprocess.run(
        ["oathtool", "--totp", "-b", secret], capture_output=True, text=True, timeout=10, check=True
    )
    return result.stdout.strip()


def known_hosts(env: BastionEnv, port: int) -> Path:
    host_key = asyncssh.read_private_key(env.state_dir / "host_ed25519")
    path = env.root / "known_hosts"
    path.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode().strip()}\n")
    return path


# ---------------------------------------------------------------------------- the story
def test_an_operator_debugs_a_pod_from_the_console_over_openssh(
    tmp_path: Path, stack: dict[str, Any], tmux: Tmux
) -> None:
    env = console_env(tmp_path, stack)
    op = env.fresh()
    bastion = ServedBastion(env, workers=1).start()
    try:
        assert bastion.proc is not None
        template = console_template(bastion.proc.pid)
        ssh = [
            *("ssh", "-F", "/dev/null", "-p", str(bastion.port), "-i", str(op.key_file)),
            *("-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"),
            *("-o", f"UserKnownHostsFile={known_hosts(env, bastion.port)}"),
            *("-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"),
            f"{op.name}@127.0.0.1",
        ]
        # The pane stays after ssh ends, showing how it ended.
        tmux.start(f"{shlex.join(ssh)}; echo SSH-EXIT=$?; sleep 600")

        # Key, then the code from oathtool.
        tmux.wait_for("Verification code:")
        tmux.type(oathtool(op.secret))
        tmux.keys("Enter")

        # The console: one cluster, so its namespaces at once; policy shows only payments.
        screen = tmux.wait_for(lambda s: "Namespaces in local" in s and "payments" in s)
        assert f" {op.name}  local " in screen
        assert "checkout" not in screen
        first_console = children(template)
        assert len(first_console) == 1  # forked from the template
        tmux.keys("Enter")  # the list opens on its first (here only) namespace

        pick_the_pod_and_confirm(tmux)
        use_the_shell(tmux)
        assert children(template) == []  # no console while the shell has the terminal
        tmux.type("exit")
        tmux.keys("Enter")

        # A new console, forked from the template again: the pod list, 100 columns wide, the
        # cursor on the pod, and how the shell ended.
        screen = tmux.wait_for(
            lambda s: "exit status 0" in toast_text(s), "the shell's end in a notification"
        )
        assert "The debug shell in local/payments/api-2 ended with exit status 0" in toast_text(
            screen
        )
        assert f" {op.name}  local/payments " in screen
        assert " 5 pods" in screen
        assert cursor_row(tmux).split()[0] == "api-2"
        second_console = children(template)
        assert len(second_console) == 1
        assert second_console != first_console

        # q ends the session; ssh says how.
        tmux.keys("q")
        tmux.wait_for("SSH-EXIT=0")
    finally:
        code = bastion.stop()
    assert code == 0
    assert_the_story(env, op.name, stack)


def pick_the_pod_and_confirm(tmux: Tmux) -> None:
    """The pod list, a filter down to one pod, its details, d, the reason, the progress."""
    tmux.wait_for(lambda s: " 5 pods" in s and "web-2" in s, "the five pods of payments")
    tmux.type("/")
    tmux.wait_for("filter: text, /regex/", "the filter field")  # what is typed before is lost
    tmux.type("api-2")
    screen = tmux.wait_for(" 1 of 5 pods  filter: api-2")
    assert "api-1" not in screen
    assert "web-1" not in screen
    tmux.keys("Enter")  # back to the list, the filter kept
    tmux.keys("Enter")  # the pod

    tmux.wait_for(lambda s: "Pod api-2" in s and "debug: d" in s, "the pod's details")
    tmux.keys("d")
    screen = tmux.wait_for("This session is recorded.")
    assert "Open a debug shell?" in screen
    assert "payments/api-2" in screen
    assert TOOLBOX.split("@")[0] in screen
    tmux.keys("Enter")  # no reason yet: refused in one sentence
    tmux.wait_for("Policy wants a reason for this debug")
    tmux.type(REASON)
    tmux.keys("Enter")

    # The progress, until the console leaves (keys typed while it shows are the console's,
    # not the shell's).
    tmux.wait_for("Starting a debug shell in payments/api-2/app")
    tmux.wait_for(lambda s: "Starting a debug shell" not in s, "the console to leave")


def use_the_shell(tmux: Tmux) -> None:
    """``id`` and ``stty size`` in the debug shell, and a resize that reaches it."""
    tmux.type("echo READY-$((6*7))")
    tmux.keys("Enter")
    tmux.wait_for("READY-42")
    tmux.type("id")
    tmux.keys("Enter")
    # kubesim runs the container as its securityContext's user when it runs as root (CI).
    uid = str(DEFAULT_UID) if os.geteuid() == 0 else r"\d+"
    tmux.wait_for(lambda s: re.search(rf"uid={uid}\b", s) is not None, "id's answer")
    tmux.type("stty size")
    tmux.keys("Enter")
    tmux.wait_for(f"{HEIGHT} {WIDTH}")
    tmux.run("resize-window", "-t", "e2e", "-x", "100", "-y", "30")
    # The new size travels ssh -> bastion -> websocket -> pty: ask until it has arrived.
    deadline = time.monotonic() + WAIT
    while True:
        tmux.type("stty size")
        tmux.keys("Enter")
        if tmux.poll("30 100", 1.0) is not None:
            return
        assert time.monotonic() < deadline, f"stty size never said 30 100:\n{tmux.screen()}"


def cursor_row(tmux: Tmux) -> str:
    """The text of the row drawn in reverse video: the pod table's cursor."""
    for line in tmux.run("capture-pane", "-p", "-e", "-t", "e2e").splitlines():
        if line.startswith("\x1b[7m"):
            return re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
    raise AssertionError(f"no row in reverse video:\n{tmux.screen()}")


def assert_the_story(env: BastionEnv, user: str, info: dict[str, Any]) -> None:
    """The audit log tells the story in order: login, the session's states, the debug from
    request to end, the wipe; and its hash chain holds."""
    events = [json.loads(line) for line in env.audit_log.read_text().splitlines() if line]
    # The bastion's own records (signed checkpoints of the chain) are not part of the story.
    events = [e for e in events if not e["event"].startswith("audit.")]
    assert {e["actor"] for e in events} == {user}
    told = [(e["event"], e["outcome"]) for e in events]
    expected = [
        ("login.succeeded", "allowed"),
        ("session.opened", "opened"),
        ("session.state", "browsing"),
        ("session.browse_credential_issued", "issued"),
        ("session.state", "starting_debug"),
        ("session.credential_issued", "issued"),
        ("session.state", "attached"),
        ("console.ended", "ended"),
        ("session.debug_ended", "ended"),
        ("session.state", "browsing"),
        ("console.ended", "ended"),
        ("session.state", "wiping"),
        ("session.wiped", "wiped"),
        ("session.state", "closed"),
        ("connection.closed", "closed"),
    ]
    # In this order; a few others (deadlines narrowed by the grant) may come between.
    position = 0
    for step in expected:
        assert step in told[position:], f"{step} missing or out of order in {told}"
        position = told.index(step, position) + 1
    by_state = {e["outcome"]: e for e in events if e["event"] == "session.state"}
    assert by_state["starting_debug"]["target"] == {
        "cluster": "local",
        "namespace": "payments",
        "pod": "api-2",
    }
    attached = by_state["attached"]
    assert attached["pod"] == "api-2"
    assert attached["image"] == TOOLBOX
    assert by_state["wiping"]["ending"] == "logout"
    consoles = [e for e in events if e["event"] == "console.ended"]
    assert [(c["handed_over"], c["exit_status"]) for c in consoles] == [(True, 0), (False, 0)]

    ended = next(e for e in events if e["event"] == "session.debug_ended")
    assert ended["target"] == "local/payments/api-2"
    assert ended["exit_status"] == 0
    released = {r["kind"]: r for r in ended["resources"]}
    assert released["debug_container"]["container"] == attached["container"]
    assert released["debug_container"]["outcome"] == "terminated (exit 0)"
    assert released["lease"]["outcome"] == "revoked"
    assert released["lease"]["purpose"] == "debug"
    assert ended["recording"] == attached["recording"]
    assert ended["recording_complete"] is True
    # One browse credential for the whole session: the shell's end revoked only its own.
    assert told.count(("session.browse_credential_issued", "issued")) == 1
    wiped = next(e for e in events if e["event"] == "session.wiped")
    assert {r["outcome"] for r in wiped["resources"] if r["kind"] == "lease"} == {"revoked"}
    assert [r["outcome"] for r in wiped["resources"] if r["kind"] == "temp_dir"] == ["removed"]

    # What the log says is what the cluster shows: the container Terminated, the debug
    # credential's service account gone.
    pod = read_pod(info, "payments", "api-2")
    assert pod is not None
    state = debug_status(pod, attached["container"])["state"]
    assert state["terminated"]["exitCode"] == 0
    # The console asked for the toolbox's unprivileged default.
    made = next(c for c in pod["spec"]["ephemeralContainers"] if c["name"] == attached["container"])
    assert made["securityContext"]["runAsUser"] == DEFAULT_UID
    assert made["securityContext"]["runAsNonRoot"] is True
    issued = next(e for e in events if e["event"] == "session.credential_issued")
    assert not service_account_exists(info, "payments", issued["service_account"])

    verified = subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "audit", "verify", str(env.audit_log)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
