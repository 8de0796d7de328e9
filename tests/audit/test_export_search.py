"""`bastion audit export` (for a SIEM) and `bastion audit search` (for a human)."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import base_config

from bastion.audit.log import AuditLog
from bastion.cli.audit import Query, export, search
from bastion.errors import BastionError

from .receivers import ReceiverCa, SyslogReceiver, make_ca, until

KEY = b"k" * 32
T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
ESC = "\x1b"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "audit", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def story(path: Path) -> None:
    """Two operators' sessions, an hour apart, as the bastion records them."""
    clock = Clock()
    log = AuditLog(path, hmac_key=KEY, clock=clock)
    log.open()
    try:
        log.record_now(
            "login.succeeded",
            actor="alice",
            outcome="allowed",
            mfa="totp",
            user="alice",
            key="SHA256:alicekey",
            connection="c-alice",
            source="192.0.2.10",
        )
        log.record_now(
            "session.opened",
            actor="alice",
            outcome="opened",
            session="s-alice",
            connection="c-alice",
        )
        log.record_now(
            "session.state",
            actor="alice",
            outcome="starting_debug",
            session="s-alice",
            target={"cluster": "prod", "namespace": "payments", "pod": "api-1"},
            reason="INC-1 latency on checkout",
        )
        log.record_now(
            "session.debug_ended",
            actor="alice",
            outcome="ended",
            session="s-alice",
            target="prod/payments/api-1",
            exit_status=0,
        )
        log.record_now(
            "connection.closed", actor="alice", outcome="closed", connection="c-alice", reason="bye"
        )
        clock.now = T0 + timedelta(hours=1)
        log.record_now(
            "login.failed", actor="bob", outcome="denied", user="bob", connection="c-bob"
        )
        log.record_now(
            "session.debug_refused",
            actor="bob",
            outcome="refused",
            session="s-bob",
            target=f"prod/payments/evil{ESC}[2J",
            reason=f"pod {ESC}]0;owned{ESC}\\ said no",
        )
    finally:
        log.close()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    story(path)
    return path


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def run_search(path: Path, **query: Any) -> list[str]:
    out = io.StringIO()
    assert search(Path("/nonexistent.yaml"), query=Query(**query), log=path, out=out) == 0
    return out.getvalue().splitlines()


def run_export(path: Path, **options: Any) -> bytes:
    out = io.BytesIO()
    assert export(Path("/nonexistent.yaml"), log=path, out=out, **options) == 0
    return out.getvalue()


# ------------------------------------------------------------------------- export
def test_export_writes_the_lines_exactly_as_stored_and_since_filters(log_path: Path) -> None:
    lines = log_path.read_bytes().splitlines(keepends=True)
    assert run_export(log_path) == b"".join(lines)
    assert run_export(log_path, since="2026-11-28T12:30:00Z") == b"".join(lines[5:])
    assert run_export(log_path, since="2026-11-28") == b"".join(lines)
    assert run_export(log_path, since="1h") == b""  # an age: an hour ago is after 2026-11-28


