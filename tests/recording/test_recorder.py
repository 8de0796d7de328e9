"""The recorder: what a session's output becomes on disk, and how it fails closed."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bastion.config import load_config
from bastion.recording import recorder as recorder_module
from bastion.recording.errors import RecordingUnavailable
from bastion.recording.key_files import load_auditor_private_key
from bastion.recording.playback import split_lines
from bastion.recording.recorder import (
    FLUSH_BYTES,
    Recorder,
    open_recorder,
    start_recording,
)
from bastion.recording.sealed import SealedReader

from .conftest import Setup

SESSION = "0123456789abcdef"
JWT = (
    b"eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0"
    b".c2lnbmF0dXJlLWJ5dGVz"
)
LEASE = "kubernetes/creds/debug/AbCdEf0123456789"


def start(setup: Setup, **options: Any) -> Recorder:
    return start_recording(
        setup.config(), session_id=SESSION, title="t", width=80, height=24, **options
    )


def read(setup: Setup, path: Path) -> tuple[list[Any], SealedReader]:
    """The recording's asciicast lines, decrypted and verified."""
    key = load_auditor_private_key(setup.key_file)
    with path.open("rb") as f:
        reader = SealedReader(f, str(path))
        lines = [json.loads(line) for line in split_lines(reader.plaintext(key))]
    return lines, reader


def output(lines: list[Any]) -> str:
    return "".join(e[2] for e in lines[1:] if e[1] == "o")


def test_a_new_recording_is_on_disk_before_the_session_starts(setup: Setup) -> None:
    recorder = start(setup)
    path = recorder.path
    assert path.parent == setup.recordings
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with path.open("rb") as f:
        reader = SealedReader(f, str(path))
        assert reader.header.session_id == SESSION
        assert reader.header.recording_id == recorder.recording_id
        assert not reader.scan().complete
    recorder.close()


def test_output_resizes_and_secrets_split_across_flushes(setup: Setup) -> None:
    recorder = start(setup, secrets=[LEASE])
    recorder.append(b"$ env\r\nX=1 AUTH=" + JWT[:30])
    recorder.flush()
    recorder.append(JWT[30:] + b"\r\nlease " + LEASE.encode()[:9])
    recorder.resize(120, 40)
    recorder.flush()
    recorder.append(LEASE.encode()[9:] + b" done\r\npass")
    recorder.input(b"ls\r")  # not recorded: the grant did not ask for keystrokes
    summary = recorder.close()
    lines, reader = read(setup, summary.path)
    assert lines[0]["width"] == 80
    assert lines[0]["title"] == "t"
    text = output(lines)
    assert text == (
        "$ env\r\nX=1 AUTH=[REDACTED:jwt]\r\nlease [REDACTED:session-secret] done\r\npass"
    )
    assert [e[2] for e in lines[1:] if e[1] == "r"] == ["120x40"]
    assert not [e for e in lines[1:] if e[1] == "i"]
    times = [e[0] for e in lines[1:]]
    assert times == sorted(times)
    assert summary.complete
    assert summary.redactions == {"jwt": 1, "session-secret": 1}
    assert reader.verdict is not None
    assert summary.digest == reader.verdict.digest
    assert summary.segments == reader.verdict.segments
    assert summary.size == summary.path.stat().st_size
    assert stat.S_IMODE(summary.path.stat().st_mode) == 0o400


def test_keystrokes_are_recorded_only_when_asked_and_redacted_too(setup: Setup) -> None:
    recorder = start(setup, record_input=True)
    recorder.input(b"export PASSWORD=hunter2\r")
    summary = recorder.close()
    lines, _ = read(setup, summary.path)
    assert [e[2] for e in lines[1:] if e[1] == "i"] == ["export PASSWORD=[REDACTED:assignment]\r"]


def test_a_secret_learnt_later_covers_output_not_yet_written(setup: Setup) -> None:
    recorder = start(setup)
    recorder.append(b"the token is " + LEASE.encode() + b"\r\n")
    recorder.add_secret(LEASE)
    summary = recorder.close()
    lines, _ = read(setup, summary.path)
    assert output(lines) == "the token is [REDACTED:session-secret]\r\n"


