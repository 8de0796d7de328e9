"""The recording process keeps the recordings directory and gives up the rest."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bastion.recording.confine import landlock_abi

CONFINED = textwrap.dedent(
    """
    import ctypes, json, os, signal, subprocess, sys
    from pathlib import Path
    from bastion.recording.confine import confine

    recordings, outside = Path(sys.argv[1]), Path(sys.argv[2])
    landlock = confine(recordings, parent_death=signal.SIGHUP)
    prctl = ctypes.CDLL(None).prctl
    seen = {
        "landlock": landlock,
        "no_new_privs": prctl(39, 0, 0, 0, 0),  # PR_GET_NO_NEW_PRIVS
        "dumpable": prctl(3, 0, 0, 0, 0),  # PR_GET_DUMPABLE
        "death_signal": None,
    }
    death = ctypes.c_int(0)
    prctl(2, ctypes.byref(death), 0, 0, 0)  # PR_GET_PDEATHSIG
    seen["death_signal"] = death.value

    def attempt(name, action):
        try:
            action()
            seen[name] = "allowed"
        except OSError as exc:
            seen[name] = exc.__class__.__name__

    def write_inside():
        fd = os.open(recordings / "r.rec", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"x")
        os.fsync(fd)
        os.close(fd)

    attempt("write inside", write_inside)
    attempt("read outside", lambda: (outside / "secret").read_bytes())
    attempt("write outside", lambda: (outside / "new").write_bytes(b"x"))
    attempt("run a program", lambda: subprocess.run(["/bin/true"], check=True))
    print(json.dumps(seen))
    """
)


def test_the_recording_process_keeps_its_directory_and_gives_up_the_rest(tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir(mode=0o700)
    outside = tmp_path / "state"
    outside.mkdir()
    (outside / "secret").write_text("the signing key, say")
    run = subprocess.run(
        [sys.executable, "-c", CONFINED, str(recordings), str(outside)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(run.stdout)
    assert (seen["no_new_privs"], seen["dumpable"], seen["death_signal"]) == (1, 0, signal.SIGHUP)
    assert seen["write inside"] == "allowed"
    assert (recordings / "r.rec").read_bytes() == b"x"
    if landlock_abi() < 1:
        assert seen["landlock"] is False
        assert "has no Landlock" in run.stderr
        pytest.skip("this kernel has no Landlock: the rest is not confined")
    assert seen["landlock"] is True
    assert seen["read outside"] == "PermissionError"
    assert seen["write outside"] == "PermissionError"
    assert not (outside / "new").exists()
    assert seen["run a program"] in ("PermissionError", "BlockingIOError")
