"""Consoles forked from a pre-warmed template process (the zygote, :mod:`tui.zygote`).

A fresh console pays for a new interpreter and Textual's import (about 0.4 s and tens of MB);
a console forked from a template that did that once costs only its own pages. The worker
starts the template at start-up with fork+exec (never a bare fork of the worker, whose child
would share the event loop's epoll and signal wake-up descriptor) and sends it, for each
console, the slave side of the session's pty, the console's descriptors, argv and
environment (SCM_RIGHTS over a SOCK_SEQPACKET socketpair; the format is in
:mod:`tui.zygote`). The pty master stays here, in :class:`~bastion.ssh.console.Console`, so
the byte path and its flow control are the same for both kinds of console.

A console is not the worker's child: it is tracked by a pidfd the template opens at fork
time, its exit status comes from the template, and if the template dies the consoles live on,
re-parented to the worker (a child subreaper), which then reaps them through their pidfds.
A dead template is restarted; until it is ready again, consoles start as fresh processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import logging
import os
import select
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bastion.ssh.console import Console, PrewarmedCommand, TerminalSize, python_argv

__all__ = ["Zygote", "ZygoteConsole", "ZygoteProcess"]

log = logging.getLogger(__name__)

_MAX_PACKET = 64 * 1024  # tui.zygote.MAX_PACKET
_MAX_FDS = 8  # tui.zygote.MAX_FDS
# A fork takes milliseconds; a template that does not answer in this time is stuck.
_FORK_TIMEOUT = 2.0
_READY_TIMEOUT = 60.0
_FIRST_READY_WAIT = 10.0
_STOP_TIMEOUT = 2.0
_RESTART_DELAYS = (0.1, 0.5, 2.0, 10.0, 30.0)
_STABLE_AFTER = 60.0  # a template that served this long restarts without waiting
_PR_SET_CHILD_SUBREAPER = 36
_REAP_TRIES = 20
_REAP_RETRY = 0.05


def _become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process (not to init), so the consoles
    of a dead template can still be reaped here, with their exit status."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


class ZygoteProcess:
    """A console forked by the template: signalled by process group, ended by pidfd."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self._pid = pid
        self._pidfd = pidfd
        self._loop = asyncio.get_running_loop()
        self._status: asyncio.Future[int] = self._loop.create_future()
        self._watching = False
        self._reap_tries = 0

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._status.result() if self._status.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._status)

    def signal_group(self, signum: int) -> None:
        # An exited leader's pid may be recycled once reaped: signal only a live one.
        if self._status.done() or self._has_exited():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, signum)

    def _has_exited(self) -> bool:
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        return bool(poller.poll(0))

    def exited(self, code: int) -> None:
        """The template reaped the console."""
        if self._status.done():
            return
        self._status.set_result(code)
        self._release()

    def orphaned(self) -> None:
        """The template is gone before reporting this console's end: reap it here."""
        if self._status.done() or self._watching:
            return
        self._watching = True
        self._loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        try:
            result = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            # Not (yet) our child: the dying template's children are re-parented at the very
            # end of its exit. Otherwise it reaped this one just before dying, or this process
            # is not a subreaper: the status is lost.
            self._loop.remove_reader(self._pidfd)
            self._watching = False
            self._reap_tries += 1
            if self._reap_tries < _REAP_TRIES:
                self._loop.call_later(_REAP_RETRY, self.orphaned)
                return
            log.warning("console %d ended after its template; its exit status is unknown", self.pid)
            self.exited(1)
            return
        if result is None:
            return
        killed = result.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
        self.exited(-result.si_status if killed else result.si_status)

    def _release(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._pidfd)
            self._watching = False
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


class _Template:
    """One running template process and its control socket."""

    def __init__(self, process: asyncio.subprocess.Process, control: socket.socket) -> None:
        self.process = process
        self.control = control
        self.started = asyncio.get_running_loop().time()
        self.ready = asyncio.get_running_loop().create_future()
        self.pending: dict[int, asyncio.Future[ZygoteProcess | None]] = {}
        self.consoles: dict[int, ZygoteProcess] = {}
        self.modules: frozenset[str] = frozenset()  # what it preloaded
        self.lost = False


