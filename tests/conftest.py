"""Shared fixtures: a valid configuration on disk, and a guard against leaked tasks."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from postgres_server import PostgresServer, running_postgres
from state_backends import Backend

from bastion.state.database import PostgresLocation

IMAGE = "registry.example.com/debug-toolbox@sha256:" + "ab" * 32
FAKE_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail any async test that leaves tasks running: a leaked task is a leaked session."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [
        t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()
    ]
    for task in leaked:
        task.cancel()
    assert not leaked, f"test left tasks running: {leaked}"


def ed25519_line(comment: str = "user@test") -> str:
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def secret_file(path: Path, content: bytes = b"secret\n", mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    return path


def base_config(root: Path) -> dict[str, Any]:
    """A complete, valid configuration whose files live under ``root``."""
    secret_file(root / "totp" / "alice")
    secret_file(root / "totp" / "bob")
    secret_file(root / "approle-secret-id")
    (root / "ca").mkdir(exist_ok=True)
    (root / "ca" / "prod.pem").write_bytes(FAKE_PEM)
    (root / "ca" / "vault.pem").write_bytes(FAKE_PEM)
    return {
        "listener": {"address": "127.0.0.1", "port": 2222, "host_key": "host_ed25519"},
        "users": [
            {
                "name": "alice",
                "groups": ["oncall"],
                "public_keys": [ed25519_line("alice@test")],
                "totp_secret_file": "totp/alice",
            },
            {
                "name": "bob",
                "groups": ["platform"],
                "public_keys": [ed25519_line("bob@test")],
                "totp_secret_file": "totp/bob",
            },
        ],
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
                "namespaces": ["payments", "payments-*"],
                "pod_selector": "app in (api,worker)",
                "modes": ["ephemeral"],
                "images": [IMAGE],
                "max_session": "30m",
                "idle_timeout": "10m",
                "reason_required": True,
                "vault_role": "debug-payments",
            },
            {
                "name": "platform",
                "groups": ["platform"],
                "clusters": ["prod-eu"],
                "namespaces": ["*"],
                "modes": ["ephemeral", "copy", "pod"],
                "images": [IMAGE],
                "vault_role": "debug-all",
            },
        ],
        "vault": {
            "address": "https://vault.example.com:8200",
            "ca_file": "ca/vault.pem",
            "approle": {"role_id": "role-1234", "secret_id_file": "approle-secret-id"},
        },
        "paths": {
            "state_dir": "state",
            "audit_log": "state/audit.jsonl",
            "recordings_dir": "state/recordings",
        },
    }


WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write ``base_config`` (optionally edited by a callback) to tmp_path/bastion.yaml."""

    def write(
        edit: Callable[[dict[str, Any]], None] | None = None, text: str | None = None
    ) -> Path:
        path = tmp_path / "bastion.yaml"
        data = base_config(tmp_path)
        if edit is not None:
            edit(data)
        path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
        return path

    return write


# ---------------------------------------------------------------- PostgreSQL (issue 12)
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole run (about 1.2 s to start here); each test
    gets a database of its own from :func:`postgres_url`."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_location(postgres_server: PostgresServer, tmp_path: Path) -> PostgresLocation:
    """A fresh, empty database (about 70 ms), reached as the bastion would: a URL without
    password, the password in a 0600 file, plain TCP on loopback (the TLS rule allows it)."""
    name = postgres_server.create_database()
    password_file = secret_file(tmp_path / "pg-password", postgres_server.password.encode())
    return PostgresLocation(url=postgres_server.url(name), password_file=password_file)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each state-store contract test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path)
    location: PostgresLocation = request.getfixturevalue("postgres_location")
    return Backend("postgresql", tmp_path, location)
