"""Four-eyes approval in the console: the requests an operator may decide (``a``, and a
count in the top line), deciding one, and following one's own request until it is approved
and the debug can start.

The console holds no state of its own about requests: :class:`ApprovalBoard` is what the
broker said at its last ``ListApprovals`` (the app asks every :data:`POLL_EVERY` seconds,
and at once when one of these screens opens or a decision is made). The broker decides who
may approve what; the console only shows it, and sends what the operator chose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from bastion.console_protocol import ApprovalItem, DebugRequest
from tui.broker import BrokerClient, BrokerGone, RequestFailed
from tui.debug_screens import DebugProgressScreen
from tui.keys_footer import KeysFooter
from tui.safe_text import clean, safe
from tui.session_bar import SessionBar, clock_text

if TYPE_CHECKING:
    from tui.app import ConsoleApp

__all__ = [
    "POLL_EVERY",
    "ApprovalBoard",
    "ApprovalsScreen",
    "AwaitingApprovalScreen",
    "DecisionScreen",
    "decide",
    "news_text",
    "refresh",
]

POLL_EVERY = 2.0  # seconds between ListApprovals while the console is open
_STATUS_STYLE = {
    "pending": "yellow",
    "approved": "bold green",
    "denied": "red",
    "expired": "dim",
    "used": "dim",
}


class ApprovalBoard:
    """The approval requests as the broker last listed them."""

    def __init__(self) -> None:
        self.items: list[ApprovalItem] = []
        self.loaded = False  # the broker has answered at least once
        # The operator's own requests decided (or lapsed) since the refresh before.
        self.news: list[ApprovalItem] = []

    async def refresh(self, broker: BrokerClient) -> bool:
        """Ask the broker again; False when it could not answer (the last list stays)."""
        try:
            items = await broker.approvals()
        except (RequestFailed, BrokerGone):
            return False
        waiting = {item.id for item in self.items if item.mine and item.status == "pending"}
        self.news = [i for i in items if i.id in waiting and i.status != "pending"]
        self.items = items
        self.loaded = True
        return True

    @property
    def to_decide(self) -> int:
        """How many requests wait for this operator's decision (the top line's count)."""
        return sum(1 for item in self.items if item.can_decide)

    def find(self, request_id: str) -> ApprovalItem | None:
        return next((item for item in self.items if item.id == request_id), None)


async def refresh(console: ConsoleApp) -> None:
    """Ask the broker for the requests; tell the operator what became of theirs, and redraw
    the top line and the approval screens."""
    if not await console.board.refresh(console.broker):
        return
    for item in console.board.news:
        # The screen that follows this request says so itself.
        shown = console.screen
        if isinstance(shown, AwaitingApprovalScreen) and shown.request_id == item.id:
            continue
        good = item.status == "approved"
        console.notify(
            clean(news_text(item)),
            severity="information" if good else "warning",
            markup=False,
            timeout=15,
        )
    console.update_bar()
    for screen in console.screen_stack:
        # A screen still being mounted draws the board itself when it is.
        if isinstance(screen, ApprovalsScreen | AwaitingApprovalScreen) and screen.is_mounted:
            screen.board_changed()


async def decide(console: ConsoleApp, request_id: str, approve: bool, reason: str) -> None:
    """Send an approver's decision; the broker's answer (or refusal) as a notification."""
    try:
        said = await console.broker.decide_approval(request_id, approve=approve, reason=reason)
    except RequestFailed as exc:
        console.notify(clean(str(exc)), severity="error", markup=False, timeout=10)
    except BrokerGone:
        return
    else:
        console.notify(clean(said[:1].upper() + said[1:]), markup=False)
    console.poll_approvals()


def news_text(item: ApprovalItem) -> str:
    """What the operator is told when their own request is decided, wherever they are."""
    where = f"{item.cluster}/{item.namespace}/{item.pod}"
    match item.status:
        case "approved":
            return (
                f"Your request {item.id} for {where} was approved by {item.decided_by}: "
                "press a, then Enter on it, to start the debug shell."
            )
        case "denied":
            said = f": {item.decision_reason}" if item.decision_reason else ""
            return f"Your request {item.id} for {where} was denied by {item.decided_by}{said}."
        case _:
            return f"Your request {item.id} for {where} is {item.status}."


def _left(item: ApprovalItem, now: float) -> str:
    if item.status not in ("pending", "approved"):
        return ""
    return f" {clock_text(item.expires_at - now)} left"


def _summary(item: ApprovalItem, now: float) -> Text:
    """One line of the list:
    ``ID  alice  local/shop/web-1 (app)  ephemeral 30:00  pending 9:41 left``."""
    line = Text(no_wrap=True, end="")
    line.append_text(safe(item.id, "bold"))
    line.append("  ")
    line.append_text(safe(item.requester))
    line.append("  ")
    line.append_text(safe(f"{item.cluster}/{item.namespace}/{item.pod} ({item.container})"))
    line.append("  ")
    line.append_text(safe(item.mode))
    line.append(f" {clock_text(item.duration_seconds)}  ")
    line.append_text(safe(item.status, _STATUS_STYLE.get(item.status, "")))
    line.append(_left(item, now))
    if item.mine:
        line.append("  (yours)", "italic")
    return line


def _details(item: ApprovalItem, now: float) -> Text:
    text = Text(end="")

    def row(name: str, value: str, style: str = "") -> None:
        text.append(f"{name:<11}", "bold")
        text.append_text(safe(value, style))
        text.append("\n")

    row("request", item.id)
    row("from", item.requester)
    row("target", f"{item.cluster}/{item.namespace}/{item.pod}, container {item.container}")
    row("debug", f"{item.mode} mode, as uid {item.run_as_user}, image {item.image}")
    row("time", f"{clock_text(item.duration_seconds)} at most")
    row("reason", item.reason or "-")
    row("approvers", item.approvers)
    row("status", item.status + _left(item, now), _STATUS_STYLE.get(item.status, ""))
    if item.decided_by:
        said = f": {item.decision_reason}" if item.decision_reason else ""
        row("decided by", item.decided_by + said)
    if item.can_decide:
        text.append("y approve, n deny", "bold")
    elif item.mine and item.status == "pending":
        text.append("Your request: another approver must decide it.", "italic")
    elif item.mine and item.status == "approved":
        text.append("Approved: Enter opens it, to start the debug shell.", "bold green")
    return text


def _console(screen: Screen[None]) -> ConsoleApp:
    from tui.app import ConsoleApp  # noqa: PLC0415 - the app module imports this one

    app = screen.app
    assert isinstance(app, ConsoleApp)  # noqa: S101 - these screens live only in the console
    return app


def _now(console: ConsoleApp) -> float:
    return console.fixed_now if console.fixed_now is not None else console.clock()


class ApprovalsScreen(Screen[None]):
    """Requests this operator may decide, and their own: ``y`` approves, ``n`` denies,
    Enter follows one's own request."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("y", "decide(True)", "Approve"),
        Binding("n", "decide(False)", "Deny"),
        Binding("r", "reload", "Reload"),
    ]
    DEFAULT_CSS = """
    #requests { height: 1fr; }
    #request-body { height: auto; max-height: 50%; border-top: solid $warning; }
    """

    def compose(self) -> ComposeResult:
        yield SessionBar()
        yield Static(Text(" Approval requests: yours, and those you may decide", "bold"))
        yield OptionList(id="requests")
        with VerticalScroll(id="request-body"):
            yield Static(Text("loading…", "yellow"), id="request-detail")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.query_one("#requests").focus()
        self.board_changed()
        _console(self).poll_approvals()

    def on_screen_resume(self) -> None:
        _console(self).where = "approvals"
        _console(self).update_bar()

    def action_reload(self) -> None:
        _console(self).poll_approvals()

    def board_changed(self) -> None:
        """The board was refreshed: redraw, keeping the highlighted request."""
        try:
            options = self.query_one("#requests", OptionList)
        except NoMatches:  # the screen is being taken down (popped, or the console ends)
            return
        current = self.highlighted()
        items = _console(self).board.items
        now = _now(_console(self))
        options.clear_options()
        options.add_options([Option(_summary(item, now), id=item.id) for item in items])
        if items:
            ids = [item.id for item in items]
            options.highlighted = ids.index(current.id) if current and current.id in ids else 0
        self._show(self.highlighted())

    def highlighted(self) -> ApprovalItem | None:
        options = self.query_one("#requests", OptionList)
        if options.highlighted is None or not options.option_count:
            return None
        option_id = options.get_option_at_index(options.highlighted).id
        return _console(self).board.find(option_id) if option_id else None

    def _show(self, item: ApprovalItem | None) -> None:
        detail = self.query_one("#request-detail", Static)
        if item is None:
            detail.update(
                Text("No approval requests: none of yours, none for you to decide.")
                if _console(self).board.loaded
                else Text("loading…", "yellow")
            )
            return
        detail.update(_details(item, _now(_console(self))))

    @on(OptionList.OptionHighlighted, "#requests")
    def _highlighted(self) -> None:
        self._show(self.highlighted())

    @on(OptionList.OptionSelected, "#requests")
    def _follow(self) -> None:
        item = self.highlighted()
        if item is not None and item.mine:
            self.app.push_screen(AwaitingApprovalScreen(item.id))

    def action_decide(self, approve: bool) -> None:
        item = self.highlighted()
        if item is not None:
            # Sent even for one's own request: the broker refuses it and records that.
            self.app.push_screen(DecisionScreen(item, approve=approve), self._decided)

    def _decided(self, result: tuple[str, bool, str] | None) -> None:
        if result is not None:
            _console(self).send_decision(*result)


