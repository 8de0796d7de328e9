"""Starting a debug against the real OpenBao and kubesim: the policy decision, a credential
for exactly the target namespace, the pod checked with it, and — on every failure — the
credential revoked at once and the session back in the console. The wipe revokes the rest."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bastion.audit.log import AuditLog, load_or_create_hmac_key
from bastion.config import Config
from bastion.errors import BackendUnavailable, PolicyDenied
from bastion.policy import DebugRequest, DebugTarget, Mode, Principal
from bastion.session.broker import SessionBroker
from bastion.session.debug import start_debug
from bastion.session.lifecycle import Ending, State
from bastion.session.session import Session
from bastion.state.journal import Journal
from bastion.vault import VaultClient
from devstack.kubesim_harness import ThreadedStack
from devstack.test_vault import pods, service_account_exists

IMAGE = "registry.example.com/debug-toolbox@sha256:" + "ab" * 32
ALICE = Principal("alice", frozenset({"oncall"}))


def config_for(info: dict[str, Any], root: Path, **grant: Any) -> Config:
    data = {
        "listener": {"address": "127.0.0.1", "port": 0, "host_key": str(root / "host")},
        "clusters": [
            {
                "name": "local",
                "api_url": info["kube_api"],
                "ca_file": info["kube_ca"],
                "vault_mount": info["vault_kubernetes_mount"],
            }
        ],
        "grants": [
            {
                "name": "oncall",
                "groups": ["oncall"],
                "clusters": ["local"],
                "namespaces": ["payments"],
                "pod_selector": "app=api",
                "images": [IMAGE],
                "max_session": "30m",
                "vault_role": "debug",
                **grant,
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
            "state_dir": str(root / "state"),
            "audit_log": str(root / "state" / "audit.jsonl"),
            "recordings_dir": str(root / "state" / "rec"),
        },
    }
    return Config.model_validate(data)


class Env:
    def __init__(self, config: Config, broker: SessionBroker, vault: VaultClient) -> None:
        self.config, self.broker, self.vault = config, broker, vault

    async def session(self) -> Session:
        session = await self.broker.open(user="alice", source="192.0.2.1:5000", connection="c")
        await session.move(State.BROWSING)
        return session

    async def debug(self, session: Session, pod: str = "api-1", **labels: str) -> Any:
        return await start_debug(
            session,
            config=self.config,
            vault=self.vault,
            principal=ALICE,
            target=DebugTarget("local", "payments", pod, labels or {"app": "api"}),
            request=DebugRequest(Mode.EPHEMERAL, IMAGE),
        )


@contextlib.asynccontextmanager
async def make_env(info: dict[str, Any], root: Path, **grant: Any) -> AsyncIterator[Env]:
    config = config_for(info, root, **grant)
    config.paths.state_dir.mkdir(parents=True)
    audit = AuditLog(
        config.paths.audit_log,
        hmac_key=load_or_create_hmac_key(config.paths.state_dir / "key"),
    )
    audit.open()
    broker = SessionBroker(config, audit)
    vault = VaultClient(config.vault)
    try:
        yield Env(config, broker, vault)
    finally:
        await broker.shutdown()
        broker.close()
        await vault.close()
        await audit.aclose()


@pytest.fixture
async def env(local_stack: ThreadedStack, tmp_path: Path) -> AsyncIterator[Env]:
    async with make_env(local_stack.stack.info, tmp_path) as made:
        yield made


def journal_resources(env: Env, session: Session) -> list[Any]:
    journal = Journal(env.config.paths.state_dir / "journal.db")
    try:
        return journal.resources(session.id)
    finally:
        journal.close()


async def test_a_credential_for_the_target_namespace_until_the_wipe(
    env: Env, local_stack: ThreadedStack
) -> None:
    info = local_stack.stack.info
    session = await env.session()
    access = await env.debug(session)
    assert session.state is State.STARTING_DEBUG
    assert access.pod["metadata"]["name"] == "api-1"
    assert access.limits.vault_role == "debug"
    token = access.credential.token.reveal()
    assert pods(info, token, "payments") == ["api-1"]
    assert pods(info, token, "checkout") == 403
    lease = next(r for r in journal_resources(env, session) if r.kind == "lease")
    assert lease.status == "created"
    assert lease.ref["lease_id"] == access.credential.lease_id
    assert lease.ref["namespace"] == "payments"
    outcomes = await session.end(Ending.LOGOUT)
    assert outcomes[0]["kind"] == "lease"
    assert outcomes[0]["outcome"] == "revoked"
    assert pods(info, token, "payments") == 401
    assert not service_account_exists(info, "payments", access.credential.service_account)
    assert all(r.status == "removed" for r in journal_resources(env, session))


async def test_a_console_that_lies_about_labels_gets_nothing(
    local_stack: ThreadedStack, tmp_path: Path
) -> None:
    async with make_env(local_stack.stack.info, tmp_path, pod_selector="app=web") as env:
        session = await env.session()
        with pytest.raises(PolicyDenied, match="app=web"):
            await env.debug(session, app="web")  # the real pod says app=api
        assert session.state is State.BROWSING
        lease = next(r for r in journal_resources(env, session) if r.kind == "lease")
        assert lease.status == "removed"  # issued, then revoked at once
        account = lease.ref["service_account"]
        assert not service_account_exists(local_stack.stack.info, "payments", account)


async def test_a_missing_pod_revokes_the_credential_and_keeps_the_session(env: Env) -> None:
    session = await env.session()
    with pytest.raises(PolicyDenied, match="could not read pod payments/gone-1: it does not"):
        await env.debug(session, pod="gone-1")
    assert session.state is State.BROWSING
    assert [r.status for r in journal_resources(env, session) if r.kind == "lease"] == ["removed"]
    access = await env.debug(session)  # the session is still usable for another choice
    assert access.pod["metadata"]["name"] == "api-1"


async def test_a_missing_vault_role_is_one_sentence_and_nothing_is_left(
    local_stack: ThreadedStack, tmp_path: Path
) -> None:
    async with make_env(local_stack.stack.info, tmp_path, vault_role="nope") as env:
        session = await env.session()
        with pytest.raises(BackendUnavailable) as caught:
            await env.debug(session)
        assert "nope" in caught.value.message
        assert session.state is State.BROWSING
        leases = [r for r in journal_resources(env, session) if r.kind == "lease"]
        assert [r.status for r in leases] == ["removed"]  # planned, never issued


async def test_policy_refusal_comes_before_any_request(env: Env) -> None:
    session = await env.session()
    with pytest.raises(PolicyDenied):
        await start_debug(
            session,
            config=env.config,
            vault=env.vault,
            principal=Principal("mallory", frozenset({"interns"})),
            target=DebugTarget("local", "payments", "api-1", {"app": "api"}),
            request=DebugRequest(Mode.EPHEMERAL, IMAGE),
        )
    assert session.state is State.BROWSING
    assert [r.kind for r in journal_resources(env, session)] == ["temp_dir"]
