#!/usr/bin/env python3
"""Console benchmark: the pod list at 10,000 and 50,000 pods, and 50,000 pods through the broker.

Sections (``--only`` picks some):

1. **keys**: keystroke to frame while filtering. The console (``tui.app.ConsoleApp``) runs
   headless (Textual's ``run_test``, 120x40) on the in-memory fake broker of ``tests/tui``
   with every pod loaded, and ``api-0123`` is typed into the filter one key at a time. Each
   key is timed from the moment it is sent to the end of the first frame Textual computes
   after the key's effect (for the console: the list filtered and the table told,
   ``PodTable.rows_changed``), that frame turned into terminal bytes as a terminal would get
   them (headless Textual skips that step; the bench does it). Baselines in the same run: a
   bare Textual app with one ``Input`` (a key and a frame, no console code), and Textual's
   ``DataTable`` refilled with 200 rows per key.
2. **filter**: one filter pass (``PodList.set_filter``) over 50,000 pods per kind of filter,
   against a plain comprehension over the 50,000 names (the least a pass can cost).
3. **load**: from opening the namespace to the first page shown and to the whole list
   loaded, through the fake broker (every line through the protocol's encode and decode).
4. **memory**: RSS and PSS of a fresh interpreter running the console with no pods, 10,000
   and 50,000 pods; "grew" is what loading the pods added.
5. **broker**: 50,000 pods from kubesim through the broker to a console, end to end. The
   local stack (kubesim and a real OpenBao, ``bastion devstack up``) runs in a child process,
   as an API server and Vault run elsewhere in real life; a bastion worker runs in this
   process, its console replaced by the protocol script of ``tests/devstack/test_browse.py``
   (a process of its own that decodes every line, so the time is the broker's and the
   wire's, not Textual's); an asyncssh client logs in with key and TOTP code. Timed at the
   console from the ``watch_pods`` request to the first page and to the last. Baselines in
   the same run, against the same kubesim: the same pages (500, then the broker's page size)
   fetched raw over TLS with the admin token (what the API server and HTTP cost at the
   least), and the same plus ``orjson.loads`` of each page (a full parse, no row built).

    .venv/bin/python bench/tui_bench.py                 # ~40 s (OpenBao starts for the broker)
    .venv/bin/python bench/tui_bench.py --quick         # 10,000 pods, no broker: ~10 s
    .venv/bin/python bench/tui_bench.py --only broker --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual.app import App, ComposeResult  # noqa: E402
from textual.widgets import DataTable, Input, OptionList  # noqa: E402

from tests.tui.fake_broker import FakeBroker, Script  # noqa: E402
from tests.tui.rows import many  # noqa: E402
from tui.app import ConsoleApp  # noqa: E402
from tui.filter import parse_filter  # noqa: E402
from tui.pod_list import PodList  # noqa: E402
from tui.pod_table import PodTable  # noqa: E402
from tui.screens import PodsScreen  # noqa: E402

TYPED = "api-0123"
SECTIONS = ("keys", "filter", "load", "memory", "broker")


# ---------------------------------------------------------------------------- keys
class FrameClock:
    """When each frame of ``app`` was ready, and when each key's effect was done."""

    def __init__(self, app: App[Any]) -> None:
        self.frames: list[float] = []
        self.effects: list[float] = []
        display = app._display

        def timed(screen: Any, renderable: Any) -> None:
            display(screen, renderable)
            if renderable is not None and hasattr(renderable, "render_segments"):
                renderable.render_segments(app.console)  # what would go to the terminal
            self.frames.append(time.perf_counter())

        app._display = timed  # type: ignore[method-assign]

    def effect(self) -> None:
        self.effects.append(time.perf_counter())

    def key_to_frame(self, sent: float) -> float:
        """Milliseconds from ``sent`` to the first frame after the key's last effect."""
        done = max((t for t in self.effects if t >= sent), default=sent)
        frame = min(t for t in self.frames if t >= done)
        return (frame - sent) * 1000


