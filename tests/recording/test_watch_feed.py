"""The live feed of a recording (issue 9): what a watcher gets is the recording's own
redacted output, from the recording process, never the bytes the worker handed over."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bastion.recording.recorder import stop_recording_processes

from .conftest import Setup
from .test_recorder import JWT, LEASE, opened, output, read, start, until


@pytest.fixture
async def processes() -> AsyncIterator[None]:
    try:
        yield
    finally:
        await stop_recording_processes()


def test_the_writer_hands_each_output_event_over_as_it_encodes_it(setup: Setup) -> None:
    writer = start(setup, secrets=[LEASE])
    fed: list[bytes] = []
    writer.on_output = lambda _moment, redacted: fed.append(redacted)
    writer.append(b"AUTH=" + JWT[:20])
    writer.flush()
    writer.append(JWT[20:] + b" lease " + LEASE.encode() + b"\r\npassw")
    writer.input(b"ls\r")
    summary = writer.close()
    lines, _ = read(setup, summary.path)
    assert b"".join(fed).decode() == output(lines)
    assert b"".join(fed) == b"AUTH=[REDACTED:jwt] lease [REDACTED:session-secret]\r\npassw"


async def test_a_watched_recording_sends_what_it_records_and_stops_when_unwatched(
    setup: Setup, processes: None
) -> None:
    recorder = await opened(setup, secrets=[LEASE])
    fed: list[bytes] = []
    recorder.append(b"before the watch\r\n")
    recorder.watch(fed.append)
    recorder.append(b"the token is " + LEASE.encode()[:8])
    recorder.append(LEASE.encode()[8:] + b" and " + JWT + b"\r\n")
    await until(lambda: b"".join(fed).endswith(b"[REDACTED:jwt]\r\n"))
    recorder.watch(None)
    recorder.append(b"after the watch\r\n")
    summary = await recorder.aclose()
    lines, _ = read(setup, summary.path)
    seen = b"".join(fed)
    assert LEASE.encode() not in seen
    # From the first event written after the watch began (output still waiting in the
    # recording process then is included) to the last before it ended: one run of the
    # recording's own output.
    assert seen.endswith(b"the token is [REDACTED:session-secret] and [REDACTED:jwt]\r\n")
    recorded = output(lines)
    assert recorded.endswith(seen.decode() + "after the watch\r\n")
    assert b"after the watch" not in seen
