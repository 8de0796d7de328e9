"""The attach bridge against an in-memory attach stream: chunking and the fairness yield,
output pauses, bounded keystrokes with pause_input, the end (status, failure, detach), stop(),
and the recorder hook."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from bastion.attach_bridge import EXIT_DETACHED, INPUT_HIGH_WATER, INPUT_LOW_WATER, AttachBridge
from bastion.errors import BackendUnavailable

KIB = 1024


class FakeStream:
    """An AttachStream in memory: output frames are queued by the test, stdin can block."""

    def __init__(self) -> None:
        self.exit_status: int | None = None
        self.failure: str | None = None
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.reads = 0  # read() calls that returned (or will return) a frame
        self.stdin = bytearray()
        self.writes: list[bytes] = []
        self.stdin_open = asyncio.Event()  # cleared: the container does not read its stdin
        self.stdin_open.set()
        self.log: list[str] = []  # what reached the "cluster", in order
        self.closed = False

    # the test's side
    def output(self, *frames: bytes) -> None:
        for frame in frames:
            self.frames.put_nowait(frame)

    def end(self, exit_status: int | None = None, failure: str | None = None) -> None:
        self.exit_status, self.failure = exit_status, failure
        self.frames.put_nowait(None)

    # the AttachStream interface
    async def read(self) -> bytes | None:
        if self.closed:
            return None
        frame = await self.frames.get()
        if frame is not None:
            self.reads += 1
        return frame

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise BackendUnavailable("the connection has closed")
        await self.stdin_open.wait()
        self.writes.append(data)
        self.stdin += data
        self.log.append(f"stdin {len(data)}")

    async def resize(self, cols: int, rows: int) -> None:
        self.log.append(f"resize {cols}x{rows}")

    async def close_stdin(self) -> None:
        self.log.append("close stdin")

    async def aclose(self) -> None:
        if not self.closed:
            self.log.append("aclose")
        self.closed = True
        self.frames.put_nowait(None)


class Channel:
    """The SSH channel's side: what was written, and the input pauses asked for."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.pauses: list[bool] = []
        self.on_write: Callable[[bytes], None] | None = None
        self.log: list[str] | None = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.on_write is not None:
            self.on_write(data)

    def pause_input(self, paused: bool) -> None:
        self.pauses.append(paused)
        if self.log is not None:
            self.log.append("pause" if paused else "resume")


def make(
    chunk: int = 64 * KIB, on_output: Callable[[bytes], None] | None = None
) -> tuple[FakeStream, Channel, AttachBridge]:
    stream, channel = FakeStream(), Channel()
    bridge = AttachBridge(
        stream,
        write=channel.write,
        pause_input=channel.pause_input,
        on_output=on_output,
        chunk=chunk,
    )
    return stream, channel, bridge


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


# ------------------------------------------------------------------------------ output
async def test_large_frames_are_written_in_chunks_with_a_loop_pass_after_each() -> None:
    stream, channel, bridge = make()
    ticks = 0
    seen: list[int] = []

    async def other_session() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    channel.on_write = lambda _: seen.append(ticks)
    frame = bytes(range(256)) * (200 * KIB // 256 + 1)
    stream.output(frame)
    stream.end(0)
    other = asyncio.create_task(other_session())
    try:
        assert await bridge.run() == 0
    finally:
        other.cancel()
    assert [len(piece) for piece in channel.written] == [64 * KIB] * 3 + [len(frame) - 192 * KIB]
    assert b"".join(channel.written) == frame
    # The other task ran between every two chunks: the loop was never held for two.
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))


