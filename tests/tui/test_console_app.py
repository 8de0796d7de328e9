"""Every screen and key of the console, driven with Textual's pilot against a fake broker."""

from __future__ import annotations

from collections.abc import Callable

from textual import events
from textual.widgets import Input, OptionList, Static

from bastion.console_protocol import (
    DeadlinesChanged,
    DebugEnded,
    DebugRequest,
    Notice,
    StopWatch,
    WatchPods,
)
from tests.tui.fake_broker import FakeBroker, Script
from tests.tui.rows import pod
from tui.app import ConsoleApp
from tui.debug_screens import DebugConfirmation, DebugProgressScreen
from tui.pod_list import Column
from tui.pod_table import PodTable
from tui.screens import ClustersScreen, HelpScreen, NamespacesScreen, PodScreen, PodsScreen

Build = Callable[..., tuple[ConsoleApp, FakeBroker]]


def names(app: ConsoleApp) -> list[str]:
    screen = app.screen
    assert isinstance(screen, PodsScreen)
    return [entry.name for entry in screen.pods.shown]


def status(app: ConsoleApp) -> str:
    return str(app.screen.query_one("#status", Static).render())


async def open_namespace(pilot: object, app: ConsoleApp, index: int) -> None:
    options = app.screen.query_one("#namespaces", OptionList)
    options.highlighted = index
    await pilot.press("enter")  # type: ignore[attr-defined]
    await pilot.pause(0.05)  # type: ignore[attr-defined]


async def test_one_cluster_opens_its_namespaces_and_h_shows_what_is_hidden(
    console: Build,
) -> None:
    app, _broker = console()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, NamespacesScreen)
        options = app.screen.query_one("#namespaces", OptionList)
        assert [options.get_option_at_index(n).id for n in range(3)] == ["hostile", "shop", "big"]
        hidden = app.screen.query_one("#hidden", Static)
        assert not hidden.display
        await pilot.press("h")
        assert hidden.display
        assert "kube-system" in str(hidden.render())
        assert "no grant of alice covers it" in str(hidden.render())
        await pilot.press("escape")
        assert isinstance(app.screen, ClustersScreen)
        await pilot.press("q")
    assert app.return_code == 0


async def test_lists_open_on_their_first_entry_so_enter_opens_it(console: Build) -> None:
    app, _broker = console(Script(clusters=["prod", "staging"]))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, ClustersScreen)
        await pilot.press("enter")  # no arrow key first
        await pilot.pause()
        assert isinstance(app.screen, NamespacesScreen)
        assert app.screen.cluster == "prod"
        await pilot.press("enter")
        await pilot.pause(0.05)
        assert isinstance(app.screen, PodsScreen)
        assert app.screen.namespace == "hostile"


def type_at_once(app: ConsoleApp, *keys: tuple[str, str | None]) -> None:
    """Queue keys together, as a fast typist's or a paste's arrive: nothing runs between."""
    driver = app._driver
    assert driver is not None
    for key, character in keys:
        typed = events.Key(key, character)
        typed.set_sender(app)
        driver.send_message(typed)  # what pilot.press does, without its waits


async def test_keys_typed_right_after_slash_reach_the_filter(console: Build) -> None:
    app, _broker = console()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 1)  # shop
        type_at_once(app, ("slash", "/"), ("w", "w"), ("e", "e"), ("b", "b"), ("1", "1"))
        await pilot.pause()
        assert app.screen.query_one("#filter", Input).value == "web1"
        assert names(app) == []  # "web1" is in no name; the table got none of the keys
        assert "0 of 6 pods" in status(app)


async def test_enter_enter_after_a_filter_opens_the_pod_however_fast(console: Build) -> None:
    app, _broker = console()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 1)  # shop
        # The first Enter leaves the filter; the second, queued behind it, is the table's.
        type_at_once(app, ("slash", "/"), ("d", "d"), ("b", "b"), ("enter", "\r"), ("enter", "\r"))
        await pilot.pause()
        assert isinstance(app.screen, PodScreen)
        assert app.screen.pod == "db-0"
        await pilot.press("escape")
        assert isinstance(app.screen, PodsScreen)
        assert "1 of 6 pods" in status(app)  # the filter kept
        # Escape clears the filter at once: the "j" typed behind it moves the table's cursor.
        type_at_once(app, ("slash", "/"), ("w", "w"), ("escape", "\x1b"), ("j", "j"))
        await pilot.pause()
        assert app.screen.query_one("#filter", Input).value == ""
        table = app.screen.query_one(PodTable)
        assert table.has_focus
        assert table.current is not None
        assert table.current.name == "web-0"


async def test_several_clusters_are_listed_first(console: Build) -> None:
    app, _broker = console(Script(clusters=["prod", "staging"], namespaces={"staging": ["a"]}))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, ClustersScreen)
        await pilot.press("end", "enter")
        await pilot.pause()
        assert isinstance(app.screen, NamespacesScreen)
        assert app.screen.cluster == "staging"
        assert "staging" in str(app.screen.query_one("SessionBar", Static).render())


