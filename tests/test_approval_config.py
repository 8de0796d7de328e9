"""A grant's ``approval`` section: its shape, and the checks of who could ever approve under
it (errors that stop the config loading, warnings ``bastion check-config`` prints)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from conftest import WriteConfig
from test_config import problems

from bastion.approval import Approvers
from bastion.cli.main import main
from bastion.config import load_config
from bastion.config.approval_checks import approval_warnings


def with_approval(approval: dict[str, Any], **grant: Any) -> Any:
    """An edit: the first grant (group oncall: alice) requires ``approval``."""

    def edit(data: dict[str, Any]) -> None:
        data["grants"][0]["approval"] = approval
        data["grants"][0].update(grant)

    return edit


def test_an_approval_section_reaches_the_policy(write_config: WriteConfig) -> None:
    path = write_config(with_approval({"approvers": {"users": ["bob"]}, "expires_after": "15m"}))
    grant = load_config(path).policy().grants[0]
    assert grant.approval is not None
    assert grant.approval.approvers == Approvers(users=frozenset({"bob"}))
    assert grant.approval.expires_after == timedelta(minutes=15)


def test_approval_defaults_to_required_with_ten_minutes_and_can_be_switched_off(
    write_config: WriteConfig,
) -> None:
    path = write_config(with_approval({"approvers": {"groups": ["platform"]}}))
    rule = load_config(path).policy().grants[0].approval
    assert rule is not None
    assert rule.expires_after == timedelta(minutes=10)
    off = write_config(with_approval({"required": False, "approvers": {"groups": ["platform"]}}))
    assert load_config(off).policy().grants[0].approval is None


@pytest.mark.parametrize(
    ("approval", "expected"),
    [
        (
            {"approvers": {}},
            "grants[0].approval.approvers: approvers names nobody: list at least one user or group",
        ),
        (
            {"approvers": {"users": [], "groups": []}},
            "grants[0].approval.approvers: approvers names nobody: list at least one user or group",
        ),
        ({}, "grants[0].approval.approvers: required key is missing"),
        (
            {"approvers": {"users": ["bob"]}, "expires_after": "1s"},
            "grants[0].approval.expires_after: expected a duration from 5s to 1d",
        ),
        (
            {"approvers": {"users": ["bob"]}, "expires_after": "2d"},
            "grants[0].approval.expires_after: expected a duration from 5s to 1d",
        ),
        (
            {"approvers": {"users": ["Bob!"]}},
            "grants[0].approval.approvers.users[0]: 'Bob!' is not a valid user name",
        ),
        (
            {"approvers": {"users": ["bob"]}, "approver": "x"},
            "grants[0].approval.approver: unknown key 'approver'",
        ),
    ],
)
def test_a_malformed_approval_section_is_refused_with_the_key(
    write_config: WriteConfig, approval: dict[str, Any], expected: str
) -> None:
    found = problems(write_config(with_approval(approval)))
    assert len(found) == 1
    assert expected in found[0], found


def test_approvers_who_are_nobody_are_an_error(write_config: WriteConfig) -> None:
    found = problems(write_config(with_approval({"approvers": {"groups": ["no-such-group"]}})))
    assert len(found) == 1
    assert found[0].endswith(
        "grants[0].approval.approvers: no configured user can approve requests under this "
        "grant: name existing users, or groups that have members"
    )


def test_an_unknown_approver_is_an_error(write_config: WriteConfig) -> None:
    found = problems(write_config(with_approval({"approvers": {"users": ["bob", "zed"]}})))
    assert [line.split(": ", 1)[1] for line in found] == [
        "grants[0].approval.approvers.users[1]: no user named 'zed'"
    ]


def test_a_grant_only_its_requester_could_approve_is_an_error(write_config: WriteConfig) -> None:
    """Nobody approves their own request: alice alone asks and alone approves."""
    edit = with_approval({"approvers": {"users": ["alice"]}}, groups=[], users=["alice"])
    found = problems(write_config(edit))
    assert len(found) == 1
    assert found[0].endswith(
        "grants[0].approval.approvers: alice is this grant's only approver and its only "
        "requester, and nobody approves their own request: add another approver"
    )


def test_self_only_approvers_and_peer_approval_are_warnings(write_config: WriteConfig) -> None:
    # Requesters alice (oncall) and bob (platform); approvers: oncall, that is alice alone.
    edit = with_approval({"approvers": {"groups": ["oncall"]}}, groups=["oncall", "platform"])
    config = load_config(write_config(edit))
    assert approval_warnings(config) == [
        "grants[0] (oncall): requests by alice can never be approved: they are their own only "
        "approver",
        "grants[0] (oncall): every approver (alice) may also request under this grant, so "
        "requesters approve one another",
    ]


def test_check_config_prints_the_warnings_and_still_succeeds(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    peers = with_approval({"approvers": {"groups": ["oncall", "platform"]}},
                          groups=["oncall", "platform"])  # fmt: skip
    path = write_config(peers)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"ok: {path}")
    assert out[1].startswith("guard: sensitive_paths: ")  # the guard's default rule
    assert out[2:] == [
        f"warning: {path}: grants[0] (oncall): every approver (alice, bob) may also request "
        "under this grant, so requesters approve one another"
    ]


def test_separate_approvers_give_no_warning(write_config: WriteConfig) -> None:
    config = load_config(write_config(with_approval({"approvers": {"users": ["bob"]}})))
    assert approval_warnings(config) == []
