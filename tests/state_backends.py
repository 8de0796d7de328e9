"""The two state backends, for contract tests parametrised over both: SQLite files in a
temporary directory, and a fresh database on the real PostgreSQL server of the run.

A :class:`Backend` is picklable, so race tests hand it to spawned processes, each of which
opens its own connection, as separate bastion workers (or replicas) would.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bastion.state.database import PostgresLocation, StateDatabase, connect_postgres

INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.errors.IntegrityError)


@dataclass(frozen=True)
class Backend:
    name: str  # "sqlite" or "postgresql": the parameter id
    directory: Path  # SQLite's files; also a scratch directory for either
    postgres: PostgresLocation | None = None

    def open(self, file: str = "state.db") -> Path | StateDatabase:
        """What a store's constructor takes: the SQLite file ``file`` (all stores of one
        file share it, as in production), or a new PostgreSQL connection."""
        if self.postgres is None:
            return self.directory / file
        return connect_postgres(self.postgres)


def _racer(  # noqa: PLR0917 - the arguments of a spawned process are positional
    backend: Backend,
    opener: Callable[[Backend], Any],
    action: Callable[[Any, int], Any],
    rounds: int,
    barrier: threading.Barrier,
    results: multiprocessing.Queue[tuple[int, Any]],
) -> None:
    store = opener(backend)
    try:
        for round_ in range(rounds):
            barrier.wait(timeout=60)
            results.put((round_, action(store, round_)))
    finally:
        store.close()


def race(
    backend: Backend,
    opener: Callable[[Backend], Any],
    action: Callable[[Any, int], Any],
    *,
    rounds: int,
    racers: int = 4,
) -> list[list[Any]]:
    """Run ``action(store, round)`` in ``racers`` processes at once, ``rounds`` times; each
    process opens its own store with ``opener(backend)`` (module-level functions, so that
    spawned processes can import them). The results of each round, sorted.

    The processes are spawned once and meet at a barrier before every round: spawning is the
    slow part here (an interpreter and the bastion's imports each), racing is not.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(racers)
    results: multiprocessing.Queue[tuple[int, Any]] = context.Queue()
    processes = [
        context.Process(target=_racer, args=(backend, opener, action, rounds, barrier, results))
        for _ in range(racers)
    ]
    for process in processes:
        process.start()
    try:
        collected = [results.get(timeout=60) for _ in range(rounds * racers)]
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    by_round: list[list[Any]] = [[] for _ in range(rounds)]
    for round_, value in collected:
        by_round[round_].append(value)
    return [sorted(values) for values in by_round]
