"""The broker's approvals desk against the real store and audit log: a debug leaves a request
or spends an approval, decisions in consoles (and their refusals) are recorded, an approval
that cannot be recorded is taken back, and expiry is reported once across workers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from conftest import WriteConfig

from bastion.approval import ApprovalNeed, ApprovalRule, Approvers, DebugKey, Status
from bastion.audit.log import AuditLog, load_or_create_hmac_key
from bastion.config import load_config
from bastion.console_protocol import Approvals, DecideApproval, ListApprovals
from bastion.errors import AuditUnavailable, BackendUnavailable, PolicyDenied
from bastion.policy import Principal
from bastion.session.approvals import ApprovalDesk, ApprovalPending
from bastion.session.broker import SessionBroker
from bastion.session.lifecycle import Ending, State
from bastion.session.session import Session

TOOLBOX = "registry.example.com/toolbox@sha256:" + "a" * 64
ALICE = Principal("alice", frozenset({"oncall"}))
CAROL = Principal("carol", frozenset({"leads"}))
DAVE = Principal("dave", frozenset({"oncall"}))
NEED = ApprovalNeed.combine([("prod-db", ApprovalRule(Approvers(groups=frozenset({"leads"}))))])
assert NEED is not None


def key(pod: str = "db-0") -> DebugKey:
    return DebugKey("prod-eu", "payments", pod, f"uid-{pod}", "db", "ephemeral", TOOLBOX,
                    65532, 1800, NEED.canonical())  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Bastion:
    """Two workers' brokers on one state directory, and the audit log they share."""

    def __init__(self, brokers: list[SessionBroker], audit: AuditLog, clock: Clock) -> None:
        self.brokers, self.audit, self.clock = brokers, audit, clock

    @property
    def desk(self) -> ApprovalDesk:
        return self.brokers[0].approvals

    async def session(self, user: str, worker: int = 0) -> Session:
        session = await self.brokers[worker].open(user=user, source="192.0.2.1:5000",
                                                   connection=f"c-{user}")  # fmt: skip
        await session.move(State.BROWSING)
        return session

    def events(self, event: str) -> list[dict[str, Any]]:
        lines = self.audit.path.read_text().splitlines()
        return [e for e in map(json.loads, lines) if e["event"] == event]

    async def ask(self, session: Session, principal: Principal, pod: str = "db-0") -> Any:
        return await self.desk.admit(session, principal=principal, key=key(pod),
                                     reason="INC-7 \x1b[2J locks", need=NEED)  # fmt: skip


@pytest.fixture
async def bastion(write_config: WriteConfig) -> AsyncIterator[Bastion]:
    config = load_config(write_config())
    state = config.paths.state_dir
    state.mkdir(parents=True, exist_ok=True)
    audit = AuditLog(config.paths.audit_log, hmac_key=load_or_create_hmac_key(state / "key"))
    audit.open()
    clock = Clock()
    brokers = [SessionBroker(config, audit, clock=clock) for _ in range(2)]
    try:
        yield Bastion(brokers, audit, clock)
    finally:
        for broker in brokers:
            for session in list(broker.sessions.values()):
                await session.end(Ending.LOGOUT)
            await broker.shutdown()
            broker.close()
        await audit.aclose()


async def test_a_debug_leaves_one_request_and_asking_again_finds_it(bastion: Bastion) -> None:
    alice = await bastion.session("alice")
    with pytest.raises(ApprovalPending) as first:
        await bastion.ask(alice, ALICE)
    assert first.value.new
    assert "needs the approval of another operator (groups leads): request" in first.value.message
    with pytest.raises(ApprovalPending) as again:
        await bastion.ask(alice, ALICE)
    assert (again.value.new, again.value.request.id) == (False, first.value.request.id)
    with pytest.raises(ApprovalPending) as other:
        await bastion.ask(alice, ALICE, pod="db-1")
    assert other.value.new
    [requested, _] = bastion.events("approval.requested")
    assert (requested["actor"], requested["session"]) == ("alice", alice.id)
    assert requested["reason"] == "INC-7 ?[2J locks"  # neutralised before it is stored
    assert requested["approvers"] == "groups leads"


