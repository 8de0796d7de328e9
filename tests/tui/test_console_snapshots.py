"""Snapshots of the console's main screens at 80x24 and 160x48: hostile strings inert,
secrets shown as the broker masked them. Update with ``pytest --snapshot-update`` after a
deliberate change, and look at the SVGs."""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import OptionList

from tests.tui.conftest import make_app
from tests.tui.fake_broker import FakeBroker, Script

SIZES = [(80, 24), (160, 48)]


async def _to_namespace(pilot: Pilot[Any], index: int) -> None:
    await pilot.pause()
    pilot.app.screen.query_one("#namespaces", OptionList).highlighted = index
    await pilot.press("enter")
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES)
def test_namespaces_with_what_is_hidden(snap_compare: Any, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await pilot.pause()
        await pilot.press("h")

    assert snap_compare(make_app(FakeBroker()), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_pods_with_hostile_names(snap_compare: Any, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _to_namespace(pilot, 0)
        await pilot.press("h")

    assert snap_compare(make_app(FakeBroker()), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_fifty_thousand_pods_filtered(snap_compare: Any, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _to_namespace(pilot, 2)
        for _ in range(200):
            if getattr(pilot.app.screen, "complete", False):
                break
            await pilot.pause(0.05)
        await pilot.press("slash", *"api-0001", "enter", "A")
        await pilot.pause(0.3)

    assert snap_compare(make_app(FakeBroker()), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_pod_details_masked(snap_compare: Any, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _to_namespace(pilot, 1)
        await pilot.press("enter")
        await pilot.pause(0.1)

    assert snap_compare(make_app(FakeBroker()), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_debug_confirmation(snap_compare: Any, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _to_namespace(pilot, 1)
        await pilot.press("enter")
        await pilot.pause(0.1)
        await pilot.press("d")
        await pilot.pause(0.1)

    assert snap_compare(make_app(FakeBroker()), terminal_size=size, run_before=run_before)


def test_help(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await pilot.pause()
        await pilot.press("question_mark")

    broker = FakeBroker(Script())
    assert snap_compare(make_app(broker), terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_break_glass_banners_with_a_hostile_reason(
    snap_compare: Any, size: tuple[int, int]
) -> None:
    from bastion.console_protocol import NoticeItem  # noqa: PLC0415
    from tests.tui.conftest import NOW  # noqa: PLC0415

    notices = [
        NoticeItem("n1", "break_glass", "emergency", NOW - 300, "INC-42 payments are down"),
        NoticeItem(
            "n2", "break_glass", "oncall2", NOW - 7300,
            "db-0 \x1b[2J[@click=app.quit]x[/] \u202eevil " + "very long reason " * 12,
        ),
    ]  # fmt: skip

    async def run_before(pilot: Pilot[Any]) -> None:
        await _to_namespace(pilot, 1)

    app = make_app(FakeBroker(Script(notices=notices)))
    assert snap_compare(app, terminal_size=size, run_before=run_before)
