"""The guard of one session: runs the rules of :mod:`bastion.guard_rules` on what the session
does, writes each trigger to the audit log, then acts.

Every trigger is the audit event ``guard.triggered`` (``rule``, ``action``, ``evidence``
redacted with the recording's rules), written *before* the action: if it cannot be written,
the session's record() ends the session and nothing else happens. Then, per the rule's action:

* ``warn``: a line to the operator, in the shell's output (so the recording has it too);
* ``alert``: the break-glass alert destinations get ``{"alert": "guard", "event":
  "guard.triggered", ...}`` (:class:`bastion.breakglass.alerts.AlertDispatcher`: webhook and
  syslog ``crit``, retried, each delivery audited); the operator is not told;
* ``end``: the operator is told, and the session ends and is wiped (:attr:`Ending.GUARD`).
"""

from __future__ import annotations

from bastion.breakglass.alerts import AlertDispatcher
from bastion.config.guard import Guard
from bastion.guard_rules import Action, OutputMeter, Trigger, check_command
from bastion.recording.redaction import StreamRedactor
from bastion.session.lifecycle import Ending
from bastion.session.session import Session
from bastion.terminal_text import printable

__all__ = ["SessionGuard", "redact_text"]

# What the operator is told, by rule: what was seen, in their words.
_SEEN = {
    "output_volume": "more shell output than the guard allows in its window",
    "sensitive_path": "a command naming a sensitive path",
    "denied_command": "a command on the deny list",
}


def redact_text(text: str, secrets: list[str]) -> str:
    """``text`` as the recording would show it: the session's secrets and the usual
    credential shapes replaced by ``[REDACTED:kind]``."""
    redactor = StreamRedactor(secrets)
    data = redactor.feed(text.encode()) + redactor.flush()
    return data.decode("utf-8", "replace")


class SessionGuard:
    """One per debug shell (the output meter counts per shell)."""

    def __init__(
        self,
        session: Session,
        guard: Guard,
        *,
        alerts: AlertDispatcher | None,
        secrets: list[str],
    ) -> None:
        self._session = session
        self._rules = guard.command_rules()
        volume = guard.output_volume
        self._meter = (
            OutputMeter(volume.bytes, volume.window.total_seconds(), volume.action)
            if volume is not None
            else None
        )
        self._alerts = alerts
        self._secrets = secrets

    async def command(self, command: str) -> bytes:
        """Check a command line the shell reported; the operator's notices, if any."""
        return await self.act(check_command(self._rules, command))

    async def output(self, size: int, now: float) -> bytes:
        """Count output bytes at monotonic time ``now``; the operator's notice, if any."""
        if self._meter is None:
            return b""
        trigger = self._meter.add(size, now)
        return await self.act([trigger]) if trigger is not None else b""

    async def act(self, triggers: list[Trigger]) -> bytes:
        """Audit, then act on, each trigger; what to show the operator."""
        notices = []
        session = self._session
        for trigger in triggers:
            evidence = redact_text(trigger.evidence, self._secrets)
            await session.record(
                "guard.triggered",
                outcome=str(trigger.action),
                rule=trigger.rule,
                action=str(trigger.action),
                evidence=evidence,
            )
            seen = _SEEN.get(trigger.rule, trigger.rule)
            if trigger.action is Action.WARN:
                notices.append(
                    f"bastion guard: {seen} ({printable(evidence)}); this is in the audit log"
                )
            elif trigger.action is Action.ALERT:
                if self._alerts is not None:
                    info = session.info
                    self._alerts.send(
                        "guard.triggered",
                        alert="guard",
                        user=info.user,
                        session=info.id,
                        connection=info.connection,
                        source=info.source,
                        rule=trigger.rule,
                        evidence=evidence,
                    )
            else:
                notices.append(f"bastion guard: {seen}: this session is being ended")
                session.end_soon(Ending.GUARD)
        return b"".join(f"\r\n{n}\r\n".encode() for n in notices)
