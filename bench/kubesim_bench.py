#!/usr/bin/env python3
"""kubesim list throughput: a 50,000-pod namespace through the official Kubernetes client.

kubesim (``bastion.devstack.kubesim.app.KubeSim``) runs in a background thread with its own
event loop, seeded with one namespace ``big`` of N generated pods (default 50,000). The
official ``kubernetes`` client talks to it over TLS with kubesim's CA pinned
(``Configuration.ssl_ca_cert``) and the admin token. Measured in one run:

(a) start: TLS material, seeding and serialising N pods, listening;
(b) the full list as raw JSON (``list_namespaced_pod("big", _preload_content=False)``, then
    ``.data``), median of ``--repeat``;
(c) the first page, ``limit=500``, as raw JSON and as the client's models, median of
    ``--repeat``;
(d) every page of 500 through ``continue`` as raw JSON (each token read from the page's
    head), once;
(e) the full list deserialised by the client into its model objects, once;
(f) baselines without HTTP, same run, same bytes: ``b",".join`` of kubesim's cached per-pod
    JSON (the least work a list can be), kubesim's own ``Store.list`` plus that join (the
    server's work without the transport), and ``orjson.loads``/``json.loads`` of the exact
    bytes (b) received (what a reader pays to parse them).

Client and server share one process here, unlike in real life. Parsing 80 MB allocates
millions of objects, and every full collection the cyclic GC runs meanwhile would also walk
kubesim's millions of seeded objects (``json.loads`` measured 1.4x slower for it). So
``gc.freeze()`` is called once kubesim has started, which leaves those objects out of every
collection, as if kubesim ran in its own process; ``--no-gc-freeze`` shows the difference.

Every figure is checked before it is printed: item counts, the 500-item page and its
``continue`` token, every pod seen exactly once across the pages, identical bytes on every
full list. "vs join" compares seconds per byte with the in-memory join's, so a page of 500
compares with joining as many bytes.

Run from the repository root::

    .venv/bin/python bench/kubesim_bench.py           # 50,000 pods, ~40 s on 2 cores
    .venv/bin/python bench/kubesim_bench.py --quick   # 10,000 pods, ~6 s
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from kubernetes import client

from bastion.devstack.background import Background, kube_client
from bastion.devstack.kubesim.app import KubeSim
from bastion.devstack.kubesim.store import RESOURCES

T = TypeVar("T")
NAMESPACE = "big"
PAGE = 500
TARGET_SECONDS = 1.0
PODS = RESOURCES[("", "pods")]


def fixture(count: int) -> dict[str, Any]:
    generate = {"count": count, "prefix": "load-", "labels": {"app": "load"}}
    return {"namespaces": [{"name": NAMESPACE, "generate": generate}]}


class BackgroundKubeSim:
    """kubesim on its own event loop in a daemon thread."""

    def __init__(self, workdir: Path, count: int) -> None:
        self.background = Background(timeout=300)
        self.sim = KubeSim(workdir, fixture(count))

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.background.call(coro)

    def start(self) -> None:
        self.background.start(self.sim.start)

    def stop(self) -> None:
        self.background.stop(self.sim.stop)

    def api_client(self) -> client.ApiClient:
        # kubesim's own CA, pinned
        return kube_client(self.sim.url, str(self.sim.ca_file), self.sim.admin_token)

    def store_items(self) -> list[bytes]:
        """The cached JSON of every pod of the namespace, read on kubesim's own loop."""

        async def read() -> list[bytes]:
            return self.sim.store.list(PODS, NAMESPACE, None).items

        return self.call(read())


@dataclass(frozen=True)
class Row:
    what: str
    seconds: float
    nbytes: int
    pods: int
    runs: int


def check(condition: bool, problem: str) -> None:
    """A benchmark that measured a wrong answer must not print a figure."""
    if not condition:
        raise SystemExit(f"kubesim_bench: FAILED: {problem}")


