"""The pod list's filter language and the list model: what each filter keeps, its errors,
sorting, live changes, and the speed at 50,000 rows."""

from __future__ import annotations

import time

import pytest

from tests.tui.rows import many, pod
from tui.filter import FilterError, parse_filter
from tui.pod_list import Column, PodList, age_text, parse_created

ROWS = [
    pod("web-1", labels=("app=web", "tier=front"), node="node-a"),
    pod("Web-2", status="Pending", labels=("app=web",), node="node-b"),
    pod("db-0", status="CrashLoopBackOff", restarts=9, labels=("app=db", "tier=back")),
    pod("worker-7", status="Completed", node="web-node", labels=()),
]


def kept(text: str) -> list[str]:
    pods = PodList()
    pods.upsert(ROWS)
    pods.refresh()
    pods.set_filter(parse_filter(text))
    return [entry.row.name for entry in pods.shown]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", ["Web-2", "db-0", "web-1", "worker-7"]),
        ("   ", ["Web-2", "db-0", "web-1", "worker-7"]),
        ("web", ["Web-2", "web-1", "worker-7"]),  # case-insensitive; node web-node counts
        ("CRASH", ["db-0"]),
        ("/^w.*-[0-9]$/", ["Web-2", "web-1", "worker-7"]),
        ("/^node-a$/", ["web-1"]),  # ^ and $ anchor to a field
        ("/[A-Z]eb/", ["Web-2", "web-1", "worker-7"]),
        ("-l app=web", ["Web-2", "web-1"]),
        ("-l app=web,tier!=front", ["Web-2"]),
        ("-l tier!=front", ["Web-2", "db-0", "worker-7"]),
        ("-l !tier", ["Web-2", "worker-7"]),
        ("-l tier in (front,back)", ["db-0", "web-1"]),
        ("-l app notin (web)", ["db-0", "worker-7"]),
        ("-l tier", ["db-0", "web-1"]),
        ("nothing-like-this", []),
    ],
)
def test_each_kind_of_filter_keeps_the_right_rows(text: str, names: list[str]) -> None:
    assert kept(text) == names


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("/(unclosed/", "is not a valid regex"),
        ("/" + "a" * 300 + "/", "longer than 200"),
        ("-l", "needs a label selector"),
        ("-l app in (", "selector"),
        ("-l Bad Key=1", "selector"),
    ],
)
def test_a_bad_filter_is_one_sentence(text: str, says: str) -> None:
    with pytest.raises(FilterError, match=says) as caught:
        parse_filter(text)
    assert "\n" not in str(caught.value)


def test_a_lone_slash_is_text() -> None:
    assert parse_filter("/").needle == "/"


def test_sorting_by_each_column_and_reversing() -> None:
    pods = PodList()
    pods.upsert(ROWS)
    pods.sort_by(Column.RESTARTS)
    pods.refresh()
    assert pods.shown[-1].row.name == "db-0"
    pods.sort_by(Column.RESTARTS)  # again: reversed
    pods.refresh()
    assert pods.shown[0].row.name == "db-0"
    pods.sort_by(Column.NODE)
    pods.refresh()
    assert [e.row.node for e in pods.shown] == ["node-1", "node-a", "node-b", "web-node"]
    assert not pods.descending


def test_live_changes_keep_the_filter_and_find_a_pod_by_name() -> None:
    pods = PodList()
    pods.upsert(ROWS)
    pods.refresh()
    pods.set_filter(parse_filter("web"))
    pods.upsert([pod("web-0")])
    pods.delete(["Web-2", "not-there"])
    assert pods.stale
    pods.refresh()
    assert [e.row.name for e in pods.shown] == ["web-0", "web-1", "worker-7"]
    assert pods.position("web-1") == 1
    assert pods.position("db-0") is None  # filtered out
    assert pods.get("db-0") is not None


def test_age_is_shown_as_kubectl_does() -> None:
    created = parse_created("2026-11-28T10:00:00Z")
    assert age_text(created, created + 42) == "42s"
    assert age_text(created, created + 3 * 3600 + 5) == "3h"
    assert age_text(created, created + 5 * 86400) == "5d"
    assert age_text(parse_created("yesterday"), created) == "?"


def test_filtering_fifty_thousand_rows_is_fast() -> None:
    pods = PodList()
    pods.upsert(many(50_000))
    pods.refresh()
    timings = {}
    for text in ("api-1", "/^api-1.*9$/", "-l app=api3,tier!=db", "zzz"):
        pod_filter = parse_filter(text)
        started = time.perf_counter()
        pods.set_filter(pod_filter)
        timings[text] = time.perf_counter() - started
    assert len(pods.shown) == 0
    pods.set_filter(parse_filter("-l app=api3,tier!=db"))
    assert len(pods.shown) == 5000
    # Generous: the budget for a whole keystroke is 50 ms, and this is its biggest part.
    assert max(timings.values()) < 0.2, timings
