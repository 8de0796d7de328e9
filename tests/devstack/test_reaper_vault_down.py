"""A wipe that Vault being down cut short, finished by the reaper, end to end: a session's
real Kubernetes credential from OpenBao, OpenBao frozen (SIGSTOP) while the session is wiped,
then thawed and swept, by the live worker that closed the session or after a restart.

Each test gets a throwaway kubesim + OpenBao: freezing the shared ``local_stack`` would stall
every other test using it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import hvac.exceptions
import pytest
from kube_contract import ResponseLog, response_recorder

from bastion.audit.log import AuditLog, load_or_create_hmac_key
from bastion.config import Config
from bastion.devstack.stack import VaultRole
from bastion.policy import DebugRequest, DebugTarget, Mode
from bastion.session.broker import SessionBroker
from bastion.session.cleaners import lease_cleaner
from bastion.session.debug import start_debug
from bastion.session.lifecycle import Ending, State
from bastion.session.reaper import Cleaner, Reaper, SweepReport, temp_dir_cleaner
from bastion.state.journal import Journal
from bastion.vault import VaultClient
from devstack.conftest import STACK_FIXTURE
from devstack.kubesim_harness import ThreadedStack
from devstack.test_debug_credentials import ALICE, IMAGE, config_for
from devstack.test_vault import Frozen, pods, root, service_account_exists, vault_config

# Short enough that the wipe gives up in about 2 s (5 attempts), long enough for a loaded
# machine to answer a healthy OpenBao.
VAULT_TIMEOUT = timedelta(milliseconds=300)


class QuickRetries(VaultClient):
    """The real client, waiting 50 ms rather than 0.5 s before its first retry of a
    revocation. The wipe revokes with the defaults, so it still makes its 5 attempts, and
    the test waits for their timeouts rather than for the back-off between them."""

    async def revoke_lease(
        self, lease_id: str, *, attempts: int = 5, first_delay: float = 0.05
    ) -> None:
        await super().revoke_lease(lease_id, attempts=attempts, first_delay=first_delay)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ThreadedStack]:
    running = ThreadedStack(
        tmp_path / "stack",
        STACK_FIXTURE,
        roles=[VaultRole("debug", ("payments",), modes=(Mode.EPHEMERAL,))],
    )
    responses = response_recorder(running.stack.kubesim.api, ResponseLog())
    running.start()
    try:
        yield running
    finally:
        pid = running.stack.openbao.pid
        if pid is not None:
            os.killpg(pid, signal.SIGCONT)  # a test that failed frozen must not block stop
        running.stop()
    responses.validate_all()


@dataclass
class Worker:
    """What one bastion worker holds: its config, audit log, broker and Vault client."""

    config: Config
    audit: AuditLog
    broker: SessionBroker
    vault: VaultClient

    @property
    def journal_path(self) -> Path:
        return self.config.paths.state_dir / "journal.db"

    def cleaners(self) -> dict[str, Cleaner]:
        return {
            "temp_dir": temp_dir_cleaner(self.broker.temp_root),
            "lease": lease_cleaner(self.vault),
        }

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = self.config.paths.audit_log.read_bytes().splitlines()
        return [e for e in map(json.loads, lines) if e["event"] == name]

    async def stop(self) -> None:
        await self.broker.shutdown()
        self.broker.close()
        await self.vault.close()


async def start_worker(info: dict[str, Any], root_dir: Path) -> Worker:
    config = config_for(info, root_dir)
    state = config.paths.state_dir
    state.mkdir(parents=True, exist_ok=True)
    audit = AuditLog(config.paths.audit_log, hmac_key=load_or_create_hmac_key(state / "key"))
    audit.open()
    vault = QuickRetries(vault_config(info, timeout=VAULT_TIMEOUT))
    return Worker(config, audit, SessionBroker(config, audit), vault)


@pytest.fixture
async def worker(stack: ThreadedStack, tmp_path: Path) -> AsyncIterator[Worker]:
    running = await start_worker(stack.stack.info, tmp_path / "bastion")
    try:
        yield running
    finally:
        await running.stop()
        await running.audit.aclose()


@dataclass(frozen=True)
class Leftover:
    """A session whose wipe could not revoke its credential."""

    session: str
    lease_id: str
    token: str
    service_account: str


def drop_idle_connections(vault: VaultClient) -> None:
    """Close the client's kept-alive connections to OpenBao (it opens new ones as needed).

    A request written to one of them while OpenBao is frozen waits in its socket buffer and
    is served as soon as it thaws, although the client gave up on it long before: the wipe's
    own revocation would then land about 0.1 s after SIGCONT (seen here), and the reaper
    would find nothing to do. On a new connection the request never gets past the TLS
    handshake, which the client has abandoned by the time OpenBao answers it.
    """
    with vault._adapters_lock:
        adapters = list(vault._adapters)
    for adapter in adapters:
        adapter.session.close()


def lease_known(info: dict[str, Any], lease_id: str) -> bool:
    try:
        root(info).sys.read_lease(lease_id)
    except hvac.exceptions.InvalidRequest:  # 400 "invalid lease"
        return False
    return True


async def wipe_while_vault_is_frozen(stack: ThreadedStack, worker: Worker) -> Leftover:
    """Open a session, get its credential, and end it with OpenBao frozen; OpenBao is
    thawed again on return, whatever happens."""
    info = stack.stack.info
    session = await worker.broker.open(user="alice", source="192.0.2.1:5000", connection="c")
    await session.move(State.BROWSING)
    access = await start_debug(
        session,
        config=worker.config,
        vault=worker.vault,
        principal=ALICE,
        target=DebugTarget("local", "payments", "api-1", {"app": "api"}),
        request=DebugRequest(Mode.EPHEMERAL, IMAGE),
    )
    credential = access.credential
    left = Leftover(
        session.id, credential.lease_id, credential.token.reveal(), credential.service_account
    )
    drop_idle_connections(worker.vault)
    with Frozen(stack):
        outcomes = await session.end(Ending.LOGOUT)
        # Still frozen: kubesim (not frozen) keeps honouring the token Vault could not revoke.
        assert pods(info, left.token, "payments") == ["api-1"]
    assert [(o["kind"], o["outcome"]) for o in outcomes] == [
        ("lease", "failed"),
        ("temp_dir", "removed"),
    ]
    # Thawed, and given time to serve anything it read late, Vault still knows the lease:
    # what revokes it below is the reaper, not a request of the wipe.
    await asyncio.sleep(0.5)
    assert lease_known(info, left.lease_id)
    assert service_account_exists(info, "payments", left.service_account)
    return left


def check_wiped_with_an_alert(worker: Worker, left: Leftover) -> None:
    [wiped] = worker.events("session.wiped")
    assert (wiped["session"], wiped["outcome"]) == (left.session, "alert")
    [lease] = [r for r in wiped["resources"] if r["kind"] == "lease"]
    # The audit log keeps lease ids as keyed HMACs only.
    assert (lease["lease_id"], lease["outcome"]) == (
        worker.audit.reference(left.lease_id),
        "failed",
    )
    assert "did not answer within 0.3 s" in lease["error"]
    assert "gave up after 5 attempts" in lease["error"]


def check_reaped(info: dict[str, Any], worker: Worker, left: Leftover, report: SweepReport) -> None:
    assert [(o.session, o.kind, o.outcome) for o in report.outcomes] == [
        (left.session, "lease", "cleaned")
    ]
    assert report.closed == (left.session,)
    assert pods(info, left.token, "payments") == 401
    assert not service_account_exists(info, "payments", left.service_account)
    assert not lease_known(info, left.lease_id)
    [cleaned] = worker.events("reaper.cleaned")
    assert (cleaned["session"], cleaned["kind"], cleaned["result"]) == (
        left.session,
        "lease",
        "revoked",
    )
    assert cleaned["ref"]["lease_id"] == worker.audit.reference(left.lease_id)
    assert (cleaned["status_before"], cleaned["attempts"]) == ("failed", 2)  # the wipe's, ours
    [reaped] = worker.events("session.reaped")
    assert (reaped["session"], reaped["outcome"], reaped["previous_state"]) == (
        left.session,
        "closed",
        "closed",
    )


def nothing_pending(path: Path, session: str) -> bool:
    journal = Journal(path)
    try:
        record = journal.session(session)
        return record is not None and record.closed and journal.pending(session) == []
    finally:
        journal.close()


async def test_the_live_worker_that_closed_the_session_revokes_the_lease_once_vault_is_back(
    stack: ThreadedStack, worker: Worker
) -> None:
    info = stack.stack.info
    left = await wipe_while_vault_is_frozen(stack, worker)
    check_wiped_with_an_alert(worker, left)
    # The worker's own reaper, on the broker's journal and thread, as bastion.ssh.worker
    # runs it; the owner of the session (this process) is alive.
    reaper = Reaper(
        worker.broker.journal,
        worker.cleaners(),
        worker.audit,
        in_db=worker.broker.in_db,
        backoff_base=0,
    )
    try:
        report = await reaper.sweep()
        check_reaped(info, worker, left, report)
        assert nothing_pending(worker.journal_path, left.session)
        assert (await reaper.sweep()).orphans == 0
    finally:
        await reaper.aclose()


async def test_a_restarted_worker_revokes_the_lease(stack: ThreadedStack, tmp_path: Path) -> None:
    info = stack.stack.info
    before = await start_worker(info, tmp_path / "bastion")
    try:
        left = await wipe_while_vault_is_frozen(stack, before)
        check_wiped_with_an_alert(before, left)
    finally:
        await before.stop()
        await before.audit.aclose()
    after = await start_worker(info, tmp_path / "bastion")
    reaper = Reaper(
        lambda: Journal(after.journal_path), after.cleaners(), after.audit, backoff_base=0
    )
    try:
        report = await reaper.sweep()
    finally:
        await reaper.aclose()
        await after.stop()
        await after.audit.aclose()
    check_reaped(info, after, left, report)
    assert nothing_pending(after.journal_path, left.session)