async def _type(pilot: Any, clock: FrameClock) -> list[float]:
    timings = []
    for char in TYPED:
        sent = time.perf_counter()
        await pilot.press(char)
        await pilot.pause()  # every frame the key caused is drawn
        timings.append(clock.key_to_frame(sent))
    return timings


async def _open_big(app: ConsoleApp, pods: int) -> tuple[float, float]:
    """Opens the namespace of ``pods`` pods; ms to the first page shown and to the last."""
    started = time.perf_counter()
    # Pushed directly: pilot.press() returns only once the app is idle, after the last page.
    app.push_screen(PodsScreen("prod", "big"))
    while not (isinstance(app.screen, PodsScreen) and app.screen.pods.shown):  # noqa: ASYNC110
        # Not pilot.pause(): it waits for the app to be idle, which it is not while the
        # other pages stream in.
        await asyncio.sleep(0.001)
    first_page = (time.perf_counter() - started) * 1000
    while not app.screen.complete:  # noqa: ASYNC110 - polled from outside the app
        await asyncio.sleep(0.005)
    return first_page, (time.perf_counter() - started) * 1000


async def console_keys(pods: int) -> list[float]:
    broker = FakeBroker(Script(namespaces={"prod": ["big"]}, pods={"big": many(pods)}))
    app = ConsoleApp("alice", broker.transport())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await _open_big(app, pods)
        await pilot.pause(0.3)
        clock = FrameClock(app)
        table = app.screen.query_one(PodTable)
        rows_changed = table.rows_changed

        def told() -> None:
            rows_changed()
            clock.effect()

        table.rows_changed = told  # type: ignore[method-assign]
        await pilot.press("slash")
        app.screen.query_one("#filter", Input).cursor_blink = False  # no stray frames
        await pilot.pause()
        return await _type(pilot, clock)


class _Bare(App[None]):
    def compose(self) -> ComposeResult:
        yield Input()

    def on_input_changed(self) -> None:
        self.clock.effect()

    clock: FrameClock


class _Table(_Bare):
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
        self.clock.effect()


async def baseline_keys(app: _Bare) -> list[float]:
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.clock = FrameClock(app)
        app.query_one(Input).cursor_blink = False
        await pilot.pause()
        return await _type(pilot, app.clock)


def _key_row(name: str, timings: list[float], base: float | None) -> str:
    median = statistics.median(timings)
    if not base:
        return f"{name:<40} {median:8.1f} {max(timings):8.1f}  (baseline)"
    extra = f"{median / base:.2f}x, +{median - base:.1f} ms"
    return f"{name:<40} {median:8.1f} {max(timings):8.1f}  {extra}"


async def section_keys(sizes: list[int]) -> None:
    bare = await baseline_keys(_Bare())
    table = await baseline_keys(_Table())
    base = statistics.median(bare)
    print(f"{'keystroke to frame (ms)':<40} {'median':>8} {'max':>8}  vs bare app")
    print(_key_row("bare App with one Input", bare, None))
    print(_key_row("DataTable refilled with 200 rows", table, base))
    for pods in sizes:
        print(_key_row(f"console, filtering {pods:,} pods", await console_keys(pods), base))
    print()


# ---------------------------------------------------------------------------- filter
def _median_ms(work: Callable[[], object], runs: int = 9) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def section_filter(pods: int) -> None:
    rows = many(pods)
    names = [row.name for row in rows]
    listed = PodList()
    listed.upsert(rows)
    listed.refresh()
    base = _median_ms(lambda: [name for name in names if "api-1" in name])
    print(f"{f'one filter pass over {pods:,} pods (ms)':<40} {'median':>8}  vs baseline")
    print(f"{'names containing api-1, plain list':<40} {base:8.2f}  (baseline)")
    for text in ("api-1", "crash", "/^api-1.*9$/", "-l app=api3,tier!=db", "zzz"):
        pod_filter = parse_filter(text)
        took = _median_ms(lambda f=pod_filter: listed.set_filter(f))  # type: ignore[misc]
        print(f"{'console: ' + text:<40} {took:8.2f}  {took / base:.1f}x")
    print()


