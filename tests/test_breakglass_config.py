"""The ``break_glass`` section, its elevated grant in the policy, what ``check-config`` says
about it, and ``bastion breakglass issue|codes`` on a real state directory."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import IMAGE, WriteConfig, secret_file

from bastion.breakglass.code_key import code_key_path, load_or_create_code_key
from bastion.breakglass.codes import code_digest, normalize_code
from bastion.config import load_config
from bastion.errors import ConfigError, SecretFileError
from bastion.policy import DebugRequest, DebugTarget, Mode, Principal, decide
from bastion.state.breakglass_codes import SqliteBreakGlassCodes

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def section(root: Path) -> dict[str, Any]:
    (root / "ca" / "siem.pem").write_bytes((root / "ca" / "prod.pem").read_bytes())
    return {
        "grant": {
            "clusters": ["prod-*"],
            "namespaces": ["*"],
            "modes": ["ephemeral", "copy"],
            "images": [IMAGE],
            "vault_role": "debug-break-glass",
        },
        "max_session": "20m",
        "alerts": {
            "webhook": {"url": "https://alerts.example.com/bg", "ca_file": "ca/siem.pem"},
            "syslog": {"address": "siem.example.com:6514", "ca_file": "ca/siem.pem"},
        },
    }


def with_break_glass(root: Path, **changes: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["users"][0]["break_glass"] = True  # alice
        data["break_glass"] = section(root) | changes

    return edit


def errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [line.strip().removeprefix(f"{path}:") for line in caught.value.message.splitlines()[1:]]


def test_the_section_loads_with_its_defaults(write_config: WriteConfig, tmp_path: Path) -> None:
    config = load_config(write_config(with_break_glass(tmp_path)))
    section = config.break_glass
    assert section is not None
    assert section.max_session == timedelta(minutes=20)
    assert section.idle_timeout == timedelta(minutes=10)
    assert section.min_reason_length == 20
    assert section.grant.modes == [Mode.EPHEMERAL, Mode.COPY]
    assert section.alerts.syslog is not None
    assert section.alerts.syslog.host_port() == ("siem.example.com", 6514)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"max_session": "5h"}, "break_glass.max_session: expected a duration from 5s to 4h"),
        ({"max_session": "2s"}, "break_glass.max_session: expected a duration from 5s to 4h"),
        ({"idle_timeout": "30m"}, "idle_timeout cannot be longer than max_session"),
        ({"min_reason_length": 3}, "break_glass.min_reason_length"),
        ({"alerts": {}}, "break-glass alerts need a destination"),
        (
            {
                "grant": {
                    "clusters": ["*"],
                    "namespaces": ["*"],
                    "images": [IMAGE],
                    "vault_role": "r",
                    "users": ["bob"],
                }
            },
            "break_glass.grant.users",
        ),
        (
            {
                "grant": {
                    "clusters": ["*"],
                    "namespaces": ["*"],
                    "images": ["debian:12"],
                    "vault_role": "r",
                }
            },
            "break_glass.grant.images[0]",
        ),
        (
            {
                "grant": {
                    "clusters": ["staging"],
                    "namespaces": ["*"],
                    "images": [IMAGE],
                    "vault_role": "r",
                }
            },
            "'staging' matches no cluster",
        ),
        (
            {"alerts": {"webhook": {"url": "http://alerts.example.com", "ca_file": "ca/siem.pem"}}},
            "must be an https:// URL",
        ),
    ],
)
def test_mistakes_in_the_section_are_named(
    write_config: WriteConfig, tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    found = errors(write_config(with_break_glass(tmp_path, **changes)))
    assert any(expected in line for line in found), found


def test_a_break_glass_user_needs_the_section(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["users"][1]["break_glass"] = True

    (line,) = errors(write_config(edit))
    assert "users[1].break_glass: user 'bob' is a break-glass account but the config has no " in (
        line
    )


def test_alert_files_are_checked_like_the_others(write_config: WriteConfig, tmp_path: Path) -> None:
    token = secret_file(tmp_path / "alert-token", mode=0o644)
    changes = {
        "alerts": {
            "webhook": {
                "url": "https://a.example.com",
                "ca_file": "ca/nope.pem",
                "token_file": str(token),
            },
        }
    }
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(with_break_glass(tmp_path, **changes)))
    assert not isinstance(caught.value, SecretFileError)  # a CA file is wrong too
    message = caught.value.message
    assert "break_glass.alerts.webhook.token_file: secret file" in message
    assert "has mode 0644" in message
    assert "break_glass.alerts.webhook.ca_file: CA file" in message


def test_only_a_break_glass_principal_gets_the_elevated_grant(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    config = load_config(write_config(with_break_glass(tmp_path)))
    policy = config.policy()
    target = DebugTarget("prod-eu", "kube-system", "etcd-0", {"tier": "control-plane"})
    request = DebugRequest(Mode.COPY, IMAGE)
    alice = config.principal("alice")
    assert alice is not None
    assert alice.break_glass
    allowed = decide(policy, alice, target, request, NOW)
    assert allowed.allowed, allowed.reason
    assert allowed.grants == ("break-glass",)
    assert allowed.limits is not None
    assert allowed.limits.record_input  # forced on
    assert allowed.limits.max_session == timedelta(minutes=20)
    assert allowed.limits.vault_role == "debug-break-glass"
    # A break-glass session has that grant and no other: not alice's group grant.
    assert [g.name for g in policy.grants_for(alice)] == ["break-glass"]
    # The same account's groups without the glass broken, and everyone else, never get it.
    unbroken = Principal("alice", frozenset({"oncall"}))
    assert "break-glass" not in [g.name for g in policy.grants_for(unbroken)]
    assert not decide(policy, unbroken, target, request, NOW).allowed
    bob = config.principal("bob")
    assert bob is not None
    assert "break-glass" not in decide(policy, bob, target, request, NOW).grants


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_check_config_warns_about_an_account_that_cannot_break_the_glass(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    path = write_config(with_break_glass(tmp_path))
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2:] == [
        f"warning: {path}: break_glass is configured but there is no recording section: a "
        "break-glass "
        "session, which must be recorded, cannot start",
        f"warning: {path}: break-glass account alice has no codes issued, so it cannot log in; "
        "run: "
        "bastion breakglass issue alice --count 5",
    ]
    assert not (tmp_path / "state" / "logins.db").exists()  # checking created nothing


def test_issue_prints_codes_once_stores_digests_and_revokes_the_old_batch(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    path = write_config(with_break_glass(tmp_path))
    first = run_cli("breakglass", "issue", "alice", "--count", "3", "--config", str(path))
    assert first.returncode == 0, first.stderr
    assert "Issued 3 break-glass codes for alice" in first.stdout
    assert "No earlier code was left to revoke." in first.stdout
    printed = [line.strip() for line in first.stdout.splitlines() if line.startswith("  ")]
    assert len(printed) == 3
    assert all(normalize_code(code) == code for code in printed)

    config = load_config(path)
    key = load_or_create_code_key(config)
    assert code_key_path(config).stat().st_mode & 0o777 == 0o600
    store = SqliteBreakGlassCodes(config.login_db_path())
    assert store.use("alice", code_digest(key, "alice", printed[0]), now=1.0, connection="c")
    store.close()

    second = run_cli("breakglass", "issue", "alice", "--count", "2", "--config", str(path))
    assert second.returncode == 0, second.stderr
    assert "revokes the old one: its 2 unused code(s) no longer work" in second.stdout
    store = SqliteBreakGlassCodes(config.login_db_path())
    assert not store.use("alice", code_digest(key, "alice", printed[1]), now=2.0, connection="c")
    store.close()

    counted = run_cli("breakglass", "codes", "alice", "--config", str(path))
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.startswith("alice: 2 of 2 codes left (batch ")
    for code in printed:
        assert code not in counted.stdout

    log = (tmp_path / "state" / "audit.jsonl").read_text()
    events = [json.loads(line) for line in log.splitlines()]
    issued = [e for e in events if e["event"] == "breakglass.codes_issued"]
    assert [(e["user"], e["count"], e["revoked"]) for e in issued] == [
        ("alice", 3, 0),
        ("alice", 2, 2),
    ]
    assert not any(code in json.dumps(events) for code in printed)
    ok = run_cli("check-config", str(path))
    assert "alice has no codes" not in ok.stdout


def test_only_break_glass_accounts_get_codes(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config(with_break_glass(tmp_path))
    result = run_cli("breakglass", "issue", "bob", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith("bastion: bob is not a break-glass account")
    assert "break_glass: true" in result.stderr
    result = run_cli("breakglass", "issue", "alice", "--count", "21", "--config", str(path))
    assert result.returncode == 1
    assert "--count must be from 1 to 20" in result.stderr
    assert not (tmp_path / "state" / "logins.db").exists()
