"""The pure parts of bastion.recording load no I/O library (DESIGN.md's layering)."""

from __future__ import annotations

import tomllib

import pytest
from test_layering import IO_MODULES, ROOT, loaded_after_import

PURE = [
    "bastion.recording.redaction",
    "bastion.recording.asciicast",
    "bastion.recording.keys",
    "bastion.recording.sealed",
    "bastion.recording.errors",
    "bastion.recording.wire",
]


@pytest.mark.parametrize("module", PURE)
def test_pure_recording_modules_pull_in_no_io(module: str) -> None:
    loaded = loaded_after_import(module)
    assert not loaded & IO_MODULES
    allowed = {*PURE, "bastion.recording", "bastion.errors"}
    assert {m for m in loaded if m.startswith("bastion.")} <= allowed


def test_the_import_contract_lists_them() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    pure = next(c for c in contracts if c["name"] == "Pure modules import no I/O library")
    assert set(PURE) <= set(pure["source_modules"])
