"""The ``bastion`` command: errors are sentences, not tracebacks; the demo runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bastion import __version__
from bastion.audit.chain import verify
from bastion.audit.log import head_path, read_head


def bastion(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )


def test_version() -> None:
    assert bastion("--version").stdout == f"bastion {__version__}\n"


def test_no_command_prints_usage() -> None:
    result = bastion()
    assert result.returncode == 2
    assert "usage: bastion" in result.stderr


def test_audit_verify_of_a_missing_file_is_a_sentence(tmp_path: Path) -> None:
    result = bastion("audit", "verify", str(tmp_path / "nope.jsonl"), "--no-head")
    assert result.returncode == 1
    assert result.stderr == (
        f"bastion: {tmp_path / 'nope.jsonl'}: cannot read the audit log: "
        "No such file or directory\n"
    )


def test_demo_shows_policy_and_a_verified_audit_log(tmp_path: Path) -> None:
    result = bastion("demo", "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("config  ok: ")
    assert any(line.startswith("policy  allow alice") for line in lines)
    assert any(line.startswith("policy  deny  alice") for line in lines)
    assert "not built yet" in result.stdout
    assert "vault   and is refused elsewhere: 403 Forbidden" in lines
    assert lines[-7].startswith(
        "vault   lease revoked: the service account is gone, the token gets 401"
    )
    log = tmp_path / "audit.jsonl"
    assert verify(log.read_bytes().splitlines(keepends=True), read_head(head_path(log))).ok
