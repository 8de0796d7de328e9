"""The audit log: chained, durable before acknowledged, tamper-evident, fail-closed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bastion.audit import log as audit_log
from bastion.audit.chain import GENESIS, canonical, verify
from bastion.audit.log import AuditLog, Secret, head_path, load_or_create_hmac_key, read_head
from bastion.errors import AuditUnavailable

KEY = b"k" * 32
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl"


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def cli_verify(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "audit", "verify", str(path), *extra],
        capture_output=True,
        text=True,
        check=False,
    )


async def write_events(path: Path, count: int, **kwargs: Any) -> list[dict[str, Any]]:
    async with AuditLog(path, hmac_key=KEY, **kwargs) as log:
        return [
            await log.record("session.state", actor="alice", outcome="ok", session="s1", n=i)
            for i in range(count)
        ]


async def test_events_are_chained_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fixed = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)
    events = await write_events(path, 3, clock=lambda: fixed)
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[0]["prev"] == GENESIS
    assert events[1]["prev"] == events[0]["hash"]
    first = json.loads(lines_of(path)[0])
    assert list(first) == [
        "seq", "time", "event", "session", "actor", "outcome", "n", "prev", "hash",
    ]  # fmt: skip
    assert first["time"] == "2026-11-28T12:00:00.123456Z"
    assert read_head(head_path(path)) is not None
    result = cli_verify(path)
    assert (result.returncode, result.stdout) == (0, "ok: 3 events\n")


async def test_appending_later_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_events(path, 2)
    again = await write_events(path, 2)
    assert [e["seq"] for e in again] == [3, 4]
    assert cli_verify(path).stdout == "ok: 4 events\n"


# ------------------------------------------------------------------------- tampering
Tamper = Callable[[list[bytes]], list[bytes]]


def edit_outcome(lines: list[bytes]) -> list[bytes]:
    lines[2] = lines[2].replace(b'"outcome":"ok"', b'"outcome":"no"')
    return lines


def forge_hash(lines: list[bytes]) -> list[bytes]:
    """Edit line 3 and recompute its hash: the next line's prev no longer matches."""
    event = json.loads(lines[2])
    event["outcome"] = "denied"
    event["hash"] = hashlib.sha256(canonical(event)).hexdigest()
    lines[2] = json.dumps(event, separators=(",", ":")).encode() + b"\n"
    return lines


def delete_middle(lines: list[bytes]) -> list[bytes]:
    return lines[:2] + lines[3:]


def reorder(lines: list[bytes]) -> list[bytes]:
    lines[1], lines[2] = lines[2], lines[1]
    return lines


def truncate_tail(lines: list[bytes]) -> list[bytes]:
    return lines[:3]


def torn_tail(lines: list[bytes]) -> list[bytes]:
    return [*lines[:4], lines[4][:20]]


def reformat(lines: list[bytes]) -> list[bytes]:
    """Same JSON content, different spacing: still not the line the writer wrote."""
    lines[1] = json.dumps(json.loads(lines[1])).encode() + b"\n"
    return lines


def duplicate_key(lines: list[bytes]) -> list[bytes]:
    lines[1] = lines[1].replace(b'"outcome":"ok"', b'"outcome":"denied","outcome":"ok"')
    return lines


@pytest.mark.parametrize(
    ("tamper", "verdict"),
    [
        (edit_outcome, "BROKEN line 3: hash does not match the content (the line was edited)"),
        (
            forge_hash,
            "BROKEN line 4: prev does not match the hash of the line before (a line was removed "
            "or moved)",
        ),
        (delete_middle, "BROKEN line 3: seq is 4, expected 3 (a line was removed or moved)"),
        (reorder, "BROKEN line 2: seq is 3, expected 2 (a line was removed or moved)"),
        (
            truncate_tail,
            "TRUNCATED line 4: missing: the log ends after 3 events but its head records 5; the "
            "tail was truncated",
        ),
        (
            torn_tail,
            "BROKEN line 5: incomplete line at the end of the log (torn write or truncation)",
        ),
        (reformat, "BROKEN line 2: not in the form the writer produces (the line was edited)"),
        (duplicate_key, "BROKEN line 2: not in the form the writer produces (the line was edited)"),
    ],
)
async def test_tampering_is_detected_at_the_first_bad_line(
    tmp_path: Path, tamper: Tamper, verdict: str
) -> None:
    path = tmp_path / "audit.jsonl"
    await write_events(path, 5)
    path.write_bytes(b"".join(tamper(lines_of(path))))
    result = cli_verify(path)
    word, message = verdict.split(" ", 1)
    assert result.returncode == {"BROKEN": 1, "TRUNCATED": 4}[word]
    assert result.stdout == ""
    assert result.stderr == f"{word}: {path}: {message}\n"


