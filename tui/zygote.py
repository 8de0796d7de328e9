"""The console template (zygote): imports Textual and the console modules once, warms them up,
then forks one console per session request from the worker.

Importing Textual costs about 0.4 s and tens of MB; a console forked from a warm template
costs only the pages it writes to (docs/front-door.md, "The console process").

    python -I -m tui.zygote --control-fd FD [--path DIR ...] MODULE [MODULE ...]

Each MODULE has ``main(argv: list[str]) -> int`` and is imported before the first fork.
The console every login gets (``tui.app``) is also run once, headless, against an in-memory
broker, before the first fork (:func:`_warm_up_console`).
The template gets no credentials and no environment of the worker's: a console gets only what
its request carries (a pty, the descriptors it names, its argv and environment).

The control socket (AF_UNIX, SOCK_SEQPACKET, one JSON object per packet) carries, worker to
template: ``{"id", "module", "argv", "env", "fds"}`` with the pty's slave side and then one
descriptor per number in ``fds`` attached (SCM_RIGHTS); template to worker: ``{"ready": PID}``
once warm, ``{"id", "pid"}`` with the console's pidfd attached, or ``{"id", "error"}``, and
``{"exited": PID, "status": CODE}`` when a console ends (CODE as
``os.waitstatus_to_exitcode``). The template exits when the worker closes its end.

No threads, ever: a fork copies only the calling thread, and a lock another thread held
would stay locked in every console.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

from textual import events
from textual.app import App, ComposeResult
from textual.drivers.headless_driver import HeadlessDriver
from textual.pilot import Pilot
from textual.widgets import Footer, Input, OptionList, Static

from bastion.console_protocol import (
    HiddenItem,
    ListNamespaces,
    Message,
    Namespaces,
    PodRow,
    PodsPage,
    WatchPods,
    Welcome,
    decode,
    encode,
)

if TYPE_CHECKING:
    from tui.app import ConsoleApp

__all__ = ["MAX_FDS", "MAX_PACKET", "main"]

MAX_PACKET = 64 * 1024
MAX_FDS = 8
# A console module that pulls these in would bring credentials' code into every console.
_FORBIDDEN = ("asyncssh", "hvac", "kubernetes")
# Kept referenced in a console so that collecting them never closes its new stdio.
_template_stdio: list[object] = []


@dataclass(frozen=True)
class _Request:
    id: int
    module: ModuleType
    argv: list[str]
    env: dict[str, str]
    fds: list[int]  # the numbers the passed descriptors get in the console


def _fail(message: str) -> int:
    sys.stderr.write(f"bastion console template: {message}\n")
    sys.stderr.flush()
    return 1


def _send(control: socket.socket, message: dict[str, object], fds: Sequence[int] = ()) -> None:
    socket.send_fds(control, [json.dumps(message).encode()], list(fds))


# ---------------------------------------------------------------------------- start-up
def _warm_up_textual() -> None:
    """Draw a small app once headless, so that a console's first frame finds Textual's lazy
    imports done and its caches filled, in pages shared with every console. For console
    modules other than the one every login gets, which is warmed up by running it
    (:func:`_warm_up_console`) and without this: this app's widgets and leftovers made each
    of those consoles 0.55 MB bigger (bench/README.md, "Console start")."""
    from textual.widgets import DataTable, Header  # noqa: PLC0415 - see above

    class WarmUp(App[None]):
        def compose(self) -> ComposeResult:
            yield Header()
            yield Input(placeholder="filter")
            yield Static("[b]warm[/b] up")
            yield DataTable()
            yield Footer()

        def on_mount(self) -> None:
            table: DataTable[str] = self.query_one(DataTable)
            table.add_columns("name", "ready", "status")
            for n in range(20):
                table.add_row(f"pod-{n}", "1/1", "Running")
            self.call_after_refresh(self.exit)

    WarmUp().run(headless=True, size=(80, 24))


# The console every login gets: warmed up by running it once, as an operator would use it.
_CONSOLE = "tui.app"
_WARM_UP_PODS = 200  # a typical namespace
_WARM_UP_LIMIT = 10.0  # seconds; a warm-up that takes longer is stuck


class _DiscardingTerminal(HeadlessDriver):
    """Not headless as far as Textual knows, so that every frame is turned into the bytes a
    terminal would get (headless Textual skips that step, which consoles then do first);
    the bytes are dropped."""

    @property
    def is_headless(self) -> bool:
        return False


class _WarmUpBroker:
    """The broker's side of the console's warm-up run, in memory: one cluster, two
    namespaces, one of them with a typical number of pods in two pages. Each line goes
    through the protocol's real encode and decode, as a console's lines do."""

    def __init__(self) -> None:
        self._lines: asyncio.Queue[bytes] = asyncio.Queue()
        self._say(Welcome("warm-up", ["warm-up"], ["warm-up"], time.time() + 3600, 900.0))

    def _say(self, message: Message) -> None:
        self._lines.put_nowait(encode(message))

    async def send(self, line: bytes) -> None:
        match decode(line.rstrip(b"\n")):
            case ListNamespaces(id=request_id, cluster=cluster):
                hidden = [HiddenItem("kube-system", "no grant covers it")]
                self._say(Namespaces(request_id, cluster, ["pods", "empty"], hidden))
            case WatchPods(id=request_id):
                rows = [
                    PodRow(f"web-{n:04d}", "1/1", ("Running", "Pending", "Failed")[n % 3], n % 4,
                           "2026-11-28T10:00:00Z", f"node-{n % 7}", ("app=web",), ("app",))
                    for n in range(_WARM_UP_PODS)
                ]  # fmt: skip
                half = _WARM_UP_PODS // 2
                self._say(PodsPage(request_id, rows[:half], False, 0, ""))
                self._say(PodsPage(request_id, rows[half:], True, 1, "a grant hides one"))
            case _:
                pass  # StopWatch; nothing else is asked for on the warm-up's way

    async def receive(self) -> bytes:
        return await self._lines.get()

    def close(self) -> None:
        pass


def _warm_up_console(module: ModuleType) -> None:
    """Run the console once the way every session starts (the namespaces, a pod list moved
    through and filtered), its frames rendered to terminal bytes, then keep the CSS it
    parsed for every console forked from here.

    What this saves each console (bench/README.md, "Console start"): Textual's lazily built
    per-class state and bytecode the interpreter has not specialised yet (about 0.3 MB and
    10 ms to the first frame), and the parse of every widget's CSS (0.15 MB). Going on to a
    pod's details and the help screen made each console 0.45 MB bigger, not smaller, so the
    run stops at the list."""
    from tui.screens import NamespacesScreen, PodsScreen  # noqa: PLC0415 - console modules are imported by name

    # The terminal a login's console has: the app picks its colour system from it.
    terminal = {"TERM": "xterm-256color", "COLORTERM": "truecolor"}
    saved = {name: os.environ.get(name) for name in terminal}
    os.environ.update(terminal)
    try:
        app: ConsoleApp = module.ConsoleApp("warm-up", _WarmUpBroker())
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
    app.driver_class = _DiscardingTerminal

    async def until(done: Callable[[], bool]) -> None:
        while not done():  # noqa: ASYNC110 - the app's state, polled from its own loop
            await asyncio.sleep(0.002)

    def press(*keys: str) -> None:
        driver = app._driver
        if driver is not None:
            for key in keys:
                driver.send_message(events.Key(key, key if len(key) == 1 else None))

    def namespaces_listed() -> bool:
        screen = app.screen
        return (
            isinstance(screen, NamespacesScreen)
            and screen.query_one("#namespaces", OptionList).option_count > 0
        )

    def pods_filtered(text: str) -> bool:
        screen = app.screen
        return isinstance(screen, PodsScreen) and screen.pods.filter.text == text

    async def drive(_pilot: Pilot[Any]) -> None:
        async with asyncio.timeout(_WARM_UP_LIMIT):
            await until(namespaces_listed)
            press("enter")
            await until(lambda: isinstance(app.screen, PodsScreen) and app.screen.complete)
            press("j", "j", "k", "slash", "w", "e", "b")
            await until(lambda: pods_filtered("web"))
            press("backspace", "escape")  # the filter cleared, the table focused
            await until(lambda: pods_filtered(""))
        app.exit()

    app.run(size=(80, 24), auto_pilot=drive)
    app.keep_parsed_css()


def _preload(names: Sequence[str]) -> dict[str, ModuleType]:
    """The console modules that import and have a ``main``; the others are reported, and
    their consoles start fresh (and fail there, on the operator's terminal, if still broken)."""
    modules = {}
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - one broken console must not slow the others
            _fail(f"cannot preload {name} ({type(exc).__name__}: {exc}); its consoles start fresh")
            continue
        if not callable(getattr(module, "main", None)):
            _fail(f"{name} has no main(argv); its consoles start fresh")
            continue
        modules[name] = module
    return modules


# ---------------------------------------------------------------------------- serving
def _parse(
    packet: bytes, fds: Sequence[int], flags: int, modules: dict[str, ModuleType]
) -> _Request:
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        raise ValueError("the request was truncated")
    data = json.loads(packet)
    module = modules.get(data.get("module"))
    argv, env, targets = data.get("argv"), data.get("env"), data.get("fds")
    if module is None:
        raise ValueError(f"{str(data.get('module'))[:80]!r} is not a preloaded console module")
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a list of strings")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise ValueError("env must map names to strings")
    if not (isinstance(targets, list) and all(isinstance(n, int) for n in targets)):
        raise ValueError("fds must be a list of descriptor numbers")
    if len(fds) != len(targets) + 1 or len(set(targets)) != len(targets):
        raise ValueError("the request must carry the pty and one descriptor per number in fds")
    if any(not 3 <= n < 1024 for n in targets):
        raise ValueError("descriptor numbers must be between 3 and 1023")
    return _Request(int(data["id"]), module, argv, env, targets)


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        with contextlib.suppress(OSError):
            _send(control, {"exited": pid, "status": os.waitstatus_to_exitcode(status)})


def _fork_console(
    control: socket.socket,
    packet: bytes,
    fds: list[int],
    flags: int,
    modules: dict[str, ModuleType],
) -> None:
    request_id: object = None
    try:
        with contextlib.suppress(ValueError, AttributeError):
            request_id = json.loads(packet).get("id")
        request = _parse(packet, fds, flags, modules)
    except (ValueError, KeyError, TypeError) as exc:
        for fd in fds:
            os.close(fd)
        _send(control, {"id": request_id, "error": str(exc)})
        return
    sys.stdout.flush()
    sys.stderr.flush()  # nothing buffered here may be written again by the console
    pid = os.fork()
    if pid == 0:
        try:
            _become_console(request, fds)
        finally:
            os._exit(127)
    for fd in fds:
        os.close(fd)
    # The pidfd is opened while the console is still our unreaped child, so it cannot name a
    # recycled pid; the worker tracks the console with it even after we are gone.
    pidfd = os.pidfd_open(pid)
    try:
        _send(control, {"id": request.id, "pid": pid}, [pidfd])
    finally:
        os.close(pidfd)


def _serve(control: socket.socket, modules: dict[str, ModuleType]) -> int:
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)  # wakes the selector
    events = selectors.DefaultSelector()
    events.register(control, selectors.EVENT_READ)
    events.register(wake_read, selectors.EVENT_READ)
    try:
        _send(control, {"ready": os.getpid(), "modules": sorted(modules)})
        while True:
            for key, _ in events.select():
                if key.fileobj == wake_read:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_read, 512)
                    _reap(control)
                    continue
                packet, fds, flags, _ = socket.recv_fds(control, MAX_PACKET, MAX_FDS)
                if not packet and not fds:
                    return 0  # the worker has gone
                _fork_console(control, packet, fds, flags, modules)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the worker has gone


