"""Asking for a debug shell: the confirmation, then the progress until the handover."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from bastion.console_protocol import DebugOptions
from tui.safe_text import safe
from tui.session_bar import clock_text

__all__ = ["DebugChoice", "DebugConfirmation", "DebugProgressScreen"]


@dataclass(frozen=True)
class DebugChoice:
    image: str
    mode: str
    reason: str


def _field(name: str, value: str, style: str = "") -> Text:
    line = Text(no_wrap=False, end="")
    line.append(f"{name:<12}", "bold")
    line.append_text(safe(value, style))
    return line


class DebugConfirmation(ModalScreen[DebugChoice | None]):
    """What the debug will be, as policy allows it; Enter confirms, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+d", "confirm", "Debug"),
    ]

    def __init__(self, pod: str, options: DebugOptions) -> None:
        super().__init__()
        self.pod = pod
        self.options = options

    def compose(self) -> ComposeResult:
        options = self.options
        with Vertical(id="confirm"):
            yield Static(Text("Open a debug shell?", style="bold"), id="confirm-title")
            yield Static(_field("pod", self.pod))
            yield Static(_field("container", options.target_container))
            if len(options.images) == 1:
                yield Static(_field("image", options.images[0]), id="image")
            else:
                yield Select(
                    [(safe(image), image) for image in options.images],
                    value=options.images[0],
                    allow_blank=False,
                    id="image",
                )
            if len(options.modes) == 1:
                yield Static(_field("mode", options.modes[0]), id="mode")
            else:
                yield Select(
                    [(safe(mode), mode) for mode in options.modes],
                    value=options.modes[0],
                    allow_blank=False,
                    id="mode",
                )
            yield Static(_field("time limit", clock_text(options.max_session_seconds)))
            if options.recorded:
                yield Static(Text("This session is recorded.", style="bold yellow"))
            if options.approval:
                needs = Text("Needs another operator's approval (", style="bold yellow", end="")
                needs.append_text(safe(options.approval, "bold yellow"))
                needs.append("): confirming asks for it, or uses it once given.")
                yield Static(needs)
            if options.reason_required:
                yield Input(placeholder="reason (required)", id="reason", max_length=500)
            yield Label("", id="confirm-error")
            yield Button("Debug", variant="warning", id="debug")
            yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#reason" if self.options.reason_required else "#debug").focus()

    def _chosen(self, widget_id: str, default: str) -> str:
        found = self.query(f"#{widget_id}")
        if found and isinstance(found.first(), Select):
            value = found.first(Select).value
            return value if isinstance(value, str) else default
        return default

    def action_confirm(self) -> None:
        reason = ""
        if self.options.reason_required:
            reason = self.query_one("#reason", Input).value.strip()
            if not reason:
                self.query_one("#confirm-error", Label).update(
                    Text("Policy wants a reason for this debug: type one, then Enter.", "red")
                )
                self.query_one("#reason", Input).focus()
                return
        self.dismiss(
            DebugChoice(
                image=self._chosen("image", self.options.images[0]),
                mode=self._chosen("mode", self.options.modes[0]),
                reason=reason,
            )
        )

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted, "#reason")
    def _reason_entered(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#debug")
    def _debug_pressed(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()


class DebugProgressScreen(ModalScreen[None]):
    """The broker's steps while the container starts; the app exits on the handover."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def compose(self) -> ComposeResult:
        with Vertical(id="progress"):
            yield Static(
                Text.assemble(("Starting a debug shell in ", "bold"), safe(self.target, "bold"))
            )
            yield Static("", id="steps")

    def step(self, message: str) -> None:
        steps = self.query_one("#steps", Static)
        lines = Text(end="")
        for previous in getattr(self, "_steps", []):
            lines.append_text(previous)
            lines.append("\n")
        current = Text("  … ", end="")
        current.append_text(safe(message))
        self._steps: list[Text] = [*getattr(self, "_steps", []), current]
        lines.append_text(current)
        steps.update(lines)
