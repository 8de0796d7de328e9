"""Live oversight in the console, for auditors (docs/oversight.md): ``o`` lists the live
sessions (user, source, start, target, break-glass, watchers) and Enter watches the
highlighted one. The broker decides who is an auditor, answers the list, and on a watch
takes the terminal (the console exits, as for a debug shell); the next console is told how
the watch ended. Every string shown comes from the broker and is cleaned before display."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from bastion.console_protocol import LiveSessionItem
from tui.broker import BrokerGone, RequestFailed
from tui.keys_footer import KeysFooter
from tui.safe_text import clean
from tui.session_bar import SessionBar

if TYPE_CHECKING:
    from tui.app import ConsoleApp

__all__ = ["SessionsScreen", "session_summary"]


def session_summary(item: LiveSessionItem) -> Text:
    """One line: id, user, source, start, target, flags and watchers."""
    started = datetime.fromtimestamp(item.started, UTC).strftime("%H:%M:%S")
    line = Text(f"{item.id}  ")
    line.append(clean(item.user), "bold")
    line.append(f"  from {clean(item.source)}  since {started} UTC  {clean(item.state)}")
    if item.target:
        line.append(f"  {clean(item.target)}")
    if item.break_glass:
        line.append("  BREAK-GLASS", "bold red")
    if not item.watchable:
        line.append("  (no shell to watch)", "dim")
    elif item.watchers:
        line.append(f"  watched by {clean(', '.join(item.watchers))}", "yellow")
    else:
        line.append("  unwatched", "dim")
    return line


class SessionsScreen(Screen[None]):
    """The live sessions; Enter watches the highlighted one (read-only), r reloads."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("enter", "watch", "Watch"),
        Binding("r", "reload", "Reload"),
    ]
    DEFAULT_CSS = """
    #sessions { height: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.items: list[LiveSessionItem] = []

    def compose(self) -> ComposeResult:
        yield SessionBar()
        yield Static(Text(" Live sessions (watch: read-only, as recorded)", "bold"))
        yield OptionList(id="sessions")
        yield Static(Text("loading…", "yellow"), id="sessions-status")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.query_one("#sessions").focus()
        self.action_reload()

    def on_screen_resume(self) -> None:
        _console(self).where = "sessions"
        _console(self).update_bar()

    def action_reload(self) -> None:
        self.run_worker(self._load(), group="sessions", exclusive=True)

    async def _load(self) -> None:
        console = _console(self)
        try:
            items = await console.broker.live_sessions()
        except (RequestFailed, BrokerGone) as exc:
            self._status(Text(clean(str(exc)), "red"))
            return
        self.items = items
        try:
            options = self.query_one("#sessions", OptionList)
        except NoMatches:  # the screen was closed meanwhile
            return
        options.clear_options()
        options.add_options([Option(session_summary(i), id=i.id) for i in items])
        if items:
            options.highlighted = 0
        self._status(Text(f"{len(items)} live sessions; Enter watches, r reloads", "dim"))

    def _status(self, text: Text) -> None:
        try:
            self.query_one("#sessions-status", Static).update(text)
        except NoMatches:
            return

    def action_watch(self) -> None:
        options = self.query_one("#sessions", OptionList)
        if options.highlighted is None or not options.option_count:
            return
        chosen = options.get_option_at_index(options.highlighted).id
        if chosen:
            self._status(Text(f"asking to watch session {chosen}…", "yellow"))
            self.run_worker(_console(self).broker.watch_session(chosen), group="watch")

    def on_option_list_option_selected(self, _event: OptionList.OptionSelected) -> None:
        self.action_watch()


def _console(screen: Screen[None]) -> ConsoleApp:
    from tui.app import ConsoleApp  # noqa: PLC0415 - the app module imports this one

    app = screen.app
    assert isinstance(app, ConsoleApp)  # noqa: S101 - these screens live only in the console
    return app
