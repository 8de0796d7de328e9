"""``bastion demo`` and ``bastion devstack up``: the product on the embedded local stack.

This module is the only part of the product that may import :mod:`bastion.devstack`.

``bastion demo`` starts the local stack (kubesim and a real OpenBao), writes a real bastion
configuration for it into the state directory (a fresh ed25519 key and a fresh TOTP secret
for the operator ``demo``, every secret file 0600), validates it as ``bastion serve`` does,
checks that its Vault and cluster sections work, and runs ``bastion serve`` on it as a child
process. It prints the ``ssh`` command to log in with, the second factor's enrolment (once),
and where the audit log is, then stays in the foreground until Ctrl-C or SIGTERM.

Files in the state directory (0700):

    bastion.yaml     the config (regenerated on every run)
    demo_ed25519     the operator's private key (0600; .pub beside it)
    totp/demo        the operator's TOTP secret (0600)
    host_ed25519     the server's host key (0600; kept across runs)
    known_hosts      the host key, for ``ssh -o UserKnownHostsFile=...``
    audit.jsonl      the bastion's audit log
    bastion.log      what ``bastion serve`` and its workers print
    auditor.key      the auditors' private key for the recordings (0600; .pub beside it;
                     kept across runs)
    recordings/      the sealed session recordings
    demo.json        connection details while the demo runs (0600; removed on stop)
    state/, stack/   the bastion's state; the local stack's files and devstack.json
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import hvac
import yaml
from hvac.exceptions import VaultError
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bastion.cli.user import draw_qr
from bastion.config import Config, load_config, summary
from bastion.devstack.background import kube_client
from bastion.devstack.openbao import OpenBaoError
from bastion.devstack.stack import DEFAULT_FIXTURE, LocalStack
from bastion.devstack.toolbox import TOOLBOX_IMAGE
from bastion.enrolment import new_totp_secret, otpauth_uri
from bastion.errors import BastionError
from bastion.policy import DebugRequest, DebugTarget, Mode, decide
from bastion.recording.key_files import generate_auditor_keys

__all__ = ["DEFAULT_PORT", "DEMO_USER", "devstack_up", "run"]

T = TypeVar("T")

DEFAULT_STATE_DIR = Path(".state/demo")
DEFAULT_PORT = 2222
DEMO_USER = "demo"
DEMO_GROUP = "oncall"
CLUSTER = "local"
ISSUER = "k8s-debug-bastion-demo"
WORKERS = 2
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0  # the server itself gives its workers 15 s
# Relative to the config file's directory, like every path in it.
RECORDINGS_DIR = "recordings"
# A pod the demo's grant lets the operator debug (bastion/devstack/fixtures/demo.yaml).
DEMO_TARGET = "checkout/frontend-6c9d-abcde"
NOT_YET = (
    "signed audit checkpoints, audit search and export (issue 8)",
    "break-glass access, four-eyes approval and live oversight (issue 9)",
)
# `bastion serve` is started through this: it asks Linux for SIGTERM when the demo dies, even
# by SIGKILL (PR_SET_PDEATHSIG survives exec), so a killed demo leaves no bastion running.
_ORPHAN_GUARD = """\
import ctypes, os, signal, sys
if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM) != 0:  # PR_SET_PDEATHSIG
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
if os.getppid() != int(sys.argv[1]):  # the demo died before prctl
    sys.exit(1)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""
_LISTENING = re.compile(r"bastion: listening on (\S+):(\d+) with (\d+) worker")


@dataclass(frozen=True)
class DemoFiles:
    """Where everything of one demo lives, all under ``root``."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "bastion.yaml"

    @property
    def identity(self) -> Path:
        return self.root / "demo_ed25519"

    @property
    def totp_secret(self) -> Path:
        return self.root / "totp" / DEMO_USER

    @property
    def host_key(self) -> Path:
        return self.root / "host_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def auditor_key(self) -> Path:
        return self.root / "auditor.key"

    @property
    def server_log(self) -> Path:
        return self.root / "bastion.log"

    @property
    def info(self) -> Path:
        return self.root / "demo.json"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def stack(self) -> Path:
        return self.root / "stack"


# ---------------------------------------------------------------------------- bastion demo
def run(state_dir: Path | None, port: int = DEFAULT_PORT) -> int:
    if not 0 <= port <= 65535:
        raise BastionError(
            f"--port {port} is not a TCP port", hint="pass 1-65535, or 0 for any free port"
        )
    files = DemoFiles((state_dir or DEFAULT_STATE_DIR).absolute())
    _prepare_dir(files.root)
    with _exclusive(files.root):
        return asyncio.run(_demo(files, port))


def _prepare_dir(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = root.stat().st_mode & 0o777
    if mode & 0o077:
        raise BastionError(
            f"the state directory {root} is open to other users (mode {mode:04o}), and the "
            "demo keeps a private key and a TOTP secret there",
            hint=f"run: chmod 700 {root}, or pass a new --state-dir",
        )


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One demo per state directory: a second one would overwrite the first's secrets."""
    fd = os.open(root / "demo.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BastionError(
                f"another `bastion demo` is running with the state directory {root}",
                hint="stop it (Ctrl-C), or pass another --state-dir",
            ) from None
        yield
    finally:
        os.close(fd)