async def test_an_approval_is_spent_by_the_debug_it_covers_once(bastion: Bastion) -> None:
    alice, carol = await bastion.session("alice"), await bastion.session("carol", worker=1)
    with pytest.raises(ApprovalPending) as pending:
        await bastion.ask(alice, ALICE)
    wanted = pending.value.request.id
    # Carol's console runs on another worker: the store is shared.
    answer = await bastion.brokers[1].approvals.answer(
        carol, CAROL, DecideApproval(7, wanted, True, "ok")
    )
    assert answer.type == "approval_decided"
    used = await bastion.ask(alice, ALICE)
    assert (used.id, used.decided_by) == (wanted, "carol")
    with pytest.raises(ApprovalPending) as next_time:
        await bastion.ask(alice, ALICE)
    assert next_time.value.new
    [approved] = bastion.events("approval.approved")
    assert (approved["actor"], approved["session"], approved["via"]) == ("carol", carol.id,
                                                                         "console")  # fmt: skip
    [spent] = bastion.events("approval.used")
    assert (spent["actor"], spent["request"], spent["approved_by"]) == ("alice", wanted, "carol")


async def test_refusals_are_sentences_and_are_recorded(bastion: Bastion) -> None:
    alice, dave = await bastion.session("alice"), await bastion.session("dave")
    with pytest.raises(ApprovalPending) as pending:
        await bastion.ask(alice, ALICE)
    wanted = pending.value.request.id
    with pytest.raises(PolicyDenied, match="is your own, and nobody approves their own"):
        await bastion.desk.decide(alice, Principal("alice", frozenset({"leads"})), wanted,
                                  approve=True, reason="")  # fmt: skip
    with pytest.raises(PolicyDenied, match=r"not one of the approvers .* \(groups leads\)"):
        await bastion.desk.decide(dave, DAVE, wanted, approve=True, reason="")
    with pytest.raises(PolicyDenied, match="a denial needs a reason"):
        await bastion.desk.decide(dave, DAVE, wanted, approve=False, reason=" ")
    with pytest.raises(PolicyDenied, match="there is no approval request 'nope'"):
        await bastion.desk.decide(dave, DAVE, "nope", approve=True, reason="")
    [self_refused] = bastion.events("approval.self_approval_refused")
    assert (self_refused["actor"], self_refused["request"]) == ("alice", wanted)
    refused = bastion.events("approval.decision_refused")
    assert [(e["actor"], e["why"]) for e in refused] == [("dave", "not_approver"),
                                                         ("dave", "unknown")]  # fmt: skip
    request = await bastion.brokers[0].in_db(bastion.desk.store.get, wanted)
    assert request.status is Status.PENDING


async def test_the_requester_may_withdraw_by_denying(bastion: Bastion) -> None:
    alice = await bastion.session("alice")
    with pytest.raises(ApprovalPending) as pending:
        await bastion.ask(alice, ALICE)
    denied = await bastion.desk.decide(alice, ALICE, pending.value.request.id, approve=False,
                                       reason="not needed any more")  # fmt: skip
    assert (denied.status, denied.decided_by) == (Status.DENIED, "alice")


