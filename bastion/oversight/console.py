"""The auditor's part of the console protocol (docs/oversight.md): ``ListSessions`` and
``WatchSession``, answered by the broker for auditors only; everyone else is refused before
anything is read, and the refusal is audited."""

from __future__ import annotations

from bastion.config import Config
from bastion.console_protocol import Failed, ListSessions, LiveSessionItem, LiveSessions
from bastion.oversight.admission import auditors_of
from bastion.oversight.roles import is_auditor
from bastion.oversight.watch_point import read_watchers
from bastion.session.broker import SessionBroker
from bastion.session.session import Session

__all__ = ["list_live_sessions"]

NOT_AN_AUDITOR = "only auditors may list live sessions; ask an administrator to add you"


async def list_live_sessions(
    request: ListSessions,
    session: Session,
    *,
    config: Config,
    broker: SessionBroker,
    groups: frozenset[str],
) -> LiveSessions | Failed:
    if not is_auditor(auditors_of(config), session.info.user, groups):
        await session.record("oversight.refused", outcome="refused", what="list_sessions")
        return Failed(request.id, NOT_AN_AUDITOR)
    records = await broker.in_db(broker.journal.live_sessions)
    break_glass = {u.name for u in config.users if u.break_glass}
    items = []
    for record in records:
        watchers = read_watchers(config.paths.state_dir, record.id)
        target = record.target or {}
        items.append(
            LiveSessionItem(
                id=record.id,
                user=record.user,
                source=record.source,
                started=record.opened_at,
                state=record.state,
                target="/".join(str(target.get(k, "?")) for k in ("cluster", "namespace", "pod"))
                if target
                else "",
                break_glass=record.user in break_glass,
                watchers=watchers or [],
                watchable=watchers is not None,
            )
        )
    return LiveSessions(request.id, items)
