"""Who could ever approve under a grant that requires approval: the checks behind
``bastion check-config`` (the ``approval`` section itself is ``models.Approval``).

* errors (the config does not load): approvers who resolve to no configured user, or a grant
  whose every requester could only be approved by themselves (nobody approves their own
  request, so the grant could never be used);
* warnings (the config loads; ``check-config`` prints them): some requesters of the grant
  have no approver but themselves, or every approver may also request under the grant
  (requesters approve one another rather than a separate set of approvers).

Users are resolved from the config and ``paths.users_dir`` as loaded; the running server
checks approvers against each operator's groups at the time they decide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.config.models import Config, Grant

__all__ = ["Problem", "approval_problems", "approval_warnings"]

Problem = tuple[tuple[str | int, ...], str]


def _members(config: Config, users: list[str], groups: list[str]) -> set[str]:
    wanted = set(groups)
    return {u.name for u in config.users if u.name in users or not wanted.isdisjoint(u.groups)}


def _resolved(config: Config, grant: Grant) -> tuple[set[str], set[str]] | None:
    """(requesters, approvers) of a grant that requires approval, as configured users."""
    if grant.approval is None or not grant.approval.required:
        return None
    approvers = grant.approval.approvers
    return (
        _members(config, grant.users, grant.groups),
        _members(config, approvers.users, approvers.groups),
    )


def approval_problems(config: Config) -> list[Problem]:
    """Errors: grants under which no request could ever be approved."""
    problems: list[Problem] = []
    for i, grant in enumerate(config.grants):
        resolved = _resolved(config, grant)
        if resolved is None:
            continue
        requesters, approvers = resolved
        where: tuple[str | int, ...] = ("grants", i, "approval", "approvers")
        known = {u.name for u in config.users}
        assert grant.approval is not None  # noqa: S101 - _resolved checked it
        for j, name in enumerate(grant.approval.approvers.users):
            if name not in known:
                problems.append(((*where, "users", j), f"no user named {name!r}"))
        if not approvers:
            problems.append(
                (
                    where,
                    "no configured user can approve requests under this grant: name "
                    "existing users, or groups that have members",
                )
            )
        elif requesters and all(approvers <= {r} for r in requesters):
            only = ", ".join(sorted(approvers))
            problems.append(
                (
                    where,
                    f"{only} is this grant's only approver and its only requester, and "
                    "nobody approves their own request: add another approver",
                )
            )
    return problems


def approval_warnings(config: Config) -> list[str]:
    """Warnings: grants some of whose requests can never be approved, or whose approvers are
    all requesters too."""
    warnings: list[str] = []
    for i, grant in enumerate(config.grants):
        resolved = _resolved(config, grant)
        if resolved is None:
            continue
        requesters, approvers = resolved
        if not approvers or not requesters:
            continue
        where = f"grants[{i}] ({grant.name})"
        stuck = sorted(r for r in requesters if approvers <= {r})
        if stuck and len(stuck) < len(requesters):
            warnings.append(
                f"{where}: requests by {', '.join(stuck)} can never be approved: "
                "they are their own only approver"
            )
        if approvers <= requesters:
            warnings.append(
                f"{where}: every approver ({', '.join(sorted(approvers))}) may also request "
                "under this grant, so requesters approve one another"
            )
    return warnings
