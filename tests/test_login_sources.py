"""The guard's login memory (known addresses per user, failures per address) holds across
connections, processes and replicas, on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from state_backends import Backend, race

from bastion.state.sources import SourceHistory


def test_a_users_first_address_is_known_and_a_second_is_new(state_backend: Backend) -> None:
    history = SourceHistory(state_backend.open())
    assert history.remember("alice", "192.0.2.1", 10.0) == (True, False)  # first login ever
    assert history.remember("alice", "192.0.2.1", 20.0) == (False, True)
    assert history.remember("alice", "198.51.100.7", 30.0) == (True, True)
    assert history.remember("bob", "192.0.2.1", 40.0) == (True, False)  # per user
    history.close()
    reopened = SourceHistory(state_backend.open())  # another worker, or another replica
    assert reopened.remember("alice", "198.51.100.7", 50.0) == (False, True)
    reopened.close()


def test_failures_are_counted_per_address_across_users_within_the_window(
    state_backend: Backend,
) -> None:
    history = SourceHistory(state_backend.open())
    assert history.failed("203.0.113.9", "alice", 100.0, window=60.0) == (1, ["alice"])
    assert history.failed("203.0.113.9", "bob", 110.0, window=60.0) == (2, ["alice", "bob"])
    assert history.failed("203.0.113.9", "bob", 120.0, window=60.0) == (3, ["alice", "bob"])
    assert history.failed("192.0.2.1", "carol", 120.0, window=60.0) == (1, ["carol"])
    other = SourceHistory(state_backend.open())
    # 100 and 110 are past the window at 175; what another connection wrote counts.
    assert other.failed("203.0.113.9", "dave", 175.0, window=60.0) == (2, ["bob", "dave"])
    other.close()
    history.close()


def test_a_block_holds_until_its_end_and_a_later_one_wins(state_backend: Backend) -> None:
    history = SourceHistory(state_backend.open())
    history.block("203.0.113.9", now=100.0, until=200.0)
    other = SourceHistory(state_backend.open())  # another replica sees it
    assert other.blocked_until("203.0.113.9", 150.0) == 200.0
    other.block("203.0.113.9", now=150.0, until=180.0)  # earlier end: the block stands
    assert history.blocked_until("203.0.113.9", 190.0) == 200.0
    history.block("203.0.113.9", now=190.0, until=300.0)
    assert other.blocked_until("203.0.113.9", 250.0) == 300.0
    assert other.blocked_until("203.0.113.9", 300.0) is None
    assert other.blocked_until("192.0.2.1", 150.0) is None
    other.close()
    history.close()


def test_an_allowed_address_is_known_and_a_not_learnt_one_stays_new(
    state_backend: Backend,
) -> None:
    history = SourceHistory(state_backend.open())
    assert history.remember("alice", "192.0.2.1", 1.0) == (True, False)
    # A login ended by the guard: the address is not learnt.
    assert history.remember("alice", "198.51.100.7", 2.0, learn=False) == (True, True)
    assert history.remember("alice", "198.51.100.7", 3.0, learn=False) == (True, True)
    assert history.allow("alice", "198.51.100.7", 4.0)
    assert not history.allow("alice", "198.51.100.7", 5.0)
    assert history.remember("alice", "198.51.100.7", 6.0) == (False, True)
    history.close()


def _open(backend: Backend) -> SourceHistory:
    return SourceHistory(backend.open())


def _remember(history: SourceHistory, round_: int) -> bool:
    return history.remember("alice", f"10.0.0.{round_}", 1000.0 + round_)[0]


def test_racing_processes_see_a_new_address_as_new_once(state_backend: Backend) -> None:
    SourceHistory(state_backend.open()).close()
    rounds = race(state_backend, _open, _remember, rounds=4)
    assert rounds == [[False, False, False, True]] * 4


def test_a_database_made_before_versioning_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "login-sources.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE known_sources (user TEXT NOT NULL, source TEXT NOT NULL, "
        "first_seen REAL NOT NULL, last_seen REAL NOT NULL, PRIMARY KEY (user, source));"
        "CREATE TABLE source_failures (source TEXT NOT NULL, user TEXT NOT NULL, at REAL NOT NULL);"
        "INSERT INTO known_sources VALUES ('alice', '192.0.2.1', 1.0, 1.0);"
    )
    old.commit()
    old.close()
    history = SourceHistory(path)
    assert history.remember("alice", "192.0.2.1", 2.0) == (False, True)
    history.close()