async def test_forged_last_line_is_caught_by_the_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_events(path, 3)
    lines = lines_of(path)
    event = json.loads(lines[2])
    event["outcome"] = "denied"
    event["hash"] = hashlib.sha256(canonical(event)).hexdigest()
    lines[2] = audit_log.render(event) + b"\n"
    path.write_bytes(b"".join(lines))
    assert cli_verify(path, "--no-head").returncode == 0  # the chain alone cannot tell
    result = cli_verify(path)
    assert result.returncode == 1
    assert result.stderr == (
        f"BROKEN: {path}: line 3: does not match the hash recorded in the head file\n"
    )


async def test_missing_head_file_is_a_failure_unless_waived(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_events(path, 2)
    head_path(path).unlink()
    result = cli_verify(path)
    assert result.returncode == 2
    assert result.stderr.startswith("CANNOT CHECK: ")
    assert "the head file" in result.stderr
    assert "--no-head" in result.stderr
    assert cli_verify(path, "--no-head").stdout == "ok: 2 events\n"


def test_a_head_that_lags_the_log_is_accepted() -> None:
    lines = []
    prev = GENESIS
    for seq in (1, 2):
        event = audit_log.seal(
            seq=seq,
            time="t",
            event="e",
            session=None,
            actor="a",
            outcome="ok",
            fields={},
            prev=prev,
        )
        prev = event["hash"]
        lines.append(audit_log.render(event) + b"\n")
        if seq == 1:
            head = audit_log.Head(1, event["hash"])
    assert verify(lines, head).ok


# ------------------------------------------------------------------------- concurrency
async def test_concurrent_tasks_never_interleave_or_break_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"

    async def writer(log: AuditLog, name: str) -> list[int]:
        seqs = []
        for i in range(20):
            event = await log.record("task.event", actor=name, outcome="ok", i=i, pad="x" * 500)
            seqs.append(event["seq"])
            if i % 3 == 0:
                await asyncio.sleep(0)
        return seqs

    async with AuditLog(path, hmac_key=KEY) as log:
        results = await asyncio.gather(*(writer(log, f"task{t}") for t in range(50)))
    all_seqs = sorted(s for seqs in results for s in seqs)
    assert all_seqs == list(range(1, 1001))
    for seqs in results:
        assert seqs == sorted(seqs)  # each task's events in its own order
    lines = lines_of(path)
    assert len(lines) == 1000
    assert all(json.loads(line)["pad"] == "x" * 500 for line in lines)
    assert verify(lines, read_head(head_path(path))).ok


def test_several_processes_share_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from bastion.audit.log import AuditLog

        async def main():
            async with AuditLog(Path({str(path)!r}), hmac_key=b"k" * 32) as log:
                for i in range(100):
                    await log.record("proc.event", actor=sys.argv[1], outcome="ok", i=i)
                    log.record_now("proc.sync", actor=sys.argv[1], outcome="ok", i=i)

        asyncio.run(main())
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, f"worker{n}"]) for n in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    lines = lines_of(path)
    assert len(lines) == 800
    verdict = verify(lines, read_head(head_path(path)))
    assert verdict.ok, verdict.message


