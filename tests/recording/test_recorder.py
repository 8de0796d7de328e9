"""The recorder: what a session's output becomes on disk, written by the worker's recording
process, and how it fails closed (a full disk, a recording process that dies)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
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
    recording_process,
    start_recording,
    stop_recording_processes,
)
from bastion.recording.sealed import SealedReader
from bastion.recording.writer import COALESCE_BYTES, RecordingWriter

from .conftest import Setup

SESSION = "0123456789abcdef"
JWT = (
    b"eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0"
    b".c2lnbmF0dXJlLWJ5dGVz"
)
LEASE = "kubernetes/creds/debug/AbCdEf0123456789"


@pytest.fixture
async def processes() -> AsyncIterator[None]:
    """The test's recording processes are stopped at its end, as a worker's are."""
    try:
        yield
    finally:
        await stop_recording_processes()


def start(setup: Setup, **options: Any) -> RecordingWriter:
    return start_recording(
        setup.config(), session_id=SESSION, title="t", width=80, height=24, **options
    )


async def opened(setup: Setup, **options: Any) -> Recorder:
    return await open_recorder(
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


async def until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------ the writer (in process)
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


def test_bulk_output_becomes_few_events_and_typed_echoes_stay_apart(setup: Setup) -> None:
    recorder = start(setup, secrets=[LEASE])
    # A burst: 100 chunks 0.1 ms apart, a secret split across two of them.
    burst = [b"x" * 1000 for _ in range(100)]
    burst[40] += LEASE.encode()[:7]
    burst[41] = LEASE.encode()[7:] + burst[41]
    for i, chunk in enumerate(burst):
        recorder.append(chunk, at=1.0 + i * 0.0001)
    recorder.resize(100, 30, at=1.0105)  # a resize ends a run
    recorder.append(b"after", at=1.0106)
    for i, key in enumerate(b"xyz"):  # typed echoes, 50 ms apart (no redaction lead)
        recorder.append(bytes([key]), at=2.0 + i * 0.05)
    summary = recorder.close()
    lines, _ = read(setup, summary.path)
    events = lines[1:]
    assert [(e[0], e[1]) for e in events] == [
        (1.0, "o"),
        (1.0105, "r"),
        (1.0106, "o"),
        (2.0, "o"),
        (2.05, "o"),
        (2.1, "o"),
    ]
    burst_text = events[0][2]
    assert "[REDACTED:session-secret]" in burst_text
    assert LEASE[:7] not in burst_text
    assert burst_text.count("x") == 100 * 1000
    assert [e[2] for e in events[3:]] == ["x", "y", "z"]


def test_a_run_of_output_is_cut_at_its_size_limit(setup: Setup) -> None:
    recorder = start(setup)
    chunk = b"y" * 32768
    for i in range(20):  # 640 KiB within a millisecond
        recorder.append(chunk, at=5.0 + i * 0.00005)
    summary = recorder.close()
    lines, _ = read(setup, summary.path)
    sizes = [len(e[2]) for e in lines[1:]]
    assert sum(sizes) == 20 * 32768
    assert max(sizes) <= COALESCE_BYTES + 32768
    assert len(sizes) >= 3


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
        recorder.flush()
    except RecordingUnavailable as exc:
        print("after:", exc.message)
    """
)


def test_a_full_disk_fails_the_writer_with_a_clear_error_and_a_readable_file(
    setup: Setup,
) -> None:
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


# ------------------------------------------------------------------ through the process
async def test_a_new_recording_is_on_disk_before_the_session_starts(
    setup: Setup, processes: None
) -> None:
    recorder = await opened(setup)
    path = recorder.path
    process = await recording_process(setup.recordings)
    assert process.pid is not None
    nice = os.getpriority(os.PRIO_PROCESS, process.pid)
    assert nice == recorder_module.RECORDING_NICE  # bulk work: the worker goes first
    assert os.sched_getscheduler(process.pid) == os.SCHED_BATCH
    assert path.parent == setup.recordings
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with path.open("rb") as f:
        reader = SealedReader(f, str(path))
        assert reader.header.session_id == SESSION
        assert reader.header.recording_id == recorder.recording_id
        assert not reader.scan().complete
    await recorder.aclose()


async def test_the_process_writes_what_the_worker_saw_when_it_saw_it(
    setup: Setup, processes: None
) -> None:
    recorder = await opened(setup, secrets=[LEASE])
    now = [100.0]
    recorder._clock = lambda: now[0]  # the worker's clock, whenever the process writes
    recorder._started = 100.0
    now[0] = 101.5
    recorder.append(b"lease " + LEASE.encode()[:9])
    now[0] = 103.25
    recorder.resize(120, 40)
    recorder.append(LEASE.encode()[9:] + b" ok\r\nthe token is " + JWT)
    now[0] = 104.0
    recorder.input(b"ls\r")  # not recorded: the grant did not ask for keystrokes
    recorder.append(b"\r\n$ ")
    summary = await recorder.aclose()
    lines, reader = read(setup, summary.path)
    assert output(lines) == (
        "lease [REDACTED:session-secret] ok\r\nthe token is [REDACTED:jwt]\r\n$ "
    )
    events = [(e[0], e[1]) for e in lines[1:]]
    assert events == [(1.5, "o"), (3.25, "r"), (3.25, "o"), (4.0, "o")]
    assert not [e for e in lines[1:] if e[1] == "i"]
    assert summary.complete
    assert summary.redactions == {"jwt": 1, "session-secret": 1}
    assert reader.verdict is not None
    assert summary.digest == reader.verdict.digest
    assert summary.size == summary.path.stat().st_size
    assert stat.S_IMODE(summary.path.stat().st_mode) == 0o400


