"""Four-eyes approval, the pure rules: who may decide, what an approval covers, when it
lapses, and how the policy engine combines the approval rules of covering grants."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.approval import (
    ApprovalNeed,
    ApprovalRequest,
    ApprovalRule,
    Approvers,
    DebugKey,
    Refusal,
    Status,
    approvers_from_canonical,
    decision_refusal,
)
from bastion.labels import parse_selector
from bastion.policy import DebugRequest, DebugTarget, Grant, Mode, Policy, Principal, decide

NOW = 1_800_000_000.0
TOOLBOX = "registry.example.com/toolbox@sha256:" + "a" * 64
LEADS = Approvers(groups=frozenset({"leads"}))
CAROL = Approvers(users=frozenset({"carol"}))


def need(*approvers: Approvers, minutes: int = 10) -> ApprovalNeed:
    found = ApprovalNeed.combine(
        (f"g{i}", ApprovalRule(a, timedelta(minutes=minutes))) for i, a in enumerate(approvers)
    )
    assert found is not None
    return found


def key(**overrides: object) -> DebugKey:
    fields: dict[str, object] = {
        "cluster": "prod", "namespace": "shop", "pod": "web-1", "pod_uid": "uid-1",
        "container": "app", "mode": "ephemeral", "image": TOOLBOX, "run_as_user": 65532,
        "duration_seconds": 1800, "approvers": need(LEADS).canonical(),
    }  # fmt: skip
    fields.update(overrides)
    return DebugKey(**fields)  # type: ignore[arg-type]


def request(**overrides: object) -> ApprovalRequest:
    fields: dict[str, object] = {
        "id": "3f2a9c0d81e4", "requester": "alice", "session": "s1", "key": key(),
        "reason": "INC-7 checkout 500s", "grants": ("g0",), "expires_after": 600.0,
        "status": Status.PENDING, "requested_at": NOW, "expires_at": NOW + 600,
    }  # fmt: skip
    fields.update(overrides)
    return ApprovalRequest(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- approvers
def test_approvers_admit_named_users_and_members_of_named_groups() -> None:
    both = Approvers(frozenset({"carol"}), frozenset({"leads"}))
    assert both.admits("carol", [])
    assert both.admits("dave", ["oncall", "leads"])
    assert not both.admits("alice", ["oncall"])
    assert both.describe() == "users carol; groups leads"


def test_several_grants_requiring_approval_want_an_approver_each_of_them_admits() -> None:
    together = need(LEADS, CAROL, minutes=30)
    assert together.admits("carol", ["leads"])
    assert not together.admits("carol", ["oncall"])  # not a lead
    assert not together.admits("dave", ["leads"])  # not carol
    assert together.describe() == "(groups leads) and (users carol)"


def test_the_shortest_expiry_wins_and_the_order_of_grants_does_not_matter() -> None:
    one = ApprovalNeed.combine(
        [("a", ApprovalRule(LEADS, timedelta(minutes=30))), ("b", ApprovalRule(CAROL))]
    )
    two = ApprovalNeed.combine(
        [("b", ApprovalRule(CAROL)), ("a", ApprovalRule(LEADS, timedelta(minutes=30)))]
    )
    assert one is not None
    assert two is not None
    assert one.expires_after == timedelta(minutes=10)
    assert one.canonical() == two.canonical()
    assert ApprovalNeed.combine([]) is None


def test_the_stored_approvers_read_back_and_anything_else_is_refused() -> None:
    together = need(LEADS, CAROL)
    assert approvers_from_canonical(together.canonical()) == together.approvers
    for bad in ("", "{}", "[]", '[{"users": []}]', '[{"users": [1], "groups": []}]'):
        with pytest.raises(ValueError, match="approvers"):
            approvers_from_canonical(bad)


# ---------------------------------------------------------------------------- lapsing
def test_a_request_lapses_at_its_expiry_whether_or_not_a_sweep_marked_it() -> None:
    pending = request()
    assert pending.status_at(NOW + 599.9) is Status.PENDING
    assert pending.status_at(NOW + 600) is Status.EXPIRED
    approved = request(status=Status.APPROVED, decided_by="carol", expires_at=NOW + 900)
    assert approved.status_at(NOW + 899) is Status.APPROVED
    assert approved.status_at(NOW + 900) is Status.EXPIRED
    for final in (Status.DENIED, Status.USED, Status.EXPIRED):
        assert request(status=final).status_at(NOW + 10_000) is final


# ---------------------------------------------------------------------------- coverage
@pytest.mark.parametrize(
    "other",
    [
        {"pod": "web-2"},
        {"pod_uid": "uid-2"},  # the same name, recreated: another pod
        {"namespace": "shop-2"},
        {"cluster": "prod-us"},
        {"container": "sidecar"},
        {"mode": "copy"},
        {"image": "registry.example.com/other@sha256:" + "b" * 64},
        {"run_as_user": 1000},
        {"duration_seconds": 3600},
        {"approvers": need(CAROL).canonical()},  # policy changed since
    ],
)
def test_an_approval_covers_exactly_its_debug_and_nothing_else(other: dict[str, object]) -> None:
    approved = request(status=Status.APPROVED, decided_by="carol")
    assert approved.covers("alice", key(), NOW)
    assert not approved.covers("alice", key(**other), NOW)


def test_an_approval_covers_its_requester_only_and_only_while_approved() -> None:
    approved = request(status=Status.APPROVED, decided_by="carol")
    assert not approved.covers("bob", key(), NOW)
    assert not approved.covers("alice", key(), NOW + 600)
    assert not request().covers("alice", key(), NOW)  # pending
    assert not replace(approved, status=Status.USED).covers("alice", key(), NOW)


# ---------------------------------------------------------------------------- deciding
def refusal(req: ApprovalRequest, decider: str, groups: list[str], *, approve: bool = True,
            now: float = NOW, administrator: bool = False) -> Refusal | None:  # fmt: skip
    found = decision_refusal(
        req, decider=decider, groups=groups, approve=approve, now=now, administrator=administrator
    )
    return None if found is None else found[0]


def test_an_approver_may_approve_or_deny_a_pending_request() -> None:
    assert refusal(request(), "carol", ["leads"]) is None
    assert refusal(request(), "carol", ["leads"], approve=False) is None


def test_nobody_approves_their_own_request_not_even_an_approver_or_an_administrator() -> None:
    assert refusal(request(), "alice", ["leads"]) is Refusal.SELF_APPROVAL
    assert refusal(request(), "alice", [], administrator=True) is Refusal.SELF_APPROVAL


def test_a_requester_may_withdraw_their_own_request_by_denying_it() -> None:
    assert refusal(request(), "alice", ["oncall"], approve=False) is None


def test_others_are_not_approvers_unless_administrators() -> None:
    assert refusal(request(), "bob", ["oncall"]) is Refusal.NOT_APPROVER
    assert refusal(request(), "bob", ["oncall"], approve=False) is Refusal.NOT_APPROVER
    assert refusal(request(), "root", [], administrator=True) is None


def test_decided_and_lapsed_requests_cannot_be_decided_again() -> None:
    approved = request(status=Status.APPROVED, decided_by="carol", expires_at=NOW + 900)
    assert refusal(approved, "dave", ["leads"], approve=False) is Refusal.DECIDED
    assert refusal(request(status=Status.USED), "dave", ["leads"]) is Refusal.DECIDED
    assert refusal(request(), "carol", ["leads"], now=NOW + 600) is Refusal.EXPIRED
    found = decision_refusal(approved, decider="dave", groups=["leads"], approve=True, now=NOW)
    assert found is not None
    assert found[1] == "request 3f2a9c0d81e4 of alice was approved by carol already"


# ---------------------------------------------------------------------------- policy
def grant(name: str, approval: ApprovalRule | None = None, **overrides: object) -> Grant:
    fields: dict[str, object] = {
        "name": name,
        "groups": frozenset({"oncall"}),
        "clusters": ("prod",),
        "namespaces": ("shop",),
        "modes": frozenset({Mode.EPHEMERAL}),
        "images": frozenset({TOOLBOX}),
        "max_session": timedelta(minutes=30),
        "idle_timeout": timedelta(minutes=10),
        "vault_role": "debug",
        "approval": approval,
    }
    fields.update(overrides)
    return Grant(**fields)  # type: ignore[arg-type]


ALICE = Principal("alice", frozenset({"oncall"}))
TARGET = DebugTarget("prod", "shop", "db-0", {"app": "db"})
WHEN = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_a_grant_requiring_approval_puts_it_in_the_decisions_limits() -> None:
    decision = decide(
        Policy([grant("prod-db", ApprovalRule(LEADS))]),
        ALICE,
        TARGET,
        DebugRequest(Mode.EPHEMERAL, TOOLBOX),
        WHEN,
    )
    assert decision.allowed
    assert decision.limits is not None
    assert decision.limits.approval is not None
    assert decision.limits.approval.grants == ("prod-db",)
    assert decision.limits.approval.approvers == (LEADS,)


def test_labels_decide_which_grants_and_so_whether_approval_is_needed() -> None:
    policy = Policy(
        [
            grant("prod-db", ApprovalRule(LEADS), pod_selector=parse_selector("app=db")),
            grant("prod-all"),
        ]
    )
    asked = DebugRequest(Mode.EPHEMERAL, TOOLBOX)
    db = decide(policy, ALICE, TARGET, asked, WHEN)
    web = decide(policy, ALICE, replace(TARGET, pod="web-1", labels={"app": "web"}), asked, WHEN)
    assert db.limits is not None
    assert db.limits.approval is not None
    assert web.limits is not None
    assert web.limits.approval is None


_RULES = st.sampled_from([None, ApprovalRule(LEADS), ApprovalRule(CAROL, timedelta(minutes=3))])


@given(st.lists(_RULES, min_size=1, max_size=5))
def test_approval_is_needed_exactly_when_a_covering_grant_requires_it(
    rules: list[ApprovalRule | None],
) -> None:
    grants = [grant(f"g{i}", rule) for i, rule in enumerate(rules)]
    decision = decide(Policy(grants), ALICE, TARGET, DebugRequest(Mode.EPHEMERAL, TOOLBOX), WHEN)
    assert decision.limits is not None
    found = decision.limits.approval
    requiring = [r for r in rules if r is not None]
    assert (found is not None) == bool(requiring)
    if found is not None:
        # The most restrictive wins: every rule's approvers, the shortest expiry.
        assert set(found.approvers) == {r.approvers for r in requiring}
        assert found.expires_after == min(r.expires_after for r in requiring)
        assert found.grants == tuple(f"g{i}" for i, r in enumerate(rules) if r is not None)
