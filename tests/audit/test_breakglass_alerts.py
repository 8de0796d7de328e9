"""Break-glass alerts to a real HTTPS webhook and a real syslog-over-TLS server on
127.0.0.1: a JSON body, severity crit, never waited for, retried, every outcome audited."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bastion.audit.log import AuditLog
from bastion.audit.ship import SyslogTls, Webhook
from bastion.breakglass.alerts import CRIT, AlertDispatcher

from .receivers import ReceiverCa, SyslogReceiver, WebhookReceiver, make_ca, until


@pytest.fixture
def ca(tmp_path: Path) -> ReceiverCa:
    return make_ca(tmp_path / "ca")


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[AuditLog]:
    log = AuditLog(tmp_path / "audit.jsonl", hmac_key=b"k" * 32)
    log.open()
    yield log
    await log.aclose()


def events(audit: AuditLog, name: str) -> list[dict[str, Any]]:
    lines = audit.path.read_text().splitlines() if audit.path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == name]


async def test_an_alert_goes_to_both_destinations_at_once(ca: ReceiverCa, audit: AuditLog) -> None:
    webhook = await WebhookReceiver(ca).start()
    syslog = await SyslogReceiver(ca).start()
    alerts = AlertDispatcher(
        [
            SyslogTls("127.0.0.1", syslog.port, ca.ca_file, severity=CRIT, hostname="bastion-1"),
            Webhook(webhook.url, ca.ca_file, content_type="application/json"),
        ],
        audit,
    )
    try:
        alerts.send(
            "breakglass.started",
            user="emergency",
            session="s1",
            connection="c1",
            source="192.0.2.7",
            reason="INC-9 \u202e payments down",
        )
        await until(lambda: len(events(audit, "breakglass.alert_delivered")) == 2, "deliveries")
    finally:
        await alerts.aclose()
        await webhook.aclose()
        await syslog.aclose()

    (body,) = webhook.bodies
    assert webhook.headers[0]["Content-Type"] == "application/json"
    sent = json.loads(body)  # one JSON document
    assert sent["alert"] == "break_glass"
    assert sent["event"] == "breakglass.started"
    assert (sent["user"], sent["session"], sent["connection"]) == ("emergency", "s1", "c1")
    assert sent["reason"] == "INC-9 \u202e payments down"  # JSON-escaped on the wire
    assert "\u202e".encode() not in body

    (message,) = syslog.messages
    assert message.startswith(b"<106>1 ")  # facility 13 (log audit) * 8 + severity 2 (crit)
    assert b" bastion-1 bastion - breakglass.started - " in message
    assert syslog.json_lines()[0]["id"] == sent["id"]  # the same alert

    delivered = events(audit, "breakglass.alert_delivered")
    assert {e["destination"] for e in delivered} == {
        f"syslog 127.0.0.1:{syslog.port}",
        f"webhook {webhook.url}",
    }
    assert all(e["session"] == "s1" and e["attempts"] == 1 for e in delivered)
    assert all(e["actor"] == "bastion" and e["alert"] == "breakglass.started" for e in delivered)


async def test_guard_alerts_are_audited_under_their_own_names(
    ca: ReceiverCa, audit: AuditLog
) -> None:
    webhook = await WebhookReceiver(ca, failures=1).start()
    alerts = AlertDispatcher(
        [Webhook(webhook.url, ca.ca_file, content_type="application/json")],
        audit,
        retry=(0.01, 0.01),
    )
    try:
        alerts.send("guard.triggered", alert="guard", user="alice", session="s1", connection="c1")
        await until(lambda: bool(events(audit, "guard.alert_delivered")), "the retry")
        with pytest.raises(ValueError, match="unknown alert kind 'other'"):
            alerts.send("x", alert="other", user="alice", session=None, connection="c1")
    finally:
        await alerts.aclose()
        await webhook.aclose()
    assert json.loads(webhook.bodies[-1])["alert"] == "guard"
    (failed,) = events(audit, "guard.alert_failed")
    assert (failed["alert"], failed["retrying"]) == ("guard.triggered", True)
    assert not events(audit, "breakglass.alert_failed")
    assert not events(audit, "breakglass.alert_delivered")


async def test_a_failing_receiver_never_holds_up_the_sender_and_is_retried(
    ca: ReceiverCa, audit: AuditLog
) -> None:
    webhook = await WebhookReceiver(ca, failures=2).start()
    alerts = AlertDispatcher(
        [Webhook(webhook.url, ca.ca_file, content_type="application/json")],
        audit,
        retry=(0.05, 0.1),
    )
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        alerts.send("breakglass.login", user="emergency", session=None, connection="c2")
        assert loop.time() - started < 0.05  # send() only schedules
        await until(lambda: bool(events(audit, "breakglass.alert_delivered")), "the retry")
    finally:
        await alerts.aclose()
        await webhook.aclose()
    assert webhook.refused == 2
    (failed,) = events(audit, "breakglass.alert_failed")  # the first failure, not each retry
    assert failed["outcome"] == "alert"
    assert failed["error"] == f"webhook {webhook.url} answered HTTP 503"
    assert failed["retrying"] is True
    assert failed["connection"] == "c2"
    (delivered,) = events(audit, "breakglass.alert_delivered")
    assert delivered["attempts"] == 3


async def test_giving_up_and_stopping_are_both_recorded(ca: ReceiverCa, audit: AuditLog) -> None:
    wrong = make_ca(ca.ca_file.parent.parent / "other", "other")
    webhook = await WebhookReceiver(wrong).start()  # its certificate is not from our CA
    alerts = AlertDispatcher(
        [Webhook(webhook.url, ca.ca_file)], audit, retry=(0.05, 0.05), give_up_after=0.2
    )
    try:
        alerts.send("breakglass.login", user="emergency", session=None, connection="c3")
        await until(lambda: len(events(audit, "breakglass.alert_failed")) == 2, "giving up")
        first, last = events(audit, "breakglass.alert_failed")
        assert "presented a certificate the configured CA does not vouch for" in first["error"]
        assert (first["retrying"], last["retrying"]) == (True, False)
        assert last["attempts"] > 2
        assert webhook.bodies == []

        # A worker that stops with a delivery still being retried says so.
        slow = AlertDispatcher([Webhook(webhook.url, ca.ca_file)], audit, retry=(30, 30))
        slow.send("breakglass.started", user="emergency", session="s4", connection="c4")
        await until(lambda: len(events(audit, "breakglass.alert_failed")) == 3, "the failure")
        await slow.aclose()
    finally:
        await alerts.aclose()
        await webhook.aclose()
    stopped = events(audit, "breakglass.alert_failed")[-1]
    assert stopped["session"] == "s4"
    assert stopped["error"] == "the bastion worker stopped before the alert was delivered"
    assert stopped["retrying"] is False
