"""Shipping checkpoints (or every line) off-host: to a real syslog-over-TLS server and a
real HTTPS webhook on 127.0.0.1, each with its own test CA."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import base_config
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit.chain import render, seal
from bastion.audit.checkpoint import CheckpointPolicy
from bastion.audit.log import AUDIT_SIGNING_KEY, AuditLog, Checkpointer
from bastion.audit.ship import Shipper, SyslogTls, Webhook, cursor_path, rfc5424, shippers_for
from bastion.config import load_config
from bastion.errors import ConfigError
from bastion.recording.key_files import load_or_create_signing_key, signing_public_key_path

from .receivers import ReceiverCa, SyslogReceiver, WebhookReceiver, make_ca, until

KEY = b"k" * 32


@pytest.fixture
def ca(tmp_path: Path) -> ReceiverCa:
    return make_ca(tmp_path / "ca")


@pytest.fixture
async def syslog(ca: ReceiverCa) -> AsyncIterator[SyslogReceiver]:
    receiver = await SyslogReceiver(ca).start()
    yield receiver
    await receiver.aclose()


@pytest.fixture
async def webhook(ca: ReceiverCa) -> AsyncIterator[WebhookReceiver]:
    receiver = await WebhookReceiver(ca).start()
    yield receiver
    await receiver.aclose()


@pytest.fixture
def signer(tmp_path: Path) -> Ed25519PrivateKey:
    return load_or_create_signing_key(tmp_path / "state", AUDIT_SIGNING_KEY)


def shipping_log(
    path: Path, signer: Ed25519PrivateKey | None, *shippers: Shipper, every: int = 5
) -> AuditLog:
    return AuditLog(
        path,
        hmac_key=KEY,
        checkpoints=Checkpointer(signer, CheckpointPolicy(every, 3600)) if signer else None,
        background=[shipper.run for shipper in shippers],
    )


def fast(destination: Any, path: Path, **options: Any) -> Shipper:
    return Shipper(destination, path, poll=0.05, leader_poll=0.1, retry=(0.05, 0.2), **options)


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def events_of(path: Path, name: str | None = None) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in lines_of(path)]
    return [e for e in events if name is None or e["event"] == name]


async def write(log: AuditLog, count: int) -> None:
    for i in range(count):
        await log.record("session.state", actor="alice", outcome="ok", session="s1", n=i)


# ------------------------------------------------------------------------- delivery
async def test_checkpoints_reach_syslog_and_a_webhook_as_written_and_verify_there(
    tmp_path: Path,
    ca: ReceiverCa,
    syslog: SyslogReceiver,
    webhook: WebhookReceiver,
    signer: Ed25519PrivateKey,
) -> None:
    path = tmp_path / "audit.jsonl"
    to_syslog = fast(SyslogTls("127.0.0.1", syslog.port, ca.ca_file, hostname="bastion-1"), path)
    to_webhook = fast(Webhook(webhook.url, ca.ca_file, token="t0ken-42"), path)
    async with shipping_log(path, signer, to_syslog, to_webhook) as log:
        await write(log, 12)
        await until(lambda: len(syslog.messages) == 3, "three checkpoints at the syslog server")
        await until(lambda: len(webhook.json_lines()) == 3, "three checkpoints at the webhook")
    # Closing signs the last event and ships that checkpoint before the shippers stop.
    checkpoints = [line for line in lines_of(path) if b'"event":"audit.checkpoint"' in line]
    assert len(checkpoints) == 4
    assert len(syslog.messages) == 4
    assert syslog.connections == 1
    for message, line in zip(syslog.messages, checkpoints, strict=True):
        event = json.loads(line)
        header = f"<110>1 {event['time']} bastion-1 bastion - audit.checkpoint - ".encode()
        assert message == header + b"\xef\xbb\xbf" + line.rstrip(b"\n")
    assert [json.dumps(e, separators=(",", ":")) for e in webhook.json_lines()] == [
        line.decode().rstrip("\n") for line in checkpoints
    ]
    assert webhook.headers[0]["Authorization"] == "Bearer t0ken-42"
    assert webhook.headers[0]["Content-Type"] == "application/x-ndjson"
    cursor = json.loads(cursor_path(path, "syslog").read_bytes())
    assert cursor["seq"] == json.loads(checkpoints[-1])["seq"]
    # What the receiver stored is what an auditor checks the log against.
    received = tmp_path / "received.log"
    received.write_bytes(b"\n".join(syslog.messages) + b"\n")
    pubkey = signing_public_key_path(tmp_path / "state", AUDIT_SIGNING_KEY)
    result = bastion(
        "audit", "verify", str(path), "--pubkey", str(pubkey), "--checkpoints", str(received)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("; 4 shipped checkpoints match\n")


async def test_a_failing_webhook_is_an_alert_is_retried_and_never_holds_up_an_event(
    tmp_path: Path, ca: ReceiverCa, webhook: WebhookReceiver
) -> None:
    path = tmp_path / "audit.jsonl"
    webhook.failures = 3
    shipper = fast(Webhook(webhook.url, ca.ca_file), path, everything=True)
    async with shipping_log(path, None, shipper) as log:
        await write(log, 5)  # returns as soon as each is on disk, shipped or not
        await until(lambda: bool(events_of(path, "audit.ship_resumed")), "the shipping to resume")
        await until(
            lambda: len(webhook.json_lines()) == len(lines_of(path)), "every line at the webhook"
        )
    failed = events_of(path, "audit.ship_failed")
    assert len(failed) == 1  # one alert per outage (then every 10 minutes while it lasts)
    assert failed[0]["outcome"] == "alert"
    assert failed[0]["error"] == f"webhook {webhook.url} answered HTTP 503"
    assert failed[0]["destination"] == f"webhook {webhook.url}"
    resumed = events_of(path, "audit.ship_resumed")[0]
    assert (resumed["outcome"], resumed["attempts"]) == ("ok", 3)
    # Everything arrived once, in order, the alerts included.
    assert [e["seq"] for e in webhook.json_lines()] == [e["seq"] for e in events_of(path)]
    assert webhook.refused == 3


async def test_a_receiver_whose_certificate_the_pinned_ca_did_not_sign_gets_nothing(
    tmp_path: Path, syslog: SyslogReceiver, signer: Ed25519PrivateKey
) -> None:
    path = tmp_path / "audit.jsonl"
    other = make_ca(tmp_path / "other-ca", "other")
    shipper = fast(SyslogTls("127.0.0.1", syslog.port, other.ca_file), path)
    async with shipping_log(path, signer, shipper) as log:
        await write(log, 1)
        await until(lambda: bool(events_of(path, "audit.ship_failed")), "the alert")
    failed = events_of(path, "audit.ship_failed")[0]
    assert failed["error"].startswith(
        f"syslog 127.0.0.1:{syslog.port} presented a certificate the configured CA does not "
        "vouch for ("
    )
    assert syslog.messages == []


async def test_an_unreachable_syslog_server_is_one_sentence(
    tmp_path: Path, ca: ReceiverCa, signer: Ed25519PrivateKey
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once it is closed
    path = tmp_path / "audit.jsonl"
    shipper = fast(SyslogTls("127.0.0.1", port, ca.ca_file), path)
    async with shipping_log(path, signer, shipper) as log:
        await write(log, 1)
        await until(lambda: bool(events_of(path, "audit.ship_failed")), "the alert")
    assert events_of(path, "audit.ship_failed")[0]["error"] == (
        f"cannot connect to syslog 127.0.0.1:{port}: Connect call failed ('127.0.0.1', {port})"
    )


def append_unsynced(path: Path) -> int:
    """A line in the file as a write in progress leaves it (the head not moved yet); the
    file's size before it."""
    last = events_of(path)[-1]
    size = path.stat().st_size
    line = seal(
        seq=last["seq"] + 1,
        time=last["time"],
        event="in.flight",
        session=None,
        actor="-",
        outcome="ok",
        fields={},
        prev=last["hash"],
    )
    with path.open("ab") as f:
        f.write(render(line) + b"\n")
    return size


