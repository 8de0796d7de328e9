"""Who may oversee, and which shells must be watched. Pure: no I/O, no clock.

* :func:`is_auditor`: a user named in ``oversight.auditors``, or in one of its groups.
* :func:`moderation`: why a debug shell must be watched before it starts (a break-glass
  shell under ``break_glass.moderated``; a shell that spent an approval under a grant whose
  ``approval.moderated`` is set), or None.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

__all__ = ["Auditors", "Moderation", "is_auditor", "moderation"]


@dataclass(frozen=True)
class Auditors:
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Moderation:
    """A shell that must be watched: why, and how long it waits for a watcher."""

    reason: str
    wait_seconds: float


def is_auditor(auditors: Auditors | None, user: str, groups: Iterable[str]) -> bool:
    if auditors is None:
        return False
    return user in auditors.users or not auditors.groups.isdisjoint(groups)


def moderation(
    *,
    break_glass: bool,
    break_glass_moderated: bool,
    approved_grants: Collection[str],
    moderated_grants: Collection[str],
    wait_seconds: float,
) -> Moderation | None:
    """``approved_grants``: the grants whose approval this shell spent (empty: none);
    ``moderated_grants``: the grants whose approval rule says ``moderated``."""
    if break_glass and break_glass_moderated:
        return Moderation("break-glass shells on this bastion must be watched", wait_seconds)
    watched = sorted(set(approved_grants) & set(moderated_grants))
    if watched:
        return Moderation(f"grant {watched[0]!r} requires an auditor to watch", wait_seconds)
    return None
