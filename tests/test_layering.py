"""DESIGN.md's layering, checked at run time as well as by import-linter's contracts."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
IO_MODULES = {
    "asyncio", "socket", "ssl", "sqlite3", "subprocess", "http", "urllib", "selectors",
    "asyncssh", "hvac", "kubernetes", "textual", "yaml", "pydantic",
}  # fmt: skip
PURE = ["bastion.policy", "bastion.labels", "bastion.audit.chain", "bastion.redact",
        "bastion.sshkeys", "bastion.durations", "bastion.globs", "bastion.images",
        "bastion.kube_permissions", "bastion.totp", "bastion.enrolment",
        "bastion.console_protocol", "bastion.session.lifecycle",
        "bastion.session.deadlines", "bastion.debug_command", "bastion.terminal_text",
        "bastion.debug_container", "bastion.audit.checkpoint", "bastion.keys.model",
        "bastion.approval", "bastion.breakglass.codes", "bastion.breakglass.reason",
        "bastion.recording.transcript", "bastion.command_marker",
        "bastion.guard_rules"]  # fmt: skip


def loaded_after_import(module: str) -> set[str]:
    """The top-level names in sys.modules after importing ``module`` in a fresh interpreter."""
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
def test_pure_modules_pull_in_no_io(module: str) -> None:
    assert not (loaded_after_import(module) & IO_MODULES)


def test_console_package_pulls_in_no_adapters() -> None:
    loaded = loaded_after_import("tui")
    assert not loaded & {"asyncssh", "hvac", "kubernetes"}
    assert not {m for m in loaded if m.startswith("bastion.")} - {"bastion"}


def test_only_the_demo_loads_the_devstack() -> None:
    assert not any(
        m.startswith("bastion.devstack") for m in loaded_after_import("bastion.cli.main")
    )


def test_only_serving_loads_the_ssh_server() -> None:
    # `bastion user ...` and `check-config` run on admin hosts: they need no SSH stack.
    loaded = loaded_after_import("bastion.cli.main")
    assert "asyncssh" not in loaded
    assert not any(m == "bastion.ssh" or m.startswith("bastion.ssh.") for m in loaded)


def test_import_linter_contracts_cover_the_pure_modules() -> None:
    """The contract file and this test must not drift apart."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    pure = next(c for c in contracts if c["name"] == "Pure modules import no I/O library")
    assert set(PURE) <= set(pure["source_modules"])
    assert set(pure["forbidden_modules"]) >= IO_MODULES


def test_the_console_protocol_is_a_leaf() -> None:
    # Both the console and the broker import it; importing it must not pull in the broker.
    loaded = loaded_after_import("bastion.console_protocol")
    assert {m for m in loaded if m.startswith("bastion")} == {
        "bastion",
        "bastion.console_protocol",
    }