async def test_small_frames_share_a_loop_pass_up_to_one_chunk() -> None:
    # A PTY gives about 4 KiB a frame, and aiohttp hands queued frames over without
    # suspending: the bridge alone decides when other sessions get the loop.
    stream, channel, bridge = make(chunk=16 * KIB)
    ticks = 0
    per_pass: dict[int, int] = {}

    async def other_session() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def count(data: bytes) -> None:
        per_pass[ticks] = per_pass.get(ticks, 0) + len(data)

    channel.on_write = count
    stream.output(*(bytes([n]) * 4 * KIB for n in range(40)))
    stream.end(0)
    other = asyncio.create_task(other_session())
    try:
        assert await bridge.run() == 0
    finally:
        other.cancel()
    assert sum(per_pass.values()) == 160 * KIB
    assert max(per_pass.values()) <= 16 * KIB
    assert len(per_pass) < 40, "a loop pass per 4 KiB frame: the yield counts frames, not bytes"


async def test_a_frame_within_one_chunk_is_passed_on_as_it_is() -> None:
    stream, channel, bridge = make()
    frame = b"$ ls\r\n"
    stream.output(frame)
    stream.end(0)
    await bridge.run()
    assert len(channel.written) == 1
    assert channel.written[0] is frame


async def test_nothing_is_read_while_output_is_paused() -> None:
    stream, channel, bridge = make()
    bridge.pause_output(True)
    stream.output(b"one", b"two")
    run = asyncio.create_task(bridge.run())
    await settle()
    assert channel.written == []
    assert stream.reads == 0
    assert stream.frames.qsize() == 2
    bridge.pause_output(False)
    await settle()
    assert channel.written == [b"one", b"two"]
    stream.end(0)
    assert await run == 0


async def test_a_pause_between_chunks_holds_the_rest_of_the_frame() -> None:
    stream, channel, bridge = make(chunk=4 * KIB)
    # asyncssh calls pause_writing from inside write() once its buffer passes the mark.
    channel.on_write = lambda _: bridge.pause_output(True)
    stream.output(b"x" * (10 * KIB), b"next")
    run = asyncio.create_task(bridge.run())
    await settle()
    assert [len(piece) for piece in channel.written] == [4 * KIB]
    assert bridge.buffered_output == 6 * KIB
    assert stream.reads == 1
    channel.on_write = None
    bridge.pause_output(False)
    await settle()
    assert [len(piece) for piece in channel.written] == [4 * KIB, 4 * KIB, 2 * KIB, 4]
    assert bridge.buffered_output == 0
    stream.end(0)
    assert await run == 0


async def test_output_after_the_container_ended_is_still_delivered_once_resumed() -> None:
    stream, channel, bridge = make()
    bridge.pause_output(True)
    stream.output(b"last words")
    stream.end(5)
    run = asyncio.create_task(bridge.run())
    await settle()
    assert not run.done()
    bridge.pause_output(False)
    assert await run == 5
    assert channel.written == [b"last words"]


async def test_every_chunk_is_recorded_before_it_is_written() -> None:
    order: list[tuple[str, int]] = []
    stream, channel, bridge = make(chunk=3, on_output=lambda data: order.append(("rec", len(data))))
    channel.on_write = lambda data: order.append(("ssh", len(data)))
    stream.output(b"abcdefg", b"hi")
    stream.end(0)
    await bridge.run()
    assert order == [
        ("rec", 3),
        ("ssh", 3),
        ("rec", 3),
        ("ssh", 3),
        ("rec", 1),
        ("ssh", 1),
        ("rec", 2),
        ("ssh", 2),
    ]


async def test_a_recorder_that_fails_ends_the_bridge_with_its_error() -> None:
    def broken(_: bytes) -> None:
        raise OSError("recording disk full")

    stream, channel, bridge = make(on_output=broken)
    stream.output(b"secret output")
    with pytest.raises(OSError, match="recording disk full"):
        await bridge.run()
    assert channel.written == []  # unrecorded output never reaches the operator
    assert stream.closed


