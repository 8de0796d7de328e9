#!/usr/bin/env python3
"""Console start: the real console (``tui.app``) forked from the template against a fresh process.

What is measured, in one run, with the worker's own code (``bastion.ssh.console.Console`` and
``bastion.ssh.zygote.Zygote`` preloading the worker's console modules, the pty master in this
process, the console on the slave side) and the console every login gets (``tui.app.main``,
80x24), talking over the real console protocol (``bastion.console_protocol``, one JSON line
per message on a socketpair) to a broker stand-in in this process: the in-memory fake broker
of ``tests/tui`` behind a socket, serving one cluster, four namespaces, 200 pods in
``payments`` (the first, a typical namespace) and 50,000 in ``big``, in pages of 500 as the
real broker sends them.

1. **First frame, one at a time.** From ``Console.start()`` (what the operator session calls
   once the SSH session request is accepted and the session opened) to the first frame the
   operator can use: the namespaces of the cluster drawn (the broker's ``Welcome``, the
   clusters screen, the namespaces screen and the broker's answer to ``list_namespaces`` are
   all behind it). ``--runs`` times, each console hung up (SIGHUP, as at logout) before the
   next one starts.
2. **First frames, ten logins at once.** ``--burst`` consoles started together; the time each
   one took to its first frame, from the common start.
3. **Memory per open console.** ``--alive`` consoles started one after the other, each opened
   on the 200-pod list (Enter on the first namespace, until the list says ``200 pods``) and
   left open; then each console process's PSS (``/proc/PID/smaps_rollup``) and its private
   part (USS: Private_Clean + Private_Dirty). The template's own PSS is shown apart: it is
   paid once per worker, not per console.
4. **One console at 50,000 pods.** A console opened on ``big``, until the list says
   ``50,000 pods``; its PSS and USS, with the 30 others still open (so that its shared pages
   are shared as in a busy worker).

Baseline, in the same run: the same console started as a fresh process (fork+exec of
``python -I -m tui.app``, which the worker does when the template is not ready).

Run from the repository root::

    .venv/bin/python bench/console_bench.py            # ~30 s on 2 cores
    .venv/bin/python bench/console_bench.py --quick    # ~15 s: 5 runs, 5 at once, 10 open
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bastion.console_protocol import BROKER_FD_ENV, MAX_LINE, PodRow, Welcome, encode  # noqa: E402
from bastion.ssh.console import Console, TerminalSize  # noqa: E402
from bastion.ssh.front_door import Identity  # noqa: E402
from bastion.ssh.login import Peer  # noqa: E402
from bastion.ssh.worker import console_modules, textual_console  # noqa: E402
from bastion.ssh.zygote import Zygote  # noqa: E402
from tests.tui.fake_broker import FakeBroker, Script  # noqa: E402
from tests.tui.rows import many  # noqa: E402

NAMESPACES = ["payments", "big", "batch", "web"]  # payments first: Enter opens it
FIRST_FRAME = b"batch"  # a namespace's name: the namespaces screen has the broker's answer
ORDINARY = 200
BIG = 50_000
ENTER, DOWN = b"\r", b"\x1b[B"
OPERATOR = Identity(
    "alice", ("oncall",), "SHA256:bench", "publickey", "bench", Peer("127.0.0.1", 0)
)
# What the operator session gives a console (bastion/ssh/operator_session.py), with the
# terminal type of a typical client.
LOGIN_ENV = {"TERM": "xterm-256color", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin",
             "COLORTERM": "truecolor"}  # fmt: skip


class SocketBroker(FakeBroker):
    """The fake broker of the console's tests, on the console's end of a socketpair."""

    async def serve(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_LINE + 1)
        self.push(Welcome("alice", ["oncall"], self.script.clusters, self.script.hard_deadline,
                          900.0))  # fmt: skip
        sending = asyncio.create_task(self._send(writer))
        try:
            while line := await reader.readline():
                self.handle(line)
        except ConnectionError:
            pass
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sending
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        while True:
            item = await self.to_console.get()
            writer.write(item if isinstance(item, bytes) else encode(item))
            await writer.drain()


def script(pods: dict[str, list[PodRow]]) -> Script:
    return Script(
        clusters=["prod"],
        namespaces={"prod": NAMESPACES},
        pods=pods,
        hard_deadline=time.time() + 8 * 3600,
    )


class Screen:
    """The terminal's side: waits for text to appear in what the console writes."""

    def __init__(self) -> None:
        self.tail = b""
        self.waiting: tuple[bytes, asyncio.Future[float]] | None = None

    def write(self, chunk: bytes) -> None:
        # Only the tail is kept: a marker may straddle two writes, and 50,000 pods draw a lot.
        self.tail = (self.tail + chunk)[-4096:]
        if self.waiting is not None:
            marker, seen = self.waiting
            if marker in self.tail and not seen.done():
                seen.set_result(time.perf_counter())
                self.tail = b""

    async def shows(self, marker: bytes) -> float:
        """When ``marker`` appears (in what is written from now on), within a minute."""
        seen: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.tail = b""
        self.waiting = (marker, seen)
        try:
            async with asyncio.timeout(60):
                return await seen
        finally:
            self.waiting = None


