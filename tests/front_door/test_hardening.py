"""The live server as an auditor sees it: ssh-audit's policy check, and the algorithm lists."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bastion.ssh.algorithms import algorithms
from front_door.harness import BastionEnv, ServedBastion, make_env

pytestmark = pytest.mark.slow

POLICY = Path(__file__).parents[2] / "docs" / "ssh-audit-policy.txt"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BastionEnv, int]]:
    env = make_env(tmp_path_factory.mktemp("hardening"), operators=1)
    bastion = ServedBastion(env, workers=1).start()
    try:
        yield env, bastion.port
    finally:
        assert bastion.stop() == 0


def ssh_audit(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ssh-audit", path=str(Path(sys.executable).parent))
    assert exe is not None, "ssh-audit is installed by the dev extras"
    return subprocess.run(
        [exe, "--skip-rate-test", "--no-colors", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ssh_audit_policy_passes(served: tuple[BastionEnv, int]) -> None:
    _, port = served
    result = ssh_audit("-P", str(POLICY), "-p", str(port), "127.0.0.1")
    assert result.returncode == 0, result.stdout
    assert "Passed" in result.stdout


def test_ssh_audit_finds_no_failures(served: tuple[BastionEnv, int]) -> None:
    _, port = served
    result = ssh_audit("-p", str(port), "127.0.0.1")
    # Exit 2 = warnings only: curve25519 is not post-quantum, and stays for OpenSSH 9.2.
    assert result.returncode in (0, 2), result.stdout
    assert "[fail]" not in result.stdout
    warnings = [line for line in result.stdout.splitlines() if "[warn]" in line]
    assert all("post-quantum" in line for line in warnings), warnings


def test_chacha20_only_when_configured() -> None:
    assert not any("chacha20" in c for c in algorithms().ciphers)
    assert algorithms(allow_chacha20=True).ciphers[0] == "chacha20-poly1305@openssh.com"
    assert algorithms().compression == ("none",)
    assert all(mac.endswith("-etm@openssh.com") for mac in algorithms().macs)


def test_the_policy_check_catches_an_extra_cipher(tmp_path: Path) -> None:
    env = make_env(tmp_path, operators=1)
    data = yaml.safe_load(env.config_path.read_text())
    data["listener"]["allow_chacha20"] = True
    env.config_path.write_text(yaml.safe_dump(data))
    bastion = ServedBastion(env, workers=1).start()
    try:
        result = ssh_audit("-P", str(POLICY), "-p", str(bastion.port), "127.0.0.1")
    finally:
        assert bastion.stop() == 0
    assert result.returncode != 0
    assert "chacha20-poly1305@openssh.com" in result.stdout
