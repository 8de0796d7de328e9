"""One SSH channel joined to one container's attach stream: the attach path's hot loop.

SSH-library-agnostic: the channel side is four callables and four calls. The integration
wires them to asyncssh like this (``session`` is the channel's ``SSHServerSession``)::

    bridge = AttachBridge(stream, write=channel.write, pause_input=pause,
                          on_output=recording.append)
    # pause(True) -> channel.pause_reading(), pause(False) -> channel.resume_reading()
    # session.data_received(data, _)  -> bridge.feed(data)
    # session.terminal_size_changed(cols, rows, ...) -> bridge.resize(cols, rows)
    # session.pause_writing() / resume_writing() -> bridge.pause_output(True / False)
    # session.eof_received() / connection_lost(...) -> bridge.input_closed()
    status = await bridge.run()

Two tasks, so that typing is never stuck behind output and the reverse:

* **Output** (container → operator): read a frame from the stream, hand it to ``write`` at
  most ``chunk`` bytes at a time, and yield to the event loop before writing more than
  ``chunk`` bytes in one loop pass, so that one session's bulk output cannot hold the loop
  (and the other sessions' keystrokes) for a whole SSH window: measured here, a 2 MB window
  written in one pass took other sessions' echo p99 from 0.3 ms to 20 ms, and 64 KiB chunks
  kept it under 5 ms for about 4% of throughput. The default chunk is 32 KiB, what one read
  of :class:`bastion.kube_attach.AttachStream` joins and one OpenSSH channel packet holds:
  with 16 KiB the neighbour's steps were smaller, and the stream 10% slower, for no p99
  gained that the bench could tell from the machine's own noise (bench/README.md). The
  yield counts bytes, not frames: a frame can be a few bytes, and a yield after each one
  cost the bridge 25% more CPU (bench/attach_bench.py) for no fairness gained.
  While output is paused (the SSH window is closed or the channel's write buffer is over its
  high-water mark) nothing more is read from the stream, so the bastion holds at most the
  frame in hand, and the stream's own buffer fills and stops reading its socket
  (:mod:`bastion.kube_attach`).
* **Input** (operator → container): keystrokes wait in a small queue for the stream; past
  ``INPUT_HIGH_WATER`` bytes ``pause_input(True)`` stops reading the SSH channel (its window
  then pushes back on the client), and ``pause_input(False)`` resumes it once the queue is
  down to ``INPUT_LOW_WATER``. A container that does not read its stdin therefore never makes
  the bastion buffer more than that. A new terminal size goes out before queued keystrokes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from bastion.errors import BackendUnavailable

__all__ = [
    "EXIT_DETACHED",
    "INPUT_HIGH_WATER",
    "INPUT_LOW_WATER",
    "AttachBridge",
    "AttachedStream",
]

# Keystrokes and pastes queued for the container; a paste larger than this waits in the SSH
# channel's window instead.
INPUT_HIGH_WATER: Final = 64 * 1024
INPUT_LOW_WATER: Final = 16 * 1024
# run()'s result when the bastion ended the stream itself (stop(), or an EOF under v4, which
# can only be sent by closing the connection) before the container reported a status: what
# OpenSSH's ssh exits with when it cannot tell the remote status.
EXIT_DETACHED: Final = 255


class AttachedStream(Protocol):
    """What the bridge needs of :class:`bastion.kube_attach.AttachStream`."""

    exit_status: int | None
    failure: str | None

    async def read(self) -> bytes | None: ...
    async def write(self, data: bytes) -> None: ...
    async def resize(self, cols: int, rows: int) -> None: ...
    async def close_stdin(self) -> None: ...
    async def aclose(self) -> None: ...


class AttachBridge:
    """Pumps one SSH channel to one attach stream and back until the container's stream ends.

    ``write`` sends bytes to the SSH channel without blocking (asyncssh's ``channel.write``).
    ``pause_input(True)`` must stop :meth:`feed` calls soon (pause reading the channel).
    ``on_output`` gets every output chunk just before ``write`` does, so nothing reaches the
    operator unrecorded; ``on_input`` every keystroke batch as it is fed, ``on_resize`` every
    new size. They are called synchronously, ``on_output`` on the hot path: they must only
    hand the bytes on (the recorder sends them to the worker's recording process, which
    redacts and writes them) and never block or await. If
    ``on_output`` raises, the bridge ends and :meth:`run` raises that error, since a session
    that cannot be recorded must end (DESIGN.md); so does one raised by ``on_input`` or
    ``on_resize`` (the keystrokes or size it was given are not sent).
    """

    def __init__(
        self,
        stream: AttachedStream,
        *,
        write: Callable[[bytes], None],
        pause_input: Callable[[bool], None],
        on_output: Callable[[bytes], None] | None = None,
        on_input: Callable[[bytes], None] | None = None,
        on_resize: Callable[[int, int], None] | None = None,
        chunk: int = 32 * 1024,
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1 byte, got {chunk}")
        self._stream = stream
        self._write = write
        self._pause_input = pause_input
        self._on_output = on_output
        self._on_input = on_input
        self._on_resize = on_resize
        self._chunk = chunk
        self._output_open = asyncio.Event()
        self._output_open.set()
        # Who holds the output back: the SSH channel (its window, its buffer) and the
        # recorder (its backlog); output flows when neither does.
        self._output_holds: set[str] = set()
        self._hook_error: Exception | None = None  # what on_input or on_resize raised
        self._keys: deque[bytes] = deque()
        self._keys_bytes = 0  # queued plus the batch being written
        self._input_paused = False
        self._input_wanted = asyncio.Event()  # keystrokes, a size or the EOF to send
        self._size: tuple[int, int] | None = None
        self._eof = False
        self._detaching = False  # the bastion asked the stream to end (EOF or stop())
        self._stop = asyncio.Event()
        self._started = False
        self._finished = False
        self._held = 0  # output read from the stream and not yet written

    # ------------------------------------------------------------------ channel side (sync)
    def feed(self, data: bytes) -> None:
        """Keystrokes from the SSH channel; called from its ``data_received``."""
        if not data or self._eof or self._finished:
            return
        if self._on_input is not None and not self._hook(self._on_input, data):
            return  # not recorded: not sent
        self._keys.append(data)
        self._keys_bytes += len(data)
        self._input_wanted.set()
        if self._keys_bytes > INPUT_HIGH_WATER and not self._input_paused:
            self._input_paused = True
            self._pause_input(True)

    def resize(self, cols: int, rows: int) -> None:
        """The SSH window changed size; only the latest size is sent."""
        if self._finished:
            return
        if self._on_resize is not None and not self._hook(self._on_resize, cols, rows):
            return
        self._size = (cols, rows)
        self._input_wanted.set()

    def _hook(self, hook: Callable[..., None], *args: object) -> bool:
        """Run ``on_input``/``on_resize`` from a channel callback; if it raises, the bridge
        ends and :meth:`run` raises that error (the channel's callback must not)."""
        try:
            hook(*args)
        except Exception as exc:  # noqa: BLE001 - handed to run()'s caller, not swallowed
            if self._hook_error is None:
                self._hook_error = exc
            self._stop.set()
            self._output_open.set()
            self._input_wanted.set()
            return False
        return True

    def pause_output(self, paused: bool) -> None:
        """The SSH channel cannot take more output (True) or can again (False)."""
        self._hold("channel", paused)

    def hold_output(self, held: bool) -> None:
        """The recorder is behind (True) or has caught up (False): output waits for it, so
        nothing reaches the operator that could not be recorded."""
        self._hold("recorder", held)

    def _hold(self, who: str, held: bool) -> None:
        if held:
            self._output_holds.add(who)
        else:
            self._output_holds.discard(who)
        if self._stop.is_set():
            return  # stop() keeps the output task awake so that it can end
        if self._output_holds:
            self._output_open.clear()
        else:
            self._output_open.set()

    def input_closed(self) -> None:
        """The client sent EOF or the channel went away: close the container's stdin."""
        self._eof = True
        self._input_wanted.set()

    @property
    def buffered_output(self) -> int:
        """Output bytes the bridge holds: read from the stream, not yet written."""
        return self._held

    @property
    def buffered_input(self) -> int:
        """Keystroke bytes the bridge holds: fed, not yet taken by the stream."""
        return self._keys_bytes

    # ------------------------------------------------------------------ the pumps
    async def run(self) -> int:
        """Pump both ways until the container's stream ends; return its exit status.

        Raises BackendUnavailable with the stream's failure sentence, or when the connection
        ended without a status that the bastion did not ask for. The stream is closed on the
        way out, and the SSH channel's input is resumed if the bridge had paused it.
        """
        if self._started:
            raise RuntimeError("AttachBridge.run() was already called")
        self._started = True
        output = asyncio.create_task(self._pump_output(), name="attach-output")
        keys = asyncio.create_task(self._pump_input(), name="attach-input")
        try:
            # The input side ends early only by an EOF (or an error); the output side decides.
            done, _ = await asyncio.wait({output, keys}, return_when=asyncio.FIRST_COMPLETED)
            error = keys.exception() if keys in done else None
            if error is not None:
                raise error
            if self._hook_error is not None:
                raise self._hook_error  # the output side may be waiting on a silent stream
            await output  # raises on_output's or write's error, if any
        finally:
            self._finished = True
            for task in (output, keys):
                task.cancel()
            await asyncio.gather(output, keys, return_exceptions=True)
            await self._stream.aclose()
            if self._input_paused:
                self._input_paused = False
                self._pause_input(False)
        if self._hook_error is not None:
            raise self._hook_error
        return self._outcome()

    async def stop(self) -> None:
        """End the bridge from outside (the session's wipe): close stdin, then the socket."""
        self._detaching = True
        self._stop.set()
        self._output_open.set()
        with contextlib.suppress(BackendUnavailable):
            await self._stream.close_stdin()
        await self._stream.aclose()

    def _outcome(self) -> int:
        stream = self._stream
        if stream.failure is not None:
            raise BackendUnavailable(
                stream.failure, hint="see the API server's and the node's logs for the container"
            )
        if stream.exit_status is not None:
            return stream.exit_status
        if self._detaching:
            return EXIT_DETACHED
        raise BackendUnavailable(
            "the connection to the debug container broke before it reported how it ended",
            hint="the container may still be running; the session's wipe ends it",
        )

    async def _pump_output(self) -> None:
        chunk = self._chunk
        since_yield = 0  # bytes written since the loop last ran other tasks
        while True:
            await self._output_open.wait()
            if self._stop.is_set():
                return
            # No suspension here while the stream has frames queued: only the yields below
            # let other sessions run.
            data = await self._stream.read()
            if data is None:
                return
            size = len(data)
            self._held = size
            for start in range(0, size, chunk):
                piece = data if size <= chunk else data[start : start + chunk]
                if since_yield + len(piece) > chunk:
                    # The fairness yield: at most one chunk per loop pass, so other
                    # sessions' keystrokes wait behind 64 KiB, never behind a window.
                    await asyncio.sleep(0)
                    since_yield = 0
                if not self._output_open.is_set():
                    await self._output_open.wait()
                if self._stop.is_set():
                    return
                if self._on_output is not None:
                    self._on_output(piece)
                self._write(piece)
                self._held -= len(piece)
                since_yield += len(piece)

    async def _pump_input(self) -> None:
        try:
            while True:
                await self._input_wanted.wait()
                self._input_wanted.clear()
                if self._hook_error is not None:
                    return
                await self._send_size()
                # A new size goes out before the rest of a paste.
                while self._keys and self._size is None:
                    batch = self._keys.popleft() if len(self._keys) == 1 else self._take_all()
                    await self._stream.write(batch)
                    self._keys_bytes -= len(batch)
                    if self._input_paused and self._keys_bytes <= INPUT_LOW_WATER:
                        self._input_paused = False
                        self._pause_input(False)
                if self._eof and not self._keys and self._size is None:
                    self._detaching = True
                    await self._stream.close_stdin()
                    return
        except BackendUnavailable:
            return  # the stream has ended; the output side reports how

    async def _send_size(self) -> None:
        if self._size is not None:
            size, self._size = self._size, None
            await self._stream.resize(*size)

    def _take_all(self) -> bytes:
        batch = b"".join(self._keys)
        self._keys.clear()
        return batch
