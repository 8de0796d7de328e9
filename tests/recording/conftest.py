"""A bastion config with a recording section, and the auditors' key that opens its files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bastion.config import Config, load_config
from bastion.recording.key_files import generate_auditor_keys

WriteConfig = Callable[..., Path]  # the write_config fixture of tests/conftest.py


@dataclass(frozen=True)
class Setup:
    config_path: Path
    key_file: Path
    public_line: str
    root: Path

    def config(self) -> Config:
        return load_config(self.config_path, check_files=False)

    @property
    def recordings(self) -> Path:
        return self.root / "state" / "recordings"

    @property
    def audit_log(self) -> Path:
        return self.root / "state" / "audit.jsonl"


@pytest.fixture
def setup(write_config: WriteConfig, tmp_path: Path) -> Setup:
    line = generate_auditor_keys(tmp_path / "auditors.key", tmp_path / "auditors.pub")

    def edit(data: dict[str, Any]) -> None:
        data["recording"] = {"auditor_public_key": line}

    return Setup(write_config(edit), tmp_path / "auditors.key", line, tmp_path)