def test_export_stops_at_a_broken_chain_and_says_so(
    log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = log_path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"exit_status":0', b'"exit_status":1')
    log_path.write_bytes(b"".join(lines))
    out = io.BytesIO()
    assert export(Path("/nonexistent.yaml"), log=log_path, out=out) == 1
    assert out.getvalue() == b"".join(lines[:3])
    assert capsys.readouterr().err == (
        f"BROKEN: {log_path}: line 4: hash does not match the content (the line was edited); "
        f"the export stopped there (run bastion audit verify {log_path})\n"
    )


def test_export_follow_sends_new_lines_as_they_are_written(log_path: Path) -> None:
    argv = [sys.executable, "-m", "bastion.cli.main", "audit", "export", "--follow"]
    proc = subprocess.Popen([*argv, "--log", str(log_path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        first = [proc.stdout.readline() for _ in range(7)]
        assert first == log_path.read_bytes().splitlines(keepends=True)
        later = AuditLog(log_path, hmac_key=KEY)
        later.open()
        later.record_now("later.event", actor="carol", outcome="ok")
        later.close()
        assert b'"event":"later.event"' in proc.stdout.readline()
        assert proc.poll() is None  # still following
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.fixture
async def syslog(tmp_path: Path) -> AsyncIterator[tuple[ReceiverCa, SyslogReceiver]]:
    ca = make_ca(tmp_path / "ca")
    receiver = await SyslogReceiver(ca).start()
    yield ca, receiver
    await receiver.aclose()


async def test_export_to_the_configured_syslog_server(
    tmp_path: Path, log_path: Path, syslog: tuple[ReceiverCa, SyslogReceiver]
) -> None:
    ca, receiver = syslog
    config = base_config(tmp_path)
    config["audit"] = {
        "ship": {"syslog": {"address": f"127.0.0.1:{receiver.port}", "ca_file": str(ca.ca_file)}}
    }
    config_path = tmp_path / "bastion.yaml"
    config_path.write_text(yaml.safe_dump(config))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bastion.cli.main",
        "audit",
        "export",
        "--syslog",
        "--since",
        "2026-11-28T12:30:00Z",
        "--log",
        str(log_path),
        "--config",
        str(config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr
    assert stdout == b""
    assert stderr.decode() == f"sent 2 lines to syslog 127.0.0.1:{receiver.port}\n"
    await until(lambda: len(receiver.messages) == 2, "the lines at the syslog server")
    assert [m.split(b"\xef\xbb\xbf", 1)[1] for m in receiver.messages] == lines_of(log_path)[5:]


def test_export_to_syslog_needs_a_syslog_server_in_the_config(tmp_path: Path) -> None:
    config_path = tmp_path / "bastion.yaml"
    config_path.write_text(yaml.safe_dump(base_config(tmp_path)))
    result = bastion("export", "--syslog", "--config", str(config_path))
    assert result.returncode == 1
    assert result.stderr == (
        f"bastion: {config_path} names no syslog server\n"
        "  → set audit.ship.syslog (address, ca_file) in the config, or export to stdout\n"
    )


# ------------------------------------------------------------------------- search
def test_search_by_user_pod_event_and_time(log_path: Path) -> None:
    assert [line.split()[3] for line in run_search(log_path, user="alice")] == [
        "login.succeeded",
        "session.opened",
        "session.state",
        "session.debug_ended",
        "connection.closed",
    ]
    assert run_search(log_path, pod="api-1") == [
        "2026-11-28 12:00:00Z #3 session.state starting_debug alice session=s-alice "
        'target={"cluster":"prod","namespace":"payments","pod":"api-1"} '
        'reason="INC-1 latency on checkout"',
        "2026-11-28 12:00:00Z #4 session.debug_ended ended alice session=s-alice "
        "target=prod/payments/api-1 exit_status=0",
    ]
    assert [line.split()[3] for line in run_search(log_path, event="login.*")] == [
        "login.succeeded",
        "login.failed",
    ]
    assert len(run_search(log_path, since="2026-11-28T12:30:00Z")) == 2
    assert len(run_search(log_path, until="2026-11-28T12:30:00Z")) == 5
    assert run_search(log_path, user="alice", pod="api-2") == []


def test_search_by_session_brings_the_login_of_its_connection(log_path: Path) -> None:
    lines = run_search(log_path, session="s-alice")
    assert [line.split()[3] for line in lines] == [
        "login.succeeded",
        "session.opened",
        "session.state",
        "session.debug_ended",
        "connection.closed",
    ]
    assert lines[0] == (
        "2026-11-28 12:00:00Z #1 login.succeeded allowed alice mfa=totp user=alice "
        "key=SHA256:alicekey connection=c-alice source=192.0.2.10"
    )


def test_search_output_is_neutralised_for_the_terminal(log_path: Path) -> None:
    (line,) = run_search(log_path, user="bob", event="session.*")
    assert ESC not in line
    assert "target=prod/payments/evil?[2J" in line
    assert 'reason="pod ?]0;owned?\\\\ said no"' in line


def test_search_of_a_damaged_log_warns_and_shows_the_rest_unverified(
    log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = log_path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"outcome":"opened"', b'"outcome":"closed"')
    log_path.write_bytes(b"".join(lines))
    assert len(run_search(log_path)) == 7
    assert capsys.readouterr().err == (
        f"warning: {log_path}: line 2: hash does not match the content (the line was edited); "
        f"events from there on are shown unverified (run bastion audit verify {log_path})\n"
    )


def test_search_says_when_nothing_matches_and_explains_a_bad_time(
    log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_search(log_path, user="nobody") == []
    assert capsys.readouterr().err == "no event matches\n"
    result = bastion("search", "--since", "last tuesday", "--log", str(log_path))
    assert result.returncode == 1
    assert result.stderr == (
        "bastion: --since 'last tuesday' is neither a time (2026-11-28T12:00:00Z, 2026-11-28) "
        "nor an age (90m, 2h, 7d)\n"
    )
    with pytest.raises(BastionError, match="cannot read the audit log"):
        run_search(log_path.with_name("missing.jsonl"))


def test_search_from_the_command_line_reads_the_log_of_the_config(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config_path = tmp_path / "bastion.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / config["paths"]["audit_log"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    story(log_path)
    result = bastion("search", "--pod", "api-1", "--config", str(config_path))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
