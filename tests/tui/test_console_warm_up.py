"""The console template's warm-up run of the console (tui/zygote.py), and the CSS it keeps:
consoles created after it (forked from the template) parse no CSS of their own and draw
exactly what a console that parsed its own draws."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest
import textual.css.stylesheet
from textual.cache import LRUCache

import tui.app
from tests.tui.conftest import make_app
from tests.tui.fake_broker import FakeBroker, Script
from tests.tui.rows import many
from tui import zygote
from tui.app import ConsoleApp
from tui.screens import PodsScreen


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The CSS texts Textual parses from now on."""
    parsed: list[str] = []
    parse = textual.css.stylesheet.parse

    def counting(scope: str, css: str, *args: Any, **kwargs: Any) -> Any:
        parsed.append(css)
        return parse(scope, css, *args, **kwargs)

    monkeypatch.setattr(textual.css.stylesheet, "parse", counting)
    return parsed


@pytest.fixture
def forgets_kept_css() -> Any:
    yield
    ConsoleApp._parsed_css = None  # the other tests' consoles parse their own


async def pod_list_screenshot() -> str:
    """A console opened on a namespace of 200 pods, as an SVG screenshot."""
    app = make_app(FakeBroker(Script(namespaces={"prod": ["shop"]}, pods={"shop": many(200)})))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        while not (isinstance(app.screen, PodsScreen) and app.screen.complete):
            await pilot.pause(0.01)
        await pilot.pause()
        return app.export_screenshot()


@pytest.mark.usefixtures("forgets_kept_css")
def test_after_the_warm_up_a_console_parses_no_css_and_draws_the_same(parses: list[str]) -> None:
    own = asyncio.run(pod_list_screenshot())
    assert parses  # Textual's cache is per app: each console parses its own

    environ, threads = dict(os.environ), set(threading.enumerate())
    zygote._warm_up_console(tui.app)  # raises if it does not reach the filtered pod list
    assert ConsoleApp._parsed_css is not None
    assert set(threading.enumerate()) <= threads  # none left behind: the template forks
    assert dict(os.environ) == environ

    parses.clear()
    assert asyncio.run(pod_list_screenshot()) == own
    assert parses == []


@pytest.mark.usefixtures("forgets_kept_css")
def test_css_kept_with_other_theme_variables_is_not_reused(parses: list[str]) -> None:
    other: LRUCache[tuple[Any, ...], Any] = LRUCache(64)
    ConsoleApp._parsed_css = ({"primary": "#123456"}, other)
    asyncio.run(pod_list_screenshot())
    assert parses
    assert len(other) == 0