class DecisionScreen(ModalScreen[tuple[str, bool, str] | None]):
    """Approve or deny one request: the reason (required to deny), then Enter."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    DecisionScreen { align: center middle; }
    #decision {
        width: 90%; max-width: 100; height: auto;
        border: thick $warning; background: $surface; padding: 0 1;
    }
    #decision-error { height: auto; }
    """

    def __init__(self, item: ApprovalItem, *, approve: bool) -> None:
        super().__init__()
        self.item = item
        self.approve = approve

    def compose(self) -> ComposeResult:
        item = self.item
        verb = "Approve" if self.approve else "Deny"
        with Vertical(id="decision"):
            title = Text(f"{verb} request ", style="bold", end="")
            title.append_text(safe(item.id, "bold"))
            title.append(" of ")
            title.append_text(safe(item.requester, "bold"))
            title.append("?")
            yield Static(title)
            yield Static(safe(f"{item.cluster}/{item.namespace}/{item.pod} ({item.container}), "
                              f"{item.mode}, {clock_text(item.duration_seconds)}"))  # fmt: skip
            yield Static(Text.assemble("reason given: ", safe(item.reason or "-", "italic")))
            placeholder = "your reason (optional)" if self.approve else "why (required)"
            yield Input(placeholder=placeholder, id="decision-reason", max_length=500)
            yield Label("", id="decision-error")

    def on_mount(self) -> None:
        self.query_one("#decision-reason").focus()

    @on(Input.Submitted, "#decision-reason")
    def _submitted(self, event: Input.Submitted) -> None:
        reason = event.value.strip()
        if not self.approve and not reason:
            self.query_one("#decision-error", Label).update(
                Text("A denial needs a reason for the requester: type one, then Enter.", "red")
            )
            return
        self.dismiss((self.item.id, self.approve, reason))

    def action_cancel(self) -> None:
        self.dismiss(None)


