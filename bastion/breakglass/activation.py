"""The start of a break-glass session: before its console or its ``debug`` command, and
before anything else the session could do.

In order:

1. the session's deadlines are narrowed to the time box (``break_glass.max_session`` from
   now, and its ``idle_timeout``): the session's hard deadline only ever shrinks, so no
   grant, renewal or later debug can take it past the box;
2. the operator is told what this session is (recorded, input included; alerted; when it
   ends) and asked for the reason: a line of at least ``min_reason_length`` characters and
   three words, three tries; nothing typed, Ctrl-C/Ctrl-D, the box running out or a
   disconnect end the session with one sentence and a ``breakglass.reason_refused`` event;
3. ``breakglass.started`` (outcome ``alert``: the reason, the source, the time box) is
   written to the audit log; if it cannot be, the session ends (audit before action);
4. a notice goes up on the board, so every operator's console, in every worker, shows a
   banner (who, since when, why) until the session is closed; if it cannot go up, the
   session ends: a break-glass session nobody can see does not start;
5. the alert goes out to every destination (never waited for).

Only then does the session's console (or its ``debug`` command) start.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bastion.breakglass.alerts import AlertDispatcher
from bastion.breakglass.reason import MIN_WORDS, check_reason
from bastion.config.models import BreakGlass
from bastion.redact import redact
from bastion.session.notices import NoticeFeed
from bastion.session.session import Session

__all__ = ["BREAK_GLASS_NOTICE", "REASON_PROMPT", "REASON_TRIES", "activate"]

log = logging.getLogger(__name__)

BREAK_GLASS_NOTICE = "break_glass"  # the notice's kind
REASON_PROMPT = "Break-glass reason: "
REASON_TRIES = 3

Ask = Callable[[str, float], Awaitable[str | None]]


async def activate(
    session: Session,
    *,
    config: BreakGlass,
    source: str,
    ask: Ask,
    say: Callable[[str], None],
    alerts: AlertDispatcher | None,
    notices: NoticeFeed | None,
) -> bool:
    """Steps 1 to 5 of the module docstring; False when the session must end (the operator
    has been told why, and the audit log says so)."""
    box = config.max_session.total_seconds()
    await session.narrow_deadlines(
        idle_timeout=config.idle_timeout.total_seconds(), hard_deadline=session.now() + box
    )
    ends = datetime.fromtimestamp(session.deadlines.hard_deadline, UTC)
    say(
        "*** BREAK-GLASS SESSION ***\r\n"
        "Security has been alerted. Everything in this session is recorded, your input "
        "included,\r\nand every operator's console shows that it is running.\r\n"
        f"It ends at {ends:%H:%M:%S} UTC at the latest ({_minutes(box)}); nothing extends "
        "it.\r\n"
        f"Say why you need it: at least {MIN_WORDS} words and {config.min_reason_length} "
        "characters (a ticket and what is broken)."
    )
    reason, problem = await _reason(session, config, ask, say)
    if reason is None:
        await session.record("breakglass.reason_refused", outcome="refused", problem=problem)
        say(
            f"bastion: {problem}; a break-glass session cannot start without a reason, so "
            "this session has ended"
        )
        return False
    # What the log, the alert and the banners carry: neutralised, then redacted as the audit
    # log redacts every string (a token pasted into the reason goes nowhere).
    reason = redact(reason)[0]
    await session.record(
        "breakglass.started",
        outcome="alert",
        reason=reason,
        source=source,
        connection=session.info.connection,
        hard_deadline=session.deadlines.hard_deadline,
        idle_timeout_seconds=session.deadlines.idle_timeout,
        vault_role=config.grant.vault_role,
    )
    if session.ending is not None:  # the event could not be written: the session is ending
        say("bastion: the session could not be recorded and has ended")
        return False
    if notices is not None:
        try:
            await notices.post(
                BREAK_GLASS_NOTICE, user=session.info.user, text=reason, session=session.id
            )
        except Exception as exc:  # noqa: BLE001 - whatever it was, the session must not start
            log.error("session %s: the break-glass notice did not go up: %s", session.id, exc)  # noqa: TRY400
            await session.record("breakglass.notice_failed", outcome="alert", error=str(exc))
            say(
                "bastion: the other operators cannot be shown this break-glass session, so it "
                "cannot start; tell an administrator"
            )
            return False
    if alerts is not None:
        alerts.send(
            "breakglass.started",
            user=session.info.user,
            session=session.id,
            connection=session.info.connection,
            source=source,
            reason=reason,
            ends_at=ends.isoformat().replace("+00:00", "Z"),
        )
    say("bastion: reason recorded. The session starts now.")
    return True


async def _reason(
    session: Session, config: BreakGlass, ask: Ask, say: Callable[[str], None]
) -> tuple[str | None, str]:
    """The reason, or None and why there is none."""
    problem = "no reason was given"
    for _ in range(REASON_TRIES):
        left = min(session.deadlines.idle_timeout, session.deadlines.hard_deadline - session.now())
        if left <= 0 or _ended(session):
            return None, "the session's time ran out before a reason was given"
        asked = session.now()
        line = await ask(REASON_PROMPT, left)
        if line is None:
            if _ended(session):
                return None, "the session ended before a reason was given"
            if session.now() - asked >= left:
                return None, f"no reason was given within {_minutes(left)}"
            return None, "no reason was given"
        try:
            return check_reason(line, config.min_reason_length), ""
        except ValueError as exc:
            problem = str(exc)
            if not line.strip():
                return None, problem
            say(f"bastion: {problem}")
    return None, f"{problem} ({REASON_TRIES} tries)"


def _ended(session: Session) -> bool:
    # A function, not an inline test: the session can end while we wait for the operator.
    return session.ending is not None


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{round(seconds)} seconds"
    return f"{round(seconds / 60)} minutes"