async def test_a_line_not_yet_synced_is_not_shipped_and_one_cut_again_never_is(
    tmp_path: Path, ca: ReceiverCa, webhook: WebhookReceiver
) -> None:
    path = tmp_path / "audit.jsonl"
    async with shipping_log(
        path, None, fast(Webhook(webhook.url, ca.ca_file), path, everything=True)
    ) as log:
        await write(log, 2)
        await until(lambda: len(webhook.json_lines()) == 2, "the first lines")
        size = append_unsynced(path)
        await asyncio.sleep(0.3)  # six rounds of the shipper
        assert len(webhook.json_lines()) == 2
        os.truncate(path, size)  # the write failed: the writer cuts it again
        await write(log, 1)
        await until(lambda: len(webhook.json_lines()) == 3, "the next line")
    assert [e["event"] for e in webhook.json_lines()] == ["session.state"] * 3
    assert [e["seq"] for e in webhook.json_lines()] == [1, 2, 3]


# ------------------------------------------------------------------------- several workers
async def test_one_worker_ships_for_the_host_and_another_takes_over_when_it_stops(
    tmp_path: Path, ca: ReceiverCa, syslog: SyslogReceiver, signer: Ed25519PrivateKey
) -> None:
    path = tmp_path / "audit.jsonl"

    def shipper() -> Shipper:
        return fast(SyslogTls("127.0.0.1", syslog.port, ca.ca_file), path, everything=True)

    first = shipping_log(path, signer, shipper())
    second = shipping_log(path, signer, shipper())
    first.open()
    await asyncio.sleep(0.1)  # the first to take the cursor's lock ships
    second.open()
    try:
        await write(first, 3)
        await write(second, 3)
        await until(lambda: len(syslog.messages) == len(lines_of(path)), "the first lines")
        assert syslog.connections == 1
        await first.aclose()
        await write(second, 3)
        await until(lambda: len(syslog.messages) == len(lines_of(path)), "the later lines")
    finally:
        await second.aclose()
    await until(lambda: len(syslog.messages) == len(lines_of(path)), "the last checkpoint")
    seqs = [e["seq"] for e in syslog.json_lines()]
    assert seqs == list(range(1, len(lines_of(path)) + 1))  # each once, in order
    assert syslog.connections == 2  # the second worker's shipper took over


