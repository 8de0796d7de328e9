"""The replay guard and scratch codes hold across connections, processes and restarts."""

from __future__ import annotations

import pytest
from state_backends import INTEGRITY_ERRORS, Backend, race

from bastion.state.logins import FailureRecord, LoginGuard


def test_a_step_is_accepted_once_and_survives_a_restart(state_backend: Backend) -> None:
    guard = LoginGuard(state_backend.open())
    assert guard.last_step("alice") is None
    assert guard.accept_step("alice", 100)
    assert not guard.accept_step("alice", 100)
    assert not guard.accept_step("alice", 99)
    assert guard.accept_step("bob", 100)
    guard.close()
    reopened = LoginGuard(state_backend.open())
    assert reopened.last_step("alice") == 100
    assert not reopened.accept_step("alice", 100)
    assert reopened.accept_step("alice", 101)
    if state_backend.name == "sqlite":
        assert (state_backend.directory / "state.db").stat().st_mode & 0o777 == 0o600
    reopened.close()


def _open_guard(backend: Backend) -> LoginGuard:
    return LoginGuard(backend.open())


def _accept_step(guard: LoginGuard, round_: int) -> bool:
    return guard.accept_step("alice", round_ + 1)


def test_racing_processes_exactly_one_wins(state_backend: Backend) -> None:
    LoginGuard(state_backend.open()).close()
    rounds = race(state_backend, _open_guard, _accept_step, rounds=5)
    assert rounds == [[False, False, False, True]] * 5


def test_failures_count_and_reset(state_backend: Backend) -> None:
    guard = LoginGuard(state_backend.open())
    assert guard.failures("alice") == FailureRecord(0, None)
    guard.record_failure("alice", 10.0)
    assert guard.record_failure("alice", 20.0) == FailureRecord(2, 20.0)
    guard.reset_failures("alice")
    assert guard.failures("alice") == FailureRecord(0, None)
    guard.close()


def test_unlock_reports_and_clears_the_failures(state_backend: Backend) -> None:
    guard = LoginGuard(state_backend.open())
    assert guard.unlock("alice") == FailureRecord(0, None)
    guard.record_failure("alice", 10.0)
    guard.record_failure("alice", 20.0)
    guard.record_failure("bob", 20.0)
    assert guard.unlock("alice") == FailureRecord(2, 20.0)
    assert guard.failures("alice") == FailureRecord(0, None)
    assert guard.failures("bob") == FailureRecord(1, 20.0)
    guard.close()


def test_scratch_codes_are_single_use_and_replaced_as_a_set(state_backend: Backend) -> None:
    guard = LoginGuard(state_backend.open())
    assert guard.scratch_codes_left("alice") == 0
    assert not guard.use_scratch_code("alice", "d1", 1.0)
    guard.replace_scratch_codes("alice", ["d1", "d2", "d3"])
    guard.replace_scratch_codes("bob", ["d1"])
    assert guard.use_scratch_code("alice", "d1", 1.0)
    assert not guard.use_scratch_code("alice", "d1", 2.0)
    assert guard.scratch_codes_left("alice") == 2
    assert guard.scratch_codes_left("bob") == 1  # same digest, other user: untouched
    guard.close()
    reopened = LoginGuard(state_backend.open())
    assert not reopened.use_scratch_code("alice", "d1", 3.0)  # used survives a restart
    reopened.replace_scratch_codes("alice", ["e1", "e2"])
    assert not reopened.use_scratch_code("alice", "d2", 4.0)  # old set is gone
    assert reopened.scratch_codes_left("alice") == 2
    reopened.close()


def test_replacing_scratch_codes_is_one_transaction(state_backend: Backend) -> None:
    guard = LoginGuard(state_backend.open())
    guard.replace_scratch_codes("alice", ["d1", "d2"])
    with pytest.raises(INTEGRITY_ERRORS):
        guard.replace_scratch_codes("alice", ["e1", "e1"])  # duplicate: the whole set fails
    assert guard.scratch_codes_left("alice") == 2
    assert guard.use_scratch_code("alice", "d2", 1.0)
    guard.close()


def _use_scratch_code(guard: LoginGuard, round_: int) -> bool:
    return guard.use_scratch_code("alice", f"d{round_}", 1.0)


def test_racing_processes_use_a_scratch_code_once(state_backend: Backend) -> None:
    guard = LoginGuard(state_backend.open())
    guard.replace_scratch_codes("alice", [f"d{i}" for i in range(5)])
    guard.close()
    rounds = race(state_backend, _open_guard, _use_scratch_code, rounds=5)
    assert rounds == [[False, False, False, True]] * 5
    guard = LoginGuard(state_backend.open())
    assert guard.scratch_codes_left("alice") == 0
    guard.close()