def test_append_only_buffers(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = start(setup)
    writes: list[int] = []
    monkeypatch.setattr(recorder._file, "write", lambda data, final=False: writes.append(1))
    for _ in range(100):
        recorder.append(b"x" * 100)
    assert writes == []
    assert recorder.backlog == 10_000


def test_without_an_auditor_key_nothing_is_recorded(write_config: Any, tmp_path: Path) -> None:
    config = load_config(write_config(), check_files=False)
    with pytest.raises(RecordingUnavailable) as caught:
        start_recording(config, session_id=SESSION, title="t", width=80, height=24)
    assert str(caught.value) == (
        "sessions cannot be recorded: the config has no recording.auditor_public_key\n"
        "  → run 'bastion recordings keygen NAME' on an auditor's machine and put the line "
        "it prints in the config's recording section"
    )
    assert not (tmp_path / "state" / "recordings").exists()


def test_a_recordings_dir_that_cannot_be_made_refuses_the_session(setup: Setup) -> None:
    setup.recordings.parent.mkdir(parents=True, exist_ok=True)
    setup.recordings.write_text("a file where the directory should be")
    with pytest.raises(RecordingUnavailable, match=r"cannot create the recording .*\.rec"):
        start(setup)


DISK_FULL = textwrap.dedent(
    """
    import os, pathlib, resource, signal, sys
    from bastion.config import load_config
    from bastion.recording.errors import RecordingUnavailable
    from bastion.recording.recorder import start_recording

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    config = load_config(pathlib.Path(sys.argv[1]), check_files=False)
    recorder = start_recording(config, session_id="s1", title="t", width=80, height=24)
    print(recorder.path)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    try:
        for i in range(100):
            recorder.append(b"line %d " % i + os.urandom(600).hex().encode() + b"\\r\\n")
            recorder.flush()
    except RecordingUnavailable as exc:
        print(exc)
    try:
        recorder.append(b"more")
    except RecordingUnavailable as exc:
        print("after:", exc.message)
    """
)


def test_a_full_disk_fails_closed_with_a_clear_error_and_a_readable_file(setup: Setup) -> None:
    run = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(setup.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    path_line, message, hint, after = run.stdout.splitlines()
    path = Path(path_line)
    assert message == f"cannot write the recording {path}: File too large"
    assert hint == (
        "  → the file reached the largest size allowed (a file-size limit on the service?)"
    )
    assert after == f"after: cannot write the recording {path}: File too large"
    # Cut back to whole segments: everything written before is there and verified.
    lines, reader = read(setup, path)
    assert reader.verdict is not None
    assert not reader.verdict.complete
    assert reader.verdict.segments >= 3
    assert "the bastion stopped before closing it" in reader.verdict.summary
    assert output(lines).startswith("line 0 ")
    assert path.stat().st_size <= 20_000


def test_a_recorder_too_far_behind_ends_the_session(setup: Setup) -> None:
    recorder = start(setup)
    recorder._max_backlog = 2 * 1024 * 1024
    for _ in range(20):
        recorder.append(b"x" * 100_000)  # nothing flushes it: the writer is stuck
    with pytest.raises(RecordingUnavailable, match="fell more than 2 MiB behind"):
        recorder.append(b"x" * 100_000)
    with pytest.raises(RecordingUnavailable, match="fell more than 2 MiB behind"):
        recorder.append(b"x")


async def test_background_writing_pauses_a_fast_stream_and_resumes_it(setup: Setup) -> None:
    pauses: list[bool] = []
    recorder = await open_recorder(
        setup.config(),
        session_id=SESSION,
        title="t",
        width=80,
        height=24,
        pause=pauses.append,
    )
    recorder._pause_above = 2 * FLUSH_BYTES
    recorder._resume_below = FLUSH_BYTES
    for _ in range(3):
        recorder.append(b"y" * FLUSH_BYTES)
    assert pauses == [True]
    for _ in range(100):
        await asyncio.sleep(0.02)
        if pauses == [True, False]:
            break
    assert pauses == [True, False]
    summary = await recorder.aclose()
    assert summary.complete
    lines, _ = read(setup, summary.path)
    assert output(lines) == "y" * 3 * FLUSH_BYTES


async def test_a_background_write_failure_is_reported_and_ends_the_recording(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[RecordingUnavailable] = []
    recorder = await open_recorder(
        setup.config(),
        session_id=SESSION,
        title="t",
        width=80,
        height=24,
        on_failure=failures.append,
    )

    def broken(data: bytes, final: bool = False) -> None:
        raise RecordingUnavailable("cannot write the recording x.rec: No space left on device")

    monkeypatch.setattr(recorder._file, "write", broken)
    recorder.append(b"z" * FLUSH_BYTES)  # wakes the writer at once
    for _ in range(100):
        await asyncio.sleep(0.02)
        if failures:
            break
    assert [f.message for f in failures] == [
        "cannot write the recording x.rec: No space left on device"
    ]
    with pytest.raises(RecordingUnavailable, match="No space left"):
        recorder.append(b"more")
    with pytest.raises(RecordingUnavailable, match="No space left"):
        await recorder.aclose()
    assert not recorder.summary().complete


async def test_aclose_writes_the_end_even_when_its_caller_is_cancelled(setup: Setup) -> None:
    recorder = await open_recorder(
        setup.config(), session_id=SESSION, title="t", width=80, height=24
    )
    recorder.append(b"bye\r\n")
    closing = asyncio.ensure_future(recorder.aclose())
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    for _ in range(100):
        await asyncio.sleep(0.02)
        if recorder.summary().complete:
            break
    lines, reader = read(setup, recorder.path)
    assert reader.verdict is not None
    assert reader.verdict.complete
    assert output(lines) == "bye\r\n"


def test_the_module_says_how_a_session_uses_it() -> None:
    # The wiring into the attach path follows this docstring: keep it true.
    doc = recorder_module.__doc__ or ""
    assert "on_output=recorder.append" in doc
    assert "await recorder.aclose()" in doc