@dataclass
class Open:
    console: Console
    screen: Screen
    serving: asyncio.Task[None]


async def open_console(zygote: Zygote | None, pods: Script) -> tuple[Open, float]:
    """A console up to its first frame; returns it and the seconds that took."""
    ours, theirs = socket.socketpair()
    screen = Screen()
    argv = textual_console(OPERATOR)
    console = Console(
        zygote.command(argv) if zygote is not None else argv,
        env={**LOGIN_ENV, BROKER_FD_ENV: str(theirs.fileno())},
        size=TerminalSize(80, 24),
        write=screen.write,
        pause_input=lambda _: None,
        pass_fds=(theirs.fileno(),),
    )
    serving = asyncio.create_task(SocketBroker(pods).serve(ours))
    first = asyncio.ensure_future(screen.shows(FIRST_FRAME))
    await asyncio.sleep(0)  # the screen is watching before the console can write
    began = time.perf_counter()
    try:
        await console.start()
    finally:
        theirs.close()
    drawn = await first
    if zygote is not None and parent_of(console.pid) != zygote.pid:
        raise RuntimeError("a console started fresh: the figures would mix both ways")
    return Open(console, screen, serving), drawn - began


async def open_list(item: Open, keys: bytes, marker: bytes) -> float:
    """Keys typed on the namespaces screen, then the seconds until ``marker`` is drawn."""
    shown = asyncio.ensure_future(item.screen.shows(marker))
    await asyncio.sleep(0)
    began = time.perf_counter()
    item.console.feed(keys)
    return await shown - began


def parent_of(pid: int | None) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def close_all(consoles: Sequence[Open]) -> None:
    for item in consoles:
        item.console.close()
    for item in consoles:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await item.console.wait()
        item.serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await item.serving


