"""The replay guard holds across connections, processes and restarts."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from bastion.state.logins import FailureRecord, LoginGuard


def test_a_step_is_accepted_once_and_survives_a_restart(tmp_path: Path) -> None:
    guard = LoginGuard(tmp_path / "state.db")
    assert guard.last_step("alice") is None
    assert guard.accept_step("alice", 100)
    assert not guard.accept_step("alice", 100)
    assert not guard.accept_step("alice", 99)
    assert guard.accept_step("bob", 100)
    guard.close()
    reopened = LoginGuard(tmp_path / "state.db")
    assert reopened.last_step("alice") == 100
    assert not reopened.accept_step("alice", 100)
    assert reopened.accept_step("alice", 101)
    assert (tmp_path / "state.db").stat().st_mode & 0o777 == 0o600
    reopened.close()


def _race(
    path: str,
    step: int,
    start: multiprocessing.synchronize.Event,
    wins: multiprocessing.Queue[bool],
) -> None:
    guard = LoginGuard(Path(path))
    start.wait()
    wins.put(guard.accept_step("alice", step))
    guard.close()


def test_racing_processes_exactly_one_wins(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    LoginGuard(Path(path)).close()
    context = multiprocessing.get_context("spawn")
    for step in range(1, 6):
        start = context.Event()
        wins: multiprocessing.Queue[bool] = context.Queue()
        racers = [context.Process(target=_race, args=(path, step, start, wins)) for _ in range(4)]
        for racer in racers:
            racer.start()
        start.set()
        results = [wins.get(timeout=30) for _ in racers]
        for racer in racers:
            racer.join(30)
        assert sorted(results) == [False, False, False, True]


def test_failures_count_and_reset(tmp_path: Path) -> None:
    guard = LoginGuard(tmp_path / "state.db")
    assert guard.failures("alice") == FailureRecord(0, None)
    guard.record_failure("alice", 10.0)
    assert guard.record_failure("alice", 20.0) == FailureRecord(2, 20.0)
    guard.reset_failures("alice")
    assert guard.failures("alice") == FailureRecord(0, None)
    guard.close()
