"""Who may watch: the checks behind a watch socket and the ``watch`` command.

* :func:`auditors_of`: the config's auditors (none without an ``oversight`` section);
* :func:`verifier`: for a session's :class:`~bastion.oversight.watch_point.WatchPoint`: is
  the process at the other end of the socket the live worker of an auditor's session?
* :func:`moderation_for`: must this debug shell be watched before it starts?
"""

from __future__ import annotations

from bastion.config import Config
from bastion.oversight.roles import Auditors, Moderation, is_auditor, moderation
from bastion.oversight.watch_point import Verify, Watcher
from bastion.policy import Principal
from bastion.session.debug import DebugAccess
from bastion.session.session import Session
from bastion.state.journal import process_start_time

__all__ = ["auditors_of", "moderation_for", "verifier"]


def auditors_of(config: Config) -> Auditors | None:
    section = config.oversight
    if section is None:
        return None
    return Auditors(frozenset(section.auditors.users), frozenset(section.auditors.groups))


def verifier(session: Session, config: Config) -> Verify:
    async def verify(pid: int, named: str) -> Watcher | str:
        record = await session.lookup(named)
        if record is None or record.closed:
            return f"session {named} is not a live session"
        try:
            started = process_start_time(pid)
        except PermissionError:
            started = None
        if record.owner_pid != pid or started != record.owner_started:
            return "only the bastion worker serving the watching session may watch"
        principal = config.principal(record.user)
        groups = principal.groups if principal is not None else frozenset()
        if not is_auditor(auditors_of(config), record.user, groups):
            return f"{record.user} is not an auditor on this bastion"
        return Watcher(record.user, named)

    return verify


def moderation_for(config: Config, principal: Principal, access: DebugAccess) -> Moderation | None:
    section = config.oversight
    break_glass = config.break_glass
    need = access.limits.approval
    return moderation(
        break_glass=principal.break_glass,
        break_glass_moderated=break_glass is not None and break_glass.moderated,
        approved_grants=need.grants if need is not None and access.approval is not None else (),
        moderated_grants=[
            g.name for g in config.grants if g.approval is not None and g.approval.moderated
        ],
        wait_seconds=section.watcher_wait.total_seconds() if section is not None else 0.0,
    )