async def test_output_flows_only_when_neither_the_channel_nor_the_recorder_holds_it() -> None:
    stream, channel, bridge = make()
    bridge.pause_output(True)
    bridge.hold_output(True)
    stream.output(b"one")
    run = asyncio.create_task(bridge.run())
    bridge.pause_output(False)  # the channel's window opens; the recorder is still behind
    await settle()
    assert channel.written == []
    bridge.hold_output(False)
    await settle()
    assert channel.written == [b"one"]
    bridge.hold_output(True)
    bridge.pause_output(True)
    bridge.hold_output(False)  # caught up; the channel is still full
    stream.output(b"two")
    await settle()
    assert channel.written == [b"one"]
    bridge.pause_output(False)
    await settle()
    assert channel.written == [b"one", b"two"]
    stream.end(0)
    assert await run == 0


async def test_keystrokes_and_sizes_are_recorded_before_they_are_sent() -> None:
    seen: list[object] = []
    stream, channel = FakeStream(), Channel()
    bridge = AttachBridge(
        stream,
        write=channel.write,
        pause_input=channel.pause_input,
        on_input=seen.append,
        on_resize=lambda cols, rows: seen.append((cols, rows)),
    )
    run = asyncio.create_task(bridge.run())
    bridge.feed(b"ls\r")
    bridge.resize(100, 30)
    await settle()
    assert seen == [b"ls\r", (100, 30)]
    assert stream.stdin == b"ls\r"
    assert "resize 100x30" in stream.log
    stream.end(0)
    assert await run == 0


async def test_an_input_recorder_that_fails_ends_the_bridge_and_the_keys_are_not_sent() -> None:
    def broken(_: bytes) -> None:
        raise OSError("recording disk full")

    stream, channel = FakeStream(), Channel()
    bridge = AttachBridge(
        stream, write=channel.write, pause_input=channel.pause_input, on_input=broken
    )
    run = asyncio.create_task(bridge.run())
    await settle()
    bridge.feed(b"rm -rf /tmp/x\r")  # from the channel's callback: must not raise there
    with pytest.raises(OSError, match="recording disk full"):
        await asyncio.wait_for(run, 5)  # the container is silent: the bridge ends anyway
    assert stream.stdin == b""
    assert stream.closed


# ------------------------------------------------------------------------------ input
async def test_keystrokes_reach_stdin_while_output_is_paused() -> None:
    stream, channel, bridge = make()
    bridge.pause_output(True)
    stream.output(b"a screenful the terminal is not taking")
    run = asyncio.create_task(bridge.run())
    await settle()
    bridge.feed(b"\x03")  # ^C, exactly when the output is stuck
    await settle()
    assert bytes(stream.stdin) == b"\x03"
    assert channel.written == []
    stream.end(130)
    bridge.pause_output(False)
    assert await run == 130


async def test_input_is_bounded_by_pausing_the_channel_while_stdin_is_blocked() -> None:
    stream, channel, bridge = make()
    stream.stdin_open.clear()
    run = asyncio.create_task(bridge.run())
    sent = bytearray()
    for index in range(200):
        data = bytes([index]) * KIB
        sent += data
        bridge.feed(data)
        await asyncio.sleep(0)
        if channel.pauses == [True]:
            break  # the SSH layer stops calling feed() once reading is paused
    assert channel.pauses == [True]
    assert INPUT_HIGH_WATER < bridge.buffered_input <= INPUT_HIGH_WATER + KIB
    stream.stdin_open.set()
    await settle()
    assert channel.pauses == [True, False]
    assert bridge.buffered_input == 0
    assert bytes(stream.stdin) == bytes(sent)
    stream.end(0)
    assert await run == 0


async def test_input_resumes_at_the_low_water_mark_not_before() -> None:
    stream, channel, bridge = make()
    channel.log = stream.log  # one timeline: what reached stdin, and the channel's pauses
    stream.stdin_open.clear()
    run = asyncio.create_task(bridge.run())
    await settle()
    bridge.feed(b"a" * KIB)  # taken by the input task, blocked in write()
    await settle()
    bridge.feed(b"b" * INPUT_HIGH_WATER)  # queued behind it: over the high-water mark
    stream.stdin_open.set()
    await settle()
    # After the first 1 KiB, 64 KiB are still queued: above the low-water mark, no resume yet.
    assert stream.log == ["pause", "stdin 1024", f"stdin {INPUT_HIGH_WATER}", "resume"]
    assert bridge.buffered_input == 0 <= INPUT_LOW_WATER
    stream.end(0)
    await run