class Zygote:
    """The worker's console template: started once, restarted when it dies."""

    def __init__(
        self,
        modules: Sequence[str],
        *,
        search_path: Sequence[Path] = (),
        python: str = sys.executable,
    ) -> None:
        self.modules = tuple(modules)
        self._search_path = tuple(search_path)
        self._python = python
        self._template: _Template | None = None
        self._ids = itertools.count(1)
        self._restarts = 0
        self._closing = False
        self._restarting: asyncio.Task[None] | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self.starts = 0  # how many template processes were started (for tests and bench)

    @property
    def pid(self) -> int | None:
        """The running template's pid."""
        return self._template.process.pid if self._template is not None else None

    def is_ready(self) -> bool:
        template = self._template
        return template is not None and template.ready.done() and not template.lost

    async def start(self) -> bool:
        """Start the template and wait (a second or so) until it is warm, so that the first
        logins neither start fresh nor compete with the warm-up for the CPU. False when it is
        not ready: it failed, or is slow (then consoles start fresh until it is ready)."""
        if not _become_subreaper():
            log.warning("not a child subreaper: consoles of a dead template lose their status")
        await self._spawn()
        template = self._template
        if template is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_FIRST_READY_WAIT):
                    await asyncio.wait({template.ready})  # ready, or cancelled when lost
        return self.is_ready()

    async def wait_ready(self) -> None:
        """Until a template is warm (for tests and benchmarks; callers bound the wait)."""
        while not self.is_ready():
            template = self._template
            if template is not None and not template.lost:
                await asyncio.wait({template.ready})  # cancelled when that template is lost
            else:
                await asyncio.sleep(0.05)

    def command(self, argv: Sequence[str]) -> PrewarmedCommand:
        """``argv`` as a command line this template starts when it can."""
        return PrewarmedCommand(argv, self)

    async def launch(
        self, argv: Sequence[str], *, tty: int, env: dict[str, str], pass_fds: Sequence[int]
    ) -> ZygoteProcess | None:
        template = self._template
        if template is None or not self.is_ready():
            return None
        module = _module_of(argv, template.modules)
        if module is None:
            return None
        request_id = next(self._ids)
        packet = json.dumps(
            {
                "id": request_id,
                "module": module,
                "argv": list(argv[4:]),
                "env": env,
                "fds": list(pass_fds),
            }
        ).encode()
        if len(packet) > _MAX_PACKET or len(pass_fds) + 1 > _MAX_FDS:
            return None
        answer: asyncio.Future[ZygoteProcess | None] = asyncio.get_running_loop().create_future()
        template.pending[request_id] = answer
        try:
            socket.send_fds(template.control, [packet], [tty, *pass_fds])
            async with asyncio.timeout(_FORK_TIMEOUT):
                return await asyncio.shield(answer)
        except (OSError, TimeoutError) as exc:
            log.warning("console template did not start a console (%s); starting it fresh", exc)
            return None
        finally:
            template.pending.pop(request_id, None)

    async def aclose(self) -> None:
        """Stop the template (its consoles are the sessions' to end)."""
        self._closing = True
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restarting
        template = self._template
        if template is not None:
            self._lose(template)
            with contextlib.suppress(ProcessLookupError):
                try:
                    async with asyncio.timeout(_STOP_TIMEOUT):
                        await template.process.wait()
                except TimeoutError:
                    template.process.kill()
                    await template.process.wait()
        for task in list(self._watchers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ the template process
    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.setblocking(False)
            paths = [arg for path in self._search_path for arg in ("--path", str(path))]
            process = await asyncio.create_subprocess_exec(
                self._python,
                "-I",
                "-m",
                "tui.zygote",
                "--control-fd",
                str(theirs.fileno()),
                *paths,
                *self.modules,
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=2,  # its complaints go where the worker logs
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                start_new_session=True,  # the operator's Ctrl-C in a terminal is not for it
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        template = _Template(process, ours)
        self._template = template
        self.starts += 1
        asyncio.get_running_loop().add_reader(ours, self._readable, template)
        watcher = asyncio.get_running_loop().create_task(self._watch(template))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, template: _Template) -> None:
        """Lose the template when it exits, or kill it when it does not get ready in time."""
        exited = asyncio.ensure_future(template.process.wait())
        try:
            done, _ = await asyncio.wait({exited, template.ready}, timeout=_READY_TIMEOUT)
            if not done:
                log.error("the console template did not get ready in %.0f s", _READY_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    template.process.kill()
            code = await exited
        finally:
            exited.cancel()
        if not self._closing:
            log.error("the console template exited with status %d; restarting it", code)
        self._lose(template)

    def _readable(self, template: _Template) -> None:
        while True:
            try:
                packet, fds, _, _ = socket.recv_fds(template.control, _MAX_PACKET, _MAX_FDS)
            except BlockingIOError:
                return
            except OSError:
                packet, fds = b"", []
            if not packet and not fds:
                self._lose(template)
                return
            try:
                self._answer(template, json.loads(packet), fds)
            except (ValueError, TypeError, KeyError) as exc:
                log.error("console template sent an invalid message: %s", exc)  # noqa: TRY400
                for fd in fds:
                    os.close(fd)

    def _answer(self, template: _Template, message: dict[str, object], fds: list[int]) -> None:
        if "ready" in message:
            modules = message.get("modules")
            if isinstance(modules, list):
                template.modules = frozenset(str(m) for m in modules)
            if not template.ready.done():
                template.ready.set_result(None)
            return
        if "exited" in message:
            console = template.consoles.pop(_int(message["exited"]), None)
            if console is not None:
                console.exited(_int(message["status"]))
            return
        answer = template.pending.get(_int(message["id"]))
        if "pid" in message and len(fds) == 1:
            console = ZygoteProcess(_int(message["pid"]), fds[0])
            if answer is None or answer.done():
                # Its request was given up (the login fell back to a fresh console).
                signal.pidfd_send_signal(fds[0], signal.SIGKILL)
                template.consoles[console.pid] = console
                return
            template.consoles[console.pid] = console
            answer.set_result(console)
            return
        log.error("console template could not start a console: %s", message.get("error"))
        for fd in fds:
            os.close(fd)
        if answer is not None and not answer.done():
            answer.set_result(None)

    def _lose(self, template: _Template) -> None:
        """The template is gone (or going): fresh consoles from now on, its consoles reaped
        here, and a new template soon."""
        if template.lost:
            return
        template.lost = True
        loop = asyncio.get_running_loop()
        loop.remove_reader(template.control)
        template.control.close()
        if not template.ready.done():
            template.ready.cancel()
        for answer in template.pending.values():
            if not answer.done():
                answer.set_result(None)
        for console in template.consoles.values():
            console.orphaned()
        template.consoles.clear()
        if self._template is template:
            self._template = None
        if self._closing:
            return
        with contextlib.suppress(ProcessLookupError):
            template.process.kill()  # it closed its socket, so it serves nobody
        lived = loop.time() - template.started
        self._restarts = 0 if lived > _STABLE_AFTER else self._restarts + 1
        self._restarting = loop.create_task(self._restart())

    async def _restart(self) -> None:
        """A new template, soon; sooner after one that served a while than after one that
        keeps dying at start."""
        while not self._closing:
            if self._restarts:
                await asyncio.sleep(_RESTART_DELAYS[min(self._restarts, len(_RESTART_DELAYS)) - 1])
            try:
                await self._spawn()
            except OSError as exc:
                log.error("the console template could not be restarted: %s", exc)  # noqa: TRY400
                self._restarts += 1
            else:
                return


def _module_of(argv: Sequence[str], modules: frozenset[str]) -> str | None:
    """The module ``argv`` runs, when it is a preloaded one run by this interpreter."""
    if len(argv) >= 4 and list(argv[:3]) == python_argv("")[:3] and argv[3] in modules:
        return argv[3]
    return None


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


class ZygoteConsole(Console):
    """A :class:`Console` that the template starts when it can (a fresh process otherwise)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        zygote: Zygote,
        env: dict[str, str],
        size: TerminalSize,
        write: Callable[[bytes], None],
        pause_input: Callable[[bool], None],
        pass_fds: Sequence[int] = (),
    ) -> None:
        super().__init__(
            argv,
            env=env,
            size=size,
            write=write,
            pause_input=pause_input,
            pass_fds=pass_fds,
            launcher=zygote,
        )
