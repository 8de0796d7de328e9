"""The session state machine and the deadline arithmetic (pure)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.session.deadlines import WARN_BEFORE, Deadlines, Kind
from bastion.session.lifecycle import IllegalTransition, State, can_move, check_move


def test_every_state_but_closed_can_be_wiped_and_only_wiping_closes() -> None:
    for state in State:
        if state in (State.WIPING, State.CLOSED):
            continue
        assert can_move(state, State.WIPING)
        assert not can_move(state, State.CLOSED)
    assert can_move(State.WIPING, State.CLOSED)


def test_nothing_leaves_closed() -> None:
    for state in State:
        assert not can_move(State.CLOSED, state)
    with pytest.raises(IllegalTransition, match="cannot go from closed to browsing"):
        check_move(State.CLOSED, State.BROWSING)


def test_the_normal_path_and_the_way_back_to_the_console() -> None:
    path = [State.AUTHENTICATED, State.BROWSING, State.STARTING_DEBUG, State.ATTACHED]
    for current, wanted in itertools.pairwise(path):
        check_move(current, wanted)
    check_move(State.ATTACHED, State.BROWSING)  # the debug shell ended; pick another pod
    check_move(State.STARTING_DEBUG, State.BROWSING)  # the debug failed
    assert not can_move(State.BROWSING, State.ATTACHED)  # attaching needs starting first
    assert not can_move(State.WIPING, State.BROWSING)


def test_warnings_two_minutes_and_thirty_seconds_before_each_deadline() -> None:
    d = Deadlines(idle_timeout=5_000, hard_deadline=10_000)
    given_: frozenset[tuple[Kind, float, float]] = frozenset()
    assert d.due(9_000, 9_000, given_) == []
    assert d.next_wakeup(9_000, 9_000, given_) == 10_000 - 120
    ((notice, key),) = d.due(10_000 - 120, 9_500, given_)
    assert notice.kind is Kind.HARD
    assert notice.message() == "the session reaches its time limit in 2 minutes"
    given_ |= {key}
    assert d.due(10_000 - 100, 9_500, given_) == []
    assert d.next_wakeup(10_000 - 100, 9_500, given_) == 10_000 - 30
    ((notice, key),) = d.due(10_000 - 30, 9_500, given_)
    assert notice.message() == "the session reaches its time limit in 30 seconds"
    given_ |= {key}
    ((notice, _),) = d.due(10_000, 9_500, given_)
    assert notice.expired
    assert notice.message() == "the session has reached its time limit and ends now"


def test_input_moves_the_idle_deadline_and_rearms_its_warnings() -> None:
    d = Deadlines(idle_timeout=300, hard_deadline=1e9)
    ((notice, key),) = d.due(1_180, 1_000, frozenset())
    assert notice.kind is Kind.IDLE
    assert "unless you type something" in notice.message()
    given_ = frozenset({key})
    assert d.due(1_190, 1_000, given_) == []
    # A keystroke at 1_190: a new deadline, warnings armed again.
    assert d.due(1_190 + 180, 1_190, given_)[0][0].deadline == 1_490


def test_a_deadline_already_near_gets_only_the_nearest_warning() -> None:
    d = Deadlines(idle_timeout=3_600, hard_deadline=1_020)
    notices = d.due(1_000, 1_000, frozenset())
    assert [(n.kind, round(n.seconds_left)) for n, _ in notices] == [(Kind.HARD, 20)]
    assert notices[0][1] == (Kind.HARD, 30.0, 1_020)


@settings(max_examples=300)
@given(
    idle=st.floats(60, 10_000),
    hard=st.floats(0, 20_000),
    inputs=st.lists(st.floats(0, 20_000), max_size=20),
)
def test_each_warning_is_given_at_most_once_and_the_end_always_comes(
    idle: float, hard: float, inputs: list[float]
) -> None:
    d = Deadlines(idle_timeout=idle, hard_deadline=hard)
    keystrokes = sorted(inputs)
    now, last_input = 0.0, 0.0
    given_: frozenset[tuple[Kind, float, float]] = frozenset()
    told: list[tuple[Kind, float, float]] = []
    for _ in range(1_000):
        while keystrokes and keystrokes[0] <= now:
            last_input = keystrokes.pop(0)
        due = d.due(now, last_input, given_)
        if any(n.expired for n, _ in due):
            assert now >= min(hard, d.idle_deadline(last_input)) - 1e-6
            break
        for notice, key in due:
            assert key not in given_
            assert 0 < notice.seconds_left <= max(WARN_BEFORE)
            given_ |= {key}
            told.append(key)
        wake = d.next_wakeup(now, last_input, given_)
        nxt = min([wake, *keystrokes[:1]]) if keystrokes else wake
        assert nxt > now or due
        now = max(nxt, now)
    else:
        pytest.fail("the session never ended")
    assert len(told) == len(set(told))