async def test_a_new_size_goes_out_before_the_rest_of_a_paste_and_only_the_latest() -> None:
    stream, _, bridge = make()
    stream.stdin_open.clear()
    run = asyncio.create_task(bridge.run())
    await settle()
    bridge.feed(b"first")
    await settle()  # "first" is being written, and blocked
    bridge.feed(b"second")
    bridge.resize(100, 30)
    bridge.resize(120, 40)
    stream.stdin_open.set()
    await settle()
    assert stream.log == ["stdin 5", "resize 120x40", "stdin 6"]
    stream.end(0)
    await run


async def test_eof_closes_stdin_after_the_pending_keystrokes() -> None:
    stream, _, bridge = make()
    stream.stdin_open.clear()
    run = asyncio.create_task(bridge.run())
    bridge.feed(b"exit\n")
    bridge.input_closed()
    bridge.feed(b"dropped: after the EOF")
    await settle()
    assert "close stdin" not in stream.log
    stream.stdin_open.set()
    await settle()
    assert stream.log == ["stdin 5", "close stdin"]
    stream.end(0)
    assert await run == 0


# ------------------------------------------------------------------------------ the end
async def test_the_exit_status_is_returned() -> None:
    stream, _, bridge = make()
    stream.output(b"bye\r\n")
    stream.end(42)
    assert await bridge.run() == 42
    assert stream.closed


async def test_a_failure_status_raises_its_sentence() -> None:
    stream, _, bridge = make()
    stream.end(failure="the attach to container dbg of pod a/b failed: Internal error")
    with pytest.raises(BackendUnavailable) as caught:
        await bridge.run()
    assert caught.value.message == "the attach to container dbg of pod a/b failed: Internal error"


async def test_a_connection_lost_without_status_is_an_error() -> None:
    stream, _, bridge = make()
    stream.end(None)
    with pytest.raises(BackendUnavailable, match="broke before it reported how it ended"):
        await bridge.run()


async def test_an_end_without_status_after_the_eof_is_a_detach() -> None:
    # v4 has no stdin close: closing stdin closes the connection, and no status comes.
    stream, _, bridge = make()
    run = asyncio.create_task(bridge.run())
    bridge.input_closed()
    await settle()
    assert "close stdin" in stream.log
    stream.end(None)
    assert await run == EXIT_DETACHED


async def test_stop_ends_a_paused_bridge_and_releases_the_channel() -> None:
    stream, channel, bridge = make()
    stream.stdin_open.clear()
    bridge.pause_output(True)
    stream.output(b"never shown")
    run = asyncio.create_task(bridge.run())
    bridge.feed(b"k" * (INPUT_HIGH_WATER + 1))
    await settle()
    assert channel.pauses == [True]
    await bridge.stop()
    assert await asyncio.wait_for(run, 1) == EXIT_DETACHED
    assert stream.log[-2:] == ["close stdin", "aclose"]
    assert channel.written == []
    assert channel.pauses == [True, False]  # the console can read the channel again
    bridge.pause_output(False)  # late calls from the SSH layer are harmless
    bridge.feed(b"late")
    bridge.resize(1, 1)


async def test_a_status_that_arrived_before_stop_is_kept() -> None:
    stream, _, bridge = make()
    stream.end(0)
    run = asyncio.create_task(bridge.run())
    await settle()
    await bridge.stop()
    assert await run == 0


async def test_cancelling_run_closes_the_stream() -> None:
    stream, _, bridge = make()
    run = asyncio.create_task(bridge.run())
    await settle()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert stream.closed


async def test_run_is_once_and_chunks_are_positive() -> None:
    stream, _, bridge = make()
    stream.end(0)
    await bridge.run()
    with pytest.raises(RuntimeError, match="already"):
        await bridge.run()
    with pytest.raises(ValueError, match="at least 1 byte"):
        make(chunk=0)
