"""A bastion configuration with real operators (ed25519 keys on disk, TOTP secrets), and the
bastion itself: in-process (``Worker``) for asyncssh-client tests, or as the real
``bastion serve`` command (supervisor + workers) for OpenSSH and paramiko."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pyotp
import yaml

from bastion.config import load_config
from bastion.recording.key_files import generate_auditor_keys
from bastion.ssh.worker import Worker

AUDITOR_KEY = "auditor.key"  # next to bastion.yaml

IMAGE = "registry.example.com/debug-toolbox@sha256:" + "ab" * 32
FAKE_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def _secret_file(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(content)
    path.chmod(0o600)
    return path


@dataclass
class Operator:
    name: str
    key: asyncssh.SSHKey
    key_file: Path
    secret: str
    groups: tuple[str, ...] = ()

    def code(self, steps: int = 0, now: float | None = None) -> str:
        moment = time.time() if now is None else now
        return pyotp.TOTP(self.secret).at(moment + steps * 30)

    def wrong_codes(self, count: int) -> list[str]:
        """Six-digit codes that are valid for none of the steps the server accepts now."""
        now = time.time()
        valid = {self.code(step, now) for step in (-2, -1, 0, 1, 2)}
        wrong = (f"{n:06d}" for n in range(0, 1_000_000, 111_111))
        return [c for c in wrong if c not in valid][:count]

    @property
    def fingerprint(self) -> str:
        return str(self.key.get_fingerprint("sha256"))


@dataclass
class BastionEnv:
    root: Path
    config_path: Path
    operators: dict[str, Operator]
    _unused: list[str] = field(default_factory=list)

    def fresh(self) -> Operator:
        """An operator that has not logged in yet (a login burns the current TOTP step)."""
        if not self._unused:
            raise RuntimeError("the environment has run out of fresh operators; make more")
        return self.operators[self._unused.pop(0)]

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def audit_log(self) -> Path:
        # A replica named in the config writes a chain of its own: audit.<replica>.jsonl.
        data = yaml.safe_load(self.config_path.read_text()) or {}
        replica = (data.get("state") or {}).get("replica_id")
        return self.state_dir / (f"audit.{replica}.jsonl" if replica else "audit.jsonl")

    def edit_config(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Change the config file's data in place (before a worker loads it)."""
        data = yaml.safe_load(self.config_path.read_text())
        change(data)
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))

    @property
    def recordings_dir(self) -> Path:
        return self.state_dir / "recordings"

    @property
    def auditor_key(self) -> Path:
        """The auditors' private key: what reads this bastion's recordings."""
        return self.root / AUDITOR_KEY

    def audit_events(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        lines = self.audit_log.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if event is None or e["event"] == event]

    def _matching(self, event: str, match: dict[str, Any]) -> dict[str, Any] | None:
        for found in self.audit_events(event):
            if all(found.get(k) == v for k, v in match.items()):
                return found
        return None

    def wait_for_event(self, event: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """For a server in another process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (found := self._matching(event, match)) is not None:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {event} event matching {match} in {self.audit_log}")

    def export_recording(self, recording: str, out: Path) -> list[Any]:
        """``recording`` as ``bastion recordings export`` writes it to ``out`` with the auditors'
        key: its header, then its events."""
        exported = subprocess.run(
            [sys.executable, "-m", "bastion.cli.main", "recordings", "export", recording,
             "--key", str(self.auditor_key), "-o", str(out), "--config", str(self.config_path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        return [json.loads(line) for line in out.read_text().splitlines()]

    async def event(self, event: str, **match: Any) -> dict[str, Any]:
        """For a server on this event loop (which must keep running while we wait)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (found := self._matching(event, match)) is not None:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {event} event matching {match} in {self.audit_log}")


@asynccontextmanager
async def serving(env: BastionEnv) -> AsyncIterator[Worker]:
    """An in-process worker on ``env``'s config, on a free port, stopped at the end."""
    worker = Worker(load_config(env.config_path))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def bastion_cli(env: BastionEnv, *args: str) -> asyncio.subprocess.Process:
    """``bastion ARGS --config <env's config>`` as a real process, output piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bastion.cli.main",
        *args,
        "--config",
        str(env.config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def make_env(root: Path, operators: int = 8, *, console: str = "line", **limits: Any) -> BastionEnv:
    """A configuration with ``operators`` enrolled operators; ``limits`` go to ``limits``.

    The line console by default: these tests are about the front door and the debug shells,
    and read the line console's plain lines (``Welcome, op0.``, the ``> `` prompt). The
    Textual console (the product's default) is driven over SSH by test_textual_console.py and
    the end-to-end test, and screen by screen in tests/tui.
    """
    root.mkdir(parents=True, exist_ok=True)
    users = []
    made: dict[str, Operator] = {}
    for i in range(operators):
        name = f"op{i}"
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{name}@test")
        key_file = _secret_file(root / "keys" / name, key.export_private_key())
        secret = pyotp.random_base32()
        _secret_file(root / "totp" / name, secret.encode() + b"\n")
        made[name] = Operator(name, key, key_file, secret, ("oncall",))
        users.append(
            {
                "name": name,
                "groups": ["oncall"],
                "public_keys": [key.export_public_key().decode().strip()],
                "totp_secret_file": f"totp/{name}",
            }
        )
    _secret_file(root / "approle-secret-id", b"secret-id\n")
    # The auditors' key pair: the config gets the public half; tests read recordings with
    # the private one (BastionEnv.auditor_key).
    auditor = generate_auditor_keys(root / AUDITOR_KEY, root / "auditor.pub")
    (root / "ca").mkdir(exist_ok=True)
    (root / "ca" / "prod.pem").write_bytes(FAKE_PEM)
    config = {
        "listener": {
            "address": "127.0.0.1",
            "port": 0,
            "host_key": "state/host_ed25519",
            "console": console,
        },
        "users": users,
        "clusters": [
            {
                "name": "prod-eu",
                "api_url": "https://prod-eu.example.com:6443",
                "ca_file": "ca/prod.pem",
                "vault_mount": "kubernetes-prod-eu",
            }
        ],
        "grants": [
            {
                "name": "oncall",
                "groups": ["oncall"],
                "clusters": ["prod-*"],
                "namespaces": ["payments"],
                "images": [IMAGE],
                "vault_role": "debug-payments",
            }
        ],
        "vault": {
            "address": "https://vault.example.com:8200",
            "ca_file": "ca/prod.pem",
            "approle": {"role_id": "role-1", "secret_id_file": "approle-secret-id"},
        },
        "paths": {
            "state_dir": "state",
            "audit_log": "state/audit.jsonl",
            "recordings_dir": "state/recordings",
        },
        "limits": {"connections_per_source": 1000, "max_unauthenticated": 200, **limits},
        "recording": {"auditor_public_key": auditor},
    }
    path = root / "bastion.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return BastionEnv(root, path, made, list(made))


class ServedBastion:
    """``bastion serve`` as a real process tree; stopped by PID."""

    def __init__(self, env: BastionEnv, workers: int = 2, *, own_group: bool = False) -> None:
        """``own_group``: in a process group of its own, which a test may kill whole."""
        self.env = env
        self.workers = workers
        self.own_group = own_group
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> ServedBastion:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bastion.cli.main",
                "serve",
                "--config",
                str(self.env.config_path),
                "--workers",
                str(self.workers),
            ],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=self.own_group,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"bastion serve did not start: {line!r}")
        self.port = int(line.split(" with ")[0].rsplit(":", 1)[1])
        return self

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        return code