async def test_keystrokes_are_recorded_only_when_asked_and_redacted_too(
    setup: Setup, processes: None
) -> None:
    recorder = await opened(setup, record_input=True)
    recorder.input(b"export PASSWORD=hunter2\r")
    summary = await recorder.aclose()
    lines, _ = read(setup, summary.path)
    assert [e[2] for e in lines[1:] if e[1] == "i"] == ["export PASSWORD=[REDACTED:assignment]\r"]


async def test_a_secret_learnt_later_covers_output_not_yet_written(
    setup: Setup, processes: None
) -> None:
    recorder = await opened(setup)
    recorder.append(b"the token is " + LEASE.encode() + b"\r\n")
    recorder.add_secret(LEASE)
    summary = await recorder.aclose()
    lines, _ = read(setup, summary.path)
    assert output(lines) == "the token is [REDACTED:session-secret]\r\n"


async def test_append_only_hands_the_bytes_over(setup: Setup, processes: None) -> None:
    recorder = await opened(setup)
    size = recorder.path.stat().st_size
    for _ in range(100):
        recorder.append(b"x" * 100)
    # Nothing written by the worker itself; the process reports what it wrote later.
    assert recorder.path.stat().st_size == size
    assert recorder.backlog == 10_000
    summary = await recorder.aclose()
    assert recorder.backlog == 0
    lines, _ = read(setup, summary.path)
    assert output(lines) == "x" * 10_000


async def test_a_recordings_dir_that_cannot_be_made_refuses_the_session(
    setup: Setup, processes: None
) -> None:
    setup.recordings.parent.mkdir(parents=True, exist_ok=True)
    setup.recordings.write_text("a file where the directory should be")
    with pytest.raises(RecordingUnavailable, match=r"cannot create the recording .*\.rec"):
        await opened(setup)


async def test_a_recorder_too_far_behind_ends_the_session(setup: Setup, processes: None) -> None:
    recorder = await opened(setup)
    recorder._max_backlog = 2 * 1024 * 1024
    for _ in range(20):
        recorder.append(b"x" * 100_000)  # no loop pass: nothing written is reported back
    with pytest.raises(RecordingUnavailable, match="fell more than 2 MiB behind"):
        recorder.append(b"x" * 100_000)
    with pytest.raises(RecordingUnavailable, match="fell more than 2 MiB behind"):
        recorder.append(b"x")
    with pytest.raises(RecordingUnavailable, match="fell more than 2 MiB behind"):
        await recorder.aclose()
    # The recording process was told to give it up: what was handed over is written, the
    # file closed without its end.
    process = await recording_process(setup.recordings)
    assert process.pid is not None
    await until(lambda: recorder.path not in open_files(process.pid))
    lines, reader = read(setup, recorder.path)
    assert reader.verdict is not None
    assert not reader.verdict.complete
    assert output(lines) == "x" * 2_000_000


async def test_a_fast_stream_is_held_until_the_process_has_written_it(
    setup: Setup, processes: None
) -> None:
    pauses: list[bool] = []
    recorder = await opened(setup, pause=pauses.append)
    recorder._pause_above = 2 * FLUSH_BYTES
    recorder._resume_below = FLUSH_BYTES
    for _ in range(3):
        recorder.append(b"y" * FLUSH_BYTES)
    assert pauses == [True]
    await until(lambda: pauses == [True, False])
    summary = await recorder.aclose()
    assert summary.complete
    lines, _ = read(setup, summary.path)
    assert output(lines) == "y" * 3 * FLUSH_BYTES


