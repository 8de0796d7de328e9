"""The ``bastion`` command: errors are sentences, not tracebacks (the demo: test_demo.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bastion import __version__


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
    assert result.returncode == 2  # the check could not be made (bastion.cli.audit.EXIT)
    assert result.stderr == (
        f"CANNOT CHECK: {tmp_path / 'nope.jsonl'}: cannot read the audit log: "
        "No such file or directory\n"
    )
