"""The replay guard and scratch codes hold across connections, processes and restarts."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

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


def test_unlock_reports_and_clears_the_failures(tmp_path: Path) -> None:
    guard = LoginGuard(tmp_path / "state.db")
    assert guard.unlock("alice") == FailureRecord(0, None)
    guard.record_failure("alice", 10.0)
    guard.record_failure("alice", 20.0)
    guard.record_failure("bob", 20.0)
    assert guard.unlock("alice") == FailureRecord(2, 20.0)
    assert guard.failures("alice") == FailureRecord(0, None)
    assert guard.failures("bob") == FailureRecord(1, 20.0)
    guard.close()


def test_scratch_codes_are_single_use_and_replaced_as_a_set(tmp_path: Path) -> None:
    guard = LoginGuard(tmp_path / "state.db")
    assert guard.scratch_codes_left("alice") == 0
    assert not guard.use_scratch_code("alice", "d1", 1.0)
    guard.replace_scratch_codes("alice", ["d1", "d2", "d3"])
    guard.replace_scratch_codes("bob", ["d1"])
    assert guard.use_scratch_code("alice", "d1", 1.0)
    assert not guard.use_scratch_code("alice", "d1", 2.0)
    assert guard.scratch_codes_left("alice") == 2
    assert guard.scratch_codes_left("bob") == 1  # same digest, other user: untouched
    guard.close()
    reopened = LoginGuard(tmp_path / "state.db")
    assert not reopened.use_scratch_code("alice", "d1", 3.0)  # used survives a restart
    reopened.replace_scratch_codes("alice", ["e1", "e2"])
    assert not reopened.use_scratch_code("alice", "d2", 4.0)  # old set is gone
    assert reopened.scratch_codes_left("alice") == 2
    reopened.close()


def test_replacing_scratch_codes_is_one_transaction(tmp_path: Path) -> None:
    guard = LoginGuard(tmp_path / "state.db")
    guard.replace_scratch_codes("alice", ["d1", "d2"])
    with pytest.raises(sqlite3.IntegrityError):
        guard.replace_scratch_codes("alice", ["e1", "e1"])  # duplicate: the whole set fails
    assert guard.scratch_codes_left("alice") == 2
    assert guard.use_scratch_code("alice", "d2", 1.0)
    guard.close()


def _race_scratch(
    path: str,
    digest: str,
    start: multiprocessing.synchronize.Event,
    wins: multiprocessing.Queue[bool],
) -> None:
    guard = LoginGuard(Path(path))
    start.wait()
    wins.put(guard.use_scratch_code("alice", digest, 1.0))
    guard.close()


def test_racing_processes_use_a_scratch_code_once(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    guard = LoginGuard(Path(path))
    guard.replace_scratch_codes("alice", [f"d{i}" for i in range(5)])
    guard.close()
    context = multiprocessing.get_context("spawn")
    for i in range(5):
        start = context.Event()
        wins: multiprocessing.Queue[bool] = context.Queue()
        racers = [
            context.Process(target=_race_scratch, args=(path, f"d{i}", start, wins))
            for _ in range(4)
        ]
        for racer in racers:
            racer.start()
        start.set()
        results = [wins.get(timeout=30) for _ in racers]
        for racer in racers:
            racer.join(30)
        assert sorted(results) == [False, False, False, True]
    guard = LoginGuard(Path(path))
    assert guard.scratch_codes_left("alice") == 0
    guard.close()
