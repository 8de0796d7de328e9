"""``bastion approvals list|approve|deny``: the administrator's side of four-eyes approval,
against the real state database and audit log (requests made as the broker makes them)."""

from __future__ import annotations

import json
import os
import pwd
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import WriteConfig

from bastion.approval import ApprovalRequest, DebugKey, Status
from bastion.cli.main import main
from bastion.cli.user import open_audit
from bastion.config import load_config
from bastion.state.approvals import SqliteApprovalStore

TOOLBOX = "registry.example.com/toolbox@sha256:" + "a" * 64
ME = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def config(write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SUDO_USER", raising=False)
    return write_config()


def store(config: Path) -> SqliteApprovalStore:
    return SqliteApprovalStore(config.parent / "state" / "journal.db")


def make(config: Path, request_id: str, *, requester: str = "alice", **overrides: Any) -> None:
    now = time.time()
    fields: dict[str, Any] = {
        "id": request_id,
        "requester": requester,
        "session": "s1",
        "key": DebugKey(
            "prod-eu",
            "payments",
            "db-0",
            "uid-1",
            "db",
            "ephemeral",
            TOOLBOX,
            65532,
            1800,
            '[{"users":[],"groups":["leads"]}]',
        ),
        "reason": "INC-7 \x1b]0;pwned\x07 slow queries",
        "grants": ("oncall",),
        "expires_after": 600.0,
        "status": Status.PENDING,
        "requested_at": now,
        "expires_at": now + 600,
    }
    fields.update(overrides)
    opened = store(config)
    try:
        opened.create(ApprovalRequest(**fields))
    finally:
        opened.close()


def status(config: Path, request_id: str) -> ApprovalRequest:
    opened = store(config)
    try:
        found = opened.get(request_id)
    finally:
        opened.close()
    assert found is not None
    return found


def events(config: Path) -> list[dict[str, Any]]:
    log = config.parent / "state" / "audit.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def run(config: Path, *args: str) -> int:
    return main(["approvals", *args, "--config", str(config)])


def test_list_shows_open_requests_neutralised_and_as_json(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, "list") == 0
    assert "(no open approval requests)" in capsys.readouterr().out
    make(config, "aaaa11112222")
    make(config, "bbbb11112222", requester="bob")
    opened = store(config)
    assert opened.deny("bbbb11112222", by="carol", reason="no", now=time.time())
    opened.close()
    assert run(config, "list") == 0
    out = capsys.readouterr().out
    assert "aaaa11112222  pending  alice" in out
    assert "prod-eu/payments/db-0 (db)  ephemeral  30m" in out
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "bbbb" not in out  # decided: not open
    assert run(config, "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["status"], r["pod_uid"], r["approvers"]) for r in listed] == [
        ("aaaa11112222", "pending", "uid-1", "groups leads")
    ]
    assert run(config, "list", "--all", "--json") == 0
    assert {r["id"] for r in json.loads(capsys.readouterr().out)} == {
        "aaaa11112222",
        "bbbb11112222",
    }


def test_an_administrator_approves_and_the_log_says_who(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make(config, "aaaa11112222")
    assert run(config, "approve", "aaaa11112222", "--reason", "INC-7 confirmed") == 0
    out = capsys.readouterr().out
    assert out.startswith("approved request aaaa11112222 of alice (prod-eu/payments/db-0, ")
    approved = status(config, "aaaa11112222")
    assert (approved.status, approved.decided_by) == (Status.APPROVED, ME)
    [event] = [e for e in events(config) if e["event"] == "approval.approved"]
    assert (event["actor"], event["requester"], event["via"]) == (ME, "alice", "cli")
    assert (event["pod"], event["pod_uid"], event["reason"]) == ("db-0", "uid-1", "INC-7 confirmed")
    assert main(["audit", "verify", str(config.parent / "state" / "audit.jsonl")]) == 0


def test_a_denial_needs_a_reason_and_is_final(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make(config, "aaaa11112222")
    assert run(config, "deny", "aaaa11112222", "--reason", "  ") == 1
    assert "a denial needs a reason" in capsys.readouterr().err
    assert run(config, "deny", "aaaa11112222", "--reason", "not during the freeze") == 0
    assert status(config, "aaaa11112222").status is Status.DENIED
    assert run(config, "approve", "aaaa11112222") == 1
    err = capsys.readouterr().err
    assert f"request aaaa11112222 of alice was denied by {ME} already" in err
    refused = [e for e in events(config) if e["event"] == "approval.decision_refused"]
    assert [(e["why"], e["decision"]) for e in refused] == [("decided", "approve")]


def test_nobody_approves_their_own_request_from_the_command_line(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make(config, "mine11112222", requester=ME)
    assert run(config, "approve", "mine11112222") == 1
    assert "is your own, and nobody approves their own request" in capsys.readouterr().err
    # Through sudo the invoking user is root, but the one who ran sudo is the requester.
    make(config, "alic11112222", requester="alice")
    monkeypatch.setenv("SUDO_USER", "alice")
    if os.getuid() == 0:
        assert run(config, "approve", "alic11112222") == 1
        assert "is your own" in capsys.readouterr().err
    assert status(config, "mine11112222").status is Status.PENDING
    assert status(config, "alic11112222").status is Status.PENDING
    refused = [e for e in events(config) if e["event"] == "approval.self_approval_refused"]
    assert [e["request"] for e in refused] == ["mine11112222", "alic11112222"][
        : 2 if os.getuid() == 0 else 1
    ]
    assert all(e["outcome"] == "refused" for e in refused)


def test_expired_and_unknown_requests_are_refused_in_one_sentence(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_ago = time.time() - 3600
    make(config, "old011112222", requested_at=long_ago, expires_at=long_ago + 600)
    assert run(config, "approve", "old011112222") == 1
    assert "request old011112222 of alice has expired; alice must ask again" in (
        capsys.readouterr().err
    )
    assert run(config, "approve", "nope") == 1
    assert "there is no approval request 'nope'" in capsys.readouterr().err
    assert [e["why"] for e in events(config) if e["event"] == "approval.decision_refused"] == [
        "expired",
        "unknown",
    ]


def _no_bigger_than(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_an_approval_that_cannot_be_recorded_is_taken_back(config: Path) -> None:
    """A full disk, as the command meets it: the log is at the file-size limit the command
    runs under, so the approval's event cannot be written (EFBIG)."""
    make(config, "aaaa11112222")
    log = open_audit(load_config(config, check_files=False))
    for _ in range(200):
        log.record_now("test.padding", actor="test", outcome="ok", pad="x" * 500)
    log.close()
    audit_log = config.parent / "state" / "audit.jsonl"
    limit = audit_log.stat().st_size + 100
    assert max(f.stat().st_size for f in (config.parent / "state").glob("journal.db*")) < limit
    result = subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "approvals", "approve", "aaaa11112222",
         "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
        preexec_fn=lambda: _no_bigger_than(limit),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "File too large" in result.stderr
    after = status(config, "aaaa11112222")
    assert (after.status, after.decided_by) == (Status.PENDING, None)
    assert not [e for e in events(config) if e["event"].startswith("approval.")]
