"""The guard's login rules (``guard.new_source``, ``guard.failures_from_source``) at the front
door: a login from an address never seen for that user, and failed logins piling up from one
address across users.

Both rules can only ``alert`` (the config says so when told otherwise): a failed login has no
session to warn or end, and a login from a new address is how an operator's first day at
another office looks too. A trigger is the audit event ``guard.triggered`` first, then the
alert to the break-glass destinations (``alert: "guard"``); if the event cannot be written,
no alert goes out and the login itself is not held up (the front door has written its own
``login.succeeded`` or ``login.failed`` already).

If the database fails, the rule is skipped and logged, and the login goes on: the front door
has audited it already, and a broken guard must not lock every operator out.

A user's first login ever is not "new": there is nothing to compare it with. The address is
the connection's own (no /64 grouping: an IPv6 client moving inside its prefix is new).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bastion.breakglass.alerts import AlertDispatcher
from bastion.config.guard import Guard
from bastion.guard_rules import Trigger, check_failures, check_source
from bastion.state.database import database_errors
from bastion.state.sources import SourceHistory

__all__ = ["LoginWatch"]

log = logging.getLogger(__name__)

Audit = Callable[..., Awaitable[bool]]


class LoginWatch:
    """One per worker; :meth:`succeeded` and :meth:`failed` are called by the front door."""

    def __init__(
        self,
        guard: Guard,
        open_history: Callable[[], SourceHistory],
        *,
        audit: Audit,
        alerts: AlertDispatcher | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._new_source = guard.new_source
        self._failures = guard.failures_from_source
        self._history = open_history() if self.active(guard) else None
        self._audit = audit
        self._alerts = alerts
        self._clock = clock

    @staticmethod
    def active(guard: Guard) -> bool:
        return guard.new_source is not None or guard.failures_from_source is not None

    def close(self) -> None:
        if self._history is not None:
            self._history.close()

    async def succeeded(self, user: str, source: str, connection: str) -> None:
        if self._history is None or self._new_source is None:
            return
        try:
            new, known_user = await asyncio.to_thread(
                self._history.remember, user, source, self._clock()
            )
        except database_errors() as exc:
            log.error("the login sources database failed; new_source not checked: %s", exc)  # noqa: TRY400
            return
        trigger = check_source(self._new_source.action, user, source, known=not new)
        if trigger is not None and known_user:
            await self._triggered(trigger, user=user, source=source, connection=connection)

    async def failed(self, user: str, source: str, connection: str) -> None:
        rule = self._failures
        if self._history is None or rule is None:
            return
        try:
            count, users = await asyncio.to_thread(
                self._history.failed, source, user, self._clock(), rule.window.total_seconds()
            )
        except database_errors() as exc:
            log.error("the login sources database failed; failures not counted: %s", exc)  # noqa: TRY400
            return
        trigger = check_failures(rule.action, source, count, users, rule.count)
        if trigger is not None:
            await self._triggered(trigger, user=user or "-", source=source, connection=connection)

    async def _triggered(self, trigger: Trigger, **about: Any) -> None:
        written = await self._audit(
            "guard.triggered",
            actor="bastion",
            outcome=str(trigger.action),
            rule=trigger.rule,
            action=str(trigger.action),
            evidence=trigger.evidence,
            **about,
        )
        if not written:
            log.error("guard trigger %s not audited: no alert sent", trigger.rule)
            return
        if self._alerts is not None:
            self._alerts.send(
                "guard.triggered",
                alert="guard",
                user=about["user"],
                session=None,
                connection=about["connection"],
                source=about["source"],
                rule=trigger.rule,
                evidence=trigger.evidence,
            )
