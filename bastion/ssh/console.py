"""The console of one SSH session: a separate process on its own pseudo-terminal.

Why a process (DESIGN.md): a slow or crashing screen stays inside its session and never
stalls the SSH server's event loop. The child is started with fork+exec (``subprocess``),
never a bare fork of this process, which would share the loop's epoll and signal wake-up fd.
It becomes a session leader and takes the pty as its controlling terminal, so the kernel
delivers SIGWINCH after a resize and SIGHUP when the operator goes away.

Only the pty master stays here; the bridge moves bytes between it and the SSH channel with
back-pressure in both directions (a client that stops reading pauses the console's output,
a console that stops reading pauses the channel).

How the process starts is the one thing that varies: a :class:`Launcher` (the worker's
pre-warmed template, :mod:`bastion.ssh.zygote`) may start it from the slave side of the pty;
when there is none, or it cannot, the console is a fresh process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import sys
import termios
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

__all__ = [
    "Console",
    "ConsoleProcess",
    "Launcher",
    "PrewarmedCommand",
    "TerminalSize",
    "python_argv",
]

_READ_CHUNK = 65536
_HIGH_WATER = 256 * 1024
_KILL_AFTER = 2.0


class TerminalSize:
    def __init__(self, cols: int, rows: int, width_px: int = 0, height_px: int = 0) -> None:
        # A client may send 0 or absurd sizes; the kernel takes 16-bit values.
        self.cols = min(max(cols, 1), 1000) if cols else 80
        self.rows = min(max(rows, 1), 1000) if rows else 24
        self.width_px = min(max(width_px, 0), 65535)
        self.height_px = min(max(height_px, 0), 65535)

    def apply(self, fd: int) -> None:
        packed = struct.pack("HHHH", self.rows, self.cols, self.width_px, self.height_px)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, packed)


class ConsoleProcess(Protocol):
    """The running console, however it was started."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def signal_group(self, signum: int) -> None:
        """Signal the console's process group, unless the console has already exited."""


class Launcher(Protocol):
    async def launch(
        self, argv: Sequence[str], *, tty: int, env: dict[str, str], pass_fds: Sequence[int]
    ) -> ConsoleProcess | None:
        """Start ``argv`` as a session leader on ``tty`` with exactly ``pass_fds`` (same
        numbers) besides stdio; None when this launcher cannot, and a fresh process must."""


class PrewarmedCommand(tuple[str, ...]):
    """A console command line together with the launcher that can start it quickly.

    The front door passes the command line it is given straight to :class:`Console`, so the
    worker chooses the launcher where it chooses the command.
    """

    launcher: Launcher

    def __new__(cls, argv: Iterable[str], launcher: Launcher) -> PrewarmedCommand:
        command = super().__new__(cls, argv)
        command.launcher = launcher
        return command


