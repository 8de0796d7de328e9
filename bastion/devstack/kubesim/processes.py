"""Containers as real local processes: one process per container or exec, on a PTY or on pipes.

kubesim has no container runtime. A container (and each ``exec`` into it) is an ordinary local
process in its own session, so that attach, exec, resize, stdin EOF and exit codes behave like
the real thing for real clients. Linux only (``/proc``, PTY ioctls).

Semantics worth knowing before integrating:

* **Output fan-out.** Every :meth:`ContainerProcess.subscribe` gets its own bounded buffer of
  ``(channel, bytes)`` chunks (channel 1 stdout, 2 stderr; a TTY only ever produces 1). There
  is no replay: a subscriber sees output produced after it subscribed, as with
  ``kubectl attach``. With no subscribers the output is read and discarded, so the process never
  blocks on a full PTY or pipe.
* **Slow subscribers.** While a subscriber's buffer is full, reading pauses (the process feels
  ordinary backpressure, which keeps a single exec stream lossless), but for at most
  ``stall_timeout`` seconds. A subscriber still full after that is dropped: its iterator raises
  :class:`SubscriberTooSlowError` and the others carry on. So one stuck client can delay the
  process and its other viewers by ``stall_timeout``, never forever, and memory stays bounded.
* **End of stream.** Subscribers get end-of-stream only once the process has exited *and* its
  output has been drained. When the main process exits, whatever else is left in its session
  is killed, as a container's PID namespace is torn down when PID 1 exits; that is also what
  lets the PTY or the pipes reach EOF.
* **Closing stdin of a TTY** is a hangup: a PTY has no half-close, and an interactive shell
  given ``^D`` may ignore it (``ignoreeof``, a full-screen program, a non-empty line), while
  SIGHUP is what a dropped terminal delivers. See :meth:`ContainerProcess.close_stdin`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shutil
import signal
import stat
import struct
import sys
import termios
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

__all__ = [
    "STDERR",
    "STDOUT",
    "ContainerProcess",
    "ExecutableNotFoundError",
    "OutputChunk",
    "StdinClosedError",
    "SubscriberTooSlowError",
    "Subscription",
]

STDOUT = 1
STDERR = 2

_READ_SIZE = 64 * 1024
# Pythons any user can usually run, for processes that run as another uid.
_SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")
# Output bytes one pump passes on before it lets the other streams of the loop run.
_YIELD_EVERY = 64 * 1024
_DEFAULT_SUBSCRIBER_BUFFER = 1024 * 1024
_DEFAULT_STALL_TIMEOUT = 5.0
# After the main process exits, EOF on the PTY/pipes can only be held back by a process that
# escaped the session (setsid) and kept the fd: give up on it after this long.
_EOF_GRACE = 2.0

# Why a helper instead of fork + os.login_tty or preexec_fn: subprocess's own fork/exec path is
# async-signal-safe (vfork + C code) and works with threads around (asyncio's default executor
# and child watcher start some), whereas running Python between fork and exec in a threaded
# process can deadlock on a lock held by another thread, and a raw fork would also leave us to
# close inherited fds and to reap the child ourselves. subprocess can start a new session
# (start_new_session=True) but cannot make the PTY the controlling terminal, so the child
# execs this helper, which does only that (TIOCSCTTY on fd 0, the PTY slave) and then execs
# the real program. PID, session and process group stay the same across the exec.
# Python ignores SIGPIPE and SIGXFSZ at start-up and ignored signals survive exec, so the
# helper restores them, as subprocess's restore_signals does for a direct exec.
_CTTY_HELPER = """\
import fcntl, os, signal, sys, termios
for name in ("SIGPIPE", "SIGXFSZ"):
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
try:
    os.execvp(sys.argv[1], sys.argv[1:])
except OSError as error:
    os.write(2, ("exec %s: %s\\n" % (sys.argv[1], error.strerror)).encode())
    os._exit(127 if isinstance(error, FileNotFoundError) else 126)
"""


# How much of a container's output kubesim keeps for pods/log.
LOG_LIMIT = 256 * 1024


class OutputChunk(NamedTuple):
    """A piece of output: ``channel`` is :data:`STDOUT` or :data:`STDERR`."""

    channel: int
    data: bytes


class ExecutableNotFoundError(FileNotFoundError):
    """``argv[0]`` does not name an executable; ``str()`` is Go's wording, as runtimes report."""

    def __init__(self, program: str, reason: str) -> None:
        super().__init__(errno.ENOENT, reason, program)
        self.program = program

    def __str__(self) -> str:
        return f'exec: "{self.program}": {self.strerror}'


