"""``bastion devstack up``: both servers up, devstack.json written, Ctrl-C stops and cleans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from live_processes import processes_mentioning

KEYS = {
    "kube_api",
    "kube_ca",
    "kube_admin_token",
    "vault_addr",
    "vault_ca",
    "vault_root_token",
    "approle_role_id",
    "approle_secret_id_file",
}
FIXTURE = "namespaces:\n  - name: payments\n    pods:\n      - name: api-1\n"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def devstack_up(tmp_path: Path, state: Path) -> subprocess.Popen[str]:
    """``bastion devstack up`` on a one-pod fixture, its output piped."""
    fixture = tmp_path / "fixture.yaml"
    fixture.write_text(FIXTURE)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bastion.cli.main",
            "devstack",
            "up",
            "--state-dir",
            str(state),
            "--fixture",
            str(fixture),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_up_then_interrupt(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process = devstack_up(tmp_path, state)
    try:
        info_file = state / "devstack.json"
        deadline = time.monotonic() + 30
        while not info_file.exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.1)
        info = json.loads(info_file.read_text())
        assert set(info) >= KEYS
        assert info["kube_api"].startswith("https://127.0.0.1:")
        assert info["vault_addr"].startswith("https://127.0.0.1:")
        assert Path(info["kube_ca"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert Path(info["vault_ca"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert Path(info["approle_secret_id_file"]).stat().st_mode & 0o777 == 0o600
        openbao = int(info["openbao_pid"])
        assert alive(openbao)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "ready in" in out
    assert out.rstrip().endswith("stopped")
    assert not alive(openbao)
    assert not info_file.exists()
    assert sorted(p.name for p in state.iterdir()) == []


@pytest.mark.slow
def test_interrupt_while_starting_leaves_nothing(tmp_path: Path) -> None:
    """Ctrl-C before the stack is ready: OpenBao stopped, no files left, exit status 130."""
    state = tmp_path / "state"
    process = devstack_up(tmp_path, state)
    try:
        # OpenBao's directory appears once kubesim is up and OpenBao is being started.
        deadline = time.monotonic() + 30
        while not (state / "openbao").exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.01)
        assert (state / "openbao").exists(), "OpenBao was never started"
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode in (0, 130), err
    assert out.rstrip().endswith("stopped") or "stopped before the stack was ready" in out
    assert not (state / "devstack.json").exists()
    assert sorted(p.name for p in state.iterdir()) == []
    assert processes_mentioning(str(state)) == []