# ---------------------------------------------------------------------------- load
async def _load_case(pods: int) -> tuple[float, float]:
    broker = FakeBroker(Script(namespaces={"prod": ["big"]}, pods={"big": many(pods)}))
    app = ConsoleApp("alice", broker.transport())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        return await _open_big(app, pods)


async def section_load(sizes: list[int]) -> None:
    for pods in sizes:
        first, full = await _load_case(pods)
        print(f"{pods:,} pods in pages of 500: first page {first:.0f} ms, whole list {full:.0f} ms")
    print()


# ---------------------------------------------------------------------------- memory
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
    """In a fresh interpreter: the fake broker's rows are built there too, before the
    "before" reading, so "grew" is the console's part (and pages decoded, then freed, whose
    memory the allocator keeps for reuse)."""
    code = f"import asyncio,json,sys; sys.argv=['x']; import bench.tui_bench as b; " \
           f"print(json.dumps(asyncio.run(b._memory_case({pods}))))"  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def section_memory(sizes: list[int]) -> None:
    empty = memory(0)
    print(f"{'memory':<40} {'RSS MB':>8} {'PSS MB':>8} {'grew MB':>8} {'per pod':>8}")
    print(f"{'console, no pods':<40} {empty['rss_kb'] / 1024:8.1f} {empty['pss_kb'] / 1024:8.1f}")
    for pods in sizes:
        used = memory(pods)
        print(
            f"{f'console, {pods:,} pods':<40} {used['rss_kb'] / 1024:8.1f} "
            f"{used['pss_kb'] / 1024:8.1f} {used['grew_kb'] / 1024:8.1f} "
            f"{used['grew_kb'] * 1024 / pods:6.0f} B"
        )
    print()


# ---------------------------------------------------------------------------- broker
BIG = 50_000


