"""The pod screen's read-only views: keys only for what policy allows, tables neutralised."""

from __future__ import annotations

from collections.abc import Callable

from textual.widgets import DataTable, Input

from bastion.console_protocol import GetView
from tests.tui.fake_broker import FakeBroker, Script
from tests.tui.test_console_app import open_namespace
from tui.app import ConsoleApp
from tui.screens import PodScreen
from tui.view_screens import PathQuestion, ViewScreen

Build = Callable[..., tuple[ConsoleApp, FakeBroker]]


async def open_pod(pilot: object, app: ConsoleApp) -> PodScreen:
    await pilot.pause()  # type: ignore[attr-defined]
    await open_namespace(pilot, app, 1)
    await pilot.press("enter")  # type: ignore[attr-defined]
    await pilot.pause(0.1)  # type: ignore[attr-defined]
    screen = app.screen
    assert isinstance(screen, PodScreen)
    return screen


def footer_keys(screen: PodScreen) -> set[str]:
    return {key for key, binding in screen.active_bindings.items() if binding.enabled}


async def test_an_introspect_only_pod_shows_its_views_and_no_debug_key(console: Build) -> None:
    app, broker = console(Script(views=["processes", "files"], shell=False))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_pod(pilot, app)
        assert screen.check_action("view", ("processes",)) is True
        assert screen.check_action("view", ("files",)) is True
        assert screen.check_action("view", ("env",)) is False
        assert screen.check_action("debug", ()) is False
        keys = footer_keys(screen)
        assert {"p", "f"} <= keys
        assert not {"d", "e", "s", "l"} & keys
        await pilot.press("e")  # not allowed: nothing is asked
        await pilot.press("p")
        await pilot.pause(0.1)
        assert isinstance(app.screen, ViewScreen)
        table = app.screen.query_one(DataTable)
        cell = str(table.get_cell_at((0, 1)))
        assert "\x1b" not in cell
        assert cell == "server \ufffd[2J[b]x[/b]"  # no escape, and markup shown as typed
        await pilot.press("escape")
        await pilot.press("f")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PathQuestion)
        app.screen.query_one(Input).value = "/etc/nginx"
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert isinstance(app.screen, ViewScreen)
    views = [m for m in broker.received if isinstance(m, GetView)]
    assert [(v.view, v.container, v.path) for v in views] == [
        ("processes", "app", ""),
        ("files", "app", "/etc/nginx"),
    ]


async def test_a_shell_only_pod_keeps_todays_keys(console: Build) -> None:
    app, _broker = console(Script())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_pod(pilot, app)
        keys = footer_keys(screen)
        assert "d" in keys
        assert not {"p", "e", "f", "s", "l"} & keys