async def test_a_log_cut_under_the_shipper_is_an_alert_and_is_sent_again(
    tmp_path: Path, ca: ReceiverCa, webhook: WebhookReceiver
) -> None:
    path = tmp_path / "audit.jsonl"
    async with shipping_log(
        path, None, fast(Webhook(webhook.url, ca.ca_file), path, everything=True)
    ) as log:
        await write(log, 4)
        await until(lambda: len(webhook.json_lines()) == 4, "the first log")
    # The log and its head replaced by a shorter one (as someone covering their tracks would).
    path.unlink()
    (tmp_path / "audit.jsonl.head").unlink()
    async with shipping_log(
        path, None, fast(Webhook(webhook.url, ca.ca_file), path, everything=True)
    ) as log:
        await until(lambda: bool(events_of(path, "audit.ship_rewound")), "the alert")
        await write(log, 1)
        await until(lambda: len(webhook.json_lines()) == 4 + len(lines_of(path)), "the new log")
    rewound = events_of(path, "audit.ship_rewound")[0]
    assert rewound["outcome"] == "alert"
    assert rewound["shipped_to"] == 4
    assert rewound["reason"].startswith("the log is shorter (0 bytes) than what was shipped")
    assert [e["seq"] for e in webhook.json_lines()][4:] == [1, 2]


# ------------------------------------------------------------------------- the format
def test_rfc5424_severity_header_fields_and_bom() -> None:
    def message(event: dict[str, Any]) -> bytes:
        line = json.dumps(event).encode() + b"\n"
        return rfc5424(line, hostname="bastion 1\x1b")

    alert = message({"time": "2026-11-28T12:00:00.000001Z", "event": "x", "outcome": "alert"})
    assert alert.startswith(b"<105>1 2026-11-28T12:00:00.000001Z bastion_1_ bastion - x - \xef")
    denied = message({"time": "yesterday", "event": "login failed\n", "outcome": "denied"})
    assert denied.startswith(b"<108>1 - bastion_1_ bastion - login_failed_ - \xef\xbb\xbf{")
    assert message({"event": "e" * 40, "outcome": "ok"}).startswith(
        b"<110>1 - bastion_1_ bastion - " + b"e" * 32 + b" - "
    )
    assert rfc5424(b"not json\n", hostname="h") == b"<110>1 - h bastion - - - \xef\xbb\xbfnot json"


