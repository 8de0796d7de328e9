"""The pod list's filter language and the list model: what each filter keeps, its errors,
sorting, live changes, 50,000 rows, and regexes made to stall the console."""

from __future__ import annotations

import re
import signal
import threading

import pytest

from bastion.console_protocol import PodRow
from bastion.labels import parse_selector
from tests.tui.rows import many, pod
from tui.filter import FilterError, OutOfTime, parse_filter, within_budget
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
    return [entry.name for entry in pods.shown]


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
    assert pods.shown[-1].name == "db-0"
    pods.sort_by(Column.RESTARTS)  # again: reversed
    pods.refresh()
    assert pods.shown[0].name == "db-0"
    pods.sort_by(Column.NODE)
    pods.refresh()
    assert [e.node for e in pods.shown] == ["node-1", "node-a", "node-b", "web-node"]
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
    assert [e.name for e in pods.shown] == ["web-0", "web-1", "worker-7"]
    assert pods.position("web-1") == 1
    assert pods.position("db-0") is None  # filtered out
    assert pods.get("db-0") is not None


def test_age_is_shown_as_kubectl_does() -> None:
    created = parse_created("2026-11-28T10:00:00Z")
    assert age_text(created, created + 42) == "42s"
    assert age_text(created, created + 3 * 3600 + 5) == "3h"
    assert age_text(created, created + 5 * 86400) == "5d"
    assert age_text(parse_created("yesterday"), created) == "?"


def reference(text: str, row: PodRow) -> bool:
    """What each filter keeps, written the slow and obvious way."""
    fields = (row.name, row.status, row.node)
    if text.startswith("-l "):
        labels = dict(label.partition("=")[::2] for label in row.labels)
        return parse_selector(text[3:]).matches(labels)
    if text.startswith("/"):
        return any(re.search(text[1:-1], field, re.IGNORECASE) for field in fields)
    return any(text.lower() in field.lower() for field in fields)


def test_fifty_thousand_rows_filter_right_and_share_what_they_can() -> None:
    # The time this takes is measured by bench/tui_bench.py, not asserted here.
    rows = many(50_000)
    pods = PodList()
    pods.upsert(rows)
    pods.refresh()
    for text in ("api-1", "/^api-1.*9$/", "-l app=api3,tier!=db", "crash", "/^NODE-39$/", "zzz"):
        pods.set_filter(parse_filter(text))
        expected = sorted(row.name for row in rows if reference(text, row))
        assert [entry.name for entry in pods.shown] == expected, text
        assert text == "zzz" or expected, text
    first, second, third = (pods.get(f"api-{n:05d}") for n in (0, 6, 10))
    assert first is not None
    assert second is not None
    assert third is not None
    assert first.status is second.status  # one object per distinct value
    assert first.labels is third.labels
    assert first.key is first.name  # lower case already: no second copy


CATASTROPHIC = "/(a+)+$/"  # backtracks 2^n steps on n a's not followed by the end


def evil(name: str = "a" * 40 + "-x") -> list[PodRow]:
    return [pod(name)]


def test_a_catastrophic_regex_is_stopped_and_the_last_filter_stays() -> None:
    pods = PodList()
    pods.upsert(ROWS + evil())
    pods.refresh()
    pods.set_filter(parse_filter("web"))
    before = [entry.name for entry in pods.shown]
    with pytest.raises(FilterError, match=r"took more than 0\.25 s on these pods") as caught:
        pods.set_filter(parse_filter(CATASTROPHIC))
    assert str(caught.value).startswith(CATASTROPHIC)
    assert "(a+)+" in str(caught.value)
    assert pods.filter.text == "web"
    assert [entry.name for entry in pods.shown] == before
    # The same regex is harmless on names that do not trigger it.
    tame = PodList()
    tame.upsert(ROWS)
    tame.refresh()
    tame.set_filter(parse_filter(CATASTROPHIC))
    assert [entry.name for entry in tame.shown] == ["web-1"]  # on node-a


def test_a_regex_made_slow_by_new_pods_is_cleared_with_a_sentence() -> None:
    pods = PodList()
    pods.upsert(ROWS)
    pods.refresh()
    pods.set_filter(parse_filter(CATASTROPHIC))
    pods.upsert(evil())  # a pod named to stall this filter arrives
    pods.refresh()
    assert pods.filter.keeps_everything
    assert "the filter was cleared" in pods.filter_error
    assert len(pods.shown) == len(ROWS) + 1
    pods.set_filter(parse_filter("web"))
    assert pods.filter_error == ""


def test_the_budget_leaves_other_timers_and_handlers_alone() -> None:
    seen: list[int] = []

    def mine(signum: int, _frame: object) -> None:
        seen.append(signum)

    previous = signal.signal(signal.SIGVTALRM, mine)
    runner = signal.setitimer(signal.ITIMER_REAL, 100.0)  # someone's wall-clock alarm
    try:
        assert within_budget(lambda: 42) == 42
        with pytest.raises(OutOfTime):
            within_budget(lambda: re.search(r"(a+)+$", "a" * 40 + "!"), 0.05)
        assert signal.getsignal(signal.SIGVTALRM) is mine
        assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)
        assert 90 < signal.getitimer(signal.ITIMER_REAL)[0] <= 100
        assert seen == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, *runner)  # pytest-timeout's, if it set one
        signal.signal(signal.SIGVTALRM, previous)


def test_the_budget_refuses_to_run_unlimited_off_the_main_thread() -> None:
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            within_budget(lambda: None)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert "main thread" in str(errors[0])
