"""``bastion keys list|rotate`` and the key checks of ``check-config``: what is shown, which
combinations are refused before anything changes, audit before action, and the warnings
about old keys."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import WriteConfig

from bastion.audit.log import AUDIT_SIGNING_KEY
from bastion.cli.main import main
from bastion.config import load_config
from bastion.keys.host import next_path, read_host_key
from bastion.keys.registry import KeyStore
from bastion.keys.rotate import adopt_keys
from bastion.recording.key_files import load_or_create_signing_key
from bastion.ssh.host_key import load_or_create_host_key


@pytest.fixture
def config_path(write_config: WriteConfig, tmp_path: Path) -> Path:
    path = write_config()
    load_or_create_host_key(tmp_path / "host_ed25519")
    (tmp_path / "state").mkdir(mode=0o700)
    return path


def keys(config_path: Path, *args: str) -> int:
    return main(["keys", *args, "--config", str(config_path)])


def listed(config_path: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert keys(config_path, "list", "--json") == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_list_shows_each_key_its_state_and_age(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host_key = tmp_path / "host_ed25519"
    day_old = time.time() - 86400
    os.utime(host_key, (day_old, day_old))
    # What a worker's start does: make the checkpoint key, record the keys in use.
    load_or_create_signing_key(tmp_path / "state", AUDIT_SIGNING_KEY)
    adopt_keys(load_config(config_path, check_files=False), time.time())
    rows = listed(config_path, capsys)
    [host] = [r for r in rows if r["kind"] == "host"]
    active = read_host_key(host_key)
    assert active is not None
    assert (host["fingerprint"], host["state"], host["algorithm"]) == (
        active.fingerprint,
        "active",
        "ssh-ed25519",
    )
    assert 86400 <= host["age_seconds"] < 86400 + 60  # dated by its file
    assert [r["state"] for r in rows if r["kind"] == "checkpoint"] == ["active"]

    assert keys(config_path, "rotate", "--kind", "host", "--overlap", "2d") == 0
    rows = listed(config_path, capsys)
    hosts = {r["state"]: r for r in rows if r["kind"] == "host"}
    assert set(hosts) == {"retiring", "next"}
    assert hosts["retiring"]["fingerprint"] == active.fingerprint
    assert hosts["retiring"]["retire_at"] is not None
    assert hosts["next"]["age_seconds"] < 60

    assert keys(config_path, "rotate", "--kind", "host", "--finish") == 0
    rows = listed(config_path, capsys)
    hosts = {r["state"]: r for r in rows if r["kind"] == "host"}
    assert set(hosts) == {"active", "retired"}
    assert hosts["retired"]["fingerprint"] == active.fingerprint
    assert hosts["retired"]["retired_at"] is not None

    capsys.readouterr()
    assert keys(config_path, "list") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["KIND", "ALGORITHM", "FINGERPRINT", "STATE", "AGE", "NOTE"]
    assert any(line.startswith("host ") and " retired " in line for line in table)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "checkpoint", "--finish"], "--finish finishes a host key rotation"),
        (["--kind", "host", "--finish", "--overlap", "1d"], "--overlap applies to a new host"),
        (["--kind", "checkpoint", "--overlap", "1d"], "--overlap applies to a new host"),
        (["--kind", "host", "--overlap", "soon"], "--overlap: expected a duration such as"),
        (["--kind", "recording-recipient"], "give the new auditors' public key with"),
        (["--kind", "host", "--recipient", "x25519:AAAA"], "--recipient is the new auditors"),
        (["--kind", "recording-recipient", "--recipient", "x25519:AAAA"], "is 32 bytes"),
        (["--kind", "recording-recipient", "--recipient", "/nonexistent.pub"], "neither an x25519"),
    ],
)
def test_nonsense_is_refused_before_anything_changes(
    config_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    assert keys(config_path, "rotate", *args) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "state" / "audit.jsonl").exists()
    assert not next_path(tmp_path / "host_ed25519").exists()


def test_finish_without_a_rotation_under_way_says_how_to_start_one(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert keys(config_path, "rotate", "--kind", "host", "--finish") == 1
    err = capsys.readouterr().err
    assert "no host key rotation is under way" in err
    assert "bastion keys rotate --kind host" in err


def test_a_second_host_rotation_waits_for_the_first(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert keys(config_path, "rotate", "--kind", "host") == 0
    assert keys(config_path, "rotate", "--kind", "host") == 1
    err = capsys.readouterr().err
    assert "a host key rotation is already under way" in err
    assert "--finish" in err


def test_no_rotation_without_its_audit_event(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log the bastion refuses to continue (its head says it was cut) refuses the
    rotation, and nothing changes: no next key, no registry, the same key files."""
    state = tmp_path / "state"
    (state / "audit.jsonl").write_bytes(b"")
    (state / "audit.jsonl.head").write_bytes(json.dumps({"seq": 9, "hash": "0" * 64}).encode())
    before = (tmp_path / "host_ed25519").read_bytes()
    assert keys(config_path, "rotate", "--kind", "host") == 1
    assert "it was cut or its last line replaced" in capsys.readouterr().err
    assert not next_path(tmp_path / "host_ed25519").exists()
    assert (tmp_path / "host_ed25519").read_bytes() == before
    assert KeyStore(state).read().keys == ()
    assert keys(config_path, "rotate", "--kind", "recording-signing") == 1
    assert not (state / "recording-signing.next.key").exists()


def test_check_config_warns_about_keys_older_than_max_age(
    write_config: WriteConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["keys"] = {"max_age": "30d"}

    path = write_config(edit)
    host_key = tmp_path / "host_ed25519"
    load_or_create_host_key(host_key)
    old = time.time() - 40 * 86400
    os.utime(host_key, (old, old))
    assert main(["check-config", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    fingerprint = read_host_key(host_key).fingerprint  # type: ignore[union-attr]
    warning = (
        f"warning: {path}: the host key {fingerprint} is 40d old, older than keys.max_age "
        "(30d): rotate it with 'bastion keys rotate --kind host'"
    )
    assert [line for line in lines if line.startswith("warning:")] == [warning]


@pytest.mark.parametrize(
    ("keys_section", "message"),
    [
        ({"max_age": "12h"}, "keys.max_age: expected a duration from 1d to 3650d"),
        ({"max_age": "soon"}, "keys.max_age: expected a duration such as"),
        ({"host_key_overlap": "100d"}, "keys.host_key_overlap: expected a duration from 1m"),
        ({"overlap": "1d"}, "unknown key 'overlap'; allowed keys here: max_age, host_key_overlap"),
    ],
)
def test_the_keys_section_is_validated(
    write_config: WriteConfig,
    capsys: pytest.CaptureFixture[str],
    keys_section: dict[str, str],
    message: str,
) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["keys"] = keys_section

    path = write_config(edit)
    assert main(["check-config", str(path)]) == 2
    assert message in capsys.readouterr().err
