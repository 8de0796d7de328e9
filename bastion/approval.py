"""Four-eyes approval, the pure part: who may approve a debug, what an approval covers, and
when a request or an approval lapses.

A grant may require approval (``approval:`` in its config). When a debug falls under such a
grant, the bastion records an :class:`ApprovalRequest` instead of starting it; another
operator allowed to approve it (or an administrator, ``bastion approvals approve ID``)
approves or denies it; the requester's next identical debug uses the approval, once.

Rules, all decided here with the time passed in (``now``, epoch seconds):

* **Who may approve.** Everyone each requiring grant's :class:`Approvers` admits (when
  several covering grants require approval, an approver must satisfy all of them: the most
  restrictive wins, as for every other limit). Never the requester: nobody approves their
  own request. The requester may deny (withdraw) their own request.
* **What it covers.** Exactly one :class:`DebugKey`: cluster, namespace, pod *and its UID*
  (a pod deleted and recreated under the same name is another pod), container, mode, image,
  the user the debug runs as, the session length asked for, and the approvers it was asked
  of (a changed policy does not inherit old approvals). Another pod, container or duration
  needs its own request.
* **When it lapses.** A request nobody decides lapses ``expires_after`` after it was made;
  an approval nobody uses lapses ``expires_after`` after it was given. Both become
  ``expired`` (:meth:`ApprovalRequest.status_at`), whether or not a sweep has written it yet.
* **Once.** An approval is used by the first debug it starts; the store's conditional
  update makes that the only one.

No I/O and no clock: the store (:mod:`bastion.state.approvals`) and the broker
(:mod:`bastion.session.approvals`) do those.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_EXPIRY",
    "ApprovalNeed",
    "ApprovalRequest",
    "ApprovalRule",
    "Approvers",
    "DebugKey",
    "Refusal",
    "Status",
    "approvers_from_canonical",
    "decision_refusal",
    "describe_approvers",
    "unknown_request",
]

DEFAULT_EXPIRY = timedelta(minutes=10)


class Status(StrEnum):
    PENDING = "pending"  # waiting for a decision
    APPROVED = "approved"  # may be used, once, until it expires
    DENIED = "denied"
    EXPIRED = "expired"  # nobody decided, or nobody used the approval, in time
    USED = "used"  # a debug started with it

    @property
    def open(self) -> bool:
        """Still able to lead to a debug (if not past its expiry)."""
        return self in (Status.PENDING, Status.APPROVED)


@dataclass(frozen=True)
class Approvers:
    """Who may approve: named users, and members of named groups."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    def admits(self, user: str, groups: Iterable[str]) -> bool:
        return user in self.users or not self.groups.isdisjoint(groups)

    def describe(self) -> str:
        """``users bob, carol; groups leads`` (as an approver or requester reads it)."""
        parts = []
        if self.users:
            parts.append("users " + ", ".join(sorted(self.users)))
        if self.groups:
            parts.append("groups " + ", ".join(sorted(self.groups)))
        return "; ".join(parts) or "nobody"

    def as_dict(self) -> dict[str, list[str]]:
        return {"users": sorted(self.users), "groups": sorted(self.groups)}


@dataclass(frozen=True)
class ApprovalRule:
    """One grant's ``approval`` section."""

    approvers: Approvers
    expires_after: timedelta = DEFAULT_EXPIRY


@dataclass(frozen=True)
class ApprovalNeed:
    """What the grants covering a debug require together: an approver admitted by every
    rule, within the shortest ``expires_after``."""

    approvers: tuple[Approvers, ...]
    expires_after: timedelta
    grants: tuple[str, ...]

    @classmethod
    def combine(cls, rules: Iterable[tuple[str, ApprovalRule]]) -> ApprovalNeed | None:
        """The need of ``(grant name, rule)`` pairs; None when no grant requires approval."""
        named = list(rules)
        if not named:
            return None
        # Sorted and deduplicated: the same need, however the grants are ordered, compares
        # (and is stored) the same.
        approvers = tuple(sorted({rule.approvers for _, rule in named}, key=_approvers_key))
        return cls(
            approvers=approvers,
            expires_after=min(rule.expires_after for _, rule in named),
            grants=tuple(name for name, _ in named),
        )

    def admits(self, user: str, groups: Iterable[str]) -> bool:
        group_set = frozenset(groups)
        return all(a.admits(user, group_set) for a in self.approvers)

    def describe(self) -> str:
        return describe_approvers(self.approvers)

    def canonical(self) -> str:
        """The approvers as stored with a request, and compared when it is used."""
        return json.dumps([a.as_dict() for a in self.approvers], separators=(",", ":"))


def _approvers_key(approvers: Approvers) -> tuple[list[str], list[str]]:
    return sorted(approvers.users), sorted(approvers.groups)


def describe_approvers(approvers: tuple[Approvers, ...]) -> str:
    """``users bob; groups leads``, or ``(groups leads) and (groups dba)`` when an approver
    must satisfy several grants."""
    if len(approvers) == 1:
        return approvers[0].describe()
    return " and ".join(f"({a.describe()})" for a in approvers)


