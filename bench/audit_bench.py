#!/usr/bin/env python3
"""Audit log throughput: durable events per second of ``bastion.audit.log.AuditLog``.

What is measured, in one run, in one temporary directory (so on one filesystem):

* raw baselines, no project code: ``os.write`` of one line as long as a real audit line plus
  ``os.fsync``, per line; the same plus the head-record ``pwrite`` + ``fsync`` that the log's
  durability protocol adds (a second file, a second ``fsync``); and one ``os.write`` of 10 or
  100 such lines plus one ``fsync`` (what group commit can at best achieve);
* ``AuditLog.record_now`` (the blocking path used by the command-line tools), one event at a
  time;
* ``AuditLog(fsync="event")`` with sequential ``await log.record(...)``;
* ``AuditLog(fsync="batch")`` with 1, 10 and 100 concurrent writer tasks (group commit);
* the same AuditLog modes again with signed checkpoints as the server writes them (the
  default policy: every 1000 events and every 60 s), and ``fsync="event"`` with a
  checkpoint after every event (the worst case: a signature per write); and the cost of
  one Ed25519 signature alone.

Every AuditLog mode appends to the same log file, each with a fresh ``AuditLog`` (so each
start also exercises picking the chain up from the file's tail); at the end the whole file is
checked with ``bastion.audit.chain.verify`` against its head record and the signing key,
and the run fails (exit status 1) when the chain or a checkpoint does not verify, or the log
does not hold every event recorded.

Each mode stops after ``--events`` events or ``--budget`` seconds, whichever comes first, so
a slow disk makes the run shorter in events, not longer in time. The "vs" column compares
events/s with the matching raw baseline: one line per fsync for the one-at-a-time modes, one
batch of N lines per fsync for N concurrent writers. "batch" is the average number of events
per write+fsync (counted by wrapping the log's internal ``_write``; "-" if it is not there).

Run from the repository root::

    .venv/bin/python bench/audit_bench.py            # ~10-25 s
    .venv/bin/python bench/audit_bench.py --quick    # a few seconds
    .venv/bin/python bench/audit_bench.py --events 20000 --budget 10 --dir /var/lib/bastion
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit.chain import GENESIS, render, seal, verify
from bastion.audit.checkpoint import CheckpointPolicy, checkpoint_fields
from bastion.audit.log import AuditLog, Checkpointer, head_path, read_head, rfc3339

# Fields of a realistic "debug container started" event; plain values, nothing to redact.
FIELDS: dict[str, Any] = {
    "cluster": "prod-eu-1",
    "namespace": "payments",
    "pod": "api-7f9c6d5b8-x2k4q",
    "container": "app",
    "image": "registry.example.com/toolbox@sha256:" + "3f" * 32,
    "mode": "ephemeral",
    "reason": "INC-4821 latency spike on checkout",
    "max_session_s": 3600,
}
EVENT = "bench.event"
HEAD_SIZE = 256  # the size of the log's head record (bastion.audit.log._HEAD_SIZE)
WARMUP = 10  # untimed events before each mode
RAW_LINE = "raw write+fsync, per line"
SIGNER = Ed25519PrivateKey.generate()
SERVER_POLICY = Checkpointer(SIGNER, CheckpointPolicy(1000, 60.0))  # the config's defaults


@dataclass
class Result:
    mode: str
    events: int
    seconds: float
    commits: int | None  # write+fsync rounds; None when they could not be counted
    baseline: str | None = None  # mode name of the matching raw baseline
    logged: int = 0  # lines this mode appended to the audit log, warm-up included

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Limits:
    events: int
    budget: float  # seconds per mode
    min_commits: int  # batched modes run at least this many batches (budget permitting)

    def events_for(self, batch: int) -> int:
        """Events for a mode that commits ``batch`` at a time: enough batches to time."""
        return max(self.events, batch * self.min_commits)

    def counting(self) -> Iterator[int]:
        """Yield 0, 1, ... until ``events`` were taken or the budget is spent."""
        deadline = time.perf_counter() + self.budget
        for i in range(self.events):
            if time.perf_counter() >= deadline:
                return
            yield i


def sample_line() -> bytes:
    """A line as the log writes it for the benchmark's event (same size, give or take)."""
    entry = seal(
        seq=1000,
        time=rfc3339(datetime.now(UTC)),
        event=EVENT,
        session="s1",
        actor="bench",
        outcome="ok",
        fields=FIELDS,
        prev=GENESIS,
    )
    return render(entry) + b"\n"


