"""The pods of one namespace as the console holds them: live rows by name, one sort order,
one filter, and the rows to show. Pure (no Textual), so it is fast to test and to time.

A namespace can hold 50,000 pods, so a pod costs as little as it can: one
:class:`PodEntry` (an untracked struct of eight references), its name, and a float for its
age. Everything else is shared: statuses, nodes and ready counts are stored once per
distinct value, and pods with the same labels share one labels dict. The decoded
:class:`~bastion.console_protocol.PodRow` is not kept.

Sorting happens when the rows change (and at most as often as the screen refreshes it). A
filter keystroke only walks the sorted rows: a text or regex filter is tried once on each
distinct status and node, then each row costs one test of its name and two set lookups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import Enum
from operator import attrgetter
from typing import Any

import msgspec

from bastion.console_protocol import PodRow
from tui.filter import FilterError, OutOfTime, PodFilter, parse_filter, too_slow, within_budget

__all__ = ["Column", "PodEntry", "PodList", "age_text", "parse_created"]


class Column(Enum):
    NAME = "name"
    READY = "ready"
    STATUS = "status"
    RESTARTS = "restarts"
    AGE = "age"
    NODE = "node"


def parse_created(created: str) -> float:
    """Epoch seconds of an RFC 3339 time; 0 (shown as "?") when the cluster sent nonsense."""
    try:
        return datetime.fromisoformat(created).timestamp()
    except ValueError:
        return 0.0


def age_text(created: float, now: float) -> str:
    """The age as kubectl shows it: 45s, 12m, 5h, 3d."""
    if created <= 0:
        return "?"
    seconds = max(int(now - created), 0)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _ready_key(ready: str) -> tuple[int, int]:
    up, _, total = ready.partition("/")
    return (int(up), int(total)) if up.isdigit() and total.isdigit() else (-1, -1)


class PodEntry(msgspec.Struct, frozen=True, eq=False, gc=False):
    """One pod as the list keeps it. ``key`` is the name in lower case (the same object as
    the name when it is lower case already, as Kubernetes names are); ``created`` is epoch
    seconds. Compared by identity; not tracked by the cyclic GC (it refers only to strings,
    numbers and a dict of strings), so 50,000 of them cost a collection nothing."""

    name: str
    key: str
    ready: str
    status: str
    restarts: int
    created: float
    node: str
    labels: dict[str, str]


_SORT_KEYS: dict[Column, Callable[[PodEntry], Any]] = {
    Column.NAME: attrgetter("name"),
    Column.STATUS: attrgetter("status"),
    Column.RESTARTS: attrgetter("restarts"),
    # Youngest first, as the age column reads smallest first.
    Column.AGE: lambda e: -e.created,
    Column.NODE: attrgetter("node"),
}
_BY_NAME = attrgetter("name")


class PodList:
    def __init__(self) -> None:
        self._entries: dict[str, PodEntry] = {}
        self._sorted: list[PodEntry] = []
        self._stale = False
        self.sort_column = Column.NAME
        self.descending = False
        self.filter: PodFilter = parse_filter("")
        # A filter that refresh() had to drop (a regex out of its budget on new rows): the
        # sentence to show once.
        self.filter_error = ""
        self.shown: list[PodEntry] = []
        # Each distinct value once (every row refers to these objects), and the values a text
        # or regex filter tries once per keystroke instead of once per row.
        self._statuses: dict[str, str] = {}
        self._nodes: dict[str, str] = {}
        self._readies: dict[str, str] = {}
        self._labels: dict[tuple[str, ...], dict[str, str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ changes
    def upsert(self, rows: Iterable[PodRow]) -> None:
        entries, labels = self._entries, self._labels
        status_of, node_of = self._statuses.setdefault, self._nodes.setdefault
        ready_of = self._readies.setdefault
        for row in rows:
            shared = labels.get(row.labels)
            if shared is None:
                shared = labels[row.labels] = dict(
                    label.partition("=")[::2] for label in row.labels
                )
            name = row.name
            key = name.lower()
            entries[name] = PodEntry(
                name,
                name if key == name else key,
                ready_of(row.ready, row.ready),
                status_of(row.status, row.status),
                row.restarts,
                parse_created(row.created),
                node_of(row.node, row.node),
                shared,
            )
        self._stale = True

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            self._entries.pop(name, None)
        self._stale = True

    def clear(self) -> None:
        self._entries.clear()
        self._statuses.clear()
        self._nodes.clear()
        self._readies.clear()
        self._labels.clear()
        self._stale = True

    def sort_by(self, column: Column) -> None:
        """Sort by ``column``; the same column again reverses the order."""
        self.descending = not self.descending if column is self.sort_column else False
        self.sort_column = column
        self._stale = True

    def set_filter(self, pod_filter: PodFilter) -> None:
        """Show the rows ``pod_filter`` keeps. FilterError (a regex out of its budget on
        these rows): nothing changes, the last filter stays."""
        self.shown = self._filtered(pod_filter)
        self.filter = pod_filter
        self.filter_error = ""

    # ------------------------------------------------------------------ reading
    @property
    def stale(self) -> bool:
        return self._stale

    def refresh(self) -> None:
        """Sort the rows again after changes (a no-op when nothing changed)."""
        if not self._stale:
            return
        self._forget_unused_labels()
        # Name as the second key keeps equal rows in a stable, predictable order.
        ordered = sorted(self._entries.values(), key=_BY_NAME)
        if self.sort_column is Column.READY:
            ready = {text: _ready_key(text) for text in self._readies}
            ordered.sort(key=lambda e: ready[e.ready])
        elif self.sort_column is not Column.NAME:
            ordered.sort(key=_SORT_KEYS[self.sort_column])
        if self.descending:
            ordered.reverse()
        self._sorted = ordered
        self._stale = False
        try:
            self.shown = self._filtered(self.filter)
        except FilterError as exc:
            # New rows made the regex too slow: show everything and say why, rather than
            # stall the console at every change from now on.
            self.filter = parse_filter("")
            self.filter_error = f"{exc}; the filter was cleared"
            self.shown = self._sorted

    def _filtered(self, pod_filter: PodFilter) -> list[PodEntry]:
        # One comprehension per kind of test, with no call per row where it can be helped:
        # this loop is what a filter keystroke costs.
        rows = self._sorted
        if pod_filter.needle is not None:
            needle = pod_filter.needle
            statuses = {s for s in self._statuses if needle in s.lower()}
            nodes = {n for n in self._nodes if needle in n.lower()}
            if not statuses and not nodes:
                return [e for e in rows if needle in e.key]
            return [e for e in rows if needle in e.key or e.status in statuses or e.node in nodes]
        if pod_filter.regex is not None:
            search = pod_filter.regex.search

            def run() -> list[PodEntry]:
                statuses = {s for s in self._statuses if search(s)}
                nodes = {n for n in self._nodes if search(n)}
                if not statuses and not nodes:
                    return [e for e in rows if search(e.key)]
                return [e for e in rows if search(e.key) or e.status in statuses or e.node in nodes]

            try:
                return within_budget(run)
            except OutOfTime:
                raise too_slow(pod_filter) from None
        if pod_filter.labels is not None:
            test = pod_filter.labels
            return [e for e in rows if test(e.labels)]
        return rows

    def _forget_unused_labels(self) -> None:
        """Drop the shared labels of pods that are gone, once they are many (a namespace
        whose pods each have their own labels, churning)."""
        if len(self._labels) <= len(self._entries) + 1000:
            return
        used = {id(entry.labels) for entry in self._entries.values()}
        self._labels = {k: v for k, v in self._labels.items() if id(v) in used}

    def position(self, name: str) -> int | None:
        """Where the pod ``name`` is among the shown rows (a scan: no index per row is
        kept, and this is asked once per change or keystroke)."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        try:
            return self.shown.index(entry)
        except ValueError:
            return None

    def get(self, name: str) -> PodEntry | None:
        return self._entries.get(name)

    def rows(self) -> Sequence[PodEntry]:
        return self.shown
