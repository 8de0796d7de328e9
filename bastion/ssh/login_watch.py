"""The guard's login rules (``guard.new_source``, ``guard.failures_from_source``) at the front
door: a login from an address never seen for that user, and failed logins piling up from one
address across users.

A trigger is the audit event ``guard.triggered`` first, then the rule's action:

* ``new_source``, when a user who logged in before logs in from another address, right after
  both factors were accepted (``login.succeeded`` is written):

  - ``warn``: a banner (notice kind ``guard``) in every console of that user, this login's
    and any other, for :data:`WARN_FOR` seconds: if it was not them, they can say so;
  - ``alert``: the break-glass alert destinations get it (``alert: "guard"``);
  - ``end``: the login is ended before its session opens (so before any credential exists),
    as ``login.ended``, and the address is *not* remembered: every login from it is ended
    until an administrator vouches for it (``bastion user allow-source``).

* ``failures_from_source``, when the ``count``-th failed login within ``window`` comes from one
  address, whatever the user names:

  - ``warn``: a banner in the consoles of each user name tried from there, for the window;
  - ``alert``: as above;
  - ``end``: every login from that address is refused for the window, at its first request
    and before any key is looked at, each refusal a ``login.failed`` (which moves the end
    of the refusal on: an address that keeps failing stays refused).

If ``guard.triggered`` cannot be written, ``warn`` and ``alert`` do nothing more, and ``end``
still ends (or blocks): a trigger is never let through for want of its record. If the sources
database fails, the rule is skipped and logged, and the login goes on: the front door has
audited it already, and a broken guard must not lock every operator out.

A user's first login ever is not "new": there is nothing to compare it with, and it is
remembered even under ``end``. The address is the connection's own (no /64 grouping: an IPv6
client moving inside its prefix is new).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from bastion.breakglass.alerts import AlertDispatcher
from bastion.config.guard import Guard
from bastion.durations import format_duration
from bastion.guard_rules import Action, Trigger, check_failures, check_source
from bastion.session.notices import NoticeFeed
from bastion.state.database import database_errors
from bastion.state.sources import SourceHistory

__all__ = ["WARN_FOR", "LoginWatch"]

log = logging.getLogger(__name__)

Audit = Callable[..., Awaitable[bool]]
WARN_FOR = 3600.0  # seconds a new_source banner stays up
T = TypeVar("T")


class _Skipped:
    """What a history call gives when the database failed (it was logged)."""


_SKIPPED = _Skipped()


class LoginWatch:
    """One per worker; the front door calls :meth:`refusal` when a login begins,
    :meth:`succeeded` after both factors, and :meth:`failed` for each failed login."""

    def __init__(
        self,
        guard: Guard,
        open_history: Callable[[], SourceHistory],
        *,
        audit: Audit,
        alerts: AlertDispatcher | None,
        notices: NoticeFeed | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._new_source = guard.new_source
        self._failures = guard.failures_from_source
        self._history = open_history() if self.active(guard) else None
        self._audit = audit
        self._alerts = alerts
        self._notices = notices
        self._clock = clock

    @staticmethod
    def active(guard: Guard) -> bool:
        return guard.new_source is not None or guard.failures_from_source is not None

    def close(self) -> None:
        if self._history is not None:
            self._history.close()

    async def refusal(self, source: str) -> str | None:
        """Why a login from ``source`` is refused now (``failures_from_source: end``)."""
        rule = self._failures
        if self._history is None or rule is None or rule.action is not Action.END:
            return None
        until = await self._in_history(
            "blocked sources not checked", self._history.blocked_until, source, self._clock()
        )
        if until is None or isinstance(until, _Skipped):
            return None
        return (
            f"bastion guard: logins from {source} are refused until "
            f"{datetime.fromtimestamp(until, UTC):%H:%M:%S} UTC after repeated failed logins"
        )

    async def succeeded(self, user: str, source: str, connection: str) -> str | None:
        """A login passed both factors; the message to end it with, if the guard ends it."""
        rule = self._new_source
        if self._history is None or rule is None:
            return None
        now = self._clock()
        remembered = await self._in_history(
            "new_source not checked",
            self._history.remember,
            user,
            source,
            now,
            learn=rule.action is not Action.END,
        )
        if isinstance(remembered, _Skipped):
            return None
        new, known_user = remembered
        trigger = check_source(rule.action, user, source, known=not new)
        if trigger is None or not known_user:
            return None
        written = await self._triggered(trigger, user=user, source=source, connection=connection)
        if trigger.action is Action.END:
            await self._audit(
                "login.ended",
                actor=user,
                outcome="ended",
                user=user,
                source=source,
                connection=connection,
                rule=trigger.rule,
                reason="a login from an address never seen for this user",
            )
            return (
                f"bastion guard: {source} is a new address for {user}, and logins from new "
                "addresses are ended: ask an administrator to allow it"
            )
        if trigger.action is Action.WARN and written:
            await self._warn(
                user,
                f"a login for {user} from {source}, an address never seen for {user}; if it "
                "was not you, tell security",
                audience=(user,),
                until=now + WARN_FOR,
            )
        return None

    async def failed(self, user: str, source: str, connection: str) -> None:
        rule = self._failures
        if self._history is None or rule is None:
            return
        now = self._clock()
        window = rule.window.total_seconds()
        counted = await self._in_history(
            "failures not counted", self._history.failed, source, user, now, window
        )
        if isinstance(counted, _Skipped):
            return
        count, names = counted
        trigger = check_failures(rule.action, source, count, len(names), rule.count)
        written = trigger is not None and await self._triggered(
            trigger, user=user or "-", source=source, connection=connection
        )
        if rule.action is Action.END and count >= rule.count:
            # Each failure past the count (a refused login is one) moves the end on: an
            # address that keeps failing stays refused. Only the first is a trigger.
            await self._in_history(
                f"{source} not blocked", self._history.block, source, now, now + window
            )
        elif trigger is not None and trigger.action is Action.WARN and written:
            await self._warn(
                source,
                f"{count} failed logins from {source} within {format_duration(rule.window)}, "
                "some for your user name; if that was not you, tell security",
                audience=tuple(n for n in names if n),
                until=now + window,
            )

    async def _in_history(
        self, skipped: str, call: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T | _Skipped:
        """``call`` on the history, off the event loop. When the database fails, the failure
        and what it ``skipped`` are logged and the login goes on: the front door has audited
        it already, and a broken guard must not lock every operator out."""
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except database_errors() as exc:
            log.error("the login sources database failed; %s: %s", skipped, exc)  # noqa: TRY400
            return _SKIPPED

    async def _triggered(self, trigger: Trigger, **about: Any) -> bool:
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
            log.error("guard trigger %s not audited: no warning or alert", trigger.rule)
            return False
        if trigger.action is Action.ALERT and self._alerts is not None:
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
        return True

    async def _warn(
        self, about: str, text: str, *, audience: tuple[str, ...], until: float
    ) -> None:
        if self._notices is None or not audience:
            return
        try:
            await self._notices.post(
                "guard", user=about, text=text, audience=audience, expires_at=until
            )
        except Exception:  # the trigger is audited; only its banner is missing
            log.exception("the guard's warning could not be put up")