def timed(action: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


class Bench:
    """The measurements, in the order of the table; each one checks its answer first."""

    def __init__(self, running: BackgroundKubeSim, core: client.CoreV1Api, count: int) -> None:
        self.running = running
        self.core = core
        self.count = count
        self.rows: list[Row] = []

    def add(
        self, what: str, action: Callable[[], object], runs: int, nbytes: int, pods: int
    ) -> float:
        seconds = timed(action, runs)
        self.rows.append(Row(what, seconds, nbytes, pods, runs))
        return seconds

    # ------------------------------------------------------------------ the client's calls
    def full_raw(self) -> bytes:
        # With _preload_content=False the client returns the urllib3 response, not a model.
        response: Any = self.core.list_namespaced_pod(NAMESPACE, _preload_content=False)
        data: bytes = response.data
        return data

    def page_raw(self, token: str | None = None) -> bytes:
        response: Any = self.core.list_namespaced_pod(
            NAMESPACE, limit=PAGE, _continue=token, _preload_content=False
        )
        data: bytes = response.data
        return data

    def store_list_and_join(self) -> bytes:
        async def work() -> bytes:
            return b",".join(self.running.sim.store.list(PODS, NAMESPACE, None).items)

        return self.running.call(work())

    # ------------------------------------------------------------------ the run
    def baselines(self, body: bytes, repeat: int) -> None:
        """(f): what the same bytes cost without HTTP."""
        items = self.running.store_items()
        check(len(items) == self.count, f"the store holds {len(items)} pods, not {self.count}")
        joined = b",".join(items)
        check(joined in body, "the full list is not kubesim's cached pod JSON")
        for what, action, size in (
            ("(f) baseline: join of the cached pod bytes", lambda: b",".join(items), len(joined)),
            ("(f) baseline: Store.list + join, no HTTP", self.store_list_and_join, len(joined)),
            ("(f) baseline: orjson.loads of the bytes", lambda: orjson.loads(body), len(body)),
            ("(f) baseline: json.loads of the bytes", lambda: json.loads(body), len(body)),
        ):
            self.add(what, action, repeat, size, self.count)

    def full_list(self, body: bytes, repeat: int) -> float:
        """(b): the full list as raw JSON, byte for byte the warm-up's answer every time."""

        def full_checked() -> None:
            check(self.full_raw() == body, "a full list came back different")

        what = "(b) full list, raw JSON over TLS"
        return self.add(what, full_checked, repeat, len(body), self.count)

    def first_page(self, repeat: int) -> None:
        """(c): the first page of 500, raw and as the client's models."""
        page = orjson.loads(self.page_raw())
        meta = page["metadata"]
        check(len(page["items"]) == PAGE, f"the first page is not {PAGE} pods")
        check(bool(meta.get("continue")), "the first page has no continue token")
        check(meta.get("remainingItemCount") == self.count - PAGE, "wrong remainingItemCount")
        size = len(self.page_raw())

        def models() -> None:
            listed = self.core.list_namespaced_pod(NAMESPACE, limit=PAGE)
            check(len(listed.items) == PAGE, f"the first page is not {PAGE} models")

        self.add("(c) first page, limit=500, raw JSON", self.page_raw, repeat, size, PAGE)
        self.add("(c) first page, limit=500, client models", models, repeat, size, PAGE)

    def all_pages(self) -> None:
        """(d): every page of 500 through ``continue``; every pod exactly once.

        Timed like (b): the pages as raw bytes, each page's ``continue`` token read from its
        head (kubesim writes ``metadata`` before ``items``), so the row compares with (b) and
        not with a parse. Every page is parsed in full afterwards, for the checks.
        """
        pages: list[bytes] = []

        def walk() -> None:
            pages.clear()
            token: str | None = None
            while True:
                data = self.page_raw(token)
                pages.append(data)
                token = _continue_token(data)
                if not token:
                    break

        seconds = timed(walk, 1)
        names = [pod["metadata"]["name"] for page in pages for pod in orjson.loads(page)["items"]]
        check(len(pages) == -(-self.count // PAGE), f"{len(pages)} pages for {self.count} pods")
        check(len(names) == self.count, f"the pages held {len(names)} pods")
        check(len(set(names)) == self.count, "a pod came twice across the pages")
        check(names == sorted(names), "the pages are not in name order")
        size = sum(len(page) for page in pages)
        self.rows.append(
            Row("(d) all pages of 500 via continue, raw", seconds, size, self.count, 1)
        )

    def models(self, size: int) -> None:
        """(e): the full list deserialised into the client's model objects, once."""

        def full_models() -> None:
            listed = self.core.list_namespaced_pod(NAMESPACE)
            check(len(listed.items) == self.count, "the model list came back short")

        self.add("(e) full list into client model objects", full_models, 1, size, self.count)


def _continue_token(page: bytes) -> str | None:
    """The page's ``metadata.continue``, parsing only the part before ``items``."""
    head = page.find(b',"items":[')
    meta = orjson.loads(page[:head] + b"}" if head > 0 else page)["metadata"]
    token: str | None = meta.get("continue")
    return token


def measure(running: BackgroundKubeSim, count: int, repeat: int) -> tuple[list[Row], float]:
    with running.api_client() as api:
        bench = Bench(running, client.CoreV1Api(api), count)
        # Warm-up and correctness: the exact bytes every later full list must repeat.
        body = bench.full_raw()
        parsed = orjson.loads(body)
        check(len(parsed["items"]) == count, f"the full list held {len(parsed['items'])} pods")
        check("continue" not in parsed["metadata"], "an unpaged list carried a continue token")
        del parsed
        bench.baselines(body, repeat)
        full_seconds = bench.full_list(body, repeat)
        bench.first_page(repeat)
        bench.all_pages()
        bench.models(len(body))
    return bench.rows, full_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pods", type=int, default=50_000, help="pods in the namespace")
    parser.add_argument("--quick", action="store_true", help="10,000 pods")
    parser.add_argument("--repeat", type=int, default=5, help="runs per median (b, c, f)")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave kubesim's seeded objects to the cyclic GC (see the docstring)",
    )
    args = parser.parse_args()
    count = 10_000 if args.quick else args.pods
    check(count > PAGE, f"--pods must be more than one page ({PAGE})")
    total = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kubesim-bench-") as workdir:
        running = BackgroundKubeSim(Path(workdir), count)
        started = time.perf_counter()
        running.start()
        start_seconds = time.perf_counter() - started
        check(running.sim.pod_count == count, f"seeded {running.sim.pod_count} pods")
        if not args.no_gc_freeze:
            gc.freeze()
        try:
            rows, full_seconds = measure(running, count, args.repeat)
        finally:
            running.stop()
    rows.insert(0, Row("(a) start: seed, serialise, listen", start_seconds, 0, count, 1))

    print(
        f"kubesim_bench: {count:,} pods in one namespace, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, median of {args.repeat} where runs > 1, "
        f"gc.freeze() after start: {'no' if args.no_gc_freeze else 'yes'}\n"
    )
    width = max(len(r.what) for r in rows)
    print(f"{'what':{width}}  {'runs':>4}  {'seconds':>7}  {'MB':>6}  {'pods/s':>9}  vs join")
    print(f"{'-' * width}  ----  -------  ------  ---------  -------")
    base = rows[1]
    for r in rows:
        megabytes = f"{r.nbytes / 1e6:6.1f}" if r.nbytes else f"{'-':>6}"
        ratio = "-"
        if r.nbytes:
            ratio = f"{(r.seconds / r.nbytes) / (base.seconds / base.nbytes):.1f}x"
        print(
            f"{r.what:{width}}  {r.runs:4d}  {r.seconds:7.3f}  {megabytes}  "
            f"{r.pods / r.seconds:9,.0f}  {ratio:>7}"
        )
    verdict = "meets" if full_seconds < TARGET_SECONDS else "MISSES"
    print(
        f"\ntarget: full {count:,}-pod list in under {TARGET_SECONDS:.0f} s over TLS: "
        f"{full_seconds:.2f} s, {verdict} it; pages of {PAGE} with limit/continue: every pod "
        f"seen once\nwhole run: {time.perf_counter() - total:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
