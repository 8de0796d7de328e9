"""The console's top line: who, where, and how long the session has left."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.widgets import Static

from tui.safe_text import safe

__all__ = ["SessionBar", "clock_text", "session_line"]

IDLE_SHOWN_UNDER = 120.0  # seconds: the idle countdown appears only when it is close


def clock_text(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def session_line(
    user: str, where: str, session_left: float, idle_left: float | None, to_approve: int = 0
) -> Text:
    """``user  cluster/namespace   session 1:59:00 left   idle 1:30 left   2 to approve (a)``."""
    line = Text(no_wrap=True, end="")
    line.append(" ")
    line.append_text(safe(user, "bold"))
    line.append("  ")
    line.append_text(safe(where or "-"))
    line.append("   session ")
    line.append(
        f"{clock_text(session_left)} left", "bold red" if session_left < IDLE_SHOWN_UNDER else ""
    )
    if idle_left is not None and idle_left < IDLE_SHOWN_UNDER:
        line.append("   idle ")
        line.append(f"{clock_text(idle_left)} left", "bold yellow")
    if to_approve:
        line.append("   ")
        line.append(f"{to_approve} to approve (a)", "bold reverse")
    return line


class SessionBar(Static):
    DEFAULT_CSS = """
    SessionBar {
        height: auto; max-height: 6; background: $primary; color: $text;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    """

    def __init__(self, where: str | None = None) -> None:
        # Made with its text, so that it is in the screen's first frame: empty, the bar has
        # no height, and filled at the app's next tick it would push the whole screen down a
        # line a second later (the console opens straight on a single cluster's namespaces).
        super().__init__()
        text: Callable[[str | None], Text] | None = getattr(self.app, "bar_text", None)
        if text is not None:
            self.update(text(where))