def approvers_from_canonical(text: str) -> tuple[Approvers, ...]:
    """The approvers of :meth:`ApprovalNeed.canonical`; ValueError when it is not that."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"approvers are not JSON: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError("approvers must be a non-empty list")
    found = []
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"users", "groups"}:
            raise ValueError("each approvers entry has exactly 'users' and 'groups'")
        users, groups = item["users"], item["groups"]
        if not all(isinstance(v, list) and all(isinstance(s, str) for s in v)
                   for v in (users, groups)):  # fmt: skip
            raise ValueError("approvers' users and groups are lists of names")
        found.append(Approvers(frozenset(users), frozenset(groups)))
    return tuple(found)


@dataclass(frozen=True)
class DebugKey:
    """Exactly what one approval covers."""

    cluster: str
    namespace: str
    pod: str
    pod_uid: str
    container: str
    mode: str
    image: str
    run_as_user: int
    duration_seconds: int  # the session length the debug gets (the grants' max_session)
    approvers: str  # ApprovalNeed.canonical() at the time of the request

    @property
    def target(self) -> str:
        return f"{self.cluster}/{self.namespace}/{self.pod}"

    def fields(self) -> dict[str, Any]:
        """What the approval is for, as every approval audit event names it."""
        return {
            "cluster": self.cluster,
            "namespace": self.namespace,
            "pod": self.pod,
            "pod_uid": self.pod_uid,
            "container": self.container,
            "mode": self.mode,
            "image": self.image,
            "run_as_user": self.run_as_user,
            "duration_seconds": self.duration_seconds,
        }


@dataclass(frozen=True)
class ApprovalRequest:
    """One request, as stored. ``expires_at`` is when the pending request lapses, and once
    approved, when the unused approval does."""

    id: str
    requester: str
    session: str  # the requester's session that asked
    key: DebugKey
    reason: str
    grants: tuple[str, ...]
    expires_after: float  # seconds
    status: Status
    requested_at: float
    expires_at: float
    decided_by: str | None = None
    decided_at: float | None = None
    decision_reason: str = ""
    used_at: float | None = None
    used_by_session: str | None = None

    @property
    def approvers(self) -> tuple[Approvers, ...]:
        return approvers_from_canonical(self.key.approvers)

    def describe_approvers(self) -> str:
        return describe_approvers(self.approvers)

    def admits(self, user: str, groups: Iterable[str]) -> bool:
        """Whether ``user`` (with ``groups``) is one of this request's approvers (whether
        or not they are its requester)."""
        group_set = frozenset(groups)
        return all(a.admits(user, group_set) for a in self.approvers)

    def status_at(self, now: float) -> Status:
        """The status at ``now``: an open request past its expiry is expired, whether or not
        a sweep has marked it yet."""
        if self.status.open and now >= self.expires_at:
            return Status.EXPIRED
        return self.status

    def covers(self, requester: str, key: DebugKey, now: float) -> bool:
        """Whether this is a live approval of exactly this debug by this requester."""
        return (
            self.requester == requester
            and self.key == key
            and self.status_at(now) is Status.APPROVED
        )


class Refusal(StrEnum):
    """Why a decision on a request is refused."""

    UNKNOWN = "unknown"
    SELF_APPROVAL = "self_approval"
    NOT_APPROVER = "not_approver"
    DECIDED = "decided"  # approved, denied or used already
    EXPIRED = "expired"


def unknown_request(request_id: str) -> tuple[Refusal, str]:
    return Refusal.UNKNOWN, (
        f"there is no approval request {request_id[:64]!r}; the list shows the open ones"
    )


def decision_refusal(
    request: ApprovalRequest,
    *,
    decider: str,
    groups: Iterable[str],
    approve: bool,
    now: float,
    administrator: bool = False,
) -> tuple[Refusal, str] | None:
    """Why ``decider`` may not approve (or deny) ``request`` at ``now``, in one sentence; None
    when they may. An ``administrator`` (``bastion approvals`` on the bastion host) is not
    held to the approvers list, but never approves their own request either."""
    who = request.requester
    if approve and decider == who:
        return Refusal.SELF_APPROVAL, (
            f"request {request.id} is your own, and nobody approves their own request: "
            "another approver must decide it"
        )
    status = request.status_at(now)
    if status is Status.EXPIRED:
        return Refusal.EXPIRED, f"request {request.id} of {who} has expired; {who} must ask again"
    if status is not Status.PENDING:
        by = f" by {request.decided_by}" if request.decided_by else ""
        return Refusal.DECIDED, f"request {request.id} of {who} was {status}{by} already"
    withdrawing = not approve and decider == who
    if not administrator and not withdrawing and not request.admits(decider, groups):
        return Refusal.NOT_APPROVER, (
            f"you are not one of the approvers of request {request.id} "
            f"({request.describe_approvers()})"
        )
    return None