# ------------------------------------------------------------------------- configuration
def audit_config(tmp_path: Path, ca: ReceiverCa, ship: dict[str, Any]) -> Path:
    config = base_config(tmp_path)
    config["audit"] = {"checkpoint_every": 100, "checkpoint_interval": "30s", "ship": ship}
    path = tmp_path / "bastion.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_config_names_the_destinations_and_their_files_are_checked(
    tmp_path: Path, ca: ReceiverCa
) -> None:
    token = tmp_path / "webhook.token"
    token.write_text("s3cret-token\n")
    token.chmod(0o600)
    path = audit_config(
        tmp_path,
        ca,
        {
            "events": "all",
            "syslog": {"address": "127.0.0.1:6514", "ca_file": str(ca.ca_file)},
            "webhook": {
                "url": "https://siem.example.com/bastion",
                "ca_file": str(ca.ca_file),
                "token_file": "webhook.token",
            },
        },
    )
    config = load_config(path, check_files=True)
    shippers = shippers_for(config)
    assert [s.destination.where for s in shippers] == [
        "syslog 127.0.0.1:6514",
        "webhook https://siem.example.com/bastion",
    ]
    assert all(s.everything for s in shippers)
    token.chmod(0o644)
    with pytest.raises(ConfigError, match=re.escape("webhook.token has mode 0644; expected 0600")):
        shippers_for(config)


def test_check_config_reports_a_missing_receiver_ca_and_a_loose_token(
    tmp_path: Path, ca: ReceiverCa
) -> None:
    token = tmp_path / "webhook.token"
    token.write_text("t\n")
    token.chmod(0o640)
    path = audit_config(
        tmp_path,
        ca,
        {
            "syslog": {"address": "logs.example.com:6514", "ca_file": "missing.pem"},
            "webhook": {
                "url": "https://siem.example.com/bastion",
                "ca_file": str(ca.ca_file),
                "token_file": "webhook.token",
            },
        },
    )
    result = bastion("check-config", str(path))
    assert result.returncode == 2
    assert "audit.ship.syslog.ca_file: CA file" in result.stderr
    assert "missing.pem does not exist" in result.stderr
    assert "audit.ship.webhook.token_file: secret file" in result.stderr
    assert "has mode 0640; expected 0600" in result.stderr


@pytest.mark.parametrize(
    ("audit", "says"),
    [
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"checkpoint_interval": "2h"}, "expected a duration from 1s to 1h"),
        ({"ship": {"events": "checkpoints"}}, "'ship' needs a destination"),
        ({"ship": {"events": "some"}}, "events"),
        (
            {"ship": {"syslog": {"address": "logs.example.com", "ca_file": "ca.pem"}}},
            "'logs.example.com' is not HOST:PORT",
        ),
        (
            {"ship": {"syslog": {"address": "2001:db8::1:6514", "ca_file": "ca.pem"}}},
            "is not HOST:PORT",
        ),
        (
            {"ship": {"webhook": {"url": "http://siem.example.com/", "ca_file": "ca.pem"}}},
            "must be an https:// URL",
        ),
    ],
)
def test_audit_section_errors_say_what_was_expected(
    tmp_path: Path, audit: dict[str, Any], says: str
) -> None:
    config = base_config(tmp_path)
    config["audit"] = audit
    path = tmp_path / "bastion.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=says) as caught:
        load_config(path, check_files=False)
    assert "audit" in str(caught.value)


def test_the_servers_log_signs_with_a_key_made_in_the_state_dir(tmp_path: Path) -> None:
    config_data = base_config(tmp_path)
    path = tmp_path / "bastion.yaml"
    path.write_text(yaml.safe_dump(config_data))
    config = load_config(path, check_files=False)
    log = AuditLog.for_config(config)
    log.open()
    try:
        log.record_now("e", actor="a", outcome="ok")
    finally:
        log.close()
    state = config.paths.state_dir
    assert (state / "audit-signing.key").stat().st_mode & 0o777 == 0o600
    assert (state / "audit-signing.pub").read_text().startswith("ed25519:")
    assert [e["event"] for e in events_of(config.paths.audit_log)] == ["e", "audit.checkpoint"]
    assert events_of(config.paths.audit_log)[1]["every"] == 1000
    assert events_of(config.paths.audit_log)[1]["interval"] == 60.0