# ---------------------------------------------------------------------------- the console
def _place_descriptors(tty: int, passed: Sequence[int], targets: Sequence[int]) -> None:
    """The pty as stdio and controlling terminal, each passed descriptor at its number, and
    nothing else open (the template's socket, selector and pipes included)."""
    os.login_tty(tty)  # setsid, TIOCSCTTY, dup onto 0-2
    # Out of the way first: a passed descriptor may sit on another one's target number.
    above = max([2, *targets, *passed]) + 1
    moved = [os.dup2(fd, above + i) for i, fd in enumerate(passed)]
    for fd in passed:
        os.close(fd)
    for fd, target in zip(moved, targets, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    keep = sorted({0, 1, 2, *targets})
    for low, high in zip(keep, [*keep[1:], os.sysconf("SC_OPEN_MAX")], strict=True):
        os.closerange(low + 1, high)


def _reset_signals() -> None:
    """The dispositions a freshly started interpreter has, and no wake-up descriptor."""
    signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _rebind_stdio() -> None:
    """New stdio objects on the pty. Textual reads ``sys.__stdin__``, writes frames to
    ``sys.__stderr__`` and takes the size from ``sys.__stdout__``."""
    _template_stdio.extend([sys.stdin, sys.stdout, sys.stderr])
    streams: dict[str, TextIO] = {
        "stdin": open(0, encoding="utf-8", errors="surrogateescape", closefd=False),  # noqa: SIM115
        "stdout": open(  # noqa: SIM115
            1, "w", encoding="utf-8", errors="surrogateescape", buffering=1, closefd=False
        ),
        "stderr": open(  # noqa: SIM115
            2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
        ),
    }
    for name, stream in streams.items():
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _become_console(request: _Request, fds: list[int]) -> None:
    """In the forked child: become the session's console and exit with its status."""
    tty, *passed = fds
    _place_descriptors(tty, passed, request.fds)
    _reset_signals()
    os.environ.clear()
    os.environ.update(request.env)
    _rebind_stdio()
    main: Callable[[list[str]], int | None] = request.module.main
    sys.argv = [request.module.__file__ or request.module.__name__, *request.argv]
    code = 1
    try:
        code = main(list(request.argv)) or 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:  # noqa: BLE001 - the console's last word, on its own terminal
        with contextlib.suppress(Exception):  # the terminal may be gone
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    os._exit(code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


# ---------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tui.zygote")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--path", action="append", default=[], help="prepended to sys.path")
    parser.add_argument("modules", nargs="+")
    args = parser.parse_args(argv)
    sys.path[:0] = args.path
    control = socket.socket(fileno=args.control_fd)
    if control.type != socket.SOCK_SEQPACKET:
        return _fail("the control descriptor must be an AF_UNIX SOCK_SEQPACKET socket")
    modules = _preload(args.modules)
    if not modules:
        return _fail("no console module could be preloaded; consoles start fresh instead")
    if _CONSOLE in modules:
        try:
            _warm_up_console(modules[_CONSOLE])
        except Exception as exc:  # noqa: BLE001 - the consoles still work, only colder
            _fail(f"the warm-up of {_CONSOLE} failed ({type(exc).__name__}: {exc}); "
                  "its consoles are forked without it")  # fmt: skip
    else:
        try:
            _warm_up_textual()
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot serve"
            return _fail(f"the warm-up failed ({exc}); consoles start fresh instead")
    if loaded := sorted(set(_FORBIDDEN) & set(sys.modules)):
        return _fail(f"the console modules import {', '.join(loaded)}; refusing to serve")
    if threading.active_count() != 1:
        return _fail("a thread is running after the warm-up; forking it would break consoles")
    # What the template allocated stays out of every console's collections: a collection
    # would touch (and copy) those pages in each console.
    gc.collect()
    gc.freeze()
    with contextlib.suppress(KeyboardInterrupt):
        return _serve(control, modules)
    return 0


if __name__ == "__main__":
    sys.exit(main())
