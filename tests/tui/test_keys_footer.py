"""The console's footer: the screen's keys as one line of text, kept as long as they are the
same, and a click on a key presses it."""

from __future__ import annotations

from collections.abc import Callable

from tests.tui.fake_broker import FakeBroker, Script
from tests.tui.test_console_app import open_namespace
from tui.app import ConsoleApp
from tui.keys_footer import KeysFooter
from tui.screens import ClustersScreen, NamespacesScreen, PodsScreen

Build = Callable[..., tuple[ConsoleApp, FakeBroker]]


def footer(app: ConsoleApp) -> KeysFooter:
    return app.screen.query_one(KeysFooter)


async def test_the_footer_shows_the_screens_keys_and_follows_them(console: Build) -> None:
    app, _broker = console()
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, NamespacesScreen)
        line = str(footer(app).render())
        assert line.startswith(" esc Back  h Hidden ")
        assert " q Quit " in line
        assert "Keep filter" not in line  # a binding that does not show
        drawn = footer(app).keys
        app.screen.refresh_bindings()  # the same keys: nothing to redraw
        await pilot.pause()
        assert footer(app).keys is drawn
        await open_namespace(pilot, app, 1)
        assert isinstance(app.screen, PodsScreen)
        assert "/ Filter" in str(footer(app).render())


async def test_a_click_on_a_key_presses_it(console: Build) -> None:
    app, _broker = console()
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, NamespacesScreen)
        # " esc Back " is columns 0-9: Escape on the only cluster's namespaces makes the list
        # of clusters, which the console did not open under them.
        assert await pilot.click(KeysFooter, offset=(2, 0))
        await pilot.pause()
        assert isinstance(app.screen, ClustersScreen)
        assert [type(screen) for screen in app.screen_stack[1:]] == [ClustersScreen]
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, NamespacesScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert [type(screen) for screen in app.screen_stack[1:]] == [ClustersScreen]


async def test_several_clusters_keep_their_list_under_the_namespaces(console: Build) -> None:
    app, _broker = console(Script(clusters=["prod", "staging"]))
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        clusters = app.screen
        assert isinstance(clusters, ClustersScreen)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, NamespacesScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is clusters