class StdinClosedError(Exception):
    """stdin cannot take more data: it was closed, never enabled, or the process is gone."""


class SubscriberTooSlowError(Exception):
    """This subscriber stayed full for longer than the process's ``stall_timeout``.

    It has been detached and has missed output; the other subscribers were not affected.
    """


class Subscription:
    """One attachment's view of a process's output: an async iterator of :class:`OutputChunk`.

    Ends (``StopAsyncIteration``) when the process has exited and all its output has been
    delivered, or after :meth:`close`. Raises :class:`SubscriberTooSlowError` if it was dropped.
    Use it as a context manager, or call :meth:`close`, to detach.
    """

    def __init__(self, owner: ContainerProcess, limit: int) -> None:
        self._owner: ContainerProcess | None = owner
        self._limit = limit
        self._chunks: deque[OutputChunk] = deque()
        self._buffered = 0
        self._ended = False
        self._dropped = False
        # When the buffer last became full (time.monotonic()); None while there is room.
        self._full_since: float | None = None
        self._changed = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def dropped(self) -> bool:
        """True once this subscriber has been detached for being too slow."""
        return self._dropped

    def close(self) -> None:
        """Detach from the process; idempotent. Buffered chunks are discarded."""
        if self._owner is not None:
            self._owner._unsubscribe(self)
            self._owner = None
        self._ended = True
        self._chunks.clear()
        self._buffered = 0
        self._room.set()
        self._changed.set()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> OutputChunk:
        while True:
            if self._dropped:
                raise SubscriberTooSlowError(
                    "output subscriber fell behind for too long and was detached"
                )
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk.data)
                if self._buffered < self._limit:
                    self._full_since = None
                    self._room.set()
                return chunk
            if self._ended:
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()

    # ------------------------------------------------------------ producer side (the process)
    def _push(self, chunk: OutputChunk) -> None:
        if self._ended:
            return
        self._chunks.append(chunk)
        self._buffered += len(chunk.data)
        if self._buffered >= self._limit and self._full_since is None:
            self._full_since = time.monotonic()
            self._room.clear()
        self._changed.set()

    def _has_room(self) -> bool:
        return self._ended or self._buffered < self._limit

    def _end(self) -> None:
        self._ended = True
        self._owner = None
        self._room.set()
        self._changed.set()

    def _drop(self) -> None:
        self._dropped = True
        self._chunks.clear()
        self._buffered = 0
        self._end()


