"""The pods of one namespace as the console holds them: live rows by name, one sort order,
one filter, and the rows to show. Pure (no Textual), so it is fast to test and to time.

Sorting happens when the rows change (and at most as often as the screen refreshes it);
a filter keystroke only walks the sorted rows with precomputed search text and labels, so
it never sorts again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import Enum

from bastion.console_protocol import PodRow
from tui.filter import PodFilter, parse_filter, search_text

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


class PodEntry:
    """A row plus what sorting and filtering need, computed once when the row arrives."""

    __slots__ = ("created", "labels", "row", "search")

    def __init__(self, row: PodRow) -> None:
        self.row = row
        self.search = search_text(row.name, row.status, row.node)
        self.labels = dict(label.partition("=")[::2] for label in row.labels)
        self.created = parse_created(row.created)


_SORT_KEYS = {
    Column.NAME: lambda e: e.row.name,
    Column.READY: lambda e: _ready_key(e.row.ready),
    Column.STATUS: lambda e: e.row.status,
    Column.RESTARTS: lambda e: e.row.restarts,
    # Youngest first, as the age column reads smallest first.
    Column.AGE: lambda e: -e.created,
    Column.NODE: lambda e: e.row.node,
}


class PodList:
    def __init__(self) -> None:
        self._entries: dict[str, PodEntry] = {}
        self._sorted: list[PodEntry] = []
        self._stale = False
        self.sort_column = Column.NAME
        self.descending = False
        self.filter: PodFilter = parse_filter("")
        self.shown: list[PodEntry] = []
        self._positions: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ changes
    def upsert(self, rows: Iterable[PodRow]) -> None:
        for row in rows:
            self._entries[row.name] = PodEntry(row)
        self._stale = True

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            self._entries.pop(name, None)
        self._stale = True

    def clear(self) -> None:
        self._entries.clear()
        self._stale = True

    def sort_by(self, column: Column) -> None:
        """Sort by ``column``; the same column again reverses the order."""
        self.descending = not self.descending if column is self.sort_column else False
        self.sort_column = column
        self._stale = True

    def set_filter(self, pod_filter: PodFilter) -> None:
        self.filter = pod_filter
        self._apply_filter()

    # ------------------------------------------------------------------ reading
    @property
    def stale(self) -> bool:
        return self._stale

    def refresh(self) -> None:
        """Sort the rows again after changes (a no-op when nothing changed)."""
        if not self._stale:
            return
        key = _SORT_KEYS[self.sort_column]
        # Name as the second key keeps equal rows in a stable, predictable order.
        ordered = sorted(self._entries.values(), key=lambda e: e.row.name)
        if self.sort_column is not Column.NAME:
            ordered.sort(key=key)
        if self.descending:
            ordered.reverse()
        self._sorted = ordered
        self._stale = False
        self._apply_filter()

    def _apply_filter(self) -> None:
        # One comprehension per kind of test, with no call per row where it can be helped:
        # this loop is what a filter keystroke costs.
        needle, regex, labels = self.filter.needle, self.filter.regex, self.filter.labels
        if needle is not None:
            self.shown = [e for e in self._sorted if needle in e.search]
        elif regex is not None:
            search = regex.search
            self.shown = [e for e in self._sorted if search(e.search)]
        elif labels is not None:
            self.shown = [e for e in self._sorted if labels(e.labels)]
        else:
            self.shown = self._sorted
        self._positions = None

    def position(self, name: str) -> int | None:
        """Where the pod ``name`` is among the shown rows."""
        if self._positions is None:
            self._positions = {entry.row.name: n for n, entry in enumerate(self.shown)}
        return self._positions.get(name)

    def get(self, name: str) -> PodRow | None:
        entry = self._entries.get(name)
        return entry.row if entry is not None else None

    def rows(self) -> Sequence[PodEntry]:
        return self.shown