class AwaitingApprovalScreen(ModalScreen[None]):
    """One's own request, as it goes: pending, approved (Enter starts the debug shell),
    denied or expired. Escape closes it; the request stays open (``a`` shows it again)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("enter", "start", "Start debug"),
    ]
    DEFAULT_CSS = """
    AwaitingApprovalScreen { align: center middle; }
    #awaiting {
        width: 90%; max-width: 100; height: auto;
        border: thick $warning; background: $surface; padding: 0 1;
    }
    """

    def __init__(self, request_id: str, message: str = "") -> None:
        super().__init__()
        self.request_id = request_id
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(id="awaiting"):
            yield Static(Text("Waiting for approval", style="bold"))
            yield Static(safe(self.message) if self.message else "", id="awaiting-message")
            yield Static(Text("loading…", "yellow"), id="awaiting-state")

    def on_mount(self) -> None:
        self.board_changed()
        _console(self).poll_approvals()

    @property
    def item(self) -> ApprovalItem | None:
        return _console(self).board.find(self.request_id)

    def board_changed(self) -> None:
        item = self.item
        try:
            state = self.query_one("#awaiting-state", Static)
        except NoMatches:  # the screen is being taken down
            return
        if item is None:
            state.update(Text(f"request {clean(self.request_id)}: waiting for the broker…"))
            return
        text = _details(item, _now(_console(self)))
        text.append("\n\n")
        match item.status:
            case "approved":
                text.append("Enter starts the debug shell (the approval is used once).", "bold")
            case "pending":
                text.append("Escape closes this; the request stays open (a shows it).", "dim")
            case _:
                text.append("Escape closes this; press d on the pod to ask again.", "dim")
        state.update(text)

    def action_close(self) -> None:
        self.dismiss(None)

    async def action_start(self) -> None:
        item = self.item
        if item is None or item.status != "approved":
            self.notify("The request is not approved (yet).", severity="warning", markup=False)
            return
        request = DebugRequest(
            cluster=item.cluster,
            namespace=item.namespace,
            pod=item.pod,
            container=item.container,
            mode=item.mode,
            image=item.image,
            reason=item.reason,
            run_as_user=item.run_as_user,
            privileged=False,
            add_capabilities=[],
        )
        console = _console(self)
        self.dismiss(None)
        progress = DebugProgressScreen(f"{item.namespace}/{item.pod}/{item.container}")
        console.debugging = progress
        await console.push_screen(progress)
        try:
            await console.broker.debug(request)
        except BrokerGone:
            return
