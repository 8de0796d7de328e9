"""Four-eyes approval in the console, driven with Textual's pilot against the fake broker:
the count in the top line, ``a`` and its list, deciding (y, n with a reason), a refusal from
the broker, and one's own request followed from "needs approval" to the debug shell."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from textual.widgets import Input, OptionList, Static

from bastion.console_protocol import ApprovalItem, DebugRequest, DecideApproval, ListApprovals
from tests.tui.fake_broker import IMAGE, FakeBroker, Script
from tests.tui.test_console_app import open_namespace
from tui.app import ConsoleApp
from tui.approvals import ApprovalsScreen, AwaitingApprovalScreen, DecisionScreen
from tui.debug_screens import DebugConfirmation, DebugProgressScreen
from tui.screens import NamespacesScreen, PodScreen
from tui.session_bar import SessionBar

from .conftest import NOW

Build = Callable[..., tuple[ConsoleApp, FakeBroker]]


def item(request_id: str, **overrides: object) -> ApprovalItem:
    fields: dict[str, object] = {
        "id": request_id, "requester": "bob", "cluster": "prod", "namespace": "shop",
        "pod": "db-0", "container": "app", "mode": "ephemeral", "image": IMAGE,
        "run_as_user": 65532, "duration_seconds": 1800.0,
        "reason": "INC-9 \x1b]0;owned\x07 [@click=app.quit]x[/]", "status": "pending",
        "expires_at": NOW + 541, "approvers": "groups leads", "decided_by": "",
        "decision_reason": "", "mine": False, "can_decide": True,
    }  # fmt: skip
    fields.update(overrides)
    return ApprovalItem(**fields)  # type: ignore[arg-type]


def bar(app: ConsoleApp) -> str:
    return str(app.screen.query_one(SessionBar).render())


def notes(app: ConsoleApp) -> str:
    return " ".join(n.message for n in app._notifications)


def decisions(broker: FakeBroker) -> list[DecideApproval]:
    return [m for m in broker.received if isinstance(m, DecideApproval)]


async def test_the_count_to_approve_is_in_the_top_line_and_a_lists_them(console: Build) -> None:
    requests = [
        item("aaaa11112222"),
        item("bbbb11112222", requester="carol", pod="web-1"),
        item("mine11112222", requester="alice", mine=True, can_decide=False),
    ]
    app, broker = console(Script(approvals=requests))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, NamespacesScreen)
        assert "to approve" not in bar(app)  # not asked yet: the first poll comes later
        app.poll_approvals()
        await pilot.pause()
        assert "2 to approve (a)" in bar(app)
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ApprovalsScreen)
        options = app.screen.query_one("#requests", OptionList)
        lines = [str(options.get_option_at_index(n).prompt) for n in range(options.option_count)]
        assert len(lines) == 3
        assert lines[0].startswith("aaaa11112222  bob  prod/shop/db-0 (app)  ephemeral 30:00")
        assert "pending 9:01 left" in lines[0]
        assert lines[2].endswith("(yours)")
        detail = str(app.screen.query_one("#request-detail", Static).render())
        assert "from       bob" in detail
        assert "\x1b" not in detail  # the requester's reason, neutralised
        assert "y approve, n deny" in detail
        await pilot.press("down", "down")
        detail = str(app.screen.query_one("#request-detail", Static).render())
        assert "Your request: another approver must decide it." in detail
        await pilot.press("escape")
        assert isinstance(app.screen, NamespacesScreen)
    assert sum(isinstance(m, ListApprovals) for m in broker.received) >= 2


async def test_y_approves_with_an_optional_reason(console: Build) -> None:
    app, broker = console(Script(approvals=[item("aaaa11112222")]))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert isinstance(app.screen, DecisionScreen)
        title = " ".join(str(w.render()) for w in app.screen.query(Static))
        assert "Approve request aaaa11112222 of bob?" in title
        await pilot.press("enter")  # no reason: fine for an approval
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, ApprovalsScreen)
        assert decisions(broker) == [DecideApproval(decisions(broker)[0].id, "aaaa11112222",
                                                    True, "")]  # fmt: skip
        assert "Request aaaa11112222 approved" in notes(app)
        detail = str(app.screen.query_one("#request-detail", Static).render())
        assert "approved" in detail
        assert "decided by alice" in detail


async def test_n_denies_and_wants_a_reason(console: Build) -> None:
    app, broker = console(Script(approvals=[item("aaaa11112222")]))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, DecisionScreen)
        await pilot.press("enter")
        assert isinstance(app.screen, DecisionScreen)
        error = str(app.screen.query_one("#decision-error").render())
        assert "A denial needs a reason" in error
        assert decisions(broker) == []
        await pilot.press(*"freeze")
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()
    [decided] = decisions(broker)
    assert (decided.request_id, decided.approve, decided.reason) == ("aaaa11112222", False,
                                                                     "freeze")  # fmt: skip


async def test_escape_leaves_a_decision_unmade(console: Build) -> None:
    app, broker = console(Script(approvals=[item("aaaa11112222")]))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ApprovalsScreen)
    assert decisions(broker) == []


async def test_the_brokers_refusal_of_ones_own_request_is_shown(console: Build) -> None:
    """The console sends the decision even for one's own request: the broker is the one
    that refuses it, and records that it did."""
    mine = item("mine11112222", requester="alice", mine=True, can_decide=False)
    refusal = "request mine11112222 is your own, and nobody approves their own request"
    app, broker = console(Script(approvals=[mine], refuse={"mine11112222": refusal}))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("y", "enter")
        await pilot.pause()
        await pilot.pause()
        assert refusal in notes(app)
        assert isinstance(app.screen, ApprovalsScreen)
    assert [d.request_id for d in decisions(broker)] == ["mine11112222"]


async def test_a_debug_that_needs_approval_is_followed_until_approved_then_started(
    console: Build,
) -> None:
    mine = item("3f2a9c0d81e4", requester="alice", mine=True, can_decide=False,
                reason="INC-42 db locks")  # fmt: skip
    script = Script(
        debug_outcome="approval",
        reason_required=False,
        approval_needed="groups leads",
        approvals=[mine],
    )
    app, broker = console(script)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 1)
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, DebugConfirmation)
        text = " ".join(str(w.render()) for w in app.screen.query(Static))
        assert "Needs another operator's approval (groups leads)" in text
        await pilot.press("ctrl+d")
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, AwaitingApprovalScreen)
        state = str(app.screen.query_one("#awaiting-state", Static).render())
        assert "status     pending 9:01 left" in state
        await pilot.press("enter")  # not approved yet
        await pilot.pause()
        assert isinstance(app.screen, AwaitingApprovalScreen)
        assert "not approved (yet)" in notes(app)
        assert sum(isinstance(m, DebugRequest) for m in broker.received) == 1

        # Approved by carol: the broker now spends the approval and starts the debug.
        script.approvals = [replace(mine, status="approved", decided_by="carol",
                                    decision_reason="go", expires_at=NOW + 590)]  # fmt: skip
        script.debug_outcome = "handover"
        app.poll_approvals()
        await pilot.pause()
        state = str(app.screen.query_one("#awaiting-state", Static).render())
        assert "decided by carol: go" in state
        assert "Enter starts the debug shell" in state
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()
    sent = [m for m in broker.received if isinstance(m, DebugRequest)]
    assert len(sent) == 2
    again = sent[1]
    assert (again.cluster, again.namespace, again.pod, again.container) == (
        "prod", "shop", "db-0", "app",
    )  # fmt: skip
    assert (again.mode, again.image, again.run_as_user, again.reason) == (
        "ephemeral", IMAGE, 65532, "INC-42 db locks",
    )  # fmt: skip
    assert app.return_code == 0  # the fake hands over to the shell


async def test_escape_closes_the_wait_and_a_finds_the_request_again(console: Build) -> None:
    mine = item("3f2a9c0d81e4", requester="alice", mine=True, can_decide=False)
    app, _broker = console(Script(debug_outcome="approval", reason_required=False,
                                  approvals=[mine]))  # fmt: skip
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await open_namespace(pilot, app, 1)
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("ctrl+d")
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, AwaitingApprovalScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, PodScreen)
        assert not isinstance(app.screen, DebugProgressScreen)
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ApprovalsScreen)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, AwaitingApprovalScreen)
        assert not app.screen.query(Input)


async def test_the_requester_hears_of_the_decision_wherever_they_are(console: Build) -> None:
    mine = item("3f2a9c0d81e4", requester="alice", mine=True, can_decide=False)
    theirs = item("aaaa11112222")
    script = Script(approvals=[mine, theirs])
    app, _broker = console(script)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        app.poll_approvals()
        await pilot.pause()
        assert "Your request" not in notes(app)
        script.approvals = [
            replace(mine, status="denied", decided_by="carol", decision_reason="freeze"),
            replace(theirs, status="approved", decided_by="dave", can_decide=False),
        ]
        app.poll_approvals()
        await pilot.pause()
        assert isinstance(app.screen, NamespacesScreen)
        assert "Your request 3f2a9c0d81e4 for prod/shop/db-0 was denied by carol: freeze." in (
            notes(app)
        )
        assert "aaaa11112222" not in notes(app)  # not alice's request
        app.poll_approvals()
        await pilot.pause()
        assert notes(app).count("Your request") == 1  # told once
