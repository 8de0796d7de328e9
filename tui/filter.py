"""The pod list's filter language.

- ``text``: the rows whose name, status or node contain ``text``, ignoring case;
- ``/regex/``: the rows where the regex matches the name, the status or the node (each
  field on its own: ``^`` and ``$`` anchor to a field), ignoring case;
- ``-l SELECTOR``: a Kubernetes label selector (``app=web,tier!=db``, ``env in (a,b)``,
  ``!canary``), matched as the API server does (:mod:`bastion.labels`).

A filter is compiled once per keystroke (:func:`parse_filter`, pure) and then run over the
rows (:class:`tui.pod_list.PodList`), so filtering 50,000 pods stays a few milliseconds.

Text and label tests take time linear in the rows. A regex need not: Python's backtracking
matcher takes exponential time on patterns like ``(a+)+$`` against a long enough name, and
pod names are chosen by whoever can create pods, so a harmless-looking filter can meet a name
made to stall it. Every pass of a regex over the rows therefore runs under
:func:`within_budget`: after :data:`REGEX_BUDGET` seconds of CPU it is stopped and the filter
refused with one sentence (:func:`too_slow`), whatever the pattern and the names.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import TypeVar

from bastion.labels import LabelSelector, Operator, Requirement, SelectorError, parse_selector

__all__ = [
    "REGEX_BUDGET",
    "FilterError",
    "OutOfTime",
    "PodFilter",
    "parse_filter",
    "too_slow",
    "within_budget",
]

_MAX_REGEX = 200  # a longer pattern is a paste gone wrong, not a filter
# CPU seconds for one pass of a regex over every row. An ordinary regex needs about 15 ms
# for 50,000 names here; this is far above that and still short enough not to feel stuck.
REGEX_BUDGET = 0.25

_T = TypeVar("_T")


class FilterError(ValueError):
    """The filter text cannot be used; the message says why and what to type instead."""


class OutOfTime(Exception):
    """:func:`within_budget` stopped the work it ran."""


@dataclass(frozen=True)
class PodFilter:
    """A compiled filter; at most one of its tests is set, none keeps every row."""

    text: str
    needle: str | None = None  # lower-cased substring of the name, status or node
    regex: re.Pattern[str] | None = None  # searched in the name, status and node
    labels: Callable[[Mapping[str, str]], bool] | None = None
    selector: LabelSelector | None = None

    @property
    def keeps_everything(self) -> bool:
        return self.needle is None and self.regex is None and self.labels is None


def parse_filter(text: str) -> PodFilter:
    stripped = text.strip()
    if not stripped:
        return PodFilter(text)
    if stripped == "-l" or stripped.startswith("-l "):
        return _label_filter(text, stripped[2:].strip())
    if len(stripped) >= 2 and stripped.startswith("/") and stripped.endswith("/"):
        return _regex_filter(text, stripped[1:-1])
    return PodFilter(text, needle=stripped.lower())


def too_slow(pod_filter: PodFilter) -> FilterError:
    """The sentence for a regex that ran out of :data:`REGEX_BUDGET`."""
    return FilterError(
        f"{pod_filter.text.strip()} took more than {REGEX_BUDGET:g} s on these pods and is "
        "not applied: a repeat inside a repeat, like (a+)+, can take forever on some names; "
        "simplify the regex or filter by plain text"
    )


def within_budget(work: Callable[[], _T], seconds: float = REGEX_BUDGET) -> _T:
    """``work()``, stopped with :class:`OutOfTime` once the process has spent ``seconds``
    of CPU time on it.

    Python's regex engine cannot be given a deadline, but it checks for signals while it
    backtracks, so a CPU-time timer (``ITIMER_VIRTUAL``, whose ``SIGVTALRM`` nothing else in
    the console uses; wall-clock alarms, such as a test runner's timeout, are left alone)
    interrupts it. Signal handlers run on the main thread only, which is where the console
    filters (Textual's event loop); anywhere else this raises RuntimeError rather than run
    without a limit.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("within_budget() can only limit work on the main thread")
    armed = [True]

    def expire(_signum: int, _frame: FrameType | None) -> None:
        # Raise at most once, and never after the work is done: the timer may fire just as
        # it ends, and the exception must not escape the cleanup below.
        if armed[0]:
            armed[0] = False
            raise OutOfTime

    previous = signal.signal(signal.SIGVTALRM, expire)
    try:
        try:
            signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
            return work()
        finally:
            armed[0] = False
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    finally:
        signal.signal(signal.SIGVTALRM, previous if previous is not None else signal.SIG_DFL)


def _label_filter(text: str, selector_text: str) -> PodFilter:
    if not selector_text:
        raise FilterError("-l needs a label selector, like -l app=web or -l tier!=db")
    try:
        selector = parse_selector(selector_text)
    except SelectorError as exc:
        raise FilterError(f"{exc}; a selector looks like app=web,tier!=db") from None
    test = _requirement_test(selector.requirements[0])
    for requirement in selector.requirements[1:]:
        test = _both(test, _requirement_test(requirement))
    return PodFilter(text, labels=test, selector=selector)


def _both(
    first: Callable[[Mapping[str, str]], bool], second: Callable[[Mapping[str, str]], bool]
) -> Callable[[Mapping[str, str]], bool]:
    # Chained 'and' calls, not all() over a generator: a third of the cost per row.
    return lambda labels: first(labels) and second(labels)


def _requirement_test(requirement: Requirement) -> Callable[[Mapping[str, str]], bool]:
    """One requirement as a single dict lookup: :meth:`Requirement.matches`' rules, about
    five times faster, which is the difference at 50,000 rows."""
    key, values = requirement.key, requirement.values
    match requirement.operator:
        case Operator.EXISTS:
            return lambda labels: key in labels
        case Operator.NOT_EXISTS:
            return lambda labels: key not in labels
        case Operator.EQUALS | Operator.IN:
            return lambda labels: labels.get(key) in values
        case Operator.NOT_EQUALS | Operator.NOT_IN:
            # A pod without the key matches, as in Kubernetes: None is in no value set.
            return lambda labels: labels.get(key) not in values
    raise AssertionError(requirement.operator)  # pragma: no cover - exhaustive match


def _regex_filter(text: str, pattern: str) -> PodFilter:
    if len(pattern) > _MAX_REGEX:
        raise FilterError(f"the regex is longer than {_MAX_REGEX} characters; shorten it")
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise FilterError(
            f"/{pattern}/ is not a valid regex ({exc}); fix it or use plain text"
        ) from None
    return PodFilter(text, regex=compiled)