# ---------------------------------------------------------------------- raw baselines
def raw_per_line(directory: Path, line: bytes, limits: Limits, *, head: bool) -> Result:
    name = RAW_LINE + (" (+head fsync)" if head else "")
    path = directory / ("raw-head.log" if head else "raw.log")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    head_fd = os.open(head_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    record = b'{"seq": 1000, "hash": "' + b"0" * 64 + b'"}'
    record = record.ljust(HEAD_SIZE - 1) + b"\n"
    try:
        for _ in range(WARMUP):
            os.write(fd, line)
            os.fsync(fd)
        count = 0
        start = time.perf_counter()
        for _ in limits.counting():
            os.write(fd, line)
            os.fsync(fd)
            if head:
                os.pwrite(head_fd, record, 0)
                os.fsync(head_fd)
            count += 1
        seconds = time.perf_counter() - start
    finally:
        os.close(fd)
        os.close(head_fd)
    return Result(name, count, seconds, count, RAW_LINE if head else None)


def raw_per_batch(directory: Path, line: bytes, limits: Limits, batch: int) -> Result:
    path = directory / f"raw-batch-{batch}.log"
    chunk = line * batch
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        for _ in range(WARMUP):
            os.write(fd, line)
            os.fsync(fd)
        commits = 0
        start = time.perf_counter()
        for _ in Limits(limits.events_for(batch) // batch, limits.budget, 1).counting():
            os.write(fd, chunk)
            os.fsync(fd)
            commits += 1
        seconds = time.perf_counter() - start
    finally:
        os.close(fd)
    return Result(f"raw write+fsync, per {batch} lines", commits * batch, seconds, commits)


# ---------------------------------------------------------------------- AuditLog modes
class CommitCounter:
    """Counts the log's write+fsync rounds by wrapping its internal ``_write``."""

    def __init__(self, log: AuditLog) -> None:
        self.commits = 0
        write: Callable[..., Any] | None = getattr(log, "_write", None)
        self.available = write is not None
        if write is None:
            return

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.commits += 1
            return write(*args, **kwargs)

        log._write = counted  # type: ignore[method-assign]

    def since(self, before: int) -> int | None:
        return self.commits - before if self.available else None


def _suffix(checkpoints: Checkpointer | None) -> str:
    if checkpoints is None:
        return ""
    return f", signed every {checkpoints.policy.every}"


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def record_now_mode(
    path: Path, key: bytes, limits: Limits, checkpoints: Checkpointer | None = None
) -> Result:
    before = _lines(path) if path.exists() else 0
    log = AuditLog(path, hmac_key=key, fsync="event", checkpoints=checkpoints)
    counter = CommitCounter(log)
    log.open()
    try:
        for _ in range(WARMUP):
            log.record_now(EVENT, actor="bench", outcome="ok", session="s1", **FIELDS)
        commits = counter.commits
        count = 0
        start = time.perf_counter()
        for _ in limits.counting():
            log.record_now(EVENT, actor="bench", outcome="ok", session="s1", **FIELDS)
            count += 1
        seconds = time.perf_counter() - start
    finally:
        log.close()
    return Result(
        "AuditLog.record_now (sync)" + _suffix(checkpoints),
        count,
        seconds,
        counter.since(commits),
        RAW_LINE,
        _lines(path) - before,
    )


async def event_mode(
    path: Path, key: bytes, limits: Limits, checkpoints: Checkpointer | None = None
) -> Result:
    lines = _lines(path)
    async with AuditLog(path, hmac_key=key, fsync="event", checkpoints=checkpoints) as log:
        counter = CommitCounter(log)
        for _ in range(WARMUP):
            await log.record(EVENT, actor="bench", outcome="ok", session="s1", **FIELDS)
        before = counter.commits
        count = 0
        start = time.perf_counter()
        for _ in limits.counting():
            await log.record(EVENT, actor="bench", outcome="ok", session="s1", **FIELDS)
            count += 1
        seconds = time.perf_counter() - start
        commits = counter.since(before)  # the closing checkpoint is not timed
    return Result(
        'AuditLog fsync="event", sequential' + _suffix(checkpoints),
        count,
        seconds,
        commits,
        RAW_LINE,
        _lines(path) - lines,
    )


async def batch_mode(
    path: Path, key: bytes, limits: Limits, writers: int, checkpoints: Checkpointer | None = None
) -> Result:
    lines = _lines(path)
    async with AuditLog(path, hmac_key=key, fsync="batch", checkpoints=checkpoints) as log:
        counter = CommitCounter(log)
        for _ in range(WARMUP):
            await log.record(EVENT, actor="bench", outcome="ok", session="s1", **FIELDS)
        before = counter.commits
        remaining = limits.events_for(writers)
        done = 0
        deadline = time.perf_counter() + limits.budget

        async def writer() -> None:
            nonlocal remaining, done
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                await log.record(EVENT, actor="bench", outcome="ok", session="s1", **FIELDS)
                done += 1

        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(writers):
                group.create_task(writer())
        seconds = time.perf_counter() - start
        commits = counter.since(before)  # the closing checkpoint is not timed
    baseline = RAW_LINE if writers == 1 else f"raw write+fsync, per {writers} lines"
    return Result(
        f'AuditLog fsync="batch", {writers} concurrent' + _suffix(checkpoints),
        done,
        seconds,
        commits,
        baseline,
        _lines(path) - lines,
    )


async def async_modes(
    path: Path, key: bytes, limits: Limits, writers: list[int], checkpoints: Checkpointer | None
) -> list[Result]:
    # One mode after the other: each is awaited before the next starts.
    first = await event_mode(path, key, limits, checkpoints)
    return [first, *[await batch_mode(path, key, limits, n, checkpoints) for n in writers]]


def signing_cost(rounds: int = 2000) -> float:
    """Microseconds for the fields of one checkpoint (one Ed25519 signature and its JSON)."""
    start = time.perf_counter()
    for i in range(rounds):
        checkpoint_fields(
            SIGNER, SERVER_POLICY.policy, covers=i, hash="0" * 64, time="2026-11-28T12:00:00Z"
        )
    return (time.perf_counter() - start) / rounds * 1e6


# ---------------------------------------------------------------------- report
def print_table(results: list[Result]) -> None:
    rates = {r.mode: r.rate for r in results}
    header = ("mode", "events", "seconds", "events/s", "us/event", "batch", "vs raw baseline")
    rows: list[tuple[str, ...]] = []
    for r in results:
        if r.baseline is None:
            versus = "(baseline)"
        elif rates.get(r.baseline):
            short = r.baseline.removeprefix("raw write+fsync, ")
            versus = f"{r.rate / rates[r.baseline]:.2f}x of {short}"
        else:
            versus = "-"
        batch = f"{r.events / r.commits:.1f}" if r.commits else "-"
        per_event = f"{r.seconds / r.events * 1e6:.0f}" if r.events else "-"
        rows.append(
            (
                r.mode,
                str(r.events),
                f"{r.seconds:.3f}",
                f"{r.rate:,.0f}",
                per_event,
                batch,
                versus,
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    left = {0, 6}

    def fmt(row: tuple[str, ...]) -> str:
        cells = (
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))


def check_chain(path: Path, expected: int) -> bool:
    """Verify the whole log against its head and the signing key; True when intact and
    holding every line the modes wrote."""
    head = read_head(head_path(path))
    lines = path.read_bytes().splitlines(keepends=True)
    verdict = verify(lines, head, public_key=SIGNER.public_key())
    size = sum(len(line) for line in lines)
    print(
        f"\nchain verify of {path.name}: {verdict.message}; {len(lines)} lines, "
        f"head seq {head.seq if head else None}, {expected} lines written by the benchmark, "
        f"avg line {size / max(len(lines), 1):.0f} bytes"
    )
    if not verdict.ok:
        print(f"verdict: CHAIN BROKEN by the benchmark run: {verdict.message}")
        return False
    if verdict.events != expected:
        print(f"verdict: CHAIN INCOMPLETE: {verdict.events} events verified, {expected} recorded")
        return False
    print("verdict: OK, the benchmark left an intact chain holding every event it recorded")
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few-second run (500 events)")
    parser.add_argument("--events", type=int, help="events per mode (default 5000)")
    parser.add_argument("--budget", type=float, help="seconds per mode at most (default 2.5)")
    parser.add_argument(
        "--writers",
        type=int,
        nargs="+",
        default=[1, 10, 100],
        help="concurrent writer counts for fsync=batch (default 1 10 100)",
    )
    parser.add_argument(
        "--dir", type=Path, help="where to make the temporary directory (default: system temp)"
    )
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = 500 if args.quick else 5000
    if args.budget is None:
        args.budget = 0.4 if args.quick else 2.5
    if args.events < 1 or args.budget <= 0 or min(args.writers) < 1:
        parser.error("--events, --budget and --writers must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limits = Limits(args.events, args.budget, 20 if args.quick else 50)
    line = sample_line()
    key = secrets.token_bytes(32)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="audit-bench-", dir=args.dir) as tmp:
        directory = Path(tmp)
        print(
            f"audit_bench: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"dir {directory}, line {len(line)} bytes, "
            f"up to {limits.events} events (batched modes: at least {limits.min_commits} "
            f"batches) or {limits.budget:g} s per mode\n"
        )
        results = [
            raw_per_line(directory, line, limits, head=False),
            raw_per_line(directory, line, limits, head=True),
        ]
        results += [raw_per_batch(directory, line, limits, n) for n in args.writers if n > 1]
        log_path = directory / "audit.log"
        results.append(record_now_mode(log_path, key, limits))
        results += asyncio.run(async_modes(log_path, key, limits, args.writers, None))
        results.append(record_now_mode(log_path, key, limits, SERVER_POLICY))
        results += asyncio.run(async_modes(log_path, key, limits, args.writers, SERVER_POLICY))
        every_write = Checkpointer(SIGNER, CheckpointPolicy(1, 60.0))
        results += [asyncio.run(event_mode(log_path, key, limits, every_write))]
        print_table(results)
        print(f"\none checkpoint's signature and fields: {signing_cost():.0f} us")
        ok = check_chain(log_path, sum(r.logged for r in results))
    print(f"total time {time.perf_counter() - began:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