@contextlib.contextmanager
def devstack(workdir: Path, pods: int) -> Iterator[dict[str, Any]]:
    """``bastion devstack up`` with one namespace of ``pods`` generated pods, in a child."""
    from devstack.kubesim_harness import TOOLBOX  # noqa: PLC0415 - tests/ is on sys.path

    fixture = workdir / "fixture.json"
    generate = {"count": pods, "prefix": "load-", "labels": {"app": "load"}}
    fixture.write_text(
        json.dumps(
            {
                "images": {TOOLBOX: {"command": ["/bin/sh"]}},
                "namespaces": [{"name": "big", "generate": generate}],
            }
        )
    )
    state = workdir / "stack"
    bastion = Path(sys.executable).with_name("bastion")
    child = subprocess.Popen(
        [str(bastion), "devstack", "up", "--state-dir", str(state), "--fixture", str(fixture)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not (state / "devstack.json").exists():
            if child.poll() is not None or time.monotonic() > deadline:
                error = child.stderr.read().decode() if child.stderr else ""
                raise SystemExit(f"bastion devstack up did not start: {error[-2000:]}")
            time.sleep(0.2)
        yield json.loads((state / "devstack.json").read_text())
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


async def raw_pages(info: dict[str, Any], rest_page: int, *, parse: bool) -> float:
    """Seconds to fetch every page of namespace big as the broker pages it, raw."""
    import aiohttp  # noqa: PLC0415
    import orjson  # noqa: PLC0415

    context = ssl.create_default_context(cafile=info["kube_ca"])
    headers = {"Authorization": f"Bearer {info['kube_admin_token']}"}
    started = time.perf_counter()
    pods = 0
    async with aiohttp.ClientSession(
        base_url=info["kube_api"], connector=aiohttp.TCPConnector(ssl=context)
    ) as http:
        params = {"limit": "500"}
        while True:
            async with http.get("/api/v1/namespaces/big/pods", params=params, headers=headers) as r:
                raw = await r.read()
            # The token is at the head of the page: found without parsing the rest.
            token = raw[: raw.index(b'"items"')].partition(b'"continue":"')[2].partition(b'"')[0]
            if parse:
                pods += len(orjson.loads(raw)["items"])
            if not token:
                break
            params = {"limit": str(rest_page), "continue": token.decode()}
    took = time.perf_counter() - started
    if parse and pods != BIG:
        raise SystemExit(f"the raw pages held {pods} pods, not {BIG}")
    return took


async def through_the_broker(
    info: dict[str, Any], workdir: Path, runs: int
) -> list[dict[str, Any]]:
    from devstack.test_browse import ScriptConsole, browse_env, script_console  # noqa: PLC0415
    from front_door.test_login_asyncssh import fresh_login  # noqa: PLC0415

    from bastion.config import load_config  # noqa: PLC0415
    from bastion.ssh.worker import Worker  # noqa: PLC0415

    env = browse_env(workdir / "bastion", info)
    worker = Worker(load_config(env.config_path))
    await worker.start()
    assert worker.door is not None  # noqa: S101 - started
    worker.door.console_command = script_console
    results = []
    try:
        _, conn = await fresh_login(env, worker.port)
        async with conn:
            process = await conn.create_process(term_type="xterm", term_size=(80, 24))
            console = ScriptConsole(process)
            await console.start()
            await console.ask("list_namespaces", cluster="local")  # the credential, once
            for _ in range(runs):
                watch = console.send("watch_pods", cluster="local", namespace="big")
                first = await console.wait(lambda m, w=watch: m["type"] == "first" and m["id"] == w)
                done = await console.wait(
                    lambda m, w=watch: m["type"] == "complete" and m["id"] == w, 120
                )
                console.send("stop_watch", id=watch)
                if done["rows"] != BIG:
                    raise SystemExit(f"the console got {done['rows']} pods, not {BIG}")
                results.append({"first": first["ms"], "complete": done["ms"]})
            process.stdin.write("q\n")
            await process.wait_closed()
    finally:
        await worker.stop()
    return results


async def section_broker(runs: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from bastion.session.browse import REST_PAGE  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="tui-bench-") as tmp, devstack(Path(tmp), BIG) as info:
        raw = [await raw_pages(info, REST_PAGE, parse=False) for _ in range(runs)]
        parsed = [await raw_pages(info, REST_PAGE, parse=True) for _ in range(runs)]
        ends = await through_the_broker(info, Path(tmp), runs)
    base = statistics.median(raw) * 1000
    print(f"{BIG:,} pods, pages of 500 then {REST_PAGE}, medians of {runs}")
    print(f"{'whole list (ms)':<48} {'median':>8} {'max':>8}  vs raw pages")
    print(f"{'raw pages over TLS (baseline)':<48} {base:8.0f} {max(raw) * 1000:8.0f}")
    orjson_ms = statistics.median(parsed) * 1000
    print(
        f"{'raw pages + orjson.loads of each':<48} {orjson_ms:8.0f} "
        f"{max(parsed) * 1000:8.0f}  {orjson_ms / base:.2f}x"
    )
    complete = [r["complete"] for r in ends]
    done = statistics.median(complete)
    print(
        f"{'through the broker to the console, last page':<48} {done:8.0f} "
        f"{max(complete):8.0f}  {done / base:.2f}x"
    )
    firsts = [r["first"] for r in ends]
    print(
        f"{'through the broker to the console, first page':<48} "
        f"{statistics.median(firsts):8.0f} {max(firsts):8.0f}"
    )
    print("targets (issue 7): first page under 300 ms, whole list under 3,000 ms")
    print()


async def run(args: argparse.Namespace) -> None:
    sizes = [10_000] if args.quick else [10_000, 50_000]
    only = set(args.only or (SECTIONS if not args.quick else SECTIONS[:-1]))
    print(f"tui_bench: python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    if "keys" in only:
        await section_keys(sizes)
    if "filter" in only:
        section_filter(sizes[-1])
    if "load" in only:
        await section_load(sizes)
    if "memory" in only:
        section_memory(sizes)
    if "broker" in only:
        await section_broker(args.runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 pods only, no broker")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="these sections only")
    parser.add_argument("--runs", type=int, default=3, help="broker runs (default 3)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