class ContainerProcess:
    """A container's (or an exec's) process, with fan-out of its output to many attachments.

    ``argv`` is run with ``cwd`` and exactly ``env`` (nothing inherited), in a new session.
    ``tty=True`` runs it on a fresh PTY (80x24) that is its controlling terminal; otherwise it
    gets pipes and stdout/stderr stay apart. ``stdin=False`` gives it ``/dev/null`` as stdin
    (on a TTY, the terminal is still its stdin, but :meth:`write_stdin` refuses).

    One instance belongs to one event loop. Call :meth:`start` once; then always let it end
    (:meth:`wait`, :meth:`stop`) so its fds are closed and its helper tasks finish.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        tty: bool,
        stdin: bool,
        run_as: tuple[int, int] | None = None,
        subscriber_buffer: int = _DEFAULT_SUBSCRIBER_BUFFER,
        stall_timeout: float = _DEFAULT_STALL_TIMEOUT,
    ) -> None:
        if not argv:
            raise ValueError("argv must name a program")
        # (uid, gid) to run as, with no supplementary groups; None: kubesim's own.
        self._identity: dict[str, Any] = (
            {} if run_as is None else {"user": run_as[0], "group": run_as[1], "extra_groups": []}
        )
        self.argv: tuple[str, ...] = tuple(argv)
        self.cwd = cwd
        self.env: dict[str, str] = dict(env)
        self.tty = tty
        self.stdin_enabled = stdin
        self._subscriber_buffer = subscriber_buffer
        self._stall_timeout = stall_timeout

        self._proc: asyncio.subprocess.Process | None = None
        self._started_at: datetime | None = None
        self._terminated_at: datetime | None = None
        self._size = (80, 24)
        self._subscribers: list[Subscription] = []
        self._pumps: list[asyncio.Task[None]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._exited = asyncio.Event()

        # Fds we own: the PTY master (read, write, resize), or our ends of the pipes.
        self._master_fd: int | None = None
        self._stdin_fd: int | None = None
        self._output_fds: list[tuple[int, int]] = []  # (fd, channel)

        # The container's log: its most recent output, as the kubelet keeps a log file.
        self._log = bytearray()

        self._stdin_open = stdin
        self._stdin_lock = asyncio.Lock()
        self._stdin_waiter: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------------ state
    @property
    def started(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the process has not been started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """Python's convention: the exit status, or ``-N`` if killed by signal N."""
        return None if self._proc is None else self._proc.returncode

    @property
    def exit_code(self) -> int | None:
        """The container convention (what Kubernetes reports): ``128 + N`` for signal N."""
        code = self.returncode
        if code is None:
            return None
        return 128 - code if code < 0 else code

    @property
    def started_at(self) -> datetime | None:
        return self._started_at

    @property
    def terminated_at(self) -> datetime | None:
        return self._terminated_at

    @property
    def finished(self) -> bool:
        """True once the process has exited and its output has been delivered and closed."""
        return self._done.is_set()

    # ------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the process; :class:`ExecutableNotFoundError` if ``argv[0]`` is not found.

        Other ``OSError``s (e.g. ``cwd`` missing, permission denied) propagate as they are.
        """
        if self._proc is not None:
            raise RuntimeError("the process was already started")
        child_fds: list[int] = []
        try:
            _check_executable(self.argv[0], self.env, self.cwd)
            if self.tty:
                master, slave = os.openpty()
                self._master_fd = master
                child_fds.append(slave)
                os.set_blocking(master, False)
                _set_winsize(master, *self._size)
                if self.stdin_enabled:
                    self._stdin_fd = master
                self._output_fds.append((master, STDOUT))
                proc = await asyncio.create_subprocess_exec(
                    self._interpreter(),
                    "-I",
                    "-S",
                    "-c",
                    _CTTY_HELPER,
                    *self.argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,
                    **self._identity,
                )
            else:
                child_stdin: int = asyncio.subprocess.DEVNULL
                if self.stdin_enabled:
                    read_end, write_end = os.pipe()
                    child_fds.append(read_end)
                    os.set_blocking(write_end, False)
                    self._stdin_fd = write_end
                    child_stdin = read_end
                out_read, out_write = os.pipe()
                self._output_fds.append((out_read, STDOUT))
                child_fds.append(out_write)
                err_read, err_write = os.pipe()
                self._output_fds.append((err_read, STDERR))
                child_fds.append(err_write)
                for fd, _ in self._output_fds:
                    os.set_blocking(fd, False)
                proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=child_stdin,
                    stdout=out_write,
                    stderr=err_write,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,
                    **self._identity,
                )
        except BaseException:
            self._close_own_fds()
            # Whoever subscribed before start() must not wait for output that will never come.
            subscribers, self._subscribers = self._subscribers, []
            for sub in subscribers:
                sub._end()
            raise
        finally:
            # The child has its copies; ours must go, or EOF/EIO would never come.
            for fd in child_fds:
                os.close(fd)
        self._proc = proc
        self._started_at = datetime.now(UTC)
        self._pumps = [
            asyncio.create_task(self._pump(fd, channel), name=f"kubesim-output-{proc.pid}")
            for fd, channel in self._output_fds
        ]
        self._supervisor = asyncio.create_task(
            self._supervise(proc), name=f"kubesim-pid-{proc.pid}"
        )

    def _interpreter(self) -> str:
        """The Python that runs the controlling-terminal helper. Another user may not be
        able to reach this one (a venv or pyenv under /root): the system's then."""
        if not self._identity or _others_can_run(sys.executable):
            return sys.executable
        for candidate in _SYSTEM_PYTHONS:
            if _others_can_run(candidate):
                return candidate
        raise PermissionError(
            errno.EACCES,
            f"no Python that uid {self._identity['user']} can run (tried {sys.executable}, "
            f"{', '.join(_SYSTEM_PYTHONS)})",
        )

    async def wait(self) -> int:
        """Wait until the process has exited and its output is drained; return ``returncode``."""
        if self._proc is None:
            raise RuntimeError("the process has not been started")
        await self._done.wait()
        code = self._proc.returncode
        if code is None:  # _done is set only after the exit, unless the supervisor was killed
            raise RuntimeError("the process's supervision ended before it exited")
        return code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process's group (all of it, not only the main process).

        A no-op once the main process has exited: its group is then gone or being torn down,
        and its PID may already belong to someone else.
        """
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    async def stop(self, grace: float = 10.0) -> int:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; return ``returncode``."""
        if self._proc is None:
            raise RuntimeError("the process has not been started")
        if self._proc.returncode is None:
            self.kill(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await self._exited.wait()
            except TimeoutError:
                self.kill(signal.SIGKILL)
        return await self.wait()

    # ------------------------------------------------------------------------ terminal
    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal size; the kernel sends SIGWINCH to the foreground process group.

        Before :meth:`start` the size is remembered; without a TTY this does nothing.
        """
        self._size = (cols, rows)
        if self._master_fd is not None:
            with contextlib.suppress(OSError):  # the PTY is being torn down
                _set_winsize(self._master_fd, cols, rows)

    # ------------------------------------------------------------------------ output
    def recent_output(self) -> bytes:
        """What ``pods/log`` serves: the last :data:`LOG_LIMIT` bytes of output."""
        return bytes(self._log)

    def subscribe(self) -> Subscription:
        """Start receiving output produced from now on (no replay of earlier output).

        Allowed before :meth:`start` (then nothing is missed). After the process has finished,
        the subscription is already at end-of-stream.
        """
        sub = Subscription(self, self._subscriber_buffer)
        if self._done.is_set():
            sub._end()
        else:
            self._subscribers.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(sub)

    async def _pump(self, fd: int, channel: int) -> None:
        since_yield = 0
        while True:
            await self._wait_for_room()
            data = await _read_fd(fd)
            if not data:
                return
            chunk = OutputChunk(channel, data)
            self._log += data
            if len(self._log) > LOG_LIMIT:
                del self._log[: len(self._log) - LOG_LIMIT]
            for sub in self._subscribers:
                sub._push(chunk)
            # _read_fd returns at once while the PTY has data, so a busy process would keep
            # this loop going until its subscribers' buffers are full (1 MiB): every other
            # stream of this server would wait behind that. A kubelet streams each container
            # in its own goroutine; this is the nearest an event loop gets.
            since_yield += len(data)
            if since_yield >= _YIELD_EVERY:
                since_yield = 0
                await asyncio.sleep(0)

    async def _wait_for_room(self) -> None:
        # Judged per subscriber by how long it has been full without a break, not by whether
        # it is full when some timer fires: the stdout and stderr pumps wait concurrently, and
        # a reader that drained and filled up again in between must not be dropped.
        while True:
            full = [sub for sub in self._subscribers if not sub._has_room()]
            if not full:
                return
            oldest = min(full, key=_full_since)
            remaining = _full_since(oldest) + self._stall_timeout - time.monotonic()
            if remaining <= 0:
                self._unsubscribe(oldest)
                oldest._drop()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await oldest._room.wait()

    # ------------------------------------------------------------------------ stdin
    async def write_stdin(self, data: bytes) -> None:
        """Write all of ``data`` to stdin, waiting while the PTY or pipe is full.

        Concurrent writers are serialised, so chunks from two attachments never interleave.
        Raises :class:`StdinClosedError` if stdin is closed, was never enabled, or the process
        has exited (also while waiting).
        """
        if self._proc is None:
            raise RuntimeError("the process has not been started")
        if not data:
            return
        async with self._stdin_lock:
            view = memoryview(data)
            while view:
                fd = self._stdin_fd
                if not self._stdin_open or fd is None:
                    raise StdinClosedError("stdin is closed")
                try:
                    written = os.write(fd, view)
                except BlockingIOError:
                    await self._wait_stdin_writable(fd)
                    continue
                except OSError as error:
                    # EPIPE: nobody reads the pipe any more; EIO: the PTY slave is gone.
                    if error.errno in (errno.EPIPE, errno.EIO):
                        raise StdinClosedError("the process no longer reads stdin") from error
                    raise
                view = view[written:]

    async def _wait_stdin_writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._stdin_waiter = waiter
        loop.add_writer(fd, _resolve, waiter)
        try:
            await waiter
        finally:
            # _shut_stdin() unregisters it itself (before the fd can be closed and reused).
            if self._stdin_waiter is waiter:
                self._stdin_waiter = None
                loop.remove_writer(fd)

    def close_stdin(self) -> None:
        """Signal end of input; idempotent.

        With pipes, our end of the stdin pipe is closed, so the program reads EOF. A PTY has
        no half-close (closing the master would hang up *and* lose the remaining output), and
        a ``^D`` only means EOF to a program in canonical mode at the start of a line. So for
        a TTY this is a hangup, as when a terminal goes away: SIGHUP, then SIGCONT, to the
        main process's group and the terminal's foreground group. An interactive shell exits;
        a program that ignores SIGHUP keeps running, but gets no more input from us.
        """
        if self._proc is None:
            raise RuntimeError("the process has not been started")
        was_open = self._stdin_open
        self._shut_stdin()
        if not was_open or not self.tty or self._proc.returncode is not None:
            return
        groups = {self._proc.pid}
        if self._master_fd is not None:
            with contextlib.suppress(OSError):
                foreground = os.tcgetpgrp(self._master_fd)
                # 0 until the child has made the PTY its terminal, and killpg(0) would signal
                # *our* group: only a group led by a member of the container's session counts.
                if foreground > 0 and os.getsid(foreground) == self._proc.pid:
                    groups.add(foreground)
        for group in groups:
            for sig in (signal.SIGHUP, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, sig)

    def _shut_stdin(self) -> None:
        self._stdin_open = False
        waiter, self._stdin_waiter = self._stdin_waiter, None
        if waiter is not None and self._stdin_fd is not None:
            asyncio.get_running_loop().remove_writer(self._stdin_fd)
            if not waiter.done():
                waiter.set_exception(StdinClosedError("stdin is closed"))
        if not self.tty and self._stdin_fd is not None:
            os.close(self._stdin_fd)
        if not self.tty:
            self._stdin_fd = None

    # ------------------------------------------------------------------------ exit
    async def _supervise(self, proc: asyncio.subprocess.Process) -> None:
        try:
            await proc.wait()
            self._terminated_at = datetime.now(UTC)
            self._exited.set()
            _kill_session(proc.pid)
            self._shut_stdin()
            # Bounded: a stalled pump waits at most stall_timeout per chunk, and after the exit
            # only what the kernel still buffers (a few chunks) is left to read.
            _, pending = await asyncio.wait(
                self._pumps, timeout=_EOF_GRACE + 2 * self._stall_timeout
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._pumps, return_exceptions=True)
        finally:
            self._close_own_fds()
            subscribers, self._subscribers = self._subscribers, []
            for sub in subscribers:
                sub._end()
            self._done.set()

    def _close_own_fds(self) -> None:
        fds = {fd for fd, _ in self._output_fds}
        if self._master_fd is not None:
            fds.add(self._master_fd)
        if self._stdin_fd is not None:
            fds.add(self._stdin_fd)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._output_fds = []
        self._master_fd = None
        self._stdin_fd = None
        self._stdin_open = False

    def __repr__(self) -> str:
        pid = self._proc.pid if self._proc is not None else None
        return (
            f"<ContainerProcess argv={list(self.argv)!r} pid={pid} tty={self.tty} "
            f"returncode={self.returncode}>"
        )


# ---------------------------------------------------------------------------- helpers
def _full_since(sub: Subscription) -> float:
    return sub._full_since if sub._full_since is not None else time.monotonic()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _read_fd(fd: int) -> bytes:
    """Read what is available from a non-blocking fd; ``b""`` at EOF."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return os.read(fd, _READ_SIZE)
        except BlockingIOError:
            pass
        except OSError as error:
            if error.errno == errno.EIO:  # PTY master: every slave fd has been closed
                return b""
            raise
        waiter: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _resolve, waiter)
        try:
            await waiter
        finally:
            loop.remove_reader(fd)


def _others_can_run(program: str) -> bool:
    """True if every directory on the way to ``program`` and the program itself let any
    user through (the x bit for others), following symlinks."""
    path = Path(os.path.realpath(program))
    try:
        if not path.stat().st_mode & stat.S_IXOTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)
    except OSError:
        return False


def _set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _check_executable(program: str, env: Mapping[str, str], cwd: Path) -> None:
    """Fail in start() rather than in the child (where it would only be an exit code)."""
    if "/" in program:
        path = Path(program) if Path(program).is_absolute() else cwd / program
        if path.is_file() and os.access(path, os.X_OK):
            return
        raise ExecutableNotFoundError(program, f"stat {program}: no such file or directory")
    if shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise ExecutableNotFoundError(program, "executable file not found in $PATH")


def _session_members(session: int) -> list[int]:
    members: list[int] = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_bytes()
            except OSError:
                continue  # exited while we looked
            # Fields after the command name, which may itself contain spaces and parentheses:
            # state, ppid, pgrp, session, ...
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 3 and int(fields[3]) == session:
                members.append(int(entry.name))
    return members


def _kill_session(session: int) -> None:
    # The session ID stays reserved while any member is alive, so this cannot hit strangers.
    for pid in _session_members(session):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
