#!/usr/bin/env python3
"""Attach path throughput, part 1: a container's output through kubesim's attach WebSocket.

The bastion's half of the attach path without SSH: kubesim (in a child process, as an API
server is elsewhere) runs ``/bin/sh -c 'read go; exec head -c N /dev/zero'`` as an ephemeral
container on a PTY (``stdin``, ``stdinOnce``, ``tty``), the bench attaches to it over TLS
with :func:`bastion.kube_attach.open_attach`, sends the line that starts ``head``, and a sink
counts the bytes until the stream ends. Rows, each the median of ``--runs`` fresh containers:

(a) baseline: the same command on a local PTY in this process, read with blocking
    ``os.read(master, 64 KiB)`` until EOF; no network, no Python between the PTY and the sink;
(b) ``AttachStream.read()`` into the sink, v5 (``v5.channel.k8s.io``);
(c) the same, v4 (``v4.channel.k8s.io``);
(d) v5 through :class:`bastion.attach_bridge.AttachBridge` (32 KiB chunks, a loop pass after
    each, the recorder hook counting too) into the sink;
(e) the same with the session's real recorder as the hook: the bench's own recording process
    (started before the clock, as a worker starts it at its start) redacts, encodes, seals
    and writes, and the bridge holds output back when it falls behind; (d) against (e) is
    what recording costs the attach path on NUL bytes (its worst case: 6-byte JSON escapes),
    and "recorder CPU" is the recording process's CPU time;
(d'), (e') the same two on letters (``tr '\\0' x``), a terminal's usual output;
(f), (f') (d) and (d') with the stream watched as a debug shell's is: the command-report
    filter and the guard's output meter (:class:`bastion.session.command_audit.WatchedStream`)
    between the stream and the bridge; (d) against (f) is what command audit and the guard
    cost the attach path when no command ends (no report in the stream).

Every run must deliver exactly N bytes of zeros plus the terminal's echo of the newline
(``\\r\\n``), and the attach rows must end with a Success status; otherwise the script exits
with status 1 and prints no figure. The clock runs from writing the newline to the end of
the stream (EOF on the PTY, ``read()`` returning ``None``). "bench CPU" is this process's CPU
time over the run (the client side: TLS, WebSocket parsing, the sink); "kubesim CPU" the
child's (its PTY reads, TLS, framing), not counting the shell and ``head``. The full
ssh -> bastion -> attach figure comes with the SSH integration.

Run from the repository root::

    .venv/bin/python bench/attach_bench.py             # 200 MB x 3 runs x 4 rows, ~25 s here
    .venv/bin/python bench/attach_bench.py --quick     # 50 MB x 3
    .venv/bin/python bench/attach_bench.py --bytes 500000000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from kubernetes import client

from bastion.attach_bridge import AttachBridge
from bastion.command_marker import new_nonce
from bastion.config.guard import Guard
from bastion.devstack.background import Background, kube_client
from bastion.devstack.kubesim.app import KubeSim
from bastion.kube_attach import V4, V5, AttachStream, open_attach
from bastion.recording.key_files import load_or_create_signing_key
from bastion.recording.recorder import open_recording, recording_process, stop_recording_processes
from bastion.session.command_audit import WatchedStream
from bastion.session.guard import SessionGuard
from bastion.vault import KubeToken

NAMESPACE = "bench"
POD = "box"
TOOLBOX = "registry.example.com/debug-toolbox@sha256:" + "0d" * 32
FIXTURE: dict[str, Any] = {
    "images": {TOOLBOX: {"command": ["/bin/sh"]}},
    "namespaces": [{"name": NAMESPACE, "pods": [{"name": POD}]}],
}
ECHO = b"\r\n"  # the terminal's echo of the newline that starts head
READ_SIZE = 64 * 1024
TIMEOUT = 120.0


def check(condition: bool, problem: str) -> None:
    """A benchmark that measured a wrong answer must not print a figure."""
    if not condition:
        raise SystemExit(f"attach_bench: FAILED: {problem}")


def command(nbytes: int, *, text: bool = False) -> list[str]:
    # Waits for a line first: attach has no replay, so head must not start before the stream.
    # ``text``: letters instead of NUL bytes, which asciicast's JSON writes as 6-byte \u0000
    # escapes, the worst case for a recording; a terminal's output is mostly text.
    letters = " | tr '\\0' x" if text else ""
    return ["/bin/sh", "-c", f"read go; head -c {nbytes} /dev/zero{letters}"]


# ====================================================================== kubesim, as a child
def serve_kubesim(workdir: Path) -> int:
    """``attach_bench.py --kubesim DIR``: run kubesim until stdin closes."""
    background = Background(timeout=60)
    sim = KubeSim(workdir, FIXTURE)
    background.start(sim.start)
    try:
        line = {"url": sim.url, "ca": str(sim.ca_file), "token": sim.admin_token}
        print(json.dumps(line), flush=True)
        sys.stdin.read()
    finally:
        background.stop(sim.stop)
    return 0


class KubesimChild:
    def __init__(self, workdir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--kubesim", str(workdir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        answer = self.process.stdout.readline() if self.process.stdout else ""
        check(bool(answer), "kubesim did not start")
        started: dict[str, str] = json.loads(answer)
        self.url, self.ca, self.token = started["url"], started["ca"], started["token"]
        self._names = 0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def debug_container(self, nbytes: int, *, text: bool = False) -> str:
        """A fresh ephemeral container running the command, once it runs; its name."""
        self._names += 1
        name = f"bench-{self._names}"
        container = {
            "name": name,
            "image": TOOLBOX,
            "command": command(nbytes, text=text),
            "stdin": True,
            "stdinOnce": True,
            "tty": True,
        }
        with kube_client(self.url, self.ca, self.token) as api:
            core = client.CoreV1Api(api)
            core.patch_namespaced_pod_ephemeralcontainers(
                POD, NAMESPACE, {"spec": {"ephemeralContainers": [container]}}
            )
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                pod = core.read_namespaced_pod(POD, NAMESPACE)
                for status in pod.status.ephemeral_container_statuses or []:
                    if status.name == name and status.state.running:
                        return name
                time.sleep(0.02)
        raise SystemExit(f"attach_bench: FAILED: container {name} never ran")

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # its signal to stop
        self.process.wait(30)


# ====================================================================== the measurements
@dataclass(frozen=True)
class Run:
    seconds: float
    nbytes: int
    bench_cpu: float
    kubesim_cpu: float
    recorder_cpu: float = 0.0  # the recording process's, in the recorded rows
    lag_p99: float = 0.0  # ms: how late a 1 ms timer of this loop fired (see probe_loop)


@dataclass(frozen=True)
class Row:
    what: str
    runs: list[Run]

    def median(self, field: str) -> float:
        return statistics.median(getattr(run, field) for run in self.runs)


def local_pty_run(nbytes: int) -> Run:
    """(a): the command on a PTY of our own, read with blocking reads until EOF."""
    master, slave = os.openpty()
    try:
        process = subprocess.Popen(
            command(nbytes), stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
    finally:
        os.close(slave)
    try:
        received = 0
        cpu, started = time.process_time(), time.perf_counter()
        os.write(master, b"\n")
        while True:
            try:
                data = os.read(master, READ_SIZE)
            except OSError as error:  # EIO: every slave fd is closed, head is done
                if error.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            received += len(data)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        os.close(master)
    check(process.wait(TIMEOUT) == 0, "head on the local PTY failed")
    check(received == nbytes + len(ECHO), f"the local PTY gave {received} bytes")
    return Run(seconds, received, cpu, 0.0)


# Sends the newline that starts head, then counts what arrives until the end.
Sink = Callable[[AttachStream], Awaitable[int]]


async def read_all(stream: AttachStream) -> int:
    received = 0
    await stream.write(b"\n")
    while (data := await stream.read()) is not None:
        received += len(data)
    check((stream.exit_status, stream.failure) == (0, None), f"the stream ended {stream.failure}")
    return received


async def through_bridge(stream: AttachStream | WatchedStream) -> int:
    written = recorded = 0

    def write(data: bytes) -> None:
        nonlocal written
        written += len(data)

    def record(data: bytes) -> None:
        nonlocal recorded
        recorded += len(data)

    bridge = AttachBridge(stream, write=write, pause_input=lambda _: None, on_output=record)
    run = asyncio.create_task(bridge.run())
    bridge.feed(b"\n")  # the bridge's own input path sends the newline
    check(await run == 0, "the bridge did not end with status 0")
    check(written == recorded, "the recorder did not see every byte")
    return written


async def watched_bridge(stream: AttachStream) -> int:
    """Rows (f), (f'): the debug shell's watched stream in front of the bridge. The session
    is only reached when a report or a trigger is seen, and the output here has neither (the
    limit is above the run), so the bench passes none."""
    session: Any = None
    guard = Guard.model_validate(
        {"output_volume": {"bytes": 10**15, "window": "1m", "action": "warn"}}
    )
    watched = WatchedStream(
        stream,
        session=session,
        nonce=new_nonce(),
        guard=SessionGuard(session, guard, alerts=None, secrets=[]),
        secrets=[],
    )
    return await through_bridge(watched)


def recorded_bridge(directory: Path) -> Sink:
    """Row (e): the bridge with the session's real recorder as its ``on_output``: the
    worker's recording process (started at the first run, as a worker starts it) redacts,
    encodes, seals and writes; the bridge holds output back when it falls behind."""
    auditor = X25519PrivateKey.generate().public_key()
    signing = load_or_create_signing_key(directory / "state")

    async def sink(stream: AttachStream) -> int:
        written = 0

        def write(data: bytes) -> None:
            nonlocal written
            written += len(data)

        bridges: list[AttachBridge] = []  # made after the recorder, which it records into
        recorder = await open_recording(
            directory,
            auditor_key=auditor,
            signing_key=signing,
            flush_interval=1.0,
            session_id="bench",
            title="attach_bench",
            width=80,
            height=24,
            # Late-bound: the bridge does not exist yet (the debug shell does the same).
            pause=lambda held: bridges[0].hold_output(held),  # noqa: PLW0108
        )
        bridge = AttachBridge(
            stream, write=write, pause_input=lambda _: None, on_output=recorder.append
        )
        bridges.append(bridge)
        run = asyncio.create_task(bridge.run())
        bridge.feed(b"\n")
        check(await run == 0, "the bridge did not end with status 0")
        summary = await recorder.aclose()  # the end of the recording is part of the cost
        check(summary.complete, "the recording did not end complete")
        summary.path.unlink()
        return written

    return sink


async def probe_loop(lags: list[float]) -> None:
    """What another session's keystroke would wait for: a timer due every 1 ms on the
    bridge's loop, and how late it fires (the bridge's passes, and anything holding the
    GIL, such as a recorder thread in this process)."""
    while True:
        due = time.perf_counter() + 0.001
        await asyncio.sleep(0.001)
        lags.append(max(time.perf_counter() - due, 0.0))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def attach_run(
    kubesim: KubesimChild,
    nbytes: int,
    protocol: str,
    sink: Sink,
    *,
    text: bool = False,
    recordings: Path | None = None,
) -> Run:
    """One run; with ``recordings``, the recording process is started before the clock runs
    (a worker starts it at its own start) and its CPU time counted."""
    recorder_pid = None
    if recordings is not None:
        recorder_pid = (await recording_process(recordings)).pid
    try:
        run = await _attach_run(kubesim, nbytes, protocol, sink, text=text, recorder=recorder_pid)
    finally:
        await stop_recording_processes()
    return run


async def _attach_run(
    kubesim: KubesimChild,
    nbytes: int,
    protocol: str,
    sink: Sink,
    *,
    text: bool,
    recorder: int | None,
) -> Run:
    name = kubesim.debug_container(nbytes, text=text)
    context = ssl.create_default_context(cafile=kubesim.ca)
    async with aiohttp.ClientSession(
        base_url=kubesim.url,
        connector=aiohttp.TCPConnector(ssl=context),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        trust_env=False,
    ) as http:
        stream = await open_attach(
            http,
            KubeToken(kubesim.token),
            namespace=NAMESPACE,
            pod=POD,
            container=name,
            cols=80,
            rows=24,
            timeout=TIMEOUT,
            protocols=(protocol,),
        )
        async with stream:
            check(stream.protocol == protocol, f"{stream.protocol} instead of {protocol}")
            rec_cpu = 0.0 if recorder is None else cpu_seconds(recorder)
            kube_cpu, cpu = kubesim.cpu_seconds(), time.process_time()
            started = time.perf_counter()
            lags: list[float] = []
            probe = asyncio.create_task(probe_loop(lags))
            try:
                received = await sink(stream)
            finally:
                probe.cancel()
            seconds = time.perf_counter() - started
            cpu, kube_cpu = time.process_time() - cpu, kubesim.cpu_seconds() - kube_cpu
            if recorder is not None:
                rec_cpu = cpu_seconds(recorder) - rec_cpu
    check(received == nbytes + len(ECHO), f"{received} bytes arrived, not {nbytes + 2}")
    lags.sort()
    lag = lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000 if lags else 0.0
    return Run(seconds, received, cpu, kube_cpu, rec_cpu, lag)


def measure(kubesim: KubesimChild, nbytes: int, runs: int, workdir: Path) -> list[Row]:
    rows = [Row("(a) baseline: local PTY, blocking os.read", [])]
    recordings = workdir / "recordings"
    recordings.mkdir()
    recorded = recorded_bridge(recordings)
    attach_rows: list[tuple[Row, str, Sink, Path | None]] = [
        (Row("(b) attach v5: AttachStream.read -> sink", []), V5, read_all, None),
        (Row("(c) attach v4: AttachStream.read -> sink", []), V4, read_all, None),
        (Row("(d) attach v5: AttachBridge -> sink", []), V5, through_bridge, None),
        (Row("(e) attach v5: AttachBridge, recorded -> sink", []), V5, recorded, recordings),
        (Row("(f) attach v5: watched stream, AttachBridge -> sink", []), V5, watched_bridge, None),
    ]
    # Text: (d) and (e) again on letters, the recording's usual case.
    text_rows: list[tuple[Row, Sink, Path | None]] = [
        (Row("(d') the same on text: AttachBridge -> sink", []), through_bridge, None),
        (Row("(e') the same on text: AttachBridge, recorded", []), recorded, recordings),
        (Row("(f') the same on text: watched, AttachBridge", []), watched_bridge, None),
    ]
    # Interleaved, so that a slow minute of the machine does not land on one row only.
    for _ in range(runs):
        rows[0].runs.append(local_pty_run(nbytes))
        for row, protocol, sink, where in attach_rows:
            row.runs.append(
                asyncio.run(attach_run(kubesim, nbytes, protocol, sink, recordings=where))
            )
        for row, sink, where in text_rows:
            row.runs.append(
                asyncio.run(attach_run(kubesim, nbytes, V5, sink, text=True, recordings=where))
            )
    return rows + [row for row, *_ in attach_rows] + [row for row, *_ in text_rows]


def print_table(rows: list[Row], nbytes: int, runs: int) -> None:
    print(
        f"attach_bench: head -c {nbytes:,} /dev/zero on a PTY, median of {runs}, "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"{os.cpu_count()} cores\n"
    )
    width = max(len(row.what) for row in rows)
    print(
        f"{'path':{width}}  {'seconds':>7}  {'MB/s':>6}  {'vs PTY':>6}  "
        f"{'bench CPU s':>11}  {'kubesim CPU s':>13}  {'recorder CPU s':>14}  "
        f"{'loop lag p99 ms':>15}"
    )
    print(
        f"{'-' * width}  -------  ------  ------  -----------  -------------  --------------  "
        "---------------"
    )
    base = rows[0].median("seconds")
    for index, row in enumerate(rows):
        seconds = row.median("seconds")
        kube_cpu = f"{row.median('kubesim_cpu'):.2f}" if index else "-"  # (a) has no kubesim
        recorder = row.median("recorder_cpu")
        rec_cpu = f"{recorder:.2f}" if recorder else "-"
        print(
            f"{row.what:{width}}  {seconds:7.3f}  {nbytes / seconds / 1e6:6.0f}  "
            f"{base / seconds:5.2f}x  {row.median('bench_cpu'):11.2f}  {kube_cpu:>13}  "
            f"{rec_cpu:>14}  " + (f"{row.median('lag_p99'):15.1f}" if index else f"{'-':>15}")
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bytes", type=int, default=200_000_000, help="output per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--quick", action="store_true", help="50 MB per run")
    parser.add_argument("--kubesim", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.kubesim is not None:
        return serve_kubesim(args.kubesim)
    nbytes = 50_000_000 if args.quick else args.bytes
    check(nbytes > 0 and args.runs > 0, "--bytes and --runs must be positive")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="attach-bench-") as workdir:
        kubesim = KubesimChild(Path(workdir))
        try:
            rows = measure(kubesim, nbytes, args.runs, Path(workdir))
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                kubesim.stop()
    print_table(rows, nbytes, args.runs)
    print(f"\nwhole run: {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