async def test_the_pod_list_filters_sorts_and_keeps_the_cursor(console: Build) -> None:
    app, broker = console()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 1)  # shop
        assert isinstance(app.screen, PodsScreen)
        assert names(app) == ["db-0", "web-0", "web-1", "web-2", "web-3", "web-4"]
        assert "6 pods" in status(app)
        assert "2 hidden by policy" in status(app)
        await pilot.press("down", "down")
        table = app.screen.query_one(PodTable)
        assert table.current is not None
        assert table.current.name == "web-1"
        await pilot.press("slash", "w", "e", "b")
        await pilot.pause()
        assert names(app) == ["web-0", "web-1", "web-2", "web-3", "web-4"]
        assert table.current is not None
        assert table.current.name == "web-1"
        assert "5 of 6 pods" in status(app)
        await pilot.press("enter")  # back to the table, the filter kept
        assert table.has_focus
        await pilot.press("O")  # node: web-0 and web-3 on node-0
        assert app.screen.pods.sort_column is Column.NODE
        assert names(app)[:2] == ["web-0", "web-3"]
        await pilot.press("O")
        assert app.screen.pods.descending
        assert table.current is not None
        assert table.current.name == "web-1"
        for key, column in (("N", "name"), ("R", "ready"), ("S", "status"), ("T", "restarts"),
                            ("A", "age")):  # fmt: skip
            await pilot.press(key)
            assert app.screen.pods.sort_column is Column(column)
        await pilot.press("escape")  # clears the filter first
        assert len(names(app)) == 6
        await pilot.press("escape")
        assert isinstance(app.screen, NamespacesScreen)
        await pilot.pause()
        assert StopWatch(2) in broker.received


async def test_regex_and_label_filters_and_a_bad_regex(console: Build) -> None:
    app, _broker = console()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 1)
        await pilot.press("slash")
        field = app.screen.query_one("#filter", Input)
        field.value = "/^web-[13]$/"
        await pilot.pause()
        assert names(app) == ["web-1", "web-3"]
        field.value = "/(oops/"
        await pilot.pause()
        assert "is not a valid regex" in status(app)
        assert names(app) == ["web-1", "web-3"]  # the last good filter stays
        field.value = "-l app=web"
        await pilot.pause()
        assert len(names(app)) == 6


async def test_a_regex_made_to_stall_the_console_is_stopped_with_a_sentence(
    console: Build,
) -> None:
    stalling = "a" * 40 + "-x"  # (a+)+$ backtracks 2^40 times on it
    app, broker = console(Script(pods={"shop": [pod("web-1"), pod("web-2")]}))
    async with app.run_test(size=(160, 24)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 1)
        await pilot.press("slash")
        field = app.screen.query_one("#filter", Input)
        field.value = "/(a+)+$/"
        await pilot.pause()
        assert names(app) == []  # harmless on these names
        watch = next(m for m in broker.received if isinstance(m, WatchPods))
        broker.change(watch.id, [pod(stalling)], [])
        await pilot.pause(0.6)
        assert "the filter was cleared" in status(app)
        assert names(app) == [stalling, "web-1", "web-2"]
        field.value = "web"
        await pilot.pause()
        assert names(app) == ["web-1", "web-2"]
        field.value = "/(a+)+$/"
        await pilot.pause()
        assert "took more than 0.25 s on these pods" in status(app)
        assert names(app) == ["web-1", "web-2"]  # the last good filter stays


async def test_live_changes_keep_cursor_and_filter(console: Build) -> None:
    app, broker = console()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 1)
        await pilot.press("slash", "w", "e", "b", "enter", "down", "down")
        table = app.screen.query_one(PodTable)
        assert table.current is not None
        assert table.current.name == "web-2"
        watch = next(m for m in broker.received if isinstance(m, WatchPods))
        broker.change(watch.id, [pod("web-00"), pod("db-1")], ["web-0"])
        await pilot.pause(0.4)
        assert names(app) == ["web-00", "web-1", "web-2", "web-3", "web-4"]
        assert table.current is not None
        assert table.current.name == "web-2"
        broker.change(watch.id, [], ["web-2"])
        await pilot.pause(0.4)
        assert table.current is not None
        assert table.current.name == "web-3"


async def test_paging_keys_and_the_end_of_a_big_list(console: Build) -> None:
    app, _broker = console()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 2)  # big
        for _ in range(100):
            await pilot.pause(0.05)
            if app.screen.complete:
                break
        await pilot.pause(0.3)
        assert len(names(app)) == 50_000
        table = app.screen.query_one(PodTable)
        await pilot.press("G")
        assert table.current is not None
        assert table.current.name == "api-49999"
        await pilot.press("g", "pagedown")
        assert table.cursor == table.page_rows
        await pilot.press("pageup", "j", "j", "k")
        assert table.cursor == 1
        await pilot.press("slash", "9")  # its time: bench/tui_bench.py
        await pilot.pause()
        assert all("9" in name for name in names(app)[:100])


