"""The pure parts of bastion.recording load no I/O library (DESIGN.md's layering)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
IO_MODULES = {
    "asyncio", "socket", "ssl", "sqlite3", "subprocess", "http", "urllib", "selectors",
    "asyncssh", "hvac", "kubernetes", "textual", "yaml", "pydantic",
}  # fmt: skip

PURE = [
    "bastion.recording.redaction",
    "bastion.recording.asciicast",
    "bastion.recording.keys",
    "bastion.recording.sealed",
    "bastion.recording.errors",
]


def loaded_after_import(module: str) -> set[str]:
    """Top-level and bastion module names a fresh interpreter loads importing ``module``
    (as tests/test_layering.py does)."""
    code = (
        "import sys, json; before = set(sys.modules); "
        f"import {module}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before} | "
        "{m for m in set(sys.modules) - before if m.startswith('bastion')})))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return set(json.loads(out))


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
