#!/usr/bin/env python3
"""Console start: a console forked from the pre-warmed template against a fresh process.

What is measured, in one run, with the worker's own code (``bastion.ssh.console.Console``
and ``bastion.ssh.zygote``: the pty master in this process, the console on the slave side):

1. **First frame, one at a time.** From ``Console.start()`` (what the operator session
   calls once the SSH session request has been accepted and the session opened) to the
   first full frame of a Textual console on the terminal, ``--runs`` times. The console is
   a small Textual app written for the bench (header, a filter input, a 30-row table, a
   status line, footer; 80x24), so the figures do not depend on the TUI under construction;
   it is run as ``python -I -m MODULE`` by the template, and as the same module through
   ``python -I -c`` when fresh. Each console is hung up (SIGHUP, as at logout) before the
   next one starts.
2. **First frames, ten logins at once.** ``--burst`` consoles started together; the time
   each one took to its first frame, from the common start.
3. **Memory per open console.** ``--alive`` consoles started one after the other and left
   open, each with its first frame drawn; then the PSS (``/proc/PID/smaps_rollup``) of each
   console process, and its private part (USS: Private_Clean + Private_Dirty). The
   template's own PSS is shown apart: it is paid once per worker, not per console.

Baseline: the same console started as a fresh process (fork+exec, today's fallback).

Run from the repository root::

    .venv/bin/python bench/console_bench.py            # ~60 s on 2 cores
    .venv/bin/python bench/console_bench.py --quick    # ~20 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bastion.console_protocol import BROKER_FD_ENV  # noqa: E402
from bastion.ssh.console import Console, TerminalSize, python_argv  # noqa: E402
from bastion.ssh.zygote import Zygote  # noqa: E402

MODULE = "bench_console_app"
MARKER = "bench-console-ready"
APP = f'''
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, Header, Input, Static


class BenchConsole(App[None]):
    TITLE = "{MARKER}"  # in the header: drawn with the first frame
    BINDINGS = [("q", "quit", "Quit"), ("/", "filter", "Filter")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: text, /regex/ or -l key=value")
        yield DataTable(cursor_type="row")
        yield Static("30 pods, 2 hidden by policy (h shows why)")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE")
        for n in range(30):
            table.add_row(f"payments-api-{{n:04d}}", "1/1", "Running", "0", "3d", "node-7")
        table.focus()

    def action_filter(self) -> None:
        self.query_one(Input).focus()


def main(argv):
    BenchConsole().run()
    return 0
'''


@dataclass
class Screen:
    data: bytearray = field(default_factory=bytearray)
    drawn: asyncio.Event = field(default_factory=asyncio.Event)
    at: float = 0.0

    def write(self, chunk: bytes) -> None:
        self.data += chunk
        if not self.drawn.is_set() and MARKER.encode() in self.data:
            self.at = time.perf_counter()
            self.drawn.set()


@dataclass
class Open:
    console: Console
    screen: Screen
    broker: socket.socket


def fresh_argv(app_dir: Path) -> list[str]:
    loader = (
        f"import sys; sys.path.insert(0, {str(app_dir)!r}); "
        f"from {MODULE} import main; sys.exit(main(sys.argv[1:]))"
    )
    return [sys.executable, "-I", "-c", loader]


async def open_console(argv: Sequence[str], zygote: Zygote | None) -> tuple[Open, float]:
    """A console up to its first frame; returns it and the seconds that took."""
    ours, theirs = socket.socketpair()
    screen = Screen()
    command = zygote.command(argv) if zygote is not None else argv
    console = Console(
        command,
        env={"TERM": "xterm-256color", "LANG": "C.UTF-8", BROKER_FD_ENV: str(theirs.fileno())},
        size=TerminalSize(80, 24),
        write=screen.write,
        pause_input=lambda _: None,
        pass_fds=(theirs.fileno(),),
    )
    began = time.perf_counter()
    try:
        await console.start()
    finally:
        theirs.close()
    async with asyncio.timeout(60):
        await screen.drawn.wait()
    if zygote is not None and parent_of(console.pid) != zygote.pid:
        raise RuntimeError("a console started fresh: the figures would mix both ways")
    return Open(console, screen, ours), screen.at - began


def parent_of(pid: int | None) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def close_all(consoles: Sequence[Open]) -> None:
    for item in consoles:
        item.console.close()
    for item in consoles:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await item.console.wait()
        item.broker.close()


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
    pss: list[int] = field(default_factory=list)
    uss: list[int] = field(default_factory=list)
    template_pss: int = 0


async def measure(label: str, argv: list[str], zygote: Zygote | None, args: Namespace) -> Result:
    result = Result(label)
    for _ in range(args.runs):
        opened, seconds = await open_console(argv, zygote)
        result.sequential.append(seconds)
        await close_all([opened])
    opened_burst = await asyncio.gather(*(open_console(argv, zygote) for _ in range(args.burst)))
    result.burst = [seconds for _, seconds in opened_burst]
    await close_all([item for item, _ in opened_burst])
    alive: list[Open] = []
    try:
        for _ in range(args.alive):
            opened, _seconds = await open_console(argv, zygote)
            alive.append(opened)
        await asyncio.sleep(0.5)  # let every console settle after its first frame
        for item in alive:
            pid = item.console.pid
            assert pid is not None  # noqa: S101 - started above
            pss, uss = memory_kb(pid)
            result.pss.append(pss)
            result.uss.append(uss)
        if zygote is not None and zygote.pid is not None:
            result.template_pss = memory_kb(zygote.pid)[0]
    finally:
        await close_all(alive)
    return result


class Namespace(argparse.Namespace):
    runs: int
    burst: int
    alive: int
    quick: bool


def ms(values: Sequence[float]) -> str:
    return f"{statistics.median(values) * 1000:7.0f}"


def mb(values: Sequence[int]) -> str:
    return f"{statistics.median(values) / 1024:6.1f}"


def report(zygote: Result, fresh: Result, args: Namespace) -> None:
    print(f"python {platform.python_version()}, {platform.machine()}, 80x24, medians")
    header = (
        f"{'how the console starts':<26} {'first frame':>11} {'max':>7} "
        f"{f'{args.burst} at once':>11} {'max':>7} {'PSS MB':>7} {'USS MB':>7} "
        f"{f'{args.alive} consoles':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in (fresh, zygote):
        total = sum(row.pss) / 1024 + row.template_pss / 1024
        print(
            f"{row.label:<26} {ms(row.sequential):>8} ms {max(row.sequential) * 1000:4.0f} ms "
            f"{ms(row.burst):>8} ms {max(row.burst) * 1000:4.0f} ms "
            f"{mb(row.pss):>7} {mb(row.uss):>7} {total:8.0f} MB"
        )
    print(
        f"{'zygote / fresh':<26} "
        f"{statistics.median(zygote.sequential) / statistics.median(fresh.sequential):10.2f}x "
        f"{'':7} {statistics.median(zygote.burst) / statistics.median(fresh.burst):10.2f}x "
        f"{'':7} {statistics.median(zygote.pss) / statistics.median(fresh.pss):6.2f}x "
        f"{statistics.median(zygote.uss) / statistics.median(fresh.uss):6.2f}x"
    )
    print(
        f"(the template itself: {zygote.template_pss / 1024:.1f} MB PSS, once per worker, "
        f"included in the {args.alive}-console total)"
    )


async def run(args: Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        app_dir = Path(tmp)
        (app_dir / f"{MODULE}.py").write_text(APP)
        zygote = Zygote([MODULE], search_path=[app_dir])
        began = time.perf_counter()
        if not await zygote.start():
            print("the console template did not get ready", file=sys.stderr)
            await zygote.aclose()
            return 1
        print(f"template ready in {time.perf_counter() - began:.2f} s (once per worker start)")
        try:
            forked = await measure("forked from the template", python_argv(MODULE), zygote, args)
        finally:
            await zygote.aclose()
        fresh = await measure("fresh process (baseline)", fresh_argv(app_dir), None, args)
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
