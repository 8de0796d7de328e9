"""Alerts (break-glass uses, guard triggers): one JSON document per event, sent at once to
every configured destination (``break_glass.alerts``: an HTTPS webhook, a syslog server over
TLS at severity ``crit``), retried in the background, every outcome in the audit log under
the name of what alerted (:data:`ALERT_KINDS`: ``breakglass.alert_*``, ``guard.alert_*``).

The transport is the audit shipper's (:mod:`bastion.audit.ship`: CA pinned, TLS 1.2+, no
redirects, no proxy from the environment); what differs is the body and the urgency:

* the body is one JSON object (``Content-Type: application/json``; for syslog, the MSG of
  an RFC 5424 message of facility 13 and severity 2, MSGID the event name), e.g.
  ``{"alert":"break_glass","event":"breakglass.started","time":"…","bastion":"host",
  "user":"alice","source":"192.0.2.7","session":"…","reason":"…",…}``;
* :meth:`AlertDispatcher.send` never waits: it starts one delivery task per destination and
  returns, so a slow or dead receiver never holds up a login or a session;
* a delivery that fails is tried again after 1 s, doubling up to 60 s between tries, for an
  hour; the first failure, the giving up, and a success after failures are audit events
  (``<kind>.alert_failed`` with outcome ``alert``, ``<kind>.alert_delivered``), as is every
  first-try success, so the incident record lists each delivery;
* a worker that stops cancels what is still being retried, after a short grace, and says so
  in the audit log (``<kind>.alert_failed``, ``error``: the worker stopped).

Delivery is at least once per destination (a receiver that answered after our timeout gets
the retry too); the ``id`` field tells duplicates apart. Syslog has no acknowledgement: a
message is "delivered" once written to the TLS connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bastion.audit.log import AuditLog, rfc3339
from bastion.audit.ship import Destination, ShipFailed, SyslogTls, Webhook, read_token
from bastion.config.models import BreakGlassAlerts
from bastion.errors import AuditUnavailable

__all__ = ["ALERT_KINDS", "CRIT", "AlertDispatcher", "destinations_for"]

log = logging.getLogger(__name__)

CRIT = 2  # RFC 5424 severity "critical"
STOP_GRACE = 2.0  # seconds a stopping worker gives deliveries still in flight
# What alerts (the body's "alert"), and the prefix of its deliveries' audit events.
ALERT_KINDS = {"break_glass": "breakglass", "guard": "guard"}


def destinations_for(alerts: BreakGlassAlerts) -> list[Destination]:
    """The configured destinations; ConfigError when a token file or CA is unusable."""
    found: list[Destination] = []
    if alerts.syslog is not None:
        host, port = alerts.syslog.host_port()
        found.append(SyslogTls(host, port, alerts.syslog.ca_file, severity=CRIT))
    if alerts.webhook is not None:
        hook = alerts.webhook
        token = read_token(hook.token_file) if hook.token_file is not None else None
        found.append(Webhook(hook.url, hook.ca_file, token=token, content_type="application/json"))
    return found


@dataclass
class _Destination:
    destination: Destination
    # One delivery at a time per destination: the syslog client keeps one connection.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class AlertDispatcher:
    """One per worker; see the module docstring."""

    def __init__(
        self,
        destinations: Sequence[Destination],
        audit: AuditLog,
        *,
        retry: tuple[float, float] = (1.0, 60.0),
        give_up_after: float = 3600.0,
        hostname: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._destinations = [_Destination(d) for d in destinations]
        self._audit = audit
        self._retry = retry
        self._give_up_after = give_up_after
        self._hostname = hostname or socket.gethostname()
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def send(
        self,
        event: str,
        *,
        user: str,
        session: str | None,
        connection: str,
        alert: str = "break_glass",
        **fields: Any,
    ) -> None:
        """Announce ``event`` (``breakglass.login``, ``breakglass.started``, and the guard's
        ``guard.triggered`` with ``alert="guard"``) everywhere, now; returns at once.
        ``fields`` must be JSON values, already neutralised and redacted."""
        if alert not in ALERT_KINDS:
            raise ValueError(f"unknown alert kind {alert!r}; known: {', '.join(ALERT_KINDS)}")
        body = {
            "alert": alert,
            "event": event,
            "id": secrets.token_hex(8),
            "time": rfc3339(datetime.now(UTC)),
            "bastion": self._hostname,
            "user": user,
            "session": session,
            "connection": connection,
            **fields,
        }
        # ASCII on the wire: whatever a field holds reaches a SIEM console as a JSON escape.
        line = json.dumps(body, separators=(",", ":")).encode() + b"\n"
        loop = asyncio.get_running_loop()
        for target in self._destinations:
            task = loop.create_task(
                self._deliver(target, line, event, body),
                name=f"{alert}-alert-{target.destination.name}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, target: _Destination, line: bytes, event: str, body: dict[str, Any]
    ) -> None:
        destination = target.destination
        failed = f"{ALERT_KINDS[body['alert']]}.alert_failed"
        delivered = f"{ALERT_KINDS[body['alert']]}.alert_delivered"
        about = {
            "alert": event,
            "alert_id": body["id"],
            "destination": destination.where,
            "user": body["user"],
            "connection": body["connection"],
        }
        started = self._clock()
        attempts = 0
        try:
            while True:
                attempts += 1
                try:
                    async with target.lock:
                        await destination.send([line])
                except ShipFailed as exc:
                    given_up = self._clock() - started >= self._give_up_after
                    if attempts == 1 or given_up:
                        await self._record(
                            failed,
                            "alert",
                            body["session"],
                            **about,
                            error=str(exc),
                            attempts=attempts,
                            retrying=not given_up,
                        )
                    if given_up:
                        return
                    delay = min(self._retry[0] * 2 ** (attempts - 1), self._retry[1])
                    await asyncio.sleep(delay)
                    continue
                await self._record(
                    delivered,
                    "delivered",
                    body["session"],
                    **about,
                    attempts=attempts,
                )
                return
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._record(
                    failed,
                    "alert",
                    body["session"],
                    **about,
                    error="the bastion worker stopped before the alert was delivered",
                    attempts=attempts,
                    retrying=False,
                )
            raise

    async def _record(self, event: str, outcome: str, session: str | None, **fields: Any) -> None:
        try:
            await self._audit.record(
                event, actor="bastion", outcome=outcome, session=session, **fields
            )
        except AuditUnavailable as exc:
            # The alert itself is what matters here; its record is logged instead.
            log.error("audit event %s not written: %s", event, exc)  # noqa: TRY400

    async def drain(self, within: float) -> bool:
        """Wait up to ``within`` seconds for deliveries in flight; True when none is left."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=within)
        return not self._tasks

    async def aclose(self) -> None:
        """Give deliveries a short grace, cancel the rest (each says so), close connections.
        Call before the audit log is closed."""
        await self.drain(STOP_GRACE)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for target in self._destinations:
            await target.destination.aclose()
