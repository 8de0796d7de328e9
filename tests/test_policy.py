"""The policy engine: deny by default, exact denial reasons, and its properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.labels import parse_selector
from bastion.policy import (
    MAX_REASON_CHARS,
    MIN_REASON_CHARS,
    DebugRequest,
    DebugTarget,
    Grant,
    Mode,
    Policy,
    Principal,
    approved_images,
    decide,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TOOLBOX = "registry.example.com/toolbox@sha256:" + "a" * 64
OTHER = "registry.example.com/other@sha256:" + "b" * 64
REASON = "INC-4711 checkout latency spike"

ALICE = Principal("alice", frozenset({"oncall"}))


def grant(**overrides: object) -> Grant:
    fields: dict[str, object] = {
        "name": "oncall",
        "groups": frozenset({"oncall"}),
        "clusters": ("prod-*",),
        "namespaces": ("payments", "payments-*"),
        "pod_selector": parse_selector("app in (api,worker)"),
        "modes": frozenset({Mode.EPHEMERAL}),
        "images": frozenset({TOOLBOX}),
        "max_session": timedelta(minutes=30),
        "idle_timeout": timedelta(minutes=10),
        "vault_role": "debug-payments",
    }
    fields.update(overrides)
    return Grant(**fields)  # type: ignore[arg-type]


TARGET = DebugTarget("prod-eu", "payments", "api-1", {"app": "api"}, "api")
REQUEST = DebugRequest(Mode.EPHEMERAL, TOOLBOX, REASON)


def test_allowed_with_the_grants_limits() -> None:
    decision = decide(Policy([grant()]), ALICE, TARGET, REQUEST, NOW)
    assert decision.allowed
    assert decision.reason == "allowed by grant 'oncall'"
    assert decision.grants == ("oncall",)
    assert decision.limits is not None
    assert decision.limits.max_session == timedelta(minutes=30)
    assert decision.limits.vault_role == "debug-payments"


def test_deny_by_default() -> None:
    decision = decide(Policy([]), ALICE, TARGET, REQUEST, NOW)
    assert not decision.allowed
    assert decision.limits is None
    assert decision.reason == (
        "no grant applies to alice (groups: oncall); ask an administrator for a grant"
    )


def test_grant_by_user_name() -> None:
    bob = Principal("bob")
    policy = Policy([grant(groups=frozenset(), users=frozenset({"bob"}))])
    assert decide(policy, bob, TARGET, REQUEST, NOW).allowed
    assert not decide(policy, ALICE, TARGET, REQUEST, NOW).allowed


@pytest.mark.parametrize(
    ("target", "request_", "reason"),
    [
        (
            DebugTarget("staging", "payments", "api-1", {"app": "api"}),
            REQUEST,
            "no grant lets alice debug in cluster 'staging'",
        ),
        (
            DebugTarget("prod-eu", "kube-system", "coredns-1", {"app": "api"}),
            REQUEST,
            "no grant lets alice debug in namespace 'kube-system' of cluster 'prod-eu'",
        ),
        (
            DebugTarget("prod-eu", "payments", "db-0", {"app": "db"}),
            REQUEST,
            "pod 'db-0' does not match the pod selector 'app in (api,worker)' (oncall)",
        ),
        (
            TARGET,
            DebugRequest(Mode.COPY, TOOLBOX, REASON),
            "mode 'copy' is not allowed for alice in prod-eu/payments; allowed: ephemeral",
        ),
        (
            TARGET,
            DebugRequest(Mode.EPHEMERAL, OTHER, REASON),
            f"image {OTHER!r} is not approved for prod-eu/payments; approved: {TOOLBOX}",
        ),
    ],
)
def test_denial_names_the_rule(target: DebugTarget, request_: DebugRequest, reason: str) -> None:
    decision = decide(Policy([grant()]), ALICE, target, request_, NOW)
    assert not decision.allowed
    assert decision.reason == reason


def test_denial_comes_from_the_grant_that_came_closest() -> None:
    policy = Policy(
        [
            grant(name="wrong-cluster", clusters=("staging",)),
            grant(name="wrong-mode", modes=frozenset({Mode.POD})),
        ]
    )
    decision = decide(policy, ALICE, TARGET, REQUEST, NOW)
    assert decision.reason == (
        "mode 'ephemeral' is not allowed for alice in prod-eu/payments; allowed: pod"
    )


def test_time_window() -> None:
    later = grant(not_before=NOW + timedelta(hours=1), not_after=NOW + timedelta(hours=2))
    decision = decide(Policy([later]), ALICE, TARGET, REQUEST, NOW)
    assert decision.reason == (
        "the grants for alice are not in force at 2026-11-28T12:00:00+00:00 ('oncall': from "
        "2026-11-28T13:00:00+00:00 until 2026-11-28T14:00:00+00:00)"
    )
    assert decide(Policy([later]), ALICE, TARGET, REQUEST, NOW + timedelta(hours=1)).allowed
    assert not decide(Policy([later]), ALICE, TARGET, REQUEST, NOW + timedelta(hours=2)).allowed


def test_reason_required() -> None:
    policy = Policy([grant(reason_required=True)])
    short = DebugRequest(Mode.EPHEMERAL, TOOLBOX, "  fix it  ")
    decision = decide(policy, ALICE, TARGET, short, NOW)
    assert not decision.allowed
    assert decision.limits is not None
    assert decision.limits.reason_required
    assert decision.reason == (
        "grant 'oncall' requires a reason for debugging prod-eu/payments/api-1: describe why "
        f"in at least {MIN_REASON_CHARS} characters"
    )
    assert decide(policy, ALICE, TARGET, REQUEST, NOW).allowed
    rambling = DebugRequest(Mode.EPHEMERAL, TOOLBOX, "x" * (MAX_REASON_CHARS + 1))
    assert decide(policy, ALICE, TARGET, rambling, NOW).reason == (
        f"the reason is {MAX_REASON_CHARS + 1} characters long: say why in at most "
        f"{MAX_REASON_CHARS} (a ticket link is enough)"
    )
    longest = DebugRequest(Mode.EPHEMERAL, TOOLBOX, "x" * MAX_REASON_CHARS)
    assert decide(policy, ALICE, TARGET, longest, NOW).allowed


def test_most_restrictive_limits_win() -> None:
    policy = Policy(
        [
            grant(name="long", max_session=timedelta(hours=4), idle_timeout=timedelta(minutes=5)),
            grant(name="short", max_session=timedelta(minutes=20), record_input=True),
            grant(name="other-ns", namespaces=("web",), max_session=timedelta(minutes=1)),
        ]
    )
    decision = decide(policy, ALICE, TARGET, REQUEST, NOW)
    assert decision.allowed
    assert decision.grants == ("long", "short")
    assert decision.limits is not None
    assert decision.limits.max_session == timedelta(minutes=20)
    assert decision.limits.idle_timeout == timedelta(minutes=5)
    assert decision.limits.record_input
    assert decision.limits.vault_role == "debug-payments"


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        decide(Policy([grant()]), ALICE, TARGET, REQUEST, datetime(2026, 1, 1))  # noqa: DTZ001


# ------------------------------------------------------------------------- properties
CLUSTERS = ["prod-eu", "prod-us", "staging"]
CLUSTER_GLOBS = ["*", "prod-*", "staging", "prod-eu", "prod-?s", "[ps]*"]
NAMESPACES = ["payments", "payments-api", "web", "kube-system"]
NAMESPACE_GLOBS = ["*", "payments*", "payments", "web", "[!k]*", "kube-?ystem"]
SELECTORS = ["", "app=api", "app in (api,worker)", "tier!=db", "!canary", "app,tier notin (db)"]
USERS = ["alice", "bob"]
GROUPS = ["oncall", "platform", "dev"]
IMAGES = [TOOLBOX, OTHER]
MINUTES = [5, 10, 30, 60, 240]

labels_st = st.dictionaries(
    st.sampled_from(["app", "tier", "canary"]),
    st.sampled_from(["api", "worker", "db", "web", ""]),
    max_size=3,
)


@st.composite
def grants_st(draw: st.DrawFn, name: str = "g") -> Grant:
    idle = draw(st.sampled_from(MINUTES))
    window = draw(st.sampled_from([None, (-60, 60), (30, 90), (-90, -30)]))
    return Grant(
        name=name + str(draw(st.integers(0, 10_000))),
        users=frozenset(draw(st.lists(st.sampled_from(USERS), max_size=1))),
        groups=frozenset(draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2))),
        clusters=tuple(draw(st.lists(st.sampled_from(CLUSTER_GLOBS), min_size=1, max_size=2))),
        namespaces=tuple(draw(st.lists(st.sampled_from(NAMESPACE_GLOBS), min_size=1, max_size=2))),
        pod_selector=parse_selector(draw(st.sampled_from(SELECTORS))),
        modes=frozenset(draw(st.lists(st.sampled_from(list(Mode)), min_size=1, max_size=3))),
        images=frozenset(draw(st.lists(st.sampled_from(IMAGES), min_size=1, max_size=2))),
        max_session=timedelta(minutes=idle * draw(st.sampled_from([1, 2, 6]))),
        idle_timeout=timedelta(minutes=idle),
        reason_required=draw(st.booleans()),
        record_input=draw(st.booleans()),
        vault_role=draw(st.sampled_from(["role-a", "role-b"])),
        not_before=None if window is None else NOW + timedelta(minutes=window[0]),
        not_after=None if window is None else NOW + timedelta(minutes=window[1]),
    )


principals_st = st.builds(
    Principal,
    st.sampled_from(USERS),
    st.frozensets(st.sampled_from(GROUPS), max_size=2),
)
targets_st = st.builds(
    DebugTarget,
    st.sampled_from(CLUSTERS),
    st.sampled_from(NAMESPACES),
    st.just("pod-1"),
    labels_st,
)
requests_st = st.builds(
    DebugRequest,
    st.sampled_from(list(Mode)),
    st.sampled_from(IMAGES),
    st.sampled_from(["", "short", REASON]),
)
policies_st = st.lists(grants_st(), max_size=6, unique_by=lambda g: g.name)


@settings(max_examples=400)
@given(policies_st, principals_st, targets_st, requests_st)
def test_nothing_is_allowed_that_no_grant_allows(
    grants: list[Grant], who: Principal, target: DebugTarget, request: DebugRequest
) -> None:
    decision = decide(Policy(grants), who, target, request, NOW)
    if decision.allowed:
        assert any(decide(Policy([g]), who, target, request, NOW).allowed for g in grants)
    if not grants:
        assert not decision.allowed


@settings(max_examples=400)
@given(policies_st, grants_st("extra"), principals_st, targets_st, requests_st)
def test_adding_a_grant_never_removes_access(
    grants: list[Grant],
    extra: Grant,
    who: Principal,
    target: DebugTarget,
    request: DebugRequest,
) -> None:
    before = decide(Policy(grants), who, target, request, NOW)
    after = decide(Policy([*grants, extra]), who, target, request, NOW)
    if not before.allowed:
        return
    if after.allowed:
        return
    # The only way to lose an allowed request is a reason requirement (itself a limit,
    # combined most-restrictively) that the request's reason does not meet.
    assert extra.reason_required
    assert len(request.reason.strip()) < MIN_REASON_CHARS
    assert after.limits is not None
    assert after.limits.reason_required
    with_reason = DebugRequest(request.mode, request.image, REASON)
    assert decide(Policy([*grants, extra]), who, target, with_reason, NOW).allowed


@settings(max_examples=400)
@given(policies_st, principals_st, targets_st, requests_st)
def test_limits_never_exceed_any_matching_grant(
    grants: list[Grant], who: Principal, target: DebugTarget, request: DebugRequest
) -> None:
    decision = decide(Policy(grants), who, target, request, NOW)
    if decision.limits is None:
        return
    covering = [g for g in grants if g.name in decision.grants]
    assert covering
    for g in covering:
        assert decision.limits.max_session <= g.max_session
        assert decision.limits.idle_timeout <= g.idle_timeout
        assert decision.limits.reason_required >= g.reason_required
        assert decision.limits.record_input >= g.record_input
    # ...and each limit is one that some covering grant actually set.
    assert decision.limits.max_session in {g.max_session for g in covering}
    assert decision.limits.idle_timeout in {g.idle_timeout for g in covering}


@settings(max_examples=200)
@given(policies_st, principals_st, targets_st, requests_st)
def test_every_denial_has_a_reason(
    grants: list[Grant], who: Principal, target: DebugTarget, request: DebugRequest
) -> None:
    decision = decide(Policy(grants), who, target, request, NOW)
    assert decision.reason
    if not decision.allowed:
        assert (
            who.name in decision.reason
            or target.cluster in decision.reason
            or (target.pod in decision.reason)
        )


def test_denials_stay_readable_with_many_grants() -> None:
    images = [f"registry.example.com/tool{i}@sha256:{i:064x}" for i in range(40)]
    policy = Policy(
        [grant(name=f"g{i}", images=frozenset({image})) for i, image in enumerate(images)]
    )
    decision = decide(policy, ALICE, TARGET, REQUEST, NOW)
    assert not decision.allowed
    shown = ", ".join(sorted(images)[:5])
    assert decision.reason == (
        f"image {TOOLBOX!r} is not approved for prod-eu/payments; approved: {shown} and 35 more"
    )


def test_a_provisional_decision_skips_pod_selectors_and_nothing_else() -> None:
    policy = Policy([grant()])
    unlabelled = DebugTarget("prod-eu", "payments", "api-1", {}, "api")
    assert not decide(policy, ALICE, unlabelled, REQUEST, NOW).allowed
    provisional = decide(policy, ALICE, unlabelled, REQUEST, NOW, labels_known=False)
    assert provisional.allowed
    assert provisional.limits is not None
    assert provisional.limits.vault_role == "debug-payments"
    elsewhere = DebugTarget("prod-eu", "billing", "api-1", {}, "api")
    assert not decide(policy, ALICE, elsewhere, REQUEST, NOW, labels_known=False).allowed
    copy = DebugRequest(Mode.COPY, TOOLBOX, REASON)
    assert not decide(policy, ALICE, unlabelled, copy, NOW, labels_known=False).allowed


def test_approved_images_are_those_of_grants_covering_the_namespace_and_mode() -> None:
    policy = Policy(
        [
            grant(images=frozenset({OTHER, TOOLBOX})),
            grant(name="copy", modes=frozenset({Mode.COPY}), images=frozenset({OTHER})),
            grant(name="old", not_after=NOW - timedelta(days=1), images=frozenset({"x"})),
        ]
    )
    target = DebugTarget("prod-eu", "payments", "api-1")
    assert approved_images(policy, ALICE, target, Mode.EPHEMERAL, NOW) == [OTHER, TOOLBOX]
    assert approved_images(policy, ALICE, target, Mode.COPY, NOW) == [OTHER]
    assert approved_images(policy, ALICE, target, Mode.POD, NOW) == []
    bob = Principal("bob")
    assert approved_images(policy, bob, target, Mode.EPHEMERAL, NOW) == []