class _FreshProcess:
    """A console started with fork+exec, as a ConsoleProcess."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def wait(self) -> int:
        return await self._process.wait()

    def signal_group(self, signum: int) -> None:
        if self._process.returncode is None:
            _signal_group(self._process.pid, signum)


class Console:
    """A child process on a fresh pty, bridged to callbacks that write to the SSH channel."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        size: TerminalSize,
        write: Callable[[bytes], None],
        pause_input: Callable[[bool], None],
        pass_fds: Sequence[int] = (),
        launcher: Launcher | None = None,
    ) -> None:
        if launcher is None and isinstance(argv, PrewarmedCommand):
            launcher = argv.launcher
        self._launcher = launcher
        self._argv = list(argv)
        self._pass_fds = tuple(pass_fds)
        self._env = env
        self._size = size
        self._write = write
        self._pause_input = pause_input
        self._master = -1
        self._process: ConsoleProcess | None = None
        self._pending = bytearray()
        self._reading_paused = False
        self._closed = False
        self._output_done = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()

    def is_closed(self) -> bool:
        # A method, not a property: it changes across awaits, and mypy narrows attributes.
        return self._closed

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        if self.is_closed():
            raise OSError("the console was closed before it started")
        if self._launcher is not None:
            master, slave = self._open_pty()
            try:
                self._process = await self._launcher.launch(
                    self._argv, tty=slave, env=self._env, pass_fds=self._pass_fds
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            if self._process is None:
                # The launcher may have handed this pty to a process it then lost track of.
                os.close(master)
        if self._process is None:
            master, slave = self._open_pty()
            try:
                fresh = await asyncio.create_subprocess_exec(
                    *self._argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    env=self._env,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=self._pass_fds,
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            self._process = _FreshProcess(fresh)
        self._master = master
        self._loop.add_reader(master, self._readable)
        if self.is_closed():  # closed while the process was being started: end it now
            self._closed = False
            self.close()
            raise OSError("the console was closed while it started")

    def _open_pty(self) -> tuple[int, int]:
        master, slave = os.openpty()
        try:
            os.set_blocking(master, False)
            self._size.apply(master)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        return master, slave

    # ------------------------------------------------------------------ console → client
    def _readable(self) -> None:
        try:
            data = os.read(self._master, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO: every process holding the slave side has gone.
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._stop_reading()
            if not self._output_done.done():
                self._output_done.set_result(None)
            return
        self._write(data)

    def _stop_reading(self) -> None:
        if self._master >= 0 and not self._reading_paused:
            self._loop.remove_reader(self._master)
            self._reading_paused = True

    def pause_output(self, paused: bool) -> None:
        """The SSH channel's window is full (True) or has room again (False)."""
        if self._master < 0 or self._output_done.done():
            return
        if paused:
            self._stop_reading()
        elif self._reading_paused:
            self._reading_paused = False
            self._loop.add_reader(self._master, self._readable)

    # ------------------------------------------------------------------ client → console
    def feed(self, data: bytes) -> None:
        if self._master < 0:
            return
        if not self._pending:
            try:
                written = os.write(self._master, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # the console is gone; its exit is reported by wait()
            data = data[written:]
            if not data:
                return
            self._loop.add_writer(self._master, self._writable)
        self._pending += data
        if len(self._pending) > _HIGH_WATER:
            self._pause_input(True)

    def _writable(self) -> None:
        try:
            written = os.write(self._master, self._pending)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._pending)
        del self._pending[:written]
        if not self._pending:
            self._loop.remove_writer(self._master)
            self._pause_input(False)

    def resize(self, size: TerminalSize) -> None:
        if self._master >= 0:
            size.apply(self._master)

    # ------------------------------------------------------------------ ending
    async def wait(self) -> int:
        """Exit status once the process has exited and its output is drained."""
        if self._process is None:
            raise RuntimeError("Console.wait() before start()")
        code = await self._process.wait()
        # Output written just before exit is still in the pty: read it all before closing.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._output_done), 2.0)
        return code if code >= 0 else 128 - code

    def close(self) -> None:
        """End the console and release the pty; safe to call more than once, without awaits
        (asyncssh may destroy the session's task on an abrupt disconnect)."""
        self._closed = True
        process = self._process
        if process is not None and process.returncode is None:
            # A hang-up first, as a terminal would; whatever ignores it is killed shortly.
            process.signal_group(signal.SIGHUP)
            self._loop.call_later(_KILL_AFTER, process.signal_group, signal.SIGKILL)
        if self._master >= 0:
            self._loop.remove_reader(self._master)
            self._loop.remove_writer(self._master)
            os.close(self._master)
            self._master = -1
        if not self._output_done.done():
            self._output_done.set_result(None)


def _signal_group(pid: int, signum: int) -> None:
    # The console is a session (and process group) leader: its group is its whole tree.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def python_argv(module: str, *args: str) -> list[str]:
    """The command line that runs one of our modules with this interpreter."""
    return [sys.executable, "-I", "-m", module, *args]