# ------------------------------------------------------------------------- durability
async def test_no_event_is_acknowledged_before_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        real_fsync(fd)
        synced.append(fd)

    monkeypatch.setattr(audit_log.os, "fsync", spy)
    path = tmp_path / "audit.jsonl"
    async with AuditLog(path, hmac_key=KEY, fsync="event") as log:
        for i in range(5):
            before = len(synced)
            await log.record("e", actor="a", outcome="ok", i=i)
            assert len(synced) == before + 2  # the log, then the head record
            assert lines_of(path)[-1].startswith(b'{"seq":%d' % (i + 1))


async def test_batching_group_commits_concurrent_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(audit_log.os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    async with AuditLog(tmp_path / "a.jsonl", hmac_key=KEY, fsync="batch") as log:
        await asyncio.gather(*(log.record("e", actor="a", outcome="ok") for _ in range(200)))
    assert len(calls) < 200  # far fewer syncs than events...
    assert verify(lines_of(tmp_path / "a.jsonl"), read_head(tmp_path / "a.jsonl.head")).ok


def test_unwritable_log_refuses_the_action(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    log = AuditLog(blocked / "audit.jsonl", hmac_key=KEY)
    with pytest.raises(AuditUnavailable, match="cannot open the audit log"):
        log.open()


def test_disk_full_fails_closed_and_leaves_no_torn_line(tmp_path: Path) -> None:
    """A write that hits the file-size limit raises, and the log is cut back to whole events."""
    path = tmp_path / "audit.jsonl"
    script = textwrap.dedent(
        f"""
        import asyncio, resource, signal
        from pathlib import Path
        from bastion.audit.log import AuditLog
        from bastion.errors import AuditUnavailable

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

        async def main():
            async with AuditLog(Path({str(path)!r}), hmac_key=b"k" * 32) as log:
                written = 0
                try:
                    for i in range(1000):
                        await log.record("e", actor="a", outcome="ok", pad="x" * 300)
                        written += 1
                except AuditUnavailable as exc:
                    print(written, str(exc).splitlines()[0])
                    return
            print("never refused")

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    written, message = result.stdout.split(" ", 1)
    assert message.startswith(f"cannot write the audit log {path}: File too large")
    lines = lines_of(path)
    assert len(lines) == int(written) > 0
    assert verify(lines, read_head(head_path(path))).ok


async def test_refuses_to_continue_after_a_foreign_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_events(path, 2)
    with path.open("ab") as f:
        f.write(b'{"seq":3,"ti')
    with pytest.raises(AuditUnavailable, match="ends with an incomplete line"):
        await write_events(path, 1)


# ------------------------------------------------------------------------- secret hygiene
async def test_secrets_never_reach_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    async with AuditLog(path, hmac_key=KEY) as log:
        event = await log.record(
            "vault.lease",
            actor="alice",
            outcome="ok",
            lease=Secret("kubernetes/creds/debug/LEASE123"),
            token="plain-token-value",
            note=f"got {JWT} from the API",
            nested={"password": "hunter2", "count": 3},
        )
    raw = path.read_text()
    for secret in ("LEASE123", "plain-token-value", JWT, "hunter2"):
        assert secret not in raw
    assert event["lease"] == log.reference("kubernetes/creds/debug/LEASE123")
    assert event["lease"].startswith("hmac-sha256:")
    assert event["token"] == log.reference("plain-token-value")
    assert event["note"] == "got [REDACTED:jwt] from the API"
    assert event["nested"]["count"] == 3
    assert repr(Secret("x")) == "Secret(<hidden>)"


async def test_reserved_field_names_are_refused(tmp_path: Path) -> None:
    async with AuditLog(tmp_path / "a.jsonl", hmac_key=KEY) as log:
        with pytest.raises(ValueError, match="may not be named hash"):
            await log.record("e", actor="a", outcome="ok", hash="forged")
    assert not (tmp_path / "a.jsonl").read_bytes()


def test_hmac_key_is_created_private_and_reused(tmp_path: Path) -> None:
    key_file = tmp_path / "audit-hmac.key"
    key = load_or_create_hmac_key(key_file)
    assert len(key) == 32
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert load_or_create_hmac_key(key_file) == key
    key_file.write_bytes(b"short")
    with pytest.raises(AuditUnavailable, match="shorter than 32 bytes"):
        load_or_create_hmac_key(key_file)
