"""Banners: a break-glass session shows in every console while it lasts, neutralised."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text

from bastion.console_protocol import NoticeItem, WatchNotices
from tests.tui.conftest import NOW
from tests.tui.fake_broker import FakeBroker, Script
from tui.app import ConsoleApp
from tui.banners import banner_line
from tui.screens import NamespacesScreen, PodsScreen
from tui.session_bar import SessionBar

Build = Callable[..., tuple[ConsoleApp, FakeBroker]]
BREAK_GLASS = NoticeItem("n1", "break_glass", "emergency", NOW - 300, "INC-42 payments are down")


def top(app: ConsoleApp) -> str:
    return str(app.screen.query_one(SessionBar).render())


async def test_a_banner_shows_who_since_when_and_why_until_it_is_taken_down(
    console: Build,
) -> None:
    app, broker = console()
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        assert broker.received[0] == WatchNotices(0)  # subscribed before anything else
        assert isinstance(app.screen, NamespacesScreen)
        assert "BREAK-GLASS" not in top(app)
        assert app.screen.query_one(SessionBar).size.height == 1

        broker.notices_changed([BREAK_GLASS])
        await pilot.pause(0.05)
        shown = top(app)
        assert "BREAK-GLASS  emergency since" in shown
        assert "(5 min ago): INC-42 payments are down" in shown
        assert app.screen.query_one(SessionBar).size.height == 2

        # The banner follows the operator to every screen.
        await pilot.press("enter")
        await pilot.pause(0.05)
        assert isinstance(app.screen, PodsScreen)
        app.update_bar()
        assert "BREAK-GLASS  emergency" in top(app)

        broker.notices_changed([])  # the session ended
        await pilot.pause(0.05)
        assert "BREAK-GLASS" not in top(app)
        await pilot.press("q")


async def test_a_console_that_starts_during_one_shows_it_at_once(console: Build) -> None:
    app, _broker = console(Script(notices=[BREAK_GLASS]))
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        assert "BREAK-GLASS  emergency" in top(app)
        await pilot.press("q")


def test_what_an_operator_typed_cannot_act_on_the_terminal_or_as_markup() -> None:
    hostile = NoticeItem(
        "n2", "break_glass", "ev\x1b]0;x\x07il", NOW, "[@click=app.quit]x[/] \x1b[2J\u202egone"
    )
    line = banner_line(hostile, NOW)
    assert isinstance(line, Text)
    plain = line.plain
    assert not {"\x1b", "\x07", "\u202e"} & set(plain)
    assert "[@click=app.quit]x[/]" in plain  # shown as typed, never read as markup
    assert plain.startswith(" BREAK-GLASS  ev�]0;x�il since ")
    assert "\n" not in plain  # one line, whatever the reason holds
