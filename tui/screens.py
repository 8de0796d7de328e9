"""The console's screens: clusters → namespaces → pods → pod details, and the help."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from bastion.console_protocol import DebugRequest, HiddenItem, PodDetail, PodsPage
from bastion.debug_command import DEFAULT_UID
from tui.broker import BrokerGone, RequestFailed
from tui.debug_screens import DebugChoice, DebugConfirmation, DebugProgressScreen
from tui.filter import FilterError, parse_filter
from tui.keys_footer import KeysFooter
from tui.pod_list import Column, PodList
from tui.pod_table import PodTable, status_style
from tui.safe_text import clean, safe
from tui.session_bar import SessionBar
from tui.view_screens import VIEW_KEYS, PathQuestion, ViewScreen

if TYPE_CHECKING:
    from tui.app import ConsoleApp

__all__ = ["ClustersScreen", "HelpScreen", "NamespacesScreen", "PodScreen", "PodsScreen"]

REFRESH_EVERY = 0.25  # seconds: live changes and pages are drawn at most this often


class _ConsoleScreen(Screen[None]):
    where = ""

    @property
    def console(self) -> ConsoleApp:
        from tui.app import ConsoleApp  # noqa: PLC0415 - the app module imports this one

        app = self.app
        assert isinstance(app, ConsoleApp)  # noqa: S101 - screens live only in the console
        return app

    def on_screen_resume(self) -> None:
        self.console.where = self.where
        self.console.update_bar()

    def tell(self, message: str, *, error: bool = False) -> None:
        self.notify(clean(message), severity="error" if error else "information", markup=False)


# ---------------------------------------------------------------------------- clusters
class ClustersScreen(_ConsoleScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "choose", "Open", show=True)]

    def compose(self) -> ComposeResult:
        yield SessionBar(self.where)
        yield Static(Text(" Clusters you may debug in", "bold"), classes="title")
        yield OptionList(
            *[Option(safe(name), id=name) for name in self.console.welcome.clusters],
            id="clusters",
        )
        if not self.console.welcome.clusters:
            yield Static(Text("No grant lets you debug in any cluster; ask an administrator."))
        yield KeysFooter()

    def on_mount(self) -> None:
        _highlight_first(self.query_one("#clusters", OptionList))

    @on(OptionList.OptionSelected, "#clusters")
    def _open(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.app.push_screen(NamespacesScreen(event.option.id))


# ---------------------------------------------------------------------------- namespaces
class NamespacesScreen(_ConsoleScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("h", "toggle_hidden", "Hidden"),
    ]

    def __init__(self, cluster: str) -> None:
        super().__init__()
        self.cluster = cluster
        self.where = cluster
        self.hidden: list[HiddenItem] = []

    def compose(self) -> ComposeResult:
        yield SessionBar(self.where)
        yield Static(Text.assemble((" Namespaces in ", "bold"), safe(self.cluster, "bold")))
        yield OptionList(id="namespaces")
        yield Static("", id="hidden", classes="hidden-panel")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.query_one("#hidden").display = False
        self._load()

    @work(exclusive=True)
    async def _load(self) -> None:
        try:
            answer = await self.console.broker.namespaces(self.cluster)
        except RequestFailed as exc:
            self.tell(str(exc), error=True)
            return
        except BrokerGone:
            return
        self.hidden = answer.hidden
        options = self.query_one("#namespaces", OptionList)
        options.add_options([Option(safe(name), id=name) for name in answer.allowed])
        _highlight_first(options)
        if not answer.allowed:
            self.tell("Policy lets you debug in no namespace here; press h to see why.")
        self.query_one("#hidden", Static).update(_hidden_text(answer.hidden))

    def action_back(self) -> None:
        """Back to the clusters. With one cluster the console opens here, without the
        clusters list under this screen (a screen kept open costs every console about
        0.3 MB, bench/README.md "Console start"): it is made when asked for."""
        stack = self.app.screen_stack
        if len(stack) > 1 and isinstance(stack[-2], ClustersScreen):
            self.app.pop_screen()
        else:
            self.app.switch_screen(ClustersScreen())

    def action_toggle_hidden(self) -> None:
        panel = self.query_one("#hidden")
        panel.display = not panel.display

    @on(OptionList.OptionSelected, "#namespaces")
    def _open(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.app.push_screen(PodsScreen(self.cluster, event.option.id))


def _highlight_first(options: OptionList) -> None:
    """A list opens on its first entry, focused, so Enter opens it without an arrow key."""
    if options.option_count and options.highlighted is None:
        options.highlighted = 0
    options.focus()


def _hidden_text(hidden: list[HiddenItem]) -> Text:
    if not hidden:
        return Text("Policy hides nothing here.", end="")
    text = Text("Hidden by policy:\n", style="bold", end="")
    for item in hidden:
        text.append_text(safe(f"  {item.name}", "bold"))
        text.append("  ")
        text.append_text(safe(item.reason, "italic"))
        text.append("\n")
    return text


# ---------------------------------------------------------------------------- pods
class PodsScreen(_ConsoleScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        # Priority: run when the key arrives, before the keys typed after it are handed on, so
        # that a fast typist's (or a paste's) next keys go where this key sent the focus: after
        # "/" to the filter, after Enter or Escape in the filter to the table.
        Binding("escape", "back", "Back", priority=True),
        Binding("slash", "filter", "Filter", priority=True),
        Binding("enter", "filter_done", "Keep filter", show=False, priority=True),
        Binding("h", "toggle_hidden", "Hidden"),
        Binding("N", "sort('name')", "Sort name"),
        Binding("R", "sort('ready')", "Sort ready", show=False),
        Binding("S", "sort('status')", "Sort status", show=False),
        Binding("T", "sort('restarts')", "Sort restarts", show=False),
        Binding("A", "sort('age')", "Sort age", show=False),
        Binding("O", "sort('node')", "Sort node", show=False),
    ]

    def __init__(self, cluster: str, namespace: str, *, select: str = "") -> None:
        super().__init__()
        self.cluster = cluster
        self.namespace = namespace
        self.where = f"{cluster}/{namespace}"
        self.pods = PodList()
        self.complete = False
        self.hidden = 0
        self.hidden_reason = ""
        self._select = select
        self._last_draw = 0.0
        self._draw_pending = False

    def compose(self) -> ComposeResult:
        yield SessionBar(self.where)
        yield Input(placeholder="filter: text, /regex/ or -l app=web", id="filter")
        yield PodTable(self.pods, now=self.console.fixed_now, id="pods")
        yield Static("", id="hidden", classes="hidden-panel")
        yield Static("", id="status")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.query_one("#hidden").display = False
        self.query_one("#filter").display = False
        self.query_one(PodTable).focus()
        self._show_status()
        self._watch()

    @property
    def table(self) -> PodTable:
        return self.query_one(PodTable)

    @work(exclusive=True, group="watch")
    async def _watch(self) -> None:
        broker = self.console.broker
        try:
            watch = await broker.watch_pods(self.cluster, self.namespace)
        except BrokerGone:
            return
        try:
            async for message in watch:
                if isinstance(message, PodsPage):
                    self.pods.upsert(message.rows)
                    self.hidden += message.hidden
                    self.hidden_reason = message.hidden_reason or self.hidden_reason
                    self.complete = message.complete
                else:
                    self.pods.upsert(message.upserts)
                    self.pods.delete(message.deletes)
                self._draw_soon(urgent=isinstance(message, PodsPage) and message.complete)
                # Pages that arrived together would otherwise be read in one go before the
                # first is painted: let the screen draw between them.
                await asyncio.sleep(0)
        except RequestFailed as exc:
            self.tell(str(exc), error=True)
        except BrokerGone:
            return
        finally:
            await watch.close()

    def _draw_soon(self, *, urgent: bool = False) -> None:
        now = time.monotonic()
        if urgent or not self._last_draw or now - self._last_draw >= REFRESH_EVERY:
            self._draw()
        elif not self._draw_pending:
            self._draw_pending = True
            self.set_timer(REFRESH_EVERY, self._draw)

    def _draw(self) -> None:
        self._draw_pending = False
        self._last_draw = time.monotonic()
        self.pods.refresh()
        table = self.table
        if self._select and self.pods.position(self._select) is not None:
            table._cursor_name = self._select
            self._select = ""
        table.rows_changed()
        self._show_status()

    def _show_status(self) -> None:
        shown, total = len(self.pods.shown), len(self.pods)
        line = Text(end="", no_wrap=True)
        line.append(f" {shown:,} of {total:,} pods" if shown != total else f" {total:,} pods")
        if not self.complete:
            line.append("  loading…", "yellow")
        if self.pods.filter.text.strip():
            line.append("  filter: ")
            line.append_text(safe(self.pods.filter.text, "bold"))
        if self.hidden:
            line.append(f"  {self.hidden:,} hidden by policy (h)", "italic")
        if self.pods.filter_error:
            line.append_text(safe(f"  {self.pods.filter_error}", "red"))
        self.query_one("#status", Static).update(line)
        hidden = Text(end="")
        if self.hidden:
            hidden.append(f"{self.hidden:,} pods hidden: ", "bold")
            hidden.append_text(safe(self.hidden_reason, "italic"))
        else:
            hidden.append("Policy hides no pod of this namespace.")
        self.query_one("#hidden", Static).update(hidden)

    # ------------------------------------------------------------------ keys
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Who has the focus now, not has_focus: that is set when the Focus message is handled,
        # after the keys already queued behind the one that moved it.
        in_filter = self.focused is self.query_one("#filter", Input)
        if action == "filter":  # in the filter field "/" is a character (of a /regex/)
            return not in_filter
        if action == "filter_done":  # elsewhere Enter is the table's: open the pod
            return in_filter
        return True

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.display = True
        # At once, not with focus() (a callback queued behind the keys already typed).
        self.set_focus(field)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        try:
            self.pods.set_filter(parse_filter(event.value))
        except FilterError as exc:  # a bad filter, or a regex too slow on these pods
            self.query_one("#status", Static).update(safe(f" {exc}", "red"))
            return
        self.table.rows_changed()
        self._show_status()

    def action_filter_done(self) -> None:
        self.set_focus(self.table)  # at once, as in action_filter

    def action_back(self) -> None:
        field = self.query_one("#filter", Input)
        if self.focused is field or field.value:  # Escape clears the filter first
            self.set_focus(self.table)
            # Behind the keys already handed to the field, which would otherwise refill it.
            field.call_later(self._clear_filter, field)
            return
        self.app.pop_screen()

    @staticmethod
    def _clear_filter(field: Input) -> None:
        field.value = ""
        field.display = False

    def action_sort(self, column: str) -> None:
        self.pods.sort_by(Column(column))
        self._draw()

    def action_toggle_hidden(self) -> None:
        panel = self.query_one("#hidden")
        panel.display = not panel.display

    @on(PodTable.Chosen)
    def _open(self, event: PodTable.Chosen) -> None:
        self.app.push_screen(PodScreen(self.cluster, self.namespace, event.row.name))

    async def on_unmount(self) -> None:
        self.workers.cancel_group(self, "watch")


# ---------------------------------------------------------------------------- one pod
class PodScreen(_ConsoleScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("d", "debug", "Debug container"),
        Binding("r", "reload", "Reload"),
        *(Binding(key, f"view('{view}')", label) for key, view, label in VIEW_KEYS),
    ]

    def __init__(self, cluster: str, namespace: str, pod: str) -> None:
        super().__init__()
        self.cluster = cluster
        self.namespace = namespace
        self.pod = pod
        self.where = f"{cluster}/{namespace}"
        self.detail: PodDetail | None = None

    def compose(self) -> ComposeResult:
        yield SessionBar(self.where)
        yield Static(Text.assemble((" Pod ", "bold"), safe(self.pod, "bold")), id="pod-title")
        yield OptionList(id="containers")
        with VerticalScroll(id="pod-body"):
            yield Static(Text("loading…", "yellow"), id="pod-detail")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.query_one("#containers").focus()
        self._load()

    def action_reload(self) -> None:
        self._load()

    @work(exclusive=True, group="pod")
    async def _load(self) -> None:
        try:
            detail = await self.console.broker.pod(self.cluster, self.namespace, self.pod)
        except RequestFailed as exc:
            self.query_one("#pod-detail", Static).update(safe(str(exc), "red"))
            return
        except BrokerGone:
            return
        self.detail = detail
        containers = self.query_one("#containers", OptionList)
        containers.clear_options()
        for info in detail.containers:
            label = Text.assemble(
                safe(info.name, "bold"),
                "  ",
                safe(info.state, status_style("Running" if info.ready else "Failed")),
                f"  restarts {info.restarts}  ",
                ("debug: d" if info.debuggable else "not debuggable by you", "italic"),
            )
            containers.add_option(Option(label, id=info.name))
        if detail.containers:
            containers.highlighted = 0
        self.query_one("#pod-detail", Static).update(_detail_text(detail))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The footer shows the views policy allows here, and no debug key for a pod where
        it allows views but no shell."""
        detail = self.detail
        if action == "view":
            return detail is not None and bool(parameters) and parameters[0] in detail.views
        if action == "debug" and detail is not None and detail.views:
            return any(info.debuggable for info in detail.containers)
        return True

    def _container(self) -> str:
        detail = self.detail
        if detail is None or not detail.containers:
            return ""
        index = self.query_one("#containers", OptionList).highlighted or 0
        return detail.containers[min(index, len(detail.containers) - 1)].name

    def action_view(self, view: str) -> None:
        if self.detail is None or view not in self.detail.views:
            return
        self._open_view(view, self._container())

    @work(exclusive=True, group="view")
    async def _open_view(self, view: str, container: str) -> None:
        path = ""
        if view == "files":
            asked = await self.app.push_screen_wait(PathQuestion())
            if not asked:
                return
            path = asked
        self.tell(f"Opening the {view} view of {container}…")
        try:
            result = await self.console.broker.view(
                self.cluster, self.namespace, self.pod, container, view, path
            )
        except RequestFailed as exc:
            self.tell(str(exc), error=True)
            return
        except BrokerGone:
            return
        await self.app.push_screen(ViewScreen(result))

    def action_debug(self) -> None:
        detail = self.detail
        if detail is None:
            return
        containers = self.query_one("#containers", OptionList)
        index = containers.highlighted or 0
        if not detail.containers:
            return
        info = detail.containers[min(index, len(detail.containers) - 1)]
        if not info.debuggable:
            self.tell(
                f"Policy does not let you debug container {info.name}; pick another.", error=True
            )
            return
        self._ask_options(info.name)

    @work(exclusive=True, group="debug")
    async def _ask_options(self, container: str) -> None:
        broker = self.console.broker
        try:
            options = await broker.debug_options(self.cluster, self.namespace, self.pod, container)
        except RequestFailed as exc:
            self.tell(str(exc), error=True)
            return
        except BrokerGone:
            return
        choice = await self.app.push_screen_wait(
            DebugConfirmation(f"{self.namespace}/{self.pod}", options)
        )
        if choice is None:
            return
        await self._start(options.target_container, choice)

    async def _start(self, container: str, choice: DebugChoice) -> None:
        progress = DebugProgressScreen(f"{self.namespace}/{self.pod}/{container}")
        self.console.debugging = progress
        await self.app.push_screen(progress)
        try:
            await self.console.broker.debug(
                DebugRequest(
                    cluster=self.cluster,
                    namespace=self.namespace,
                    pod=self.pod,
                    container=container,
                    mode=choice.mode,
                    image=choice.image,
                    reason=choice.reason,
                    run_as_user=DEFAULT_UID,
                    privileged=False,
                    add_capabilities=[],
                )
            )
        except BrokerGone:
            return