async def _demo(files: DemoFiles, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    demo = _Demo(files, port, stop)
    try:
        return await demo.run()
    finally:
        await demo.stop()
        print("stopped: the bastion, OpenBao and kubesim are down", flush=True)


class _Demo:
    def __init__(self, files: DemoFiles, port: int, stop: asyncio.Event) -> None:
        self.files = files
        self.port = port
        self.stop_requested = stop
        self.fixture = _demo_fixture()
        self.stack = LocalStack(files.stack, self.fixture)
        self.bastion = _Bastion(files)

    async def run(self) -> int:
        """Everything up to Ctrl-C; ``stop`` ends what was started, whatever happens here."""
        files, stop = self.files, self.stop_requested
        files.info.unlink(missing_ok=True)  # a leftover from a demo that was killed
        started = time.perf_counter()
        try:
            info = await _unless(stop, self.stack.start())
        except OpenBaoError as exc:
            raise BastionError(f"the local stack did not start: {exc}") from None
        if info is None:
            return 0
        print(
            f"stack    kubesim {info['kube_api']} ({self.stack.kubesim.pod_count} pods) and "
            f"OpenBao {info['vault_addr']} up in {time.perf_counter() - started:.1f} s"
        )
        secret = new_totp_secret()
        config = _write_config(files, info, self.fixture, self.port, secret)
        print(f"config   {summary(files.config, config)}")
        _show_decisions(config)
        checked = await _unless(stop, asyncio.to_thread(_vault_check, config))
        if checked is None:
            return 0
        print(f"vault    {checked}", flush=True)
        if await _unless(stop, self.bastion.start()) is None:
            return 0
        _write_known_hosts(files, self.bastion.port)
        _show_login(files, self.bastion, secret)
        _write_info(files, info, self.bastion, secret)
        return await _wait(stop, self.bastion)

    async def stop(self) -> None:
        await self.bastion.stop()
        await self.stack.stop()
        (self.files.stack / "devstack.json").unlink(missing_ok=True)
        self.files.info.unlink(missing_ok=True)


async def _unless(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None once ``stop`` is set first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def _demo_fixture() -> dict[str, Any]:
    with resources.as_file(
        resources.files("bastion.devstack") / "fixtures" / DEFAULT_FIXTURE
    ) as path:
        fixture: dict[str, Any] = yaml.safe_load(path.read_text())
    return fixture


def _toolbox(fixture: dict[str, Any]) -> str:
    """The approved toolbox image, which kubesim must map to a local shell to run it."""
    if TOOLBOX_IMAGE not in (fixture.get("images") or {}):
        raise BastionError(
            f"the demo fixture maps no local command to the toolbox image {TOOLBOX_IMAGE}; "
            f"add it under images: in bastion/devstack/fixtures/{DEFAULT_FIXTURE}"
        )
    return TOOLBOX_IMAGE


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` atomically with a file that never had a looser mode than ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_config(
    files: DemoFiles, info: dict[str, Any], fixture: dict[str, Any], port: int, secret: str
) -> Config:
    """A fresh key and TOTP secret for ``demo``, the config naming them; loaded as serve does."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{DEMO_USER}@bastion-demo")
    _write_private(files.identity, key.export_private_key())
    public = key.export_public_key().decode().strip()
    _write_private(files.identity.with_suffix(".pub"), f"{public}\n".encode(), 0o644)
    _write_private(files.totp_secret, f"{secret}\n".encode())
    auditor = _auditor_public_key(files)
    # The login guard's memory (used time steps, failures) belongs to the previous secret.
    for suffix in ("", "-wal", "-shm"):
        (files.state / f"logins.db{suffix}").unlink(missing_ok=True)
    namespaces = [
        ns["name"]
        for ns in fixture.get("namespaces", [])
        if ns["name"] not in ("kube-system", "default")
    ]
    config = {
        "listener": {
            "address": "127.0.0.1",
            "port": port,
            "host_key": files.host_key.name,
            "workers": WORKERS,
        },
        "users": [
            {
                "name": DEMO_USER,
                "groups": [DEMO_GROUP],
                "public_keys": [public],
                "totp_secret_file": str(files.totp_secret.relative_to(files.root)),
            }
        ],
        "clusters": [
            {
                "name": CLUSTER,
                "api_url": info["kube_api"],
                "ca_file": info["kube_ca"],
                "vault_mount": info["vault_kubernetes_mount"],
                "browse_vault_role": info["vault_browse_role"],
                "browse_account_namespace": info["vault_browse_namespace"],
            }
        ],
        "grants": [
            {
                "name": f"{DEMO_GROUP}-{CLUSTER}",
                "groups": [DEMO_GROUP],
                "clusters": [CLUSTER],
                "namespaces": namespaces,
                "modes": ["ephemeral"],
                "images": [_toolbox(fixture)],
                "max_session": "30m",
                "idle_timeout": "10m",
                "vault_role": info["vault_roles"][0],
            }
        ],
        "vault": {
            "address": info["vault_addr"],
            "ca_file": info["vault_ca"],
            "approle": {
                "role_id": info["approle_role_id"],
                "secret_id_file": info["approle_secret_id_file"],
            },
        },
        "paths": {
            "state_dir": files.state.name,
            "audit_log": files.audit_log.name,
            "recordings_dir": RECORDINGS_DIR,
        },
        "recording": {"auditor_public_key": auditor},
    }
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = (
        f"# Written by `bastion demo` at {stamp} for the local stack; rewritten on every run.\n"
        "# Relative paths are relative to this file's directory (docs/configuration.md).\n"
    ) + yaml.safe_dump(config, sort_keys=False, width=100_000)
    _write_private(files.config, text.encode())
    # What `bastion serve` will do first: a config it would refuse stops the demo here.
    return load_config(files.config, check_files=True)


def _auditor_public_key(files: DemoFiles) -> str:
    """The demo's auditors' key pair (kept across runs, so that older recordings stay
    readable): its public line for the config. In production the private half lives only on
    auditors' machines; here it sits in the state directory, 0600."""
    public = files.auditor_key.with_suffix(".pub")
    if not files.auditor_key.exists():
        return generate_auditor_keys(files.auditor_key, public)
    lines = [line for line in public.read_text().splitlines() if not line.startswith("#")]
    return lines[0].strip()


def _show_decisions(config: Config) -> None:
    policy = config.policy()
    principal = config.principal(DEMO_USER)
    if principal is None:  # pragma: no cover - the config above defines the user
        return
    image = config.grants[0].images[0]
    for target, request in (
        (
            DebugTarget(CLUSTER, "payments", "api-7f9c6d5b8-x2k4q", {"app": "api"}, "api"),
            DebugRequest(Mode.EPHEMERAL, image),
        ),
        (DebugTarget(CLUSTER, "payments", "db-0", {"app": "db"}), DebugRequest(Mode.POD, image)),
        (DebugTarget(CLUSTER, "kube-system", "coredns-0"), DebugRequest(Mode.EPHEMERAL, image)),
    ):
        decision = decide(policy, principal, target, request, datetime.now(UTC))
        verdict = "allow" if decision.allowed else "deny "
        where = f"{target.cluster}/{target.namespace}/{target.pod} ({request.mode})"
        print(f"policy   {verdict} {DEMO_USER} → {where}: {decision.reason}")


def _vault_check(config: Config) -> str:
    """The config's Vault and cluster sections at work: AppRole login, a credential for one
    namespace, used there and refused elsewhere, then revoked (which kills the token)."""
    cluster, grant = config.clusters[0], config.grants[0]
    approle = config.vault.approle
    assert approle is not None  # noqa: S101 - the demo writes its config with AppRole
    try:
        vault = hvac.Client(url=config.vault.address, verify=str(config.vault.ca_file))
        secret_id = approle.secret_id_file.read_text().strip()
        vault.auth.approle.login(role_id=approle.role_id, secret_id=secret_id)
        creds = vault.write_data(
            f"{cluster.vault_mount}/creds/{grant.vault_role}",
            data={"kubernetes_namespace": "payments", "ttl": "10m"},
        )
        token = creds["data"]["service_account_token"]
        with kube_client(cluster.api_url, str(cluster.ca_file), token) as api:
            core = client.CoreV1Api(api)
            pods = len(core.list_namespaced_pod("payments").items)
            elsewhere = _status(lambda: core.list_namespaced_pod("checkout"))
            vault.sys.revoke_lease(creds["lease_id"])
            revoked = _status(lambda: core.list_namespaced_pod("payments"))
    except (VaultError, ApiException, OSError, KeyError) as exc:
        raise BastionError(
            f"the local stack's Vault does not work with the demo config: {exc}",
            hint="this is a bug in the demo or the local stack; please report it",
        ) from None
    if revoked == 200:
        raise BastionError("a revoked Kubernetes credential still works: a bug in the stack")
    return (
        f"AppRole login ok; a credential for payments lists its {pods} pods, gets "
        f"{elsewhere} in checkout, and {revoked} once its lease is revoked"
    )


def _status(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


class _Bastion:
    """``bastion serve`` as a child process in its own session (Ctrl-C reaches the demo only,
    which stops the server in order); its output goes to ``bastion.log``."""

    def __init__(self, files: DemoFiles) -> None:
        self.files = files
        self.pid = 0
        self.port = 0
        self.workers = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start ``bastion serve`` and wait until it listens; the port it listens on."""
        log = self.files.server_log
        with log.open("ab") as stderr:
            proc = self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _ORPHAN_GUARD,
                str(os.getpid()),
                "-m",
                "bastion.cli.main",
                "serve",
                "--config",
                str(self.files.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        self.pid = proc.pid
        stdout = proc.stdout
        if stdout is None:  # pragma: no cover - a pipe was asked for
            raise RuntimeError("no pipe from the bastion's stdout")
        try:
            await asyncio.wait_for(self._listening(proc, stdout), START_TIMEOUT)
        except TimeoutError:
            raise BastionError(
                f"the bastion did not start listening within {START_TIMEOUT:.0f} s",
                hint=f"its log is {log}",
            ) from None
        self._pump = asyncio.create_task(self._copy(stdout))
        return self.port

    async def _listening(
        self, proc: asyncio.subprocess.Process, stdout: asyncio.StreamReader
    ) -> None:
        while line := await stdout.readline():
            self._log(line)
            found = _LISTENING.search(line.decode(errors="replace"))
            if found:
                self.port, self.workers = int(found[2]), int(found[3])
                return
        code = await proc.wait()
        raise BastionError(
            f"the bastion stopped before it listened ({_ended(code)}); the end of its "
            f"log:\n{self.log_tail()}",
            hint=f"its whole log is {self.files.server_log}",
        )

    async def _copy(self, stdout: asyncio.StreamReader) -> None:
        while line := await stdout.readline():
            self._log(line)

    def _log(self, line: bytes) -> None:
        with self.files.server_log.open("ab") as log:
            log.write(line)

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.files.server_log.read_text(errors="replace")
        except OSError:
            return "  (no log)"
        return "\n".join(f"  {line}" for line in text.splitlines()[-lines:])

    async def wait(self) -> int:
        """The exit status, once the server has exited."""
        if self._proc is None:
            raise RuntimeError("the bastion was not started")
        return await self._proc.wait()

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        # Workers outlive a supervisor that was killed; they are in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._pump, 5)
            self._pump = None


def _ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


async def _wait(stop: asyncio.Event, bastion: _Bastion) -> int:
    """Until Ctrl-C/SIGTERM (0), or until the bastion dies on its own (1)."""
    exited = asyncio.ensure_future(bastion.wait())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not exited.done():
        exited.cancel()
        print("\nstopping ...", flush=True)
        return 0
    print(
        f"\nbastion: the server stopped on its own ({_ended(exited.result())}); the end of "
        f"its log ({bastion.files.server_log}):\n{bastion.log_tail()}\nstopping the local stack",
        file=sys.stderr,
        flush=True,
    )
    return 1


def _write_known_hosts(files: DemoFiles, port: int) -> None:
    host_key = asyncssh.read_private_key(files.host_key)
    algorithm, blob = host_key.export_public_key().decode().split()[:2]
    host = "127.0.0.1" if port == 22 else f"[127.0.0.1]:{port}"
    _write_private(files.known_hosts, f"{host} {algorithm} {blob}\n".encode(), 0o644)


def ssh_command(files: DemoFiles, port: int, *, tty: bool = False) -> str:
    return (
        f"ssh {'-t ' if tty else ''}-p {port} -i {files.identity} "
        f"-o UserKnownHostsFile={files.known_hosts} {DEMO_USER}@127.0.0.1"
    )


def _show_login(files: DemoFiles, bastion: _Bastion, secret: str) -> None:
    out = sys.stdout
    print(
        f"bastion  listening on 127.0.0.1:{bastion.port} ({bastion.workers} workers, "
        f"pid {bastion.pid}); its log: {files.server_log}"
    )
    print("\nLog in as the demo operator (the key, then a verification code):\n")
    print(f"  {ssh_command(files, bastion.port)}\n")
    print(
        f"The second factor of {DEMO_USER}, new for this run and shown only now: scan the QR "
        "code with an authenticator app,"
    )
    print()
    draw_qr(otpauth_uri(DEMO_USER, secret, ISSUER), out)
    print()
    print(f"  otpauth URI: {otpauth_uri(DEMO_USER, secret, ISSUER)}")
    print(f"  or compute the current code: oathtool --totp -b {secret}")
    print("  (each code works once: wait for the next one to log in again)")
    print()
    print(
        "After the code, the console lists the pods you may debug: type to filter, Enter for "
        "a pod's details,\n`d` on a container for a debug shell (exit it to come back), `?` "
        "for every key, `q` to log out.\nOr straight to a shell, without the console:"
    )
    print(f"  {ssh_command(files, bastion.port, tty=True)} debug {DEMO_TARGET}\n")
    print("Not built yet:")
    for item in NOT_YET:
        print(f"  - {item}")
    print()
    print(f"audit log  {files.audit_log}  (check it: bastion audit verify {files.audit_log})")
    print(
        f"recordings {files.config.parent / RECORDINGS_DIR}  (watch one: bastion play ID "
        f"--key {files.auditor_key} --config {files.config}; `bastion recordings list` "
        "lists them)"
    )
    print(f"details    {files.info}")
    print("Ctrl-C to stop.", flush=True)


def _write_info(
    files: DemoFiles, stack_info: dict[str, Any], bastion: _Bastion, secret: str
) -> None:
    pids = {
        "demo": os.getpid(),
        "bastion": bastion.pid,
        "kubesim": stack_info.get("kubesim_pid"),
        "openbao": stack_info.get("openbao_pid"),
    }
    info = {
        **stack_info,
        "ssh_host": "127.0.0.1",
        "ssh_port": bastion.port,
        "username": DEMO_USER,
        "identity_file": str(files.identity),
        "known_hosts": str(files.known_hosts),
        "totp_secret": secret,
        "audit_log": str(files.audit_log),
        "recordings_dir": str(files.config.parent / RECORDINGS_DIR),
        "config": str(files.config),
        "ssh_command": ssh_command(files, bastion.port),
        "bastion_pid": bastion.pid,
        "bastion_log": str(files.server_log),
        "pids": {**stack_info.get("pids", {}), **pids},
    }
    _write_private(files.info, (json.dumps(info, indent=2) + "\n").encode())


# ---------------------------------------------------------------------------- devstack up
def devstack_up(state_dir: Path, fixture: Path | None) -> int:
    """Start kubesim and OpenBao, write ``devstack.json``, serve until Ctrl-C or SIGTERM."""
    return asyncio.run(_serve_stack(state_dir.absolute(), fixture))


async def _serve_stack(state_dir: Path, fixture: Path | None) -> int:
    # The handlers go in before the stack starts: devstack.json appears during start(), and a
    # Ctrl-C that came after it and before the handlers ended the process with OpenBao and
    # the files left behind.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack = LocalStack(state_dir, fixture)
    started = time.perf_counter()
    starting = asyncio.ensure_future(stack.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # LocalStack.start() stops what it had started when it is cancelled.
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            print("stopped before the stack was ready")
            return 130
        info = starting.result()
        took = time.perf_counter() - started
        pods = stack.kubesim.pod_count
        print(f"kubesim  {info['kube_api']}  ({pods} pods, CA {info['kube_ca']})")
        print(f"openbao  {info['vault_addr']}  (CA {info['vault_ca']})")
        print(f"ready in {took:.1f} s; connection details in {state_dir / 'devstack.json'}")
        print("Ctrl-C stops both and removes their files.", flush=True)
        await stopping
    finally:
        stopping.cancel()
        if starting.done() and not starting.cancelled() and starting.exception() is None:
            await stack.stop()
        (state_dir / "devstack.json").unlink(missing_ok=True)
    print("stopped")
    return 0