def memory_kb(pid: int) -> tuple[int, int]:
    """PSS and USS of one process, in kB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value)
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


@dataclass
class Result:
    label: str
    sequential: list[float] = field(default_factory=list)
    burst: list[float] = field(default_factory=list)
    list_shown: list[float] = field(default_factory=list)
    pss: list[int] = field(default_factory=list)
    uss: list[int] = field(default_factory=list)
    big_pss: int = 0
    big_uss: int = 0
    big_loaded: float = 0.0
    template_pss: int = 0


async def measure(label: str, zygote: Zygote | None, pods: Script, args: Namespace) -> Result:
    result = Result(label)
    for _ in range(args.runs):
        opened, seconds = await open_console(zygote, pods)
        result.sequential.append(seconds)
        await close_all([opened])
    opened_burst = await asyncio.gather(*(open_console(zygote, pods) for _ in range(args.burst)))
    result.burst = [seconds for _, seconds in opened_burst]
    await close_all([item for item, _ in opened_burst])
    alive: list[Open] = []
    try:
        for _ in range(args.alive):
            opened, _seconds = await open_console(zygote, pods)
            alive.append(opened)
            result.list_shown.append(await open_list(opened, ENTER, f"{ORDINARY} pods".encode()))
        await asyncio.sleep(1.0)  # let every console settle after its list's frame
        for item in alive:
            pss, uss = memory_kb(pid_of(item))
            result.pss.append(pss)
            result.uss.append(uss)
        if zygote is not None and zygote.pid is not None:
            result.template_pss = memory_kb(zygote.pid)[0]
        big, _seconds = await open_console(zygote, pods)
        alive.append(big)
        result.big_loaded = await open_list(big, DOWN + ENTER, f"{BIG:,} pods".encode())
        await asyncio.sleep(1.0)
        result.big_pss, result.big_uss = memory_kb(pid_of(big))
    finally:
        await close_all(alive)
    return result


def pid_of(item: Open) -> int:
    pid = item.console.pid
    if pid is None:
        raise RuntimeError("a console without a process")
    return pid


class Namespace(argparse.Namespace):
    runs: int
    burst: int
    alive: int
    quick: bool


def ms(values: Sequence[float]) -> str:
    return f"{statistics.median(values) * 1000:5.0f} ms"


def mb(kb: float) -> str:
    return f"{kb / 1024:5.1f}"


def report(forked: Result, fresh: Result, args: Namespace) -> None:
    print(f"python {platform.python_version()}, {platform.machine()}, tui.app at 80x24, medians")
    header = (
        f"{'how the console starts':<26} {'first frame':>11} {'max':>8} "
        f"{f'{args.burst} at once':>11} {'max':>8} "
        f"{f'{ORDINARY} pods: PSS':>15} {'USS':>5} {f'{args.alive} open':>9} "
        f"{f'{BIG:,} pods: PSS':>18} {'USS':>5}"
    )
    print(header)
    print("-" * len(header))
    for row in (fresh, forked):
        total = sum(row.pss) + row.template_pss
        print(
            f"{row.label:<26} {ms(row.sequential):>11} {ms([max(row.sequential)]):>8} "
            f"{ms(row.burst):>11} {ms([max(row.burst)]):>8} "
            f"{mb(statistics.median(row.pss)):>12} MB {mb(statistics.median(row.uss)):>5} "
            f"{total / 1024:6.0f} MB {mb(row.big_pss):>15} MB {mb(row.big_uss):>5}"
        )

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x"

    med = statistics.median
    print(
        f"{'forked / fresh':<26} "
        f"{ratio(med(forked.sequential), med(fresh.sequential)):>11} {'':>8} "
        f"{ratio(med(forked.burst), med(fresh.burst)):>11} {'':>8} "
        f"{ratio(med(forked.pss), med(fresh.pss)):>15} "
        f"{ratio(med(forked.uss), med(fresh.uss)):>5} "
        f"{ratio(sum(forked.pss) + forked.template_pss, sum(fresh.pss)):>9} "
        f"{ratio(forked.big_pss, fresh.big_pss):>18} {ratio(forked.big_uss, fresh.big_uss):>5}"
    )
    print(
        f"(the template itself: {mb(forked.template_pss).strip()} MB PSS, once per worker, "
        f"included in the {args.alive}-console total)"
    )
    for row in (fresh, forked):
        print(
            f"{row.label}: Enter to the {ORDINARY}-pod list {ms(row.list_shown).strip()} "
            f"(max {ms([max(row.list_shown)]).strip()}), to all {BIG:,} pods "
            f"{row.big_loaded * 1000:.0f} ms"
        )
    frame, burst, pss = med(forked.sequential), med(forked.burst), med(forked.pss) / 1024
    print(
        f"target (issue 7): first frame under 300 ms after login: {frame * 1000:.0f} ms one "
        f"login at a time: {'meets it' if frame < 0.3 else 'MISSES it'}; {burst * 1000:.0f} ms "
        f"with {args.burst} at once: {'meets it' if burst < 0.3 else 'misses it'}"
    )
    print(
        f"target (issue 7): under 15 MB PSS per open console: {pss:.1f} MB with {args.alive} "
        f"open on the {ORDINARY}-pod list: {'meets it' if pss < 15 else 'MISSES it'}"
    )


async def run(args: Namespace) -> int:
    pods = script({"payments": many(ORDINARY, "payments"), "big": many(BIG), "batch": many(3)})
    zygote = Zygote(console_modules())
    began = time.perf_counter()
    if not await zygote.start():
        await zygote.wait_ready()
    print(f"template ready in {time.perf_counter() - began:.2f} s (once per worker start)")
    try:
        forked = await measure("forked from the template", zygote, pods, args)
    finally:
        await zygote.aclose()
    fresh = await measure("fresh process (baseline)", None, pods, args)
    report(forked, fresh, args)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--alive", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="--runs 5 --burst 5 --alive 10")
    args = parser.parse_args(namespace=Namespace())
    if args.quick:
        args.runs, args.burst, args.alive = 5, 5, 10
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
