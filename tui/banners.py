"""Banners: the notices every operator's console shows while they last (a break-glass
session in progress), one line each under the session's top line, until the broker's
``NoticesChanged`` no longer lists them. Pure: the caller passes the time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.text import Text

from bastion.console_protocol import NoticeItem
from tui.safe_text import safe

__all__ = ["BANNER_STYLE", "banner_line", "banner_text"]

BANNER_STYLE = "bold white on dark_red"
_LABELS = {"break_glass": "BREAK-GLASS"}
_TEXT_LIMIT = 300  # a reason is at most 1,000 characters; a banner is one line


def _ago(seconds: float) -> str:
    minutes = max(int(seconds // 60), 0)
    if minutes < 1:
        return "just now"
    if minutes < 90:
        return f"{minutes} min ago"
    return f"{minutes // 60} h {minutes % 60:02d} min ago"


def banner_line(notice: NoticeItem, now: float) -> Text:
    """``BREAK-GLASS  alice since 12:03:04 UTC (5 min ago): INC-42 payments down``; the
    user and the text come from an operator, so they are neutralised."""
    label = _LABELS.get(notice.kind, notice.kind.replace("_", " ").upper())
    since = datetime.fromtimestamp(notice.since, UTC)
    line = Text(no_wrap=True, overflow="ellipsis", end="", style=BANNER_STYLE)
    line.append(f" {label}  ")
    line.append_text(safe(notice.user, limit=64))
    line.append(f" since {since:%H:%M:%S} UTC ({_ago(now - notice.since)}): ")
    line.append_text(safe(notice.text, limit=_TEXT_LIMIT))
    return line


def banner_text(top: Text, notices: Sequence[NoticeItem], now: float) -> Text:
    """The top line, then a banner line per notice."""
    if not notices:
        return top
    return Text("\n", no_wrap=True, overflow="ellipsis", end="").join(
        [top, *(banner_line(n, now) for n in notices)]
    )
