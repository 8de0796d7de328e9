"""A pod table that draws only the rows on screen (Textual's Line API).

Textual's DataTable measures every cell when rows are added (about 0.25 ms a row), so
50,000 pods would take seconds per refill; this widget keeps a :class:`PodList` and renders
the header plus the visible rows, a few dozen lines whatever the list holds. The cursor is
kept by pod name across live changes, sorting and filtering.
"""

from __future__ import annotations

import time
from typing import ClassVar

from rich.cells import set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.events import Click, Resize
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from tui.pod_list import Column, PodEntry, PodList, age_text
from tui.safe_text import clean

__all__ = ["PodTable", "status_style"]

_HEADER = Style(bold=True, reverse=True)
_CURSOR = Style(reverse=True)
_STATUS_STYLES = {
    "Running": Style(color="green"),
    "Completed": Style(dim=True),
    "Succeeded": Style(dim=True),
    "Pending": Style(color="yellow"),
    "ContainerCreating": Style(color="yellow"),
    "PodInitializing": Style(color="yellow"),
    "Terminating": Style(color="magenta"),
}
_BAD = Style(color="red", bold=True)
_FIXED = {Column.READY: 6, Column.STATUS: 18, Column.RESTARTS: 9, Column.AGE: 5}


def status_style(status: str) -> Style:
    """Green running, yellow on its way, red for anything that is failing."""
    return _STATUS_STYLES.get(status, _BAD)


class PodTable(Widget, can_focus=True):
    """The pods of one namespace; Enter posts :class:`PodTable.Chosen`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "edge(-1)", "First", show=False),
        Binding("end,G", "edge(1)", "Last", show=False),
        Binding("enter", "choose", "Details"),
    ]

    class Chosen(Message):
        def __init__(self, row: PodEntry) -> None:
            super().__init__()
            self.row = row

    def __init__(self, pods: PodList, *, now: float | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.pods = pods
        self.cursor = 0
        self.top = 0
        self._cursor_name = ""
        self._now = now  # pinned by snapshot tests; the wall clock otherwise

    # ------------------------------------------------------------------ state
    @property
    def page_rows(self) -> int:
        return max(self.size.height - 1, 1)

    @property
    def current(self) -> PodEntry | None:
        shown = self.pods.shown
        return shown[self.cursor] if 0 <= self.cursor < len(shown) else None

    def rows_changed(self) -> None:
        """After the list was sorted or filtered again: find the cursor's pod by name."""
        shown = self.pods.shown
        position = self.pods.position(self._cursor_name) if self._cursor_name else None
        if position is not None:
            self.cursor = position
        else:
            self.cursor = min(self.cursor, max(len(shown) - 1, 0))
        self._settle()

    def _settle(self) -> None:
        shown = self.pods.shown
        current = shown[self.cursor].name if self.cursor < len(shown) else ""
        if current:
            self._cursor_name = current
        page = self.page_rows
        if self.cursor < self.top:
            self.top = self.cursor
        elif self.cursor >= self.top + page:
            self.top = self.cursor - page + 1
        self.top = max(min(self.top, len(shown) - page), 0)
        self.refresh()

    # ------------------------------------------------------------------ actions
    def action_move(self, step: int) -> None:
        self.cursor = max(min(self.cursor + step, len(self.pods.shown) - 1), 0)
        self._settle()

    def action_page(self, direction: int) -> None:
        self.top = max(self.top + direction * self.page_rows, 0)
        self.action_move(direction * self.page_rows)

    def action_edge(self, direction: int) -> None:
        self.cursor = 0 if direction < 0 else max(len(self.pods.shown) - 1, 0)
        self._settle()

    def action_choose(self) -> None:
        row = self.current
        if row is not None:
            self.post_message(self.Chosen(row))

    def on_click(self, event: Click) -> None:
        if event.y >= 1 and self.top + event.y - 1 < len(self.pods.shown):
            self.cursor = self.top + event.y - 1
            self._settle()

    def on_resize(self, _event: Resize) -> None:
        self._settle()

    # ------------------------------------------------------------------ drawing
    def _widths(self) -> list[tuple[Column, int]]:
        width = self.size.width
        node = min(max((width - 40) // 4, 8), 30)
        fixed = sum(_FIXED.values()) + node
        name = max(width - fixed, 10)
        return [
            (Column.NAME, name),
            (Column.READY, _FIXED[Column.READY]),
            (Column.STATUS, _FIXED[Column.STATUS]),
            (Column.RESTARTS, _FIXED[Column.RESTARTS]),
            (Column.AGE, _FIXED[Column.AGE]),
            (Column.NODE, node),
        ]

    def render_line(self, y: int) -> Strip:
        widths = self._widths()
        total = self.size.width
        if y == 0:
            return self._header(widths, total)
        index = self.top + y - 1
        shown = self.pods.shown
        if index >= len(shown):
            return Strip.blank(total)
        return self._row(shown[index], widths, total, index == self.cursor)

    def _header(self, widths: list[tuple[Column, int]], total: int) -> Strip:
        segments = []
        for column, width in widths:
            title = column.value.upper()
            if column is self.pods.sort_column:
                title += "↓" if self.pods.descending else "↑"
            segments.append(Segment(set_cell_size(f" {title}", width), _HEADER))
        return Strip(segments).adjust_cell_length(total, _HEADER)

    def _row(
        self, entry: PodEntry, widths: list[tuple[Column, int]], total: int, is_cursor: bool
    ) -> Strip:
        now = self._now if self._now is not None else time.time()
        # Cells are made here, for the rows on screen only: nothing per row is kept.
        cells = {
            Column.NAME: (clean(entry.name), Style()),
            Column.READY: (clean(entry.ready), Style()),
            Column.STATUS: (clean(entry.status), status_style(entry.status)),
            Column.RESTARTS: (str(entry.restarts), _BAD if entry.restarts else Style()),
            Column.AGE: (age_text(entry.created, now), Style()),
            Column.NODE: (clean(entry.node), Style()),
        }
        segments = []
        for column, width in widths:
            text, style = cells[column]
            if is_cursor:
                style += _CURSOR
            segments.append(Segment(set_cell_size(f" {text}", width), style))
        return Strip(segments).adjust_cell_length(total, _CURSOR if is_cursor else Style())