async def test_a_full_disk_in_the_process_fails_that_recording_and_tells_the_session(
    setup: Setup, processes: None
) -> None:
    failures: list[RecordingUnavailable] = []
    recorder = await opened(setup, on_failure=failures.append)
    other = await opened(setup)
    process = await recording_process(setup.recordings)
    assert process.pid is not None
    for i in range(10):
        recorder.append(b"line %d " % i + os.urandom(600).hex().encode() + b"\r\n")
    await until(lambda: recorder.backlog == 0)  # written at the flush interval
    # Its files may not grow past 20 kB from now on (EFBIG, as a full disk gives ENOSPC).
    limit = 20_000
    os_prlimit(process.pid, limit)
    # Written at once, and too large even compressed (hex of random bytes: about 2:1).
    recorder.append(os.urandom(FLUSH_BYTES // 2).hex().encode())
    await until(lambda: bool(failures))
    path = recorder.path
    assert [str(f) for f in failures] == [
        f"cannot write the recording {path}: File too large\n"
        "  → the file reached the largest size allowed (a file-size limit on the service?)"
    ]
    with pytest.raises(RecordingUnavailable, match="File too large"):
        recorder.append(b"more")
    with pytest.raises(RecordingUnavailable, match="File too large"):
        await recorder.aclose()
    assert not recorder.summary().complete
    lines, reader = read(setup, path)
    assert reader.verdict is not None
    assert not reader.verdict.complete
    assert output(lines).startswith("line 0 ")
    assert path.stat().st_size <= limit
    # The process lives on, and so do the other recordings.
    os_prlimit(process.pid, None)
    other.append(b"still here\r\n")
    summary = await other.aclose()
    assert summary.complete
    assert output(read(setup, summary.path)[0]) == "still here\r\n"


def open_files(pid: int) -> set[Path]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            found.add(fd.readlink())
    return found


def os_prlimit(pid: int, limit: int | None) -> None:
    import resource  # noqa: PLC0415 - only these tests change another process's limits

    soft = resource.RLIM_INFINITY if limit is None else limit
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))


async def test_a_recording_process_that_dies_ends_its_sessions_and_the_next_gets_a_new_one(
    setup: Setup, processes: None
) -> None:
    failures: list[RecordingUnavailable] = []
    recorder = await opened(setup, on_failure=failures.append)
    recorder.append(b"before\r\n")
    process = await recording_process(setup.recordings)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    await until(lambda: bool(failures))
    path = recorder.path
    assert [f.message for f in failures] == [
        f"the recording process stopped before the recording {path} was closed"
    ]
    assert failures[0].hint is not None
    assert "the session was ended" in failures[0].hint
    with pytest.raises(RecordingUnavailable, match="the recording process stopped"):
        recorder.append(b"after")
    with pytest.raises(RecordingUnavailable, match="the recording process stopped"):
        await recorder.aclose()
    assert not recorder.summary().complete
    # The next session's recording starts a new process.
    again = await opened(setup)
    replacement = await recording_process(setup.recordings)
    assert replacement is not process
    assert replacement.pid != process.pid
    again.append(b"fine\r\n")
    assert (await again.aclose()).complete


async def test_a_stuck_recording_process_does_not_hold_the_end_of_a_session(
    setup: Setup, processes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = await opened(setup)
    recorder.append(b"bye\r\n")
    process = await recording_process(setup.recordings)
    assert process.pid is not None
    monkeypatch.setattr(recorder_module, "CLOSE_TIMEOUT", 0.2)
    os.kill(process.pid, signal.SIGSTOP)  # as on a hung filesystem
    try:
        with pytest.raises(RecordingUnavailable, match=r"did not close the recording .* 0 s"):
            await recorder.aclose()
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert not recorder.summary().complete


async def test_aclose_writes_the_end_even_when_its_caller_is_cancelled(
    setup: Setup, processes: None
) -> None:
    recorder = await opened(setup)
    recorder.append(b"bye\r\n")
    closing = asyncio.ensure_future(recorder.aclose())
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await until(lambda: recorder.summary().complete)
    lines, reader = read(setup, recorder.path)
    assert reader.verdict is not None
    assert reader.verdict.complete
    assert output(lines) == "bye\r\n"


WORKER = textwrap.dedent(
    """
    import asyncio, pathlib, sys
    from bastion.config import load_config
    from bastion.recording.recorder import open_recorder, recording_process

    async def main():
        config = load_config(pathlib.Path(sys.argv[1]), check_files=False)
        recorder = await open_recorder(config, session_id="s1", title="t", width=80, height=24)
        recorder.append(b"seen by the operator\\r\\n")
        process = await recording_process(config.paths.recordings_dir)
        print(process.pid, recorder.path, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def test_the_recording_process_writes_what_it_got_and_ends_with_its_worker(
    setup: Setup,
) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(setup.config_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        pid_text, path_text = worker.stdout.readline().split()
        worker.kill()  # no stop, no close: as a crash
    finally:
        worker.wait(10)
        if worker.stdout is not None:
            worker.stdout.close()
    pid = int(pid_text)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and not _zombie(pid):
        assert time.monotonic() < deadline, "the recording process outlived its worker"
        time.sleep(0.02)
    lines, reader = read(setup, Path(path_text))
    assert reader.verdict is not None
    assert not reader.verdict.complete  # the bastion stopped before closing it
    assert output(lines) == "seen by the operator\r\n"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_module_says_how_a_session_uses_it() -> None:
    # The wiring into the attach path follows this docstring: keep it true.
    doc = recorder_module.__doc__ or ""
    assert "on_output=recorder.append" in doc
    assert "await recorder.aclose()" in doc
