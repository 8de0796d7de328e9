"""Signed checkpoints: when they are written (events, time, close, across processes), what
`bastion audit verify --pubkey` checks, and what truncation it can and cannot see."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit import log as audit_log
from bastion.audit.chain import GENESIS, canonical, render, verify
from bastion.audit.checkpoint import CheckpointPolicy
from bastion.audit.log import (
    AUDIT_SIGNING_KEY,
    AuditLog,
    Checkpointer,
    head_path,
    read_head,
)
from bastion.errors import AuditUnavailable
from bastion.recording.key_files import load_or_create_signing_key, signing_public_key_path

KEY = b"k" * 32


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def signer(tmp_path: Path) -> Ed25519PrivateKey:
    return load_or_create_signing_key(tmp_path / "state", AUDIT_SIGNING_KEY)


@pytest.fixture
def pubkey(tmp_path: Path, signer: Ed25519PrivateKey) -> Path:
    return signing_public_key_path(tmp_path / "state", AUDIT_SIGNING_KEY)


def checkpointed(
    path: Path,
    key: Ed25519PrivateKey,
    *,
    every: int = 5,
    interval: float = 3600,
    clock: Callable[[], datetime] = audit_log.utc_now,
) -> AuditLog:
    return AuditLog(
        path,
        hmac_key=KEY,
        fsync="event",
        clock=clock,
        checkpoints=Checkpointer(key, CheckpointPolicy(every, interval)),
    )


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines_of(path)]


def checkpoint_seqs(path: Path) -> list[int]:
    return [e["seq"] for e in events_of(path) if e["event"] == "audit.checkpoint"]


def cli_verify(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "audit", "verify", str(path), *extra],
        capture_output=True,
        text=True,
        check=False,
    )


def rechain(events: list[dict[str, Any]]) -> bytes:
    """What someone without the signing key can do: renumber and re-hash every line."""
    prev, out = GENESIS, []
    for seq, original in enumerate(events, start=1):
        event = {**original, "seq": seq, "prev": prev}
        event["hash"] = hashlib.sha256(canonical(event)).hexdigest()
        prev = event["hash"]
        out.append(render(event) + b"\n")
    return b"".join(out)


def write_head(path: Path, seq: int, hash_: str) -> None:
    head_path(path).write_bytes(json.dumps({"seq": seq, "hash": hash_}).encode() + b"\n")


async def write(log: AuditLog, count: int, **fields: Any) -> None:
    for i in range(count):
        await log.record("session.state", actor="alice", outcome="ok", session="s1", n=i, **fields)


# ------------------------------------------------------------------------- when
async def test_a_checkpoint_signs_the_head_every_n_events_and_at_close(
    tmp_path: Path, signer: Ed25519PrivateKey, pubkey: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    async with checkpointed(path, signer, every=5) as log:
        await write(log, 12)
    events = events_of(path)
    # The first write of a new log signs at once (no checkpoint is known yet), then one
    # after every 5 events, and the close signs the one event left.
    assert checkpoint_seqs(path) == [2, 8, 14, 16]
    first = events[1]
    assert first["event"] == "audit.checkpoint"
    assert (first["actor"], first["outcome"], first["session"]) == ("bastion", "signed", None)
    assert first["covers"] == 1
    assert first["prev"] == events[0]["hash"]
    assert (first["every"], first["interval"]) == (5, 3600)
    assert first["key_id"].startswith("SHA256:")
    result = cli_verify(path, "--pubkey", str(pubkey))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 16 events, 4 checkpoints verified, signed up to line 16 (")
    # Without the key the checkpoints are counted, not trusted.
    assert cli_verify(path).stdout == (
        "ok: 16 events (4 checkpoints, signatures not checked without the key)\n"
    )
    head = json.loads(head_path(path).read_bytes())
    assert (head["seq"], head["checkpoint_seq"]) == (16, 16)


def test_a_checkpoint_is_written_when_the_interval_has_passed(
    tmp_path: Path, signer: Ed25519PrivateKey
) -> None:
    path = tmp_path / "audit.jsonl"
    clock = Clock()
    log = checkpointed(path, signer, every=1000, interval=60, clock=clock)
    log.open()  # outside an event loop (as the command-line tools): no timer, writes only
    try:
        log.record_now("e", actor="a", outcome="ok")
        clock.advance(59)
        log.record_now("e", actor="a", outcome="ok")
        clock.advance(2)
        log.record_now("e", actor="a", outcome="ok")
    finally:
        log.close()
    assert checkpoint_seqs(path) == [2, 5]


async def test_the_timer_signs_an_idle_log_and_several_processes_share_one_schedule(
    tmp_path: Path, signer: Ed25519PrivateKey, pubkey: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    async with checkpointed(path, signer, every=1000, interval=0.3) as log:
        await write(log, 1)
        async with checkpointed(path, signer, every=1000, interval=0.3):
            # Two writers (as two workers would be) on an idle log for about 1.5 intervals:
            # a heartbeat each interval, not one per writer.
            await asyncio.sleep(1.0)
    seqs = checkpoint_seqs(path)
    times = [
        datetime.fromisoformat(e["time"])
        for e in events_of(path)
        if e["event"] == "audit.checkpoint"
    ]
    assert 3 <= len(seqs) <= 6, seqs
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.25 for gap in gaps), gaps
    assert cli_verify(path, "--pubkey", str(pubkey)).returncode == 0


def test_processes_writing_one_log_follow_one_checkpoint_schedule(
    tmp_path: Path, signer: Ed25519PrivateKey, pubkey: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    state = tmp_path / "state"
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from bastion.audit.checkpoint import CheckpointPolicy
        from bastion.audit.log import AUDIT_SIGNING_KEY, AuditLog, Checkpointer
        from bastion.recording.key_files import load_or_create_signing_key

        async def main():
            key = load_or_create_signing_key(Path({str(state)!r}), AUDIT_SIGNING_KEY)
            checkpoints = Checkpointer(key, CheckpointPolicy(50, 3600))
            async with AuditLog(
                Path({str(path)!r}), hmac_key=b"k" * 32, checkpoints=checkpoints
            ) as log:
                for i in range(100):
                    await log.record("proc.event", actor=sys.argv[1], outcome="ok", i=i)

        asyncio.run(main())
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, f"worker{n}"]) for n in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    seqs = checkpoint_seqs(path)
    events = len(lines_of(path)) - len(seqs)
    assert events == 400
    # One schedule for the log: the first write, one per 50 events, and at most one final
    # checkpoint per closing process. Four independent schedules would make about four
    # times as many.
    assert len(seqs) <= 1 + 400 // 50 + 4, seqs
    # Checkpoints for the count came more than 50 lines after the one before; a closing
    # process's checkpoint (anywhere) restarts the count, which leaves at least
    # (400 - 4 * 49) / 50 of them.
    gaps = [b - a for a, b in itertools.pairwise(seqs)]
    assert sum(1 for gap in gaps if gap > 50) >= 4, seqs
    verdict = cli_verify(path, "--pubkey", str(pubkey))
    assert verdict.returncode == 0, verdict.stderr


# ------------------------------------------------------------------------- verify
async def test_checkpoints_by_another_key_are_forged(
    tmp_path: Path, signer: Ed25519PrivateKey
) -> None:
    path = tmp_path / "audit.jsonl"
    async with checkpointed(path, Ed25519PrivateKey.generate()) as log:
        await write(log, 3)
    other = load_or_create_signing_key(tmp_path / "state", AUDIT_SIGNING_KEY)
    assert other is not None
    result = cli_verify(
        path, "--pubkey", str(signing_public_key_path(tmp_path / "state", AUDIT_SIGNING_KEY))
    )
    assert result.returncode == 3
    assert result.stderr.startswith(f"FORGED: {path}: line 2: checkpoint signed by key SHA256:")
    assert "another bastion's log, or a forged checkpoint" in result.stderr


async def test_a_consistent_rewrite_without_the_key_breaks_every_signature(
    tmp_path: Path, signer: Ed25519PrivateKey, pubkey: Path
) -> None:
    """Edit one event, then re-hash the whole chain and its head so that the chain and the
    head agree: only the signatures show it."""
    path = tmp_path / "audit.jsonl"
    async with checkpointed(path, signer, every=5) as log:
        await write(log, 8)
    events = events_of(path)
    events[2]["outcome"] = "denied"
    path.write_bytes(rechain(events))
    rewritten = events_of(path)
    write_head(path, rewritten[-1]["seq"], rewritten[-1]["hash"])
    assert cli_verify(path).returncode == 0  # chain and head alone: fine
    result = cli_verify(path, "--pubkey", str(pubkey))
    assert result.returncode == 3
    assert result.stderr == (
        f"FORGED: {path}: line 8: checkpoint signature does not verify (forged, or the lines "
        "it covers changed)\n"
    )
    # Dropping the checkpoints as well leaves a log with nothing signed.
    bare = [e for e in rewritten if e["event"] != "audit.checkpoint"]
    path.write_bytes(rechain(bare))
    last = events_of(path)[-1]
    write_head(path, last["seq"], last["hash"])
    result = cli_verify(path, "--pubkey", str(pubkey))
    assert result.returncode == 6
    assert result.stderr.startswith(f"UNSIGNED: {path}: no checkpoint: none of the 8 events")


async def test_events_appended_without_the_key_exceed_the_unsigned_tail_the_policy_allows(
    tmp_path: Path, signer: Ed25519PrivateKey, pubkey: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    async with checkpointed(path, signer, every=5) as log:
        await write(log, 3)
    assert checkpoint_seqs(path) == [2, 5]
    async with AuditLog(path, hmac_key=KEY) as unsigned:  # a writer without the key
        await write(unsigned, 4)
    assert cli_verify(path, "--pubkey", str(pubkey)).returncode == 0  # 4 < 5: a normal tail
    async with AuditLog(path, hmac_key=KEY) as unsigned:
        await write(unsigned, 1)
    result = cli_verify(path, "--pubkey", str(pubkey))
    assert result.returncode == 6
    assert result.stderr == (
        f"UNSIGNED: {path}: line 6: the 5 events after the last checkpoint (line 5) are more "
        "than its policy leaves unsigned (4); they were added without the bastion's signing "
        "key\n"
    )


# ------------------------------------------------------------------------- truncation
async def shipped_run(path: Path, signer: Ed25519PrivateKey) -> list[bytes]:
    """A log of 12 events with checkpoints every 5; returns the checkpoint lines, as a
    receiver off-host would have stored them (here, in syslog form)."""
    async with checkpointed(path, signer, every=5) as log:
        await write(log, 12)
    return [
        b"Nov 28 12:00:00 bastion bastion: \xef\xbb\xbf" + line
        for line in lines_of(path)
        if b'"event":"audit.checkpoint"' in line
    ]


async def test_a_cut_tail_and_head_pass_locally_but_not_against_shipped_checkpoints(
    tmp_path: Path, signer: Ed25519PrivateKey, pubkey: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    shipped = tmp_path / "received.log"
    shipped.write_bytes(b"noise that is not JSON\n" + b"".join(await shipped_run(path, signer)))
    assert cli_verify(path, "--pubkey", str(pubkey), "--checkpoints", str(shipped)).stdout == (
        f"ok: 16 events, 4 checkpoints verified, signed up to line 16 "
        f"({events_of(path)[-1]['time']}); 4 shipped checkpoints match\n"
    )
    # Cut the log back to its second checkpoint and rewrite the head to match: everything
    # local agrees, because a prefix of a signed log is a signed log.
    lines = lines_of(path)[:8]
    path.write_bytes(b"".join(lines))
    last = json.loads(lines[-1])
    write_head(path, last["seq"], last["hash"])
    local = cli_verify(path, "--pubkey", str(pubkey))
    assert local.returncode == 0
    assert local.stdout.startswith("ok: 8 events, 2 checkpoints verified, signed up to line 8")
    result = cli_verify(path, "--pubkey", str(pubkey), "--checkpoints", str(shipped))
    assert result.returncode == 4
    assert result.stderr.startswith(
        f"TRUNCATED: {path}: line 9: missing: the log ends after 8 events but the checkpoint "
        "shipped as line 14 at "
    )
    assert result.stderr.endswith("shows it held 14; the tail was truncated\n")


async def test_a_log_rewritten_after_shipping_is_caught_by_the_shipped_checkpoints(
    tmp_path: Path, signer: Ed25519PrivateKey, pubkey: Path
) -> None:
    """Whoever holds the key (a compromised bastion) can re-sign a rewritten log; what was
    shipped before still holds it to what it said."""
    path = tmp_path / "audit.jsonl"
    shipped = tmp_path / "received.log"
    shipped.write_bytes(b"\n".join(await shipped_run(path, signer)) + b"\n")
    events = [e for e in events_of(path) if e["event"] != "audit.checkpoint"]
    events[0]["outcome"] = "denied"
    path.unlink()
    head_path(path).unlink()
    async with checkpointed(path, signer, every=5) as log:
        for event in events:
            await log.record(
                event["event"],
                actor=event["actor"],
                outcome=event["outcome"],
                session=event["session"],
                n=event["n"],
            )
    assert cli_verify(path, "--pubkey", str(pubkey)).returncode == 0
    result = cli_verify(path, "--pubkey", str(pubkey), "--checkpoints", str(shipped))
    assert result.returncode == 5
    assert result.stderr.startswith(f"REWRITTEN: {path}: line 1: differs from what the checkpoint")
    assert result.stderr.endswith("the log was rewritten after it was shipped\n")


async def test_a_forged_shipped_checkpoint_is_refused_and_shipped_ones_need_the_key(
    tmp_path: Path, signer: Ed25519PrivateKey, pubkey: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    checkpoints = await shipped_run(path, signer)
    forged = json.loads(checkpoints[-1].split(b"\xef\xbb\xbf", 1)[1])
    forged["covers"], forged["seq"] = 20, 21
    forged["hash"] = hashlib.sha256(canonical(forged)).hexdigest()
    shipped = tmp_path / "received.log"
    shipped.write_text(json.dumps(forged) + "\n")
    result = cli_verify(path, "--pubkey", str(pubkey), "--checkpoints", str(shipped))
    assert result.returncode == 3
    assert "FORGED" in result.stderr
    assert "checkpoint signature does not verify" in result.stderr
    result = cli_verify(path, "--checkpoints", str(shipped))
    assert result.returncode == 2
    assert result.stderr.startswith("CANNOT CHECK: checking shipped checkpoints needs")
    empty = tmp_path / "empty.log"
    empty.write_text("nothing here\n")
    result = cli_verify(path, "--pubkey", str(pubkey), "--checkpoints", str(empty))
    assert result.returncode == 2
    assert "holds no checkpoint" in result.stderr


# ------------------------------------------------------------------------- the writer
async def test_the_writer_refuses_to_continue_a_log_cut_before_its_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    async with AuditLog(path, hmac_key=KEY) as log:
        await write(log, 5)
        path.write_bytes(b"".join(lines_of(path)[:3]))  # cut under the running writer
        with pytest.raises(AuditUnavailable, match="ends at event 3 but its head records event 5"):
            await write(log, 1)
    assert len(lines_of(path)) == 3  # nothing was added to the cut log
    async with AuditLog(path, hmac_key=KEY) as again:  # nor by a writer that starts now
        with pytest.raises(AuditUnavailable, match="it was cut or its last line replaced"):
            await write(again, 1)


async def test_a_failed_head_sync_puts_the_head_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write whose head fsync fails is cut from the log; its head must not stay ahead of
    the log, or the next write would take the log for a cut one."""
    path = tmp_path / "audit.jsonl"
    async with AuditLog(path, hmac_key=KEY, fsync="event") as log:
        await write(log, 2)
        head_fd = log._head_fd
        real_fsync = os.fsync

        def failing(fd: int) -> None:
            if fd == head_fd:
                raise OSError(5, "Input/output error")
            real_fsync(fd)

        monkeypatch.setattr(audit_log.os, "fsync", failing)
        with pytest.raises(AuditUnavailable, match="Input/output error"):
            await write(log, 1)
        monkeypatch.setattr(audit_log.os, "fsync", real_fsync)
        await write(log, 1)
    events = events_of(path)
    assert [e["event"] for e in events] == [
        "session.state",
        "session.state",
        "audit.unavailable",
        "session.state",
    ]
    outage = events[2]
    assert outage["outcome"] == "alert"
    assert outage["refused_events"] == 1
    assert "Input/output error" in outage["error"]
    assert verify(lines_of(path), read_head(head_path(path))).ok


def test_an_old_head_record_without_checkpoint_fields_is_read(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_head(path, 3, "ab" * 32)
    head = read_head(head_path(path))
    assert head is not None
    assert (head.seq, head.hash) == (3, "ab" * 32)
