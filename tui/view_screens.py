"""The read-only views of a pod (docs/introspection.md): a table per view, and the question
the files view asks first (which directory). Every cell came from the cluster: neutralised."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Input, Static

from bastion.console_protocol import ViewResult
from tui.keys_footer import KeysFooter
from tui.safe_text import safe
from tui.session_bar import SessionBar

__all__ = ["VIEW_KEYS", "PathQuestion", "ViewScreen"]

# The pod screen's keys for the views, in the order the footer shows them.
VIEW_KEYS: tuple[tuple[str, str, str], ...] = (
    ("p", "processes", "Processes"),
    ("e", "env", "Env"),
    ("f", "files", "Files"),
    ("s", "sockets", "Sockets"),
    ("l", "logs", "Logs"),
)
# A cell wider than this is cut on screen (the table stays usable with a long command line).
_CELL = 160


class ViewScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, result: ViewResult) -> None:
        super().__init__()
        self.result = result

    def compose(self) -> ComposeResult:
        result = self.result
        yield SessionBar()
        title = Text.assemble((f" {result.view} ", "bold"), safe(result.target))
        if result.truncated:
            title.append(f"  (first {len(result.rows)} rows only)", "yellow")
        if result.note:
            title.append("  ")
            title.append_text(safe(result.note, "yellow"))
        yield Static(title, classes="title")
        yield DataTable(id="view-table", zebra_stripes=True, cursor_type="row")
        yield KeysFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*(safe(c, "bold") for c in self.result.columns))
        width = len(self.result.columns)
        for row in self.result.rows:
            cells = (row.cells + [""] * width)[:width]
            table.add_row(*(safe(cell, limit=_CELL) for cell in cells))
        if not self.result.rows:
            self.notify("The view is empty.", markup=False)
        table.focus()


class PathQuestion(ModalScreen[str | None]):
    """Which directory the files view lists; the broker checks it against the grant."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Static(Text("List which directory of the container?", style="bold"))
            yield Static(
                Text("An absolute path your grant allows, e.g. /etc (metadata only).", "dim")
            )
            yield Input(placeholder="/etc", id="view-path", max_length=1024)

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