def _detail_text(detail: PodDetail) -> Text:
    text = Text(end="")

    def heading(title: str) -> None:
        text.append(f"\n{title}\n", "bold underline")

    def pair(key: str, value: str, style: str = "") -> None:
        text.append("  ")
        text.append_text(safe(key, "bold"))
        text.append(" = ")
        text.append_text(safe(value, style))
        text.append("\n")

    text.append("node ")
    text.append_text(safe(detail.node or "-"))
    text.append("   status ")
    text.append_text(safe(detail.status, status_style(detail.status)))
    text.append("   created ")
    text.append_text(safe(detail.created))
    text.append("\n")
    heading("Labels")
    for item in detail.labels:
        pair(item.key, item.value)
    heading("Annotations")
    for item in detail.annotations:
        pair(item.key, item.value, "dim")
    for info in detail.containers:
        heading(f"Container {clean(info.name)}")
        text.append("  image ")
        text.append_text(safe(info.image))
        text.append("\n")
        for env in info.env:
            masked = env.source in ("secret", "redacted")
            pair(env.name, env.value, "yellow" if masked else "")
        if info.config_maps:
            text.append("  configmaps ")
            text.append_text(safe(", ".join(info.config_maps)))
            text.append("\n")
    heading("Recent events")
    if not detail.events:
        text.append("  none\n", "dim")
    for event in detail.events:
        style = "red" if event.type == "Warning" else ""
        text.append("  ")
        text.append_text(safe(f"{event.last_seen} {event.type} {event.reason}", style))
        text.append(f" x{event.count} ")
        text.append_text(safe(event.message))
        text.append("\n")
    return text


# ---------------------------------------------------------------------------- help
class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "app.pop_screen", "Close")
    ]

    def __init__(self, keys: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        text = Text("Keys\n\n", style="bold", end="")
        for where, key, what in self.keys:
            text.append(f"  {where:<12}", "dim")
            text.append(f"{key:<14}", "bold")
            text.append(f"{what}\n")
        with Vertical(id="help"):
            yield Static(text)