async def test_an_approval_that_cannot_be_recorded_is_taken_back(
    bastion: Bastion, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, carol = await bastion.session("alice"), await bastion.session("carol")
    with pytest.raises(ApprovalPending) as pending:
        await bastion.ask(alice, ALICE)
    wanted = pending.value.request.id
    real = bastion.audit.record

    async def full_disk(event: str, **fields: Any) -> dict[str, Any]:
        if event == "approval.approved":
            raise AuditUnavailable("cannot write the audit log: No space left on device")
        return await real(event, **fields)

    monkeypatch.setattr(bastion.audit, "record", full_disk)
    with pytest.raises(AuditUnavailable, match="could not be recorded, so it was taken back"):
        await bastion.desk.decide(carol, CAROL, wanted, approve=True, reason="ok")
    request = await bastion.brokers[0].in_db(bastion.desk.store.get, wanted)
    assert (request.status, request.decided_by) == (Status.PENDING, None)
    assert carol.ending is Ending.ERROR  # a session that cannot be recorded ends
    with pytest.raises(ApprovalPending):  # nothing to spend
        await bastion.ask(alice, ALICE)


async def test_expiry_is_reported_once_whichever_worker_sweeps(bastion: Bastion) -> None:
    alice = await bastion.session("alice")
    with pytest.raises(ApprovalPending) as pending:
        await bastion.ask(alice, ALICE)
    bastion.clock.now += 599
    assert await bastion.brokers[0].approvals.sweep() == []
    bastion.clock.now += 1
    swept = [await broker.approvals.sweep() for broker in bastion.brokers]
    assert sorted(len(found) for found in swept) == [0, 1]
    [expired] = bastion.events("approval.expired")
    assert (expired["actor"], expired["request"], expired["was"]) == (
        "bastion", pending.value.request.id, "pending",
    )  # fmt: skip


async def test_a_console_lists_its_own_requests_and_those_it_may_decide(
    bastion: Bastion,
) -> None:
    alice, carol = await bastion.session("alice"), await bastion.session("carol")
    with pytest.raises(ApprovalPending) as mine:
        await bastion.ask(alice, ALICE)
    with pytest.raises(ApprovalPending):
        await bastion.ask(carol, Principal("carol", frozenset({"leads", "oncall"})), pod="db-1")
    listed = await bastion.desk.answer(carol, CAROL, ListApprovals(3))
    assert isinstance(listed, Approvals)
    by_pod = {item.pod: item for item in listed.items}
    assert (by_pod["db-0"].id, by_pod["db-0"].can_decide, by_pod["db-0"].mine) == (
        mine.value.request.id, True, False,
    )  # fmt: skip
    assert (by_pod["db-1"].can_decide, by_pod["db-1"].mine) == (False, True)
    others = await bastion.desk.answer(await bastion.session("dave"), DAVE, ListApprovals(4))
    assert isinstance(others, Approvals)
    assert others.items == []  # not an approver, nothing of his own


async def test_waiting_ends_with_the_decision(bastion: Bastion) -> None:
    alice, carol = await bastion.session("alice"), await bastion.session("carol")
    with pytest.raises(ApprovalPending) as pending:
        await bastion.ask(alice, ALICE)
    said: list[str] = []
    waiting = asyncio.create_task(
        bastion.desk.wait(alice, pending.value.request, progress=said.append, stop=lambda: False)
    )
    await asyncio.sleep(0.05)
    await bastion.desk.decide(carol, CAROL, pending.value.request.id, approve=True, reason="go")
    approved = await asyncio.wait_for(waiting, 10)
    assert approved.status is Status.APPROVED
    assert said[-1] == f"request {approved.id} was approved by carol: go"


async def test_waiting_can_be_given_up_and_the_request_stays(bastion: Bastion) -> None:
    alice = await bastion.session("alice")
    with pytest.raises(ApprovalPending) as pending:
        await bastion.ask(alice, ALICE)
    stop: Callable[[], bool] = lambda: True  # noqa: E731 - the operator pressed Ctrl-C
    with pytest.raises(PolicyDenied, match=r"you stopped waiting; request .* stays open"):
        await bastion.desk.wait(alice, pending.value.request, progress=print, stop=stop)
    request = await bastion.brokers[0].in_db(bastion.desk.store.get, pending.value.request.id)
    assert request.status is Status.PENDING


async def test_a_failing_store_is_one_sentence(
    bastion: Bastion, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await bastion.session("alice")

    def locked(*_args: object, **_kwargs: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(bastion.desk.store, "open_for", locked)
    with pytest.raises(BackendUnavailable, match="could not be read or written; try again"):
        await bastion.ask(alice, ALICE)


async def test_consoles_polling_together_share_one_read_of_the_open_requests(
    bastion: Bastion, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await bastion.session("alice")
    store = bastion.desk.store
    reads: list[float] = []
    real = store.open_requests

    def counted(now: float) -> list[Any]:
        reads.append(now)
        return real(now)

    monkeypatch.setattr(store, "open_requests", counted)
    for _ in range(5):  # five consoles' polls within a second
        assert await bastion.desk.items(CAROL) == []
    assert len(reads) == 1
    with pytest.raises(ApprovalPending):  # a change in this worker is seen at once
        await bastion.ask(alice, ALICE)
    assert [i.pod for i in await bastion.desk.items(CAROL)] == ["db-0"]
    assert len(reads) == 2
    bastion.clock.now += 1.0
    await bastion.desk.items(CAROL)
    assert len(reads) == 3
