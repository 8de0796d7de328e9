"""Who may debug what, with which image and mode: a pure decision, deny by default.

``decide(policy, principal, target, request, now)`` looks at every grant that applies to
the principal and answers with a :class:`Decision`:

* allowed only when at least one grant covers the principal, the time, the cluster, the
  namespace, the pod's labels, the mode and the image;
* when several grants cover the request, the most restrictive limit of each kind wins
  (shortest session and idle timeout; a reason, input recording and another operator's
  approval are required if any of them requires it);
* a denial names the rule that stopped the request, taken from the grant that came closest,
  in words an operator can act on.

A reason requirement is a limit like the others: giving the reason is how the operator
meets it, so a request without a reason may be refused where the same request with one is
allowed.

No I/O and no clock: the caller passes ``now`` (an aware datetime).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum

from bastion.approval import ApprovalNeed, ApprovalRule
from bastion.globs import compile_glob
from bastion.labels import LabelSelector

__all__ = [
    "MAX_REASON_CHARS",
    "MIN_REASON_CHARS",
    "DebugRequest",
    "DebugTarget",
    "Decision",
    "Grant",
    "Limits",
    "Mode",
    "Policy",
    "Principal",
    "Scope",
    "approved_images",
    "decide",
]

MIN_REASON_CHARS = 10
# A reason is a sentence or a ticket link, kept in the audit record of the debug's start.
MAX_REASON_CHARS = 1000


class Mode(StrEnum):
    """How the debug container is placed (DESIGN.md): in the pod, in a copy, or alone."""

    EPHEMERAL = "ephemeral"
    COPY = "copy"
    POD = "pod"


class Scope(StrEnum):
    """What a grant lets its holders do in a pod (docs/introspection.md): the interactive
    shell, or one of the fixed read-only views."""

    SHELL = "shell"
    PROCESSES = "processes"
    ENV = "env"
    FILES = "files"
    SOCKETS = "sockets"
    LOGS = "logs"


SHELL_ONLY = frozenset({Scope.SHELL})


@dataclass(frozen=True)
class Principal:
    name: str
    groups: frozenset[str] = frozenset()
    # A break-glass account that logged in with its one-time code (docs/break-glass.md): it
    # gets the break-glass grants, and only those.
    break_glass: bool = False


@dataclass(frozen=True)
class DebugTarget:
    cluster: str
    namespace: str
    pod: str
    labels: Mapping[str, str] = field(default_factory=dict)
    container: str | None = None


@dataclass(frozen=True)
class DebugRequest:
    mode: Mode
    image: str
    reason: str = ""
    # A view asks for its own scope; a shell for ``shell``.
    scope: Scope = Scope.SHELL


@dataclass(frozen=True)
class Limits:
    max_session: timedelta
    idle_timeout: timedelta
    reason_required: bool
    record_input: bool
    vault_role: str
    # None: no covering grant requires approval (bastion.approval).
    approval: ApprovalNeed | None = None
    # The path prefixes of the ``files`` view, from the covering grants (union).
    path_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grant:
    """One rule of the policy, as in the config's ``grants`` list."""

    name: str
    clusters: tuple[str, ...]
    namespaces: tuple[str, ...]
    modes: frozenset[Mode]
    images: frozenset[str]
    max_session: timedelta
    idle_timeout: timedelta
    vault_role: str
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    reason_required: bool = False
    record_input: bool = False
    not_before: datetime | None = None
    not_after: datetime | None = None
    approval: ApprovalRule | None = None
    # The config's break_glass grant: it names nobody, and covers break-glass principals only.
    break_glass: bool = False
    scopes: frozenset[Scope] = SHELL_ONLY
    # Where the ``files`` view may look (absolute, normalised; checked by the config).
    path_prefixes: tuple[str, ...] = ()
    _cluster_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _namespace_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One alternation per list keeps a decision at one regex match per dimension.
        object.__setattr__(self, "_cluster_re", _alternation(self.clusters))
        object.__setattr__(self, "_namespace_re", _alternation(self.namespaces))

    def covers_cluster(self, cluster: str) -> bool:
        return self._cluster_re.fullmatch(cluster) is not None

    def covers_namespace(self, namespace: str) -> bool:
        return self._namespace_re.fullmatch(namespace) is not None

    def in_force(self, now: datetime) -> bool:
        if self.not_before is not None and now < self.not_before:
            return False
        return self.not_after is None or now < self.not_after


