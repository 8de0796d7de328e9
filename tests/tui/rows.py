"""Deterministic pod rows for the console's tests: plain, many, and hostile."""

from __future__ import annotations

from bastion.console_protocol import PodRow

STATUSES = ("Running", "Running", "Running", "Pending", "CrashLoopBackOff", "Completed")
CREATED = "2026-11-28T10:00:00Z"


def pod(
    name: str,
    *,
    status: str = "Running",
    ready: str = "1/1",
    restarts: int = 0,
    created: str = CREATED,
    node: str = "node-1",
    labels: tuple[str, ...] = ("app=web",),
    containers: tuple[str, ...] = ("app",),
) -> PodRow:
    return PodRow(name, ready, status, restarts, created, node, labels, containers)


def many(count: int, prefix: str = "api") -> list[PodRow]:
    """``count`` pods with varied status, node, restarts and labels, the same on every run."""
    return [
        pod(
            f"{prefix}-{n:05d}",
            status=STATUSES[n % len(STATUSES)],
            ready="1/1" if n % 6 < 3 else "0/1",
            restarts=n % 7,
            created=f"2026-11-{1 + n % 27:02d}T10:00:00Z",
            node=f"node-{n % 40}",
            labels=(f"app={prefix}{n % 10}", "tier=web" if n % 2 else "tier=db"),
        )
        for n in range(count)
    ]
