"""Console benchmark: keystroke-to-frame while filtering, first page drawn, memory at 50,000 pods.

The console (tui.app.ConsoleApp) runs headless (Textual's run_test) on the in-memory fake
broker of tests/tui. Baselines in the same run: a bare Textual app with one Input (the cost of
a keystroke and a frame with no console code), and Textual's DataTable refilled with 200 rows
per keystroke (what the console would cost with DataTable at a tiny fraction of the rows).
Memory is read from /proc/self/smaps_rollup in a fresh interpreter per case.

    .venv/bin/python bench/tui_bench.py            # ~40 s
    .venv/bin/python bench/tui_bench.py --quick    # ~15 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual.app import App, ComposeResult  # noqa: E402
from textual.widgets import DataTable, Input, OptionList  # noqa: E402

from tests.tui.fake_broker import FakeBroker, Script  # noqa: E402
from tests.tui.rows import many  # noqa: E402
from tui.app import ConsoleApp  # noqa: E402
from tui.screens import PodsScreen  # noqa: E402

TYPED = "api-0123"


async def _frame(pilot: Any) -> None:
    await pilot.pause()  # the key handled and the screen refreshed


async def console_keystrokes(pods: int) -> tuple[list[float], float, float]:
    """Milliseconds per filter keystroke; ms from opening the namespace to the first page
    shown and to the whole list loaded."""
    broker = FakeBroker(Script(namespaces={"prod": ["big"]}, pods={"big": many(pods)}))
    app = ConsoleApp("alice", broker.transport())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        started = time.perf_counter()
        # Pushed directly: pilot.press() returns only once the app is idle, after the last page.
        app.push_screen(PodsScreen("prod", "big"))
        while not (isinstance(app.screen, PodsScreen) and app.screen.pods.shown):  # noqa: ASYNC110
            # Not pilot.pause(): it waits for the app to be idle, which it is not while
            # the other pages stream in.
            await asyncio.sleep(0.001)
        first_page = (time.perf_counter() - started) * 1000
        while not app.screen.complete:  # noqa: ASYNC110 - polled from outside the app
            await asyncio.sleep(0.005)
        full_list = (time.perf_counter() - started) * 1000
        await pilot.pause(0.3)
        await pilot.press("slash")
        timings = []
        for char in TYPED:
            started = time.perf_counter()
            await pilot.press(char)
            await _frame(pilot)
            timings.append((time.perf_counter() - started) * 1000)
    return timings, first_page, full_list


class _Bare(App[None]):
    def compose(self) -> ComposeResult:
        yield Input()


class _Table(App[None]):
    def compose(self) -> ComposeResult:
        yield Input()
        yield DataTable()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("name", "ready", "status", "restarts", "age")

    def on_input_changed(self, event: Input.Changed) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for n in range(200):
            table.add_row(f"{event.value}-{n}", "1/1", "Running", "0", "3d")


async def baseline_keystrokes(app: App[None]) -> list[float]:
    timings = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        for char in TYPED:
            started = time.perf_counter()
            await pilot.press(char)
            await _frame(pilot)
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def _memory() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value)
    return {"rss": fields["Rss"], "pss": fields["Pss"]}


async def _memory_case(pods: int) -> dict[str, int]:
    broker = FakeBroker(Script(namespaces={"prod": ["big"]}, pods={"big": many(pods)}))
    app = ConsoleApp("alice", broker.transport())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        before = _memory()
        if pods:
            app.screen.query_one("#namespaces", OptionList).highlighted = 0
            await pilot.press("enter")
            while not (isinstance(app.screen, PodsScreen) and app.screen.complete):
                await pilot.pause(0.02)
            await pilot.pause(0.3)
        after = _memory()
    return {"rss_kb": after["rss"], "pss_kb": after["pss"], "grew_kb": after["rss"] - before["rss"]}


def memory(pods: int) -> dict[str, int]:
    """In a fresh interpreter: the fake broker's rows are built there too, so "grew" is the
    console's part (rows held by the broker are freed after sending, but not all returned)."""
    code = f"import asyncio,json,sys; sys.argv=['x']; import bench.tui_bench as b; " \
           f"print(json.dumps(asyncio.run(b._memory_case({pods}))))"  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _row(name: str, timings: list[float], base: float | None) -> str:
    median = statistics.median(timings)
    if not base:
        return f"{name:<44} {median:8.1f} {max(timings):8.1f}  (baseline)"
    extra = f"{median / base:.2f}x, +{median - base:.1f} ms"
    return f"{name:<44} {median:8.1f} {max(timings):8.1f}  {extra}"


async def run(quick: bool) -> None:
    sizes = [10_000] if quick else [10_000, 50_000]
    bare = await baseline_keystrokes(_Bare())
    table = await baseline_keystrokes(_Table())
    base = statistics.median(bare)
    print(f"{'keystroke to frame (ms)':<44} {'median':>8} {'max':>8}  vs bare app")
    print(_row("bare App with one Input", bare, None))
    print(_row("DataTable refilled with 200 rows", table, base))
    firsts = {}
    for pods in sizes:
        timings, first, full = await console_keystrokes(pods)
        firsts[pods] = (first, full)
        print(_row(f"console, filtering {pods:,} pods", timings, base))
    print()
    for pods, (first, full) in firsts.items():
        print(f"{pods:,} pods in pages of 500: first page {first:.0f} ms, whole list {full:.0f} ms")
    print()
    empty = memory(0)
    print(f"{'memory':<44} {'RSS MB':>8} {'PSS MB':>8}  grew MB")
    print(f"{'console, no pods':<44} {empty['rss_kb'] / 1024:8.1f} {empty['pss_kb'] / 1024:8.1f}")
    for pods in sizes:
        used = memory(pods)
        print(
            f"{f'console, {pods:,} pods':<44} {used['rss_kb'] / 1024:8.1f} "
            f"{used['pss_kb'] / 1024:8.1f}  {used['grew_kb'] / 1024:.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 pods only")
    asyncio.run(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
