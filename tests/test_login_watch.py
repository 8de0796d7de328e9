"""The guard's login rules behind the front door: their memory (``SourceHistory``, SQLite),
what ``LoginWatch`` does for each action (with small fakes of the audit log, the alert sender
and the notice feed), what ``check-config`` says about the ``guard`` section, and how a bad
action is refused. Over real SSH: tests/front_door/test_login_guard_openssh.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import WriteConfig

from bastion.cli.main import main
from bastion.config import load_config
from bastion.config.guard import Guard
from bastion.config.guard_checks import guard_lines, guard_warnings, most_failures_from_one_source
from bastion.errors import ConfigError
from bastion.ssh.login_watch import WARN_FOR, LoginWatch
from bastion.state.sources import SourceHistory


# ------------------------------------------------------------------------------ memory
def test_a_new_address_is_remembered_unless_its_login_is_ended(tmp_path: Path) -> None:
    history = SourceHistory(tmp_path / "s.db")
    assert history.remember("alice", "192.0.2.1", 1.0, learn=False) == (True, False)  # first
    assert history.remember("alice", "192.0.2.1", 2.0) == (False, True)
    assert history.remember("alice", "192.0.2.2", 3.0, learn=False) == (True, True)
    assert history.remember("alice", "192.0.2.2", 4.0, learn=False) == (True, True)  # still
    assert history.allow("alice", "192.0.2.2", 5.0)
    assert not history.allow("alice", "192.0.2.2", 6.0)
    assert history.remember("alice", "192.0.2.2", 7.0, learn=False) == (False, True)
    assert history.remember("alice", "192.0.2.3", 8.0) == (True, True)
    assert history.remember("alice", "192.0.2.3", 9.0, learn=False) == (False, True)
    history.close()


def test_failures_count_the_window_and_name_the_users_tried(tmp_path: Path) -> None:
    history = SourceHistory(tmp_path / "s.db")
    assert history.failed("192.0.2.9", "root", 10.0, 60.0) == (1, ["root"])
    assert history.failed("192.0.2.8", "root", 11.0, 60.0) == (1, ["root"])
    assert history.failed("192.0.2.9", "bob", 12.0, 60.0) == (2, ["root", "bob"])
    assert history.failed("192.0.2.9", "root", 13.0, 60.0) == (3, ["root", "bob"])
    assert history.failed("192.0.2.9", "carol", 71.0, 60.0) == (3, ["bob", "root", "carol"])
    assert history.failed("192.0.2.9", "carol", 200.0, 60.0) == (1, ["carol"])
    history.close()


def test_a_block_lasts_until_its_end_and_a_later_one_wins(tmp_path: Path) -> None:
    history = SourceHistory(tmp_path / "s.db")
    assert history.blocked_until("192.0.2.9", 0.0) is None
    history.block("192.0.2.9", 10.0, 100.0)
    history.block("192.0.2.9", 20.0, 50.0)  # an earlier end does not shorten it
    assert history.blocked_until("192.0.2.9", 99.0) == 100.0
    assert history.blocked_until("192.0.2.8", 99.0) is None
    assert history.blocked_until("192.0.2.9", 100.0) is None
    history.close()


# ------------------------------------------------------------------------------ actions
class Recorder:
    """The audit log, alert sender and notice feed, as far as the login watch uses them."""

    def __init__(self, *, audit_works: bool = True) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.alerts: list[dict[str, Any]] = []
        self.notices: list[dict[str, Any]] = []
        self.audit_works = audit_works

    async def audit(self, event: str, **fields: Any) -> bool:
        if self.audit_works:
            self.events.append((event, fields))
        return self.audit_works

    def send(self, event: str, **fields: Any) -> None:
        self.alerts.append({"event": event, **fields})

    async def post(self, kind: str, **fields: Any) -> str:
        self.notices.append({"kind": kind, **fields})
        return "n1"

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


def watch(tmp_path: Path, rules: dict[str, Any], seen: Recorder, now: list[float]) -> LoginWatch:
    return LoginWatch(
        Guard.model_validate(rules),
        lambda: SourceHistory(tmp_path / "sources.db"),
        audit=seen.audit,
        alerts=seen,  # type: ignore[arg-type]
        notices=seen,  # type: ignore[arg-type]
        clock=lambda: now[0],
    )


async def test_new_source_end_ends_every_login_from_it_until_allowed(tmp_path: Path) -> None:
    seen, now = Recorder(), [1000.0]
    login = watch(tmp_path, {"new_source": {"action": "end"}}, seen, now)
    assert await login.succeeded("alice", "192.0.2.1", "c1") is None  # the first address
    ended = await login.succeeded("alice", "192.0.2.2", "c2")
    assert ended is not None
    assert "192.0.2.2 is a new address for alice" in ended
    assert seen.names() == ["guard.triggered", "login.ended"]
    assert seen.events[0][1]["action"] == "end"
    assert (seen.events[1][1]["actor"], seen.events[1][1]["connection"]) == ("alice", "c2")
    assert await login.succeeded("alice", "192.0.2.2", "c3") is not None  # not learnt
    history = SourceHistory(tmp_path / "sources.db")
    assert history.allow("alice", "192.0.2.2", now[0])
    history.close()
    assert await login.succeeded("alice", "192.0.2.2", "c4") is None
    assert not seen.alerts
    assert not seen.notices
    login.close()


async def test_a_failed_database_lets_logins_through_and_says_what_was_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen, now = Recorder(), [1000.0]
    rules = {"new_source": {"action": "end"}, "failures_from_source": {"count": 2, "action": "end"}}
    login = watch(tmp_path, rules, seen, now)
    login.close()  # every statement now fails as a lost database would
    assert await login.refusal("192.0.2.9") is None
    assert await login.succeeded("alice", "192.0.2.1", "c1") is None
    await login.failed("bob", "192.0.2.9", "c2")
    skipped = [r.getMessage() for r in caplog.records if "sources database failed" in r.message]
    assert [m.split("; ", 1)[1].split(":", 1)[0] for m in skipped] == [
        "blocked sources not checked",
        "new_source not checked",
        "failures not counted",
    ]
    assert not seen.events


async def test_new_source_end_ends_even_when_its_trigger_is_not_audited(tmp_path: Path) -> None:
    seen, now = Recorder(), [1000.0]
    login = watch(tmp_path, {"new_source": {"action": "end"}}, seen, now)
    await login.succeeded("alice", "192.0.2.1", "c1")
    seen.audit_works = False
    assert await login.succeeded("alice", "192.0.2.2", "c2") is not None
    login.close()


async def test_new_source_warn_puts_a_banner_up_for_that_user(tmp_path: Path) -> None:
    seen, now = Recorder(), [1000.0]
    login = watch(tmp_path, {"new_source": {"action": "warn"}}, seen, now)
    await login.succeeded("alice", "192.0.2.1", "c1")
    assert await login.succeeded("alice", "192.0.2.2", "c2") is None
    (notice,) = seen.notices
    assert (notice["kind"], notice["audience"], notice["expires_at"]) == (
        "guard",
        ("alice",),
        1000.0 + WARN_FOR,
    )
    assert "a login for alice from 192.0.2.2" in notice["text"]
    assert await login.succeeded("alice", "192.0.2.2", "c3") is None  # learnt: told once
    assert len(seen.notices) == 1
    assert not seen.alerts
    login.close()


async def test_new_source_alert_goes_to_the_alert_sender(tmp_path: Path) -> None:
    seen, now = Recorder(), [1000.0]
    login = watch(tmp_path, {"new_source": {"action": "alert"}}, seen, now)
    await login.succeeded("alice", "192.0.2.1", "c1")
    assert await login.succeeded("alice", "192.0.2.2", "c2") is None
    (alert,) = seen.alerts
    assert (alert["alert"], alert["rule"], alert["source"]) == ("guard", "new_source", "192.0.2.2")
    assert not seen.notices
    login.close()


async def test_failures_end_blocks_the_address_for_the_window(tmp_path: Path) -> None:
    seen, now = Recorder(), [1000.0]
    rules = {"failures_from_source": {"count": 3, "window": "10m", "action": "end"}}
    login = watch(tmp_path, rules, seen, now)
    for user in ("root", "admin"):
        await login.failed(user, "192.0.2.9", "c")
    assert await login.refusal("192.0.2.9") is None
    await login.failed("root", "192.0.2.9", "c")
    assert seen.names() == ["guard.triggered"]
    refused = await login.refusal("192.0.2.9")
    assert refused is not None
    assert "logins from 192.0.2.9 are refused until 00:26:40 UTC" in refused
    assert await login.refusal("192.0.2.8") is None
    now[0] += 300
    await login.failed("root", "192.0.2.9", "c")  # a refused login fails again: 4 in the window
    assert seen.names() == ["guard.triggered"]  # one trigger
    now[0] += 599
    assert await login.refusal("192.0.2.9") is not None  # refused until 600 s after the last
    now[0] += 1
    assert await login.refusal("192.0.2.9") is None
    login.close()


async def test_failures_warn_tells_each_user_name_tried(tmp_path: Path) -> None:
    seen, now = Recorder(), [1000.0]
    rules = {"failures_from_source": {"count": 3, "window": "10m", "action": "warn"}}
    login = watch(tmp_path, rules, seen, now)
    for user in ("bob", "", "bob"):
        await login.failed(user, "192.0.2.9", "c")
    (notice,) = seen.notices
    assert (notice["user"], notice["audience"], notice["expires_at"]) == (
        "192.0.2.9",
        ("bob",),  # a login without a user name reaches nobody's console
        1600.0,
    )
    assert "3 failed logins from 192.0.2.9 within 10m" in notice["text"]
    assert await login.refusal("192.0.2.9") is None  # warn never blocks
    login.close()


# ------------------------------------------------------------------------------ config
def test_an_unknown_action_is_one_line_naming_the_key(write_config: WriteConfig) -> None:
    path = write_config(lambda d: d.update(guard={"new_source": {"action": "refuse"}}))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.message.splitlines()[1:]
    assert "guard.new_source.action" in problem
    assert "'warn', 'alert' or 'end'" in problem


def test_check_config_reports_the_rules_and_warns_on_rules_that_cannot_fire(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(data: dict[str, Any]) -> None:
        for grant in data["grants"]:
            grant["scopes"] = ["processes"]
        data["limits"] = {"connections_per_source": 2, "connection_window": "10s"}
        data["guard"] = {
            "output_volume": {"bytes": 4096, "window": "30s", "action": "end"},
            "sensitive_paths": None,
            "new_source": {"action": "end"},
            "failures_from_source": {"count": 100, "window": "1m", "action": "end"},
        }

    path = write_config(edit)
    config = load_config(path)
    assert most_failures_from_one_source(config) == 2 * 7 * 3
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:4] == [
        "guard: output_volume: more than 4096 bytes of shell output within 30s -> end",
        "guard: new_source: a login from an address new for its user -> end (the login is "
        "ended; allow an address with: bastion user allow-source USER ADDRESS)",
        "guard: failures_from_source: 100 failed logins from one address within 1m -> end "
        "(the address is refused for 1m)",
    ]
    warnings = [line.removeprefix(f"warning: {path}: ") for line in out[4:]]
    assert warnings == guard_warnings(config)
    assert warnings[0].startswith("guard.output_volume can never fire: no grant has scope")
    assert warnings[1].startswith("guard.failures_from_source.count 100 can never be reached")
    assert "at most 42 logins within 1m" in warnings[1]
    assert warnings[2].startswith("guard.sensitive_paths is off")


def test_check_config_says_where_guard_alerts_go(write_config: WriteConfig) -> None:
    path = write_config()
    config = load_config(path)
    assert guard_lines(config) == [
        "guard: sensitive_paths: a command naming one of 5 path glob(s) (/var/run/secrets/*, "
        "/run/secrets/*, /proc/*/root/var/run/secrets/*, /proc/*/root/run/secrets/*, "
        "/proc/*/environ) -> warn"
    ]
    assert guard_warnings(config) == []
    off = config.model_copy(update={"guard": Guard(sensitive_paths=None)})
    assert guard_lines(off) == ["guard: no rule is on"]
