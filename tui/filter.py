"""The pod list's filter language. Pure.

- ``text``: the rows whose name, status or node contain ``text``, ignoring case;
- ``/regex/``: the rows where the regex matches the name, the status or the node (each its
  own line: ``^`` and ``$`` anchor to a field), ignoring case;
- ``-l SELECTOR``: a Kubernetes label selector (``app=web,tier!=db``, ``env in (a,b)``,
  ``!canary``), matched as the API server does (:mod:`bastion.labels`).

A filter is compiled once per keystroke (:func:`parse_filter`) and then run over rows'
precomputed search text and labels, so filtering 50,000 pods stays a few milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bastion.labels import LabelSelector, Operator, Requirement, SelectorError, parse_selector

__all__ = ["FilterError", "PodFilter", "parse_filter", "search_text"]

_MAX_REGEX = 200  # a longer pattern is a paste gone wrong, not a filter


class FilterError(ValueError):
    """The filter text cannot be used; the message says why and what to type instead."""


def search_text(name: str, status: str, node: str) -> str:
    """What a text or regex filter looks at, computed once per row."""
    return f"{name}\n{status}\n{node}".lower()


@dataclass(frozen=True)
class PodFilter:
    """A compiled filter; at most one of its tests is set, none keeps every row."""

    text: str
    needle: str | None = None  # lower-cased substring of the search text
    regex: re.Pattern[str] | None = None  # searched in the search text
    labels: Callable[[Mapping[str, str]], bool] | None = None
    selector: LabelSelector | None = None

    @property
    def keeps_everything(self) -> bool:
        return self.needle is None and self.regex is None and self.labels is None

    def matches(self, search: str, labels: Mapping[str, str]) -> bool:
        if self.needle is not None:
            return self.needle in search
        if self.regex is not None:
            return self.regex.search(search) is not None
        return self.labels is None or self.labels(labels)


def parse_filter(text: str) -> PodFilter:
    stripped = text.strip()
    if not stripped:
        return PodFilter(text)
    if stripped == "-l" or stripped.startswith("-l "):
        return _label_filter(text, stripped[2:].strip())
    if len(stripped) >= 2 and stripped.startswith("/") and stripped.endswith("/"):
        return _regex_filter(text, stripped[1:-1])
    return PodFilter(text, needle=stripped.lower())


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
        # Rows' search text is lower-cased already; IGNORECASE keeps [A-Z] meaningful.
        compiled = re.compile(pattern, re.IGNORECASE | re.MULTILINE)
    except re.error as exc:
        raise FilterError(
            f"/{pattern}/ is not a valid regex ({exc}); fix it or use plain text"
        ) from None
    return PodFilter(text, regex=compiled)
