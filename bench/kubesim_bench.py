#!/usr/bin/env python3
"""kubesim list throughput: a 50,000-pod namespace through the official Kubernetes client.

Measured in one run: kubesim seeded with N generated pods (default 50,000) in a background
thread, then over TLS with the CA pinned, as the console will read it:

* the full namespace as raw JSON (``_preload_content=False``), median of 5;
* the first page of 500 (``limit``), median of 5, and every page of 500 via ``continue``;
* the full list turned into the client's model objects once (what to avoid);
* baselines in the same run, without HTTP: joining the cached bytes (what kubesim's own
  work costs at minimum) and ``orjson.loads`` of the same bytes (what a reader pays).

Run from the repository root::

    .venv/bin/python bench/kubesim_bench.py           # 50,000 pods, about 30 s
    .venv/bin/python bench/kubesim_bench.py --quick   # 10,000 pods
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from devstack.kubesim_harness import ThreadedKubeSim

from bastion.devstack.kubesim.app import KubeSim
from bastion.devstack.kubesim.store import RESOURCES


def check(condition: bool, problem: str) -> None:
    """A benchmark that measured a wrong answer must not print a figure."""
    if not condition:
        raise SystemExit(f"kubesim_bench: {problem}")


def timed(action: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="10,000 pods")
    args = parser.parse_args()
    count = 10_000 if args.quick else args.pods
    fixture = {"namespaces": [{"name": "big", "generate": {"count": count, "prefix": "load-"}}]}
    with tempfile.TemporaryDirectory() as workdir:
        running = ThreadedKubeSim(Path(workdir))
        running.sim = KubeSim(Path(workdir), fixture)
        started = time.perf_counter()
        running.start()
        start_seconds = time.perf_counter() - started
        try:
            rows = measure(running, count)
        finally:
            running.stop()
    print(
        f"kubesim_bench: {count} pods, Python {sys.version.split()[0]}, started in "
        f"{start_seconds:.2f} s (seeding and serialising included)\n"
    )
    print(f"{'what':44} {'seconds':>8} {'MB':>7} {'pods/s':>10} {'vs join':>8}")
    print(f"{'-' * 44} {'-' * 8} {'-' * 7} {'-' * 10} {'-' * 8}")
    base = rows[0][1]
    for name, seconds, megabytes, pods in rows:
        ratio = f"{seconds / base:.1f}x"
        print(f"{name:44} {seconds:8.3f} {megabytes:7.1f} {pods / seconds:10,.0f} {ratio:>8}")
    full = rows[2][1]
    verdict = "meets" if full < 1.0 else "MISSES"
    print(f"\nfull list over TLS: {full:.2f} s, {verdict} the 1 s target")
    return 0


def measure(running: ThreadedKubeSim, count: int) -> list[tuple[str, float, float, int]]:
    store = running.sim.store
    pods = RESOURCES[("", "pods")]
    body = b"[" + b",".join(store.list(pods, "big", None).items) + b"]"
    megabytes = len(body) / 1e6
    rows = [
        (
            "baseline: join of the cached pod bytes",
            timed(lambda: b",".join(store.list(pods, "big", None).items), 5),
            megabytes,
            count,
        ),
        (
            "baseline: orjson.loads of the same bytes",
            timed(lambda: orjson.loads(body), 5),
            megabytes,
            count,
        ),
    ]
    with running.api_client() as api:
        core = client.CoreV1Api(api)

        def full() -> None:
            response = core.list_namespaced_pod("big", _preload_content=False)
            check(len(response.data) > len(body) // 2, "the full list came back short")

        def first_page() -> None:
            page = core.list_namespaced_pod("big", limit=500)
            check(len(page.items) == 500, "the first page does not hold 500 pods")

        def all_pages() -> None:
            token, seen = None, 0
            while True:
                response = core.list_namespaced_pod(
                    "big", limit=500, _continue=token, _preload_content=False
                )
                page = orjson.loads(response.data)
                seen += len(page["items"])
                token = page["metadata"].get("continue")
                if not token:
                    break
            check(seen == count, f"the pages held {seen} pods, not {count}")

        rows.append(("full list, raw JSON over TLS (client)", timed(full, 5), megabytes, count))
        rows.append(
            (
                "first page, limit=500 (client models)",
                timed(first_page, 5),
                megabytes * 500 / count,
                500,
            )
        )
        rows.append(
            ("all pages of 500 via continue, raw JSON", timed(all_pages, 1), megabytes, count)
        )
        rows.append(
            (
                "full list into client model objects",
                timed(lambda: core.list_namespaced_pod("big"), 1),
                megabytes,
                count,
            )
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