@functools.lru_cache(maxsize=4096)
def _alternation(patterns: tuple[str, ...]) -> re.Pattern[str]:
    # Cached: real policies repeat the same pattern lists across many grants.
    return re.compile("|".join(f"(?:{compile_glob(p).pattern})" for p in patterns))


def _listing(items: Iterable[str], sep: str = ", ", limit: int = 5) -> str:
    """At most ``limit`` items, then a count: a denial must stay readable with 1,000 grants."""
    ordered = sorted(set(items))
    shown = sep.join(ordered[:limit])
    return f"{shown} and {len(ordered) - limit} more" if len(ordered) > limit else shown


class _Step(IntEnum):
    """How far a grant got before it stopped covering the request; higher is closer."""

    TIME = 1
    CLUSTER = 2
    NAMESPACE = 3
    POD = 4
    MODE = 5
    IMAGE = 6
    SCOPE = 7
    COVERS = 8


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    limits: Limits | None = None
    grants: tuple[str, ...] = ()


class Policy:
    """The grants, indexed by the users and groups they name, so a decision stays cheap
    with thousands of grants."""

    def __init__(self, grants: Iterable[Grant]) -> None:
        self.grants: tuple[Grant, ...] = tuple(grants)
        self._by_user: dict[str, list[int]] = {}
        self._by_group: dict[str, list[int]] = {}
        self._break_glass: list[int] = []
        for index, grant in enumerate(self.grants):
            if grant.break_glass:
                self._break_glass.append(index)
                continue
            for user in grant.users:
                self._by_user.setdefault(user, []).append(index)
            for group in grant.groups:
                self._by_group.setdefault(group, []).append(index)

    def with_grants(self, extra: Iterable[Grant]) -> Policy:
        """This policy with ``extra`` grants after its own (the break-glass grant)."""
        more = tuple(extra)
        return Policy((*self.grants, *more)) if more else self

    def grants_for(self, principal: Principal) -> list[Grant]:
        """The grants naming the principal or one of its groups, in config order; for a
        break-glass principal the break-glass grants alone, so that its session has exactly
        the elevated grant and its limits (input recorded, the time box) whatever else the
        account's groups would give."""
        if principal.break_glass:
            return [self.grants[i] for i in self._break_glass]
        indices = set(self._by_user.get(principal.name, ()))
        for group in principal.groups:
            indices.update(self._by_group.get(group, ()))
        return [self.grants[i] for i in sorted(indices)]


def _evaluate(
    grant: Grant,
    target: DebugTarget,
    request: DebugRequest,
    now: datetime,
    *,
    labels_known: bool = True,
) -> _Step:
    if not grant.in_force(now):
        return _Step.TIME
    if not grant.covers_cluster(target.cluster):
        return _Step.CLUSTER
    if not grant.covers_namespace(target.namespace):
        return _Step.NAMESPACE
    if labels_known and not grant.pod_selector.matches(target.labels):
        return _Step.POD
    if request.mode not in grant.modes:
        return _Step.MODE
    if request.image not in grant.images:
        return _Step.IMAGE
    if request.scope not in grant.scopes:
        return _Step.SCOPE
    return _Step.COVERS


def decide(
    policy: Policy,
    principal: Principal,
    target: DebugTarget,
    request: DebugRequest,
    now: datetime,
    *,
    labels_known: bool = True,
) -> Decision:
    """Decide whether ``principal`` may debug ``target`` as ``request`` asks, at ``now``.

    ``labels_known=False`` is a provisional decision for a pod whose labels are not known
    yet (``ssh bastion debug NS/POD``): pod selectors are not checked, so it only picks the
    Vault role to read the pod with; the real decision must follow with its labels.
    """
    if now.tzinfo is None:
        raise ValueError("decide() needs an aware datetime for 'now'")
    candidates = policy.grants_for(principal)
    if not candidates:
        groups = ", ".join(sorted(principal.groups)) or "none"
        return Decision(
            False,
            f"no grant applies to {principal.name} (groups: {groups}); "
            "ask an administrator for a grant",
        )
    steps = [
        (grant, _evaluate(grant, target, request, now, labels_known=labels_known))
        for grant in candidates
    ]
    covering = [grant for grant, step in steps if step is _Step.COVERS]
    if not covering:
        return Decision(False, _denial(principal, target, request, now, steps))

    limits = Limits(
        max_session=min(g.max_session for g in covering),
        idle_timeout=min(g.idle_timeout for g in covering),
        reason_required=any(g.reason_required for g in covering),
        record_input=any(g.record_input for g in covering),
        # The first covering grant in config order names the Vault role: the role's
        # Kubernetes rules are what the grant's modes need, and order makes it predictable.
        vault_role=covering[0].vault_role,
        approval=ApprovalNeed.combine((g.name, g.approval) for g in covering if g.approval),
        path_prefixes=tuple(dict.fromkeys(p for g in covering for p in g.path_prefixes)),
    )
    names = tuple(g.name for g in covering)
    if len(request.reason) > MAX_REASON_CHARS:
        return Decision(
            False,
            f"the reason is {len(request.reason)} characters long: say why in at most "
            f"{MAX_REASON_CHARS} (a ticket link is enough)",
            limits,
            names,
        )
    if limits.reason_required and len(request.reason.strip()) < MIN_REASON_CHARS:
        requiring = next(g.name for g in covering if g.reason_required)
        return Decision(
            False,
            f"grant {requiring!r} requires a reason for debugging {_where(target)}: "
            f"describe why in at least {MIN_REASON_CHARS} characters",
            limits,
            names,
        )
    return Decision(True, f"allowed by grant {names[0]!r}", limits, names)