async def test_pod_details_show_masked_env_and_events(console: Build) -> None:
    app, _broker = console()
    async with app.run_test(size=(120, 48)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 1)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, PodScreen)
        body = str(app.screen.query_one("#pod-detail", Static).render())
        assert "DB_PASSWORD = <secret db-creds/password>" in body
        assert "API_TOKEN = <redacted>" in body
        assert "configmaps web-config" in body
        assert "BackOff" in body
        assert "Back-off restarting" in body
        assert "\x1b" not in body
        assert "\r" not in body
        assert "\u202e" not in body
        assert "[@click=app.quit]pay[/]" in body  # literally
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("escape")
        assert isinstance(app.screen, PodsScreen)


async def test_a_failed_request_is_one_sentence(console: Build) -> None:
    app, _broker = console(Script(namespaces={"prod": ["shop"]}, pods={"shop": [pod("gone-1")]}))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 0)
        await pilot.press("enter")
        await pilot.pause()
        body = str(app.screen.query_one("#pod-detail", Static).render())
        assert body == "pod shop/gone-1 is gone; refresh"


async def test_debug_asks_confirmation_with_a_reason_then_hands_over(console: Build) -> None:
    app, broker = console()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 1)
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("down")  # the sidecar: not debuggable
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, PodScreen)
        await pilot.press("up", "d")
        await pilot.pause()
        assert isinstance(app.screen, DebugConfirmation)
        text = " ".join(str(w.render()) for w in app.screen.query(Static))
        assert "sha256:" in text
        assert "This session is recorded." in text
        assert "1:00:00" in text
        await pilot.press("enter")  # no reason yet
        assert isinstance(app.screen, DebugConfirmation)
        assert "wants a reason" in str(app.screen.query_one("#confirm-error").render())
        await pilot.press(*"INC-42")
        await pilot.press("enter")
        await pilot.pause()
    request = next(m for m in broker.received if isinstance(m, DebugRequest))
    assert (request.pod, request.container, request.reason) == ("db-0", "app", "INC-42")
    assert request.mode == "ephemeral"
    assert not request.privileged
    assert app.return_code == 0


async def test_a_refused_debug_returns_to_the_pod(console: Build) -> None:
    app, broker = console(Script(debug_outcome="refused", reason_required=False))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 1)
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("escape")  # cancel
        assert isinstance(app.screen, PodScreen)
        assert not any(isinstance(m, DebugRequest) for m in broker.received)
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("ctrl+d")
        await pilot.pause()
        assert isinstance(app.screen, PodScreen)
        assert any("image pull failed" in n.message for n in app._notifications)


async def test_progress_is_shown_step_by_step(console: Build) -> None:
    app, _broker = console(Script(reason_required=False, debug_outcome="refused"))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        progress = DebugProgressScreen("shop/db-0/app")
        await app.push_screen(progress)
        progress.step("asking Vault \x1b[2J for a credential")
        progress.step("starting")
        steps = str(progress.query_one("#steps", Static).render())
        assert "asking Vault \ufffd[2J for a credential" in steps
        assert "starting" in steps


async def test_started_after_a_debug_shows_how_it_ended_on_that_pods_list(
    console: Build,
) -> None:
    ended = DebugEnded(
        "prod/shop/web-3", 0, "the debug shell in prod/shop/web-3 ended with exit status 0"
    )
    app, _broker = console(Script(ended=ended))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        assert isinstance(app.screen, PodsScreen)
        table = app.screen.query_one(PodTable)
        assert table.current is not None
        assert table.current.name == "web-3"
        # The broker's sentence, once, capitalised: not wrapped in a second one.
        (said,) = [n.message for n in app._notifications]
        assert said == "The debug shell in prod/shop/web-3 ended with exit status 0"


async def test_help_notices_and_deadlines(console: Build) -> None:
    app, broker = console()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "sort by name" in str(app.screen.query_one(Static).render())
        await pilot.press("q")  # closes the help, does not quit
        assert isinstance(app.screen, NamespacesScreen)
        bar = app.screen.query_one("SessionBar", Static)
        assert "session 1:00:00 left" in str(bar.render())
        assert "idle" not in str(bar.render())
        broker.push(DeadlinesChanged(app.welcome.hard_deadline - 3000, 100.0))
        broker.push(Notice("idle", 60.0, "idle for 14 minutes: the session ends in 1 minute"))
        await pilot.pause()
        assert "session 10:00 left" in str(bar.render())
        assert "idle 1:40 left" in str(bar.render())
        assert any("idle for 14 minutes" in n.message for n in app._notifications)


async def test_a_broker_that_hangs_up_ends_the_console(console: Build) -> None:
    app, broker = console()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        broker.hang_up()
        await pilot.pause()
    assert app.return_code == 1


async def test_a_broker_that_stops_answering_ends_the_console(console: Build) -> None:
    app, _broker = console(Script(silent=True), timeout=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.5)
    assert app.return_code == 1
