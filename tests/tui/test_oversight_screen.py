"""Live oversight in the console (docs/oversight.md), with Textual's pilot against the fake
broker: the sessions key only for auditors, the list with hostile strings cleaned, Enter
asks to watch (the console exits on the broker's handover), and a refusal is shown."""

from __future__ import annotations

from collections.abc import Callable

from textual.widgets import OptionList

from bastion.console_protocol import ListSessions, LiveSessionItem, WatchSession
from tests.tui.fake_broker import FakeBroker, Script
from tui.app import ConsoleApp
from tui.keys_footer import KeysFooter
from tui.oversight import SessionsScreen, session_summary
from tui.screens import NamespacesScreen

from .conftest import NOW

Build = Callable[..., tuple[ConsoleApp, FakeBroker]]


def live(session: str, **overrides: object) -> LiveSessionItem:
    fields: dict[str, object] = {
        "id": session, "user": "bob", "source": "192.0.2.7:50022", "started": NOW - 600,
        "state": "attached", "target": "prod/shop/web-1", "break_glass": False,
        "watchers": [], "watchable": True,
    }  # fmt: skip
    fields.update(overrides)
    return LiveSessionItem(**fields)  # type: ignore[arg-type]


def footer_keys(app: ConsoleApp) -> set[str]:
    return {binding.key for (_, binding, enabled, _) in app.active_bindings.values() if enabled}


def test_a_summary_line_says_who_where_and_who_watches_with_strings_cleaned() -> None:
    line = session_summary(
        live("0123456789abcdef", user="eve\x1b]0;owned\x07", break_glass=True,
             watchers=["carol", "[@click=app.quit]x[/]"])
    ).plain  # fmt: skip
    assert "\x1b" not in line
    assert "\x07" not in line
    assert line.startswith("0123456789abcdef  eve")
    assert "from 192.0.2.7:50022" in line
    assert "prod/shop/web-1" in line
    assert "BREAK-GLASS" in line
    assert "watched by carol, [@click=app.quit]x[/]" in line
    assert "(no shell to watch)" in session_summary(live("a" * 16, watchable=False)).plain
    assert "unwatched" in session_summary(live("b" * 16)).plain


async def test_only_an_auditor_has_the_sessions_key(console: Build) -> None:
    app, broker = console(Script(auditor=False))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, NamespacesScreen)
        assert "o" not in footer_keys(app)
        await pilot.press("o")
        await pilot.pause()
        assert isinstance(app.screen, NamespacesScreen)
    assert not [m for m in broker.received if isinstance(m, ListSessions)]

    app, _ = console(Script(auditor=True))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert "o" in footer_keys(app)
        assert "o" in {shown.key for shown in app.screen.query_one(KeysFooter).keys}


async def test_an_auditor_lists_sessions_and_enter_asks_to_watch_then_hands_over(
    console: Build,
) -> None:
    sessions = [live("0123456789abcdef"), live("fedcba9876543210", user="dave")]
    app, broker = console(Script(auditor=True, live_sessions=sessions))
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause()
        await pilot.press("o")
        await pilot.pause()
        assert isinstance(app.screen, SessionsScreen)
        options = app.screen.query_one("#sessions", OptionList)
        assert options.option_count == 2
        await pilot.press("down", "enter")
        await pilot.pause()
    watches = [m for m in broker.received if isinstance(m, WatchSession)]
    assert [w.session for w in watches] == ["fedcba9876543210"]
    assert app.return_code == 0  # the broker's handover: the console leaves the terminal


async def test_a_refused_watch_is_said_and_the_console_stays(console: Build) -> None:
    app, _ = console(Script(auditor=True, live_sessions=[live("gone456789abcdef")]))
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause()
        await pilot.press("o")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, SessionsScreen)
        said = " ".join(n.message for n in app._notifications)
        assert "there is no live session 'gone456789abcdef'" in said
