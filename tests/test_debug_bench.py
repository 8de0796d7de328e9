"""bench/debug_bench.py must keep running, and must leave nothing behind: its smallest mode
against the real local stack, a real ``bastion serve`` and OpenSSH's sshd."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = [sys.executable, str(REPO / "bench" / "debug_bench.py")]
SMALLEST = ["--quick", "--only", "startup", "--runs", "2", "--pace", "0"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists(),
        reason="OpenSSH's sshd is not installed (apt-get install openssh-server)",
    ),
]


def processes_using(path: str) -> list[str]:
    """Processes whose command line or working directory is under ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = str((entry / "cwd").readlink())
            if path in cmdline or cwd.startswith(path):
                found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def scratch(output: str) -> str:
    match = re.search(r"scratch directory (\S+)", output)
    assert match, output
    return match.group(1)


def test_the_startup_section_prints_its_table_with_the_baselines() -> None:
    result = subprocess.run(
        [*BENCH, *SMALLEST], capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = result.stdout
    assert "load average" in out
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    total = rows["request -> first prompt byte at the client"].split()
    # direct p50, direct p90, bastion p50, bastion p90, then the difference: all measured.
    assert all(float(cell) > 0 for cell in total[-5:-1])
    for step in ("Vault: a credential for the namespace", "Kubernetes: attach (WebSocket open)"):
        assert step in rows
    assert "the bastion's own code" in out
    assert "OpenSSH sshd, PTY + shell request -> first prompt byte" in out
    assert processes_using(scratch(out)) == []


def test_ctrl_c_while_measuring_stops_everything_it_started() -> None:
    with subprocess.Popen(
        [*BENCH, *SMALLEST[:-4], "--runs", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        start_new_session=True,  # the signal goes to the bench alone, not to what it started
    ) as bench:
        assert bench.stdout is not None
        seen = ""
        deadline = time.monotonic() + 60
        while "bastion serve --workers 1 on" not in seen and time.monotonic() < deadline:
            seen += bench.stdout.readline()
        directory = scratch(seen)
        time.sleep(1.0)  # into the measurements
        assert processes_using(directory), "the bench started nothing?"
        bench.send_signal(signal.SIGINT)
        try:
            bench.wait(timeout=60)
        finally:
            if bench.poll() is None:
                bench.kill()
    assert bench.returncode != 0
    assert processes_using(directory) == []
    assert not Path(directory).exists()