def approved_images(
    policy: Policy,
    principal: Principal,
    target: DebugTarget,
    mode: Mode,
    now: datetime,
    *,
    scope: Scope = Scope.SHELL,
) -> list[str]:
    """The images a grant in force lets ``principal`` use in ``target``'s namespace in
    ``mode``, in config order: what an operator who named no image chooses from. Pod
    selectors are not checked here; the decision that follows checks everything."""
    seen: dict[str, None] = {}
    for grant in policy.grants_for(principal):
        probe = DebugRequest(mode, next(iter(grant.images), ""), scope=scope)
        if _evaluate(grant, target, probe, now, labels_known=False) is _Step.COVERS:
            seen.update(dict.fromkeys(sorted(grant.images)))
    return list(seen)


def _where(target: DebugTarget) -> str:
    return f"{target.cluster}/{target.namespace}/{target.pod}"


def _denial(
    principal: Principal,
    target: DebugTarget,
    request: DebugRequest,
    now: datetime,
    steps: list[tuple[Grant, _Step]],
) -> str:
    furthest = max(step for _, step in steps)
    closest = [grant for grant, step in steps if step == furthest]
    who = principal.name
    match furthest:
        case _Step.TIME:
            spans = _listing((_validity(g) for g in closest), sep="; ", limit=3)
            return f"the grants for {who} are not in force at {now.isoformat()} ({spans})"
        case _Step.CLUSTER:
            return f"no grant lets {who} debug in cluster {target.cluster!r}"
        case _Step.NAMESPACE:
            return (
                f"no grant lets {who} debug in namespace {target.namespace!r} "
                f"of cluster {target.cluster!r}"
            )
        case _Step.POD:
            selectors = _listing(
                (f"{str(g.pod_selector)!r} ({g.name})" for g in closest), sep=" or "
            )
            return f"pod {target.pod!r} does not match the pod selector {selectors}"
        case _Step.MODE:
            modes = _listing(m.value for g in closest for m in g.modes)
            return (
                f"mode {request.mode.value!r} is not allowed for {who} in "
                f"{target.cluster}/{target.namespace}; allowed: {modes}"
            )
        case _Step.SCOPE:
            return _scope_denial(who, target, request, closest)
        case _:
            images = _listing(i for g in closest for i in g.images)
            return (
                f"image {request.image!r} is not approved for {target.cluster}/"
                f"{target.namespace}; approved: {images}"
            )


def _scope_denial(
    who: str, target: DebugTarget, request: DebugRequest, closest: list[Grant]
) -> str:
    allowed = _listing((s.value for g in closest for s in g.scopes), limit=6)
    where = f"{target.cluster}/{target.namespace}"
    if request.scope is Scope.SHELL:
        return (
            f"the grants for {who} in {where} allow only the read-only views ({allowed}), "
            "not a debug shell: open one of those views instead, or ask an administrator"
        )
    return f"the {request.scope.value} view is not allowed for {who} in {where}; allowed: {allowed}"


def _validity(grant: Grant) -> str:
    start = grant.not_before.isoformat() if grant.not_before else "always"
    end = grant.not_after.isoformat() if grant.not_after else "no end"
    return f"{grant.name!r}: from {start} until {end}"
