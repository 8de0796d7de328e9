"""The one session channel of a logged-in connection: consoles, and the debug shells they
ask for.

Each console runs in its own process on the session's PTY and talks to the broker over a
socketpair (:mod:`bastion.console_protocol`). When a debug shell is ready the console exits
and the broker attaches the channel to the container itself, so the byte path is SSH channel
⇄ websocket with no process in between; when the shell ends, a new console starts and is
told how it ended. ``ssh -t bastion debug NS/POD`` skips the console: the shell starts at
once and its exit status is the connection's.

Every console is greeted with ``Welcome`` (who, which clusters, the deadlines) and told
``DeadlinesChanged`` when a grant narrows them; ``WatchNotices`` subscribes it to the
worker's notices feed (break-glass banners); its other requests (namespaces, pods,
details, debug options) are answered by the session's :class:`Browser`. Messages to a
console go through one writer per console, in order, and a page-heavy answer waits while
the console is behind rather than losing lines.

A break-glass session (:mod:`bastion.breakglass.activation`) asks its reason on the raw
terminal before its first console or its ``debug`` command: nothing else starts before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncssh

from bastion.attach_bridge import AttachBridge
from bastion.breakglass.activation import activate
from bastion.breakglass.prompt import TerminalPrompt
from bastion.console_protocol import (
    BROKER_FD_ENV,
    CONSOLE_SENDS,
    MAX_LINE,
    AwaitsApproval,
    DeadlinesChanged,
    DebugEnded,
    DebugProgress,
    DebugRefused,
    DebugRequest,
    Failed,
    Handover,
    ListSessions,
    Message,
    NoticesChanged,
    ProtocolError,
    WatchNotices,
    WatchSession,
    Welcome,
    decode,
    encode,
)
from bastion.console_protocol import Notice as NoticeMessage
from bastion.debug_command import DebugCommand, parse_debug_command
from bastion.errors import AuditUnavailable, BackendUnavailable, BastionError
from bastion.introspect.command import ViewCommand, parse_view_command
from bastion.oversight.admission import auditors_of
from bastion.oversight.console import list_live_sessions
from bastion.oversight.roles import is_auditor
from bastion.oversight.watching import WatchTerminal, check_watch, watch_session
from bastion.policy import Mode, Principal
from bastion.recording.errors import RecordingUnavailable
from bastion.recording.recorder import Recorder, open_recorder
from bastion.session.approvals import ApprovalPending
from bastion.session.browse import Browser
from bastion.session.deadlines import Deadlines, Notice
from bastion.session.debug_shell import (
    DebugOutcome,
    Terminal,
    close_recording,
    recording_failed,
    run_debug_shell,
)
from bastion.session.lifecycle import Ending, State
from bastion.session.session import Session
from bastion.ssh.console import Console, TerminalSize
from bastion.ssh.view_command import run_view_command
from bastion.terminal_text import printable

if TYPE_CHECKING:
    from bastion.ssh.front_door import FrontDoor, Identity, _Connection

__all__ = ["EXEC_REFUSAL", "NEEDS_TERMINAL", "OperatorSession"]

log = logging.getLogger(__name__)

EXEC_REFUSAL = (
    "this bastion offers only the interactive debug console, 'debug NAMESPACE/POD', "
    "'view VIEW NAMESPACE/POD' and, for auditors, 'watch SESSION_ID'"
)
NEEDS_TERMINAL = "this bastion offers only the interactive debug console: connect with a terminal"
_TYPEAHEAD_MAX = 64 * 1024
_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
# How long a console has to restore the terminal and exit when the debug shell is ready.
HANDOVER_GRACE = 3.0


class OperatorSession(asyncssh.SSHServerSession[bytes]):
    """The one session of a connection: consoles on a PTY, each in its own process, and the
    debug shells they ask for, attached by the broker itself (no console in the byte path).

    With ``ssh -t bastion debug NS/POD`` there is no console: the shell starts at once and
    its exit status is the connection's.
    """

    def __init__(self, door: FrontDoor, connection: _Connection, identity: Identity) -> None:
        self._door = door
        self._connection = connection
        self._identity = identity
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._term = ""
        self._size = TerminalSize(80, 24)
        self._pty = False
        self._exec: str | None = None
        self._debug_command: DebugCommand | None = None
        self._view_command: ViewCommand | None = None
        self._console: Console | None = None
        self._outbox: _Outbox | None = None  # to the console that runs now
        self._browser: Browser | None = None
        self._bridge: AttachBridge | None = None
        self._handing_over = False  # a console is leaving for a debug shell
        self._watcher: asyncio.Task[None] | None = None
        self._session: Session | None = None
        self._lost = False
        self._typeahead = bytearray()
        self._recorder: Recorder | None = None  # the consoles' recording, one per session
        self._prompt: TerminalPrompt | None = None  # a question on the raw terminal
        self._notice_watches: list[Callable[[], None]] = []  # the console's subscriptions
        self._watched: str | None = None  # `watch SESSION`: the session an auditor watches
        self._watch: WatchTerminal | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def channel_request_refused(self, request: str, detail: str) -> None:
        self._connection.refuse(request, detail)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any
    ) -> bool:
        self._pty = True
        self._term = term_type if _TERM.fullmatch(term_type) else "xterm-256color"
        self._size = TerminalSize(*term_size)
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self._exec = command
        if command.split(maxsplit=1)[:1] in (["debug"], ["view"], ["watch"]):
            return True  # parsed, and refused with the reason if wrong, when the session starts
        self._connection.refuse("exec", command[:200])
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self._connection.refuse("subsystem", subsystem[:64])
        return False

    def session_started(self) -> None:
        chan = self._chan
        if chan is None:
            return
        if self._exec is not None and self._exec.split(maxsplit=1)[:1] == ["debug"]:
            try:
                self._debug_command = parse_debug_command(self._exec)
            except ValueError as exc:
                self._connection.refuse("exec", self._exec[:200])
                chan.write_stderr(f"bastion: {exc}\n".encode())
                chan.exit(2)
                return
        elif self._exec is not None and self._exec.split()[:1] == ["watch"]:
            words = self._exec.split()
            if len(words) != 2:
                chan.write_stderr(b"bastion: usage: watch SESSION_ID\n")
                chan.exit(2)
                return
            self._watched = words[1]
        elif self._exec is not None and self._exec.split(maxsplit=1)[:1] == ["view"]:
            try:
                self._view_command = parse_view_command(self._exec)
            except ValueError as exc:
                self._connection.refuse("exec", self._exec[:200])
                chan.write_stderr(f"bastion: {exc}\n".encode())
                chan.exit(2)
                return
            # A view prints a table: no terminal needed, for scripts.
            self._door.track(self._run())
            return
        elif self._exec is not None:
            chan.write_stderr(f"{EXEC_REFUSAL}\n".encode())
            chan.exit(1)
            return
        if not self._pty:
            self._connection.refuse("shell without a terminal")
            chan.write_stderr(f"{NEEDS_TERMINAL}\n".encode())
            chan.exit(1)
            return
        self._door.track(self._run())

    # ------------------------------------------------------------------ the session
    async def _run(self) -> None:
        chan = self._chan
        if chan is None:
            return
        identity = self._identity
        try:
            session = await self._door.broker.open(
                user=identity.user,
                source=f"{identity.peer.address}:{identity.peer.port}",
                connection=identity.connection,
                marks={"break_glass": True} if identity.break_glass else None,
            )
        except (AuditUnavailable, OSError) as exc:
            log.error("session of %s not opened: %s", identity.user, exc)  # noqa: TRY400
            chan.write_stderr(b"the bastion cannot record this session, so it cannot start\r\n")
            chan.exit(1)
            return
        self._session = session
        if self._lost:  # the client left while the session was being opened
            await session.end(Ending.DISCONNECT)
            return
        session.on_end(lambda _: self._close_console())
        session.on_deadlines(self._deadlines_changed)
        try:
            if identity.break_glass and not await self._break_glass(session):
                code = 1
            elif self._debug_command is not None:
                code = await self._run_direct_debug(session, self._debug_command)
            elif self._watched is not None:
                code = await self._run_watch(session, self._watched)
            elif self._view_command is not None:
                code = await run_view_command(
                    session,
                    self._view_command,
                    config=self._door.config,
                    vault=self._door.vault,
                    principal=self._principal(),
                    approvals=self._door.broker.approvals,
                    out=chan.write,
                    err=chan.write_stderr,
                )
            else:
                self._browser = Browser(
                    session,
                    config=self._door.config,
                    vault=self._door.vault,
                    principal=self._principal(),
                    approvals=self._door.broker.approvals,
                )
                code = await self._run_consoles(session)
        finally:
            if self._browser is not None:
                await self._browser.close()
            await session.end(Ending.LOGOUT)  # no-op when something else ended it first
            if self._watcher is not None:
                await self._watcher
        ending = session.ending
        if ending is not None and ending is not Ending.LOGOUT and not self._lost:
            with contextlib.suppress(OSError, asyncssh.Error):
                told = printable(session.ending_note or _ENDINGS.get(ending, ending))
                chan.write(f"\r\n\abastion: {told}\r\n".encode())
        with contextlib.suppress(OSError, asyncssh.Error):  # the client may be gone already
            chan.exit(code)

    def _principal(self) -> Principal:
        identity = self._identity
        return Principal(identity.user, frozenset(identity.groups), identity.break_glass)

    async def _break_glass(self, session: Session) -> bool:
        """The reason, the record, the banner and the alert, before anything else."""
        chan = self._chan
        config = self._door.config.break_glass
        if chan is None or config is None:
            return False

        def write(data: bytes) -> None:
            with contextlib.suppress(OSError, asyncssh.Error):  # the client may be gone
                chan.write(data)

        self._prompt = TerminalPrompt(write)

        async def ask(prompt: str, within: float) -> str | None:
            assert self._prompt is not None  # noqa: S101 - set above, cleared after
            typed, self._typeahead = bytes(self._typeahead), bytearray()
            return await self._prompt.ask(prompt, within, typed=typed)

        def say(text: str) -> None:
            write(f"{text}\r\n".encode())

        try:
            return await activate(
                session,
                config=config,
                source=self._identity.peer.address,
                ask=ask,
                say=say,
                alerts=self._door.alerts,
                notices=self._door.notices,
            )
        finally:
            self._prompt = None

    async def _run_direct_debug(self, session: Session, command: DebugCommand) -> int:
        chan = self._chan
        assert chan is not None  # noqa: S101 - _run checked it
        await session.move(State.BROWSING, term=self._term, command="debug")
        self._watch_deadlines(session)

        def progress(message: str) -> None:
            with contextlib.suppress(OSError, asyncssh.Error):
                chan.write(f"bastion: {printable(message)}\r\n".encode())

        try:
            while True:
                try:
                    outcome = await self._debug(session, command, progress, self._attach)
                    break
                except ApprovalPending as pending:
                    # Waiting is the operator's confirmation: once approved, the same
                    # debug is asked for again and spends the approval.
                    progress(pending.message)
                    await self._door.broker.approvals.wait(
                        session, pending.request, progress=progress, stop=self._interrupted
                    )
        except BastionError as exc:
            with contextlib.suppress(OSError, asyncssh.Error):
                chan.write_stderr(f"bastion: {printable(exc.message)}\r\n".encode())
            return 1
        return outcome.exit_status

    async def _run_watch(self, session: Session, watched: str, *, move: bool = True) -> int:
        """An auditor watches another session's shell (bastion.oversight.watching)."""
        chan = self._chan
        assert chan is not None  # noqa: S101 - _run checked it
        if move:  # `ssh -t ... watch ID`; from a console, the session is browsing already
            await session.move(State.BROWSING, term=self._term, command="watch")
            self._watch_deadlines(session)
        self._prompt = TerminalPrompt(chan.write)
        prompt = self._prompt

        async def ask(question: str, within: float) -> str | None:
            return await prompt.ask(question, within)

        self._watch = watch = WatchTerminal(write=chan.write, ask=ask)
        # The auditor's own session ending (idle, hard limit, a kill) ends the watch.
        session.on_end(lambda _: watch.keys.put_nowait(b"q"))
        try:
            return await watch_session(
                session,
                self._door.config,
                groups=frozenset(self._identity.groups),
                watched=watched,
                terminal=self._watch,
            )
        except BastionError as exc:
            with contextlib.suppress(OSError, asyncssh.Error):
                chan.write_stderr(f"bastion: {printable(exc.message)}\r\n".encode())
            return 1
        finally:
            self._watch = None
            self._prompt = None

    def _interrupted(self) -> bool:
        """Ctrl-C typed while no shell runs (it would otherwise wait for the shell)."""
        if b"\x03" not in self._typeahead:
            return False
        self._typeahead.clear()
        return True

    async def _run_consoles(self, session: Session) -> int:
        """Consoles one after the other: each one ends at logout, or hands the terminal to
        a debug shell and the next one starts when the shell ends, told how it ended.

        What the consoles draw is recorded too, in one recording per session (a debug
        shell has its own); no recording, no console."""
        chan = self._chan
        assert chan is not None  # noqa: S101 - _run checked it
        try:
            self._recorder = await open_recorder(
                self._door.config,
                session_id=session.id,
                title=f"bastion session {session.id}: {self._identity.user}, console",
                width=self._size.cols,
                height=self._size.rows,
                term=self._term or "xterm-256color",
                on_failure=lambda exc: recording_failed(session, exc),
            )
        except RecordingUnavailable as exc:
            log.error("session %s: %s", session.id, exc.message)  # noqa: TRY400
            with contextlib.suppress(OSError, asyncssh.Error):
                chan.write_stderr(f"bastion: {printable(exc.message)}\r\n".encode())
            await session.record("session.recording_failed", outcome="alert", error=exc.message)
            return 1
        await session.record(
            "session.console_recording", outcome="started", recording=self._recorder.recording_id
        )
        ended: DebugEnded | None = None
        code = 0
        try:
            while session.ending is None:
                code, debug = await self._one_console(session, ended)
                if debug is None:
                    break
                # The end of a debug revokes its own lease only: the next console browses
                # with the credential the session already has.
                ended = await debug
                if ended is None:
                    break
        finally:
            recorder, self._recorder = self._recorder, None
            await self._close_recording(session, recorder)
        return code

    def _console_output(self, data: bytes) -> None:
        """What a console draws: recorded, then sent; not sent if it cannot be recorded."""
        chan = self._chan
        if chan is None:
            return
        if self._recorder is not None:
            try:
                self._recorder.append(data)
            except RecordingUnavailable as exc:
                if self._session is not None:
                    recording_failed(self._session, exc)
                return
        chan.write(data)

    async def _close_recording(self, session: Session, recorder: Recorder) -> None:
        fields = await close_recording(session, recorder)
        if fields.get("recording_complete"):
            await session.record("session.console_recording", outcome="closed", **fields)

    async def _one_console(
        self, session: Session, ended: DebugEnded | None
    ) -> tuple[int, asyncio.Task[DebugEnded | None] | None]:
        """Run one console until it exits; returns its exit status, and the debug it handed
        the terminal to (None when the operator logged out)."""
        chan = self._chan
        assert chan is not None  # noqa: S101 - _run checked it
        identity = self._identity
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        console = Console(
            self._door.console_command(identity),
            env={
                "TERM": self._term,
                "LANG": "C.UTF-8",
                "PATH": "/usr/bin:/bin",
                "COLORTERM": "truecolor",
                BROKER_FD_ENV: str(theirs.fileno()),
            },
            size=self._size,
            write=self._console_output,
            pause_input=self._pause_input,
            pass_fds=(theirs.fileno(),),
        )
        code = 1
        requests: asyncio.Task[asyncio.Task[DebugEnded | None] | None] | None = None
        outbox = _Outbox(ours)
        try:
            await console.start()
            theirs.close()
            self._console, self._outbox = console, outbox
            self._handing_over = False
            outbox.send(self._welcome(session))
            if ended is not None:
                outbox.send(ended)
            if self._typeahead:
                console.feed(bytes(self._typeahead))
                self._typeahead.clear()
            if session.ending is None and session.state is State.AUTHENTICATED:
                await session.move(State.BROWSING, term=self._term)
                # From the first console on, which is where the first warnings go.
                self._watch_deadlines(session)
            requests = asyncio.get_running_loop().create_task(
                self._serve_console(session, ours, outbox, console)
            )
            code = await console.wait()
        except OSError:
            if session.ending is None:
                log.exception("console of %s could not start", identity.user)
                with contextlib.suppress(OSError, asyncssh.Error):
                    chan.write_stderr(b"the console could not start; tell an administrator\r\n")
        finally:
            self._console = self._outbox = None
            for unsubscribe in self._notice_watches:
                unsubscribe()
            self._notice_watches.clear()
            console.close()
            theirs.close()
            outbox.close()
        debug: asyncio.Task[DebugEnded | None] | None = None
        if requests is not None:
            if not requests.done():
                requests.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                debug = await requests
        if self._browser is not None:
            await self._browser.stop_all()  # its watches were for this console
        ours.close()
        self._door.audit_soon(
            "console.ended",
            actor=identity.user,
            outcome="ended",
            session=session.id,
            connection=identity.connection,
            exit_status=code,
            handed_over=debug is not None,
            **session.marks,
        )
        return code, debug

    async def _serve_console(
        self, session: Session, sock: socket.socket, outbox: _Outbox, console: Console
    ) -> asyncio.Task[DebugEnded | None] | None:
        """Read the console's requests until it exits; returns the debug that got the
        terminal, if one did. A line that is not a valid request ends the console."""
        loop = asyncio.get_running_loop()
        buffer = b""
        debug: asyncio.Task[DebugEnded | None] | None = None
        handed: list[bool] = []
        try:
            while True:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    break
                buffer += data
                lines, buffer = _lines(buffer)
                for message in lines:
                    if isinstance(message, WatchNotices):
                        self._watch_notices(message.id, outbox)
                        continue
                    if isinstance(message, ListSessions):
                        self._door.track(self._list_sessions(session, message, outbox))
                        continue
                    if isinstance(message, WatchSession):
                        if debug is None or debug.done():
                            debug = loop.create_task(
                                self._watch_for_console(session, message, outbox, console, handed)
                            )
                        continue
                    if not isinstance(message, DebugRequest):
                        if self._browser is not None:
                            self._browser.submit(message, outbox.write)
                        continue
                    if debug is not None and not debug.done():
                        outbox.send(DebugRefused("a debug shell is already starting"))
                        continue
                    debug = loop.create_task(
                        self._debug_for_console(session, message, outbox, console, handed)
                    )
        except ProtocolError as exc:
            log.warning("session %s: console protocol error: %s", session.id, exc)
            self._door.audit_soon(
                "console.protocol_error",
                actor=self._identity.user,
                outcome="refused",
                session=session.id,
                error=str(exc)[:200],
                **session.marks,
            )
            console.close()
        except (OSError, asyncio.CancelledError):
            pass
        if debug is not None and not debug.done() and not handed:
            # The console went away while a debug was starting: nobody is there to use it.
            debug.cancel()
            with contextlib.suppress(asyncio.CancelledError, BastionError):
                await debug
            return None
        return debug if handed else None

    async def _list_sessions(
        self, session: Session, request: ListSessions, outbox: _Outbox
    ) -> None:
        outbox.send(
            await list_live_sessions(
                request,
                session,
                config=self._door.config,
                broker=self._door.broker,
                groups=frozenset(self._identity.groups),
            )
        )

    async def _watch_for_console(
        self,
        session: Session,
        request: WatchSession,
        outbox: _Outbox,
        console: Console,
        handed: list[bool],
    ) -> DebugEnded | None:
        """An auditor's console asked to watch: checked first (refusals go back to the
        console), then the terminal is handed to the watch, as to a debug shell."""
        groups = frozenset(self._identity.groups)
        try:
            await check_watch(session, self._door.config, groups=groups, watched=request.session)
        except BastionError as exc:
            outbox.send(Failed(request.id, exc.message))
            return None
        handed.append(True)
        self._handing_over = True
        outbox.send(Handover(f"watching session {request.session}"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(console.wait(), HANDOVER_GRACE)
        console.close()
        code = await self._run_watch(session, request.session, move=False)
        said = "ended" if code == 0 else "could not start"
        return DebugEnded("", code, f"the watch of session {request.session} {said}")

    async def _debug_for_console(
        self,
        session: Session,
        request: DebugRequest,
        outbox: _Outbox,
        console: Console,
        handed: list[bool],
    ) -> DebugEnded | None:
        try:
            command = DebugCommand(
                namespace=request.namespace,
                pod=request.pod,
                container=request.container,
                cluster=request.cluster,
                mode=Mode(request.mode),
                image=request.image,
                reason=request.reason,
                run_as_user=request.run_as_user,
                privileged=request.privileged,
                add_capabilities=tuple(request.add_capabilities),
            )
        except ValueError:
            outbox.send(DebugRefused(f"{request.mode[:40]!r} is not a debug mode"))
            return None

        async def attach(bridge: AttachBridge) -> int:
            # The console restores the terminal and exits; it is closed if it lingers.
            handed.append(True)
            # From now on keystrokes wait for the shell instead of reaching a leaving console.
            self._handing_over = True
            outbox.send(Handover("attaching your terminal to the debug shell"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(console.wait(), HANDOVER_GRACE)
            console.close()
            return await self._attach(bridge)

        try:
            outcome = await self._debug(
                session, command, lambda m: outbox.send(DebugProgress(m)), attach
            )
        except ApprovalPending as pending:
            outbox.send(AwaitsApproval(pending.request.id, pending.message))
            return None
        except BastionError as exc:
            if not handed:
                outbox.send(DebugRefused(exc.message))
                return None
            # Handed over, so the cluster was resolved: named, or the bastion's only one.
            cluster = request.cluster or self._door.config.clusters[0].name
            where = f"{cluster}/{request.namespace}/{request.pod}"
            return DebugEnded(where, -1, f"the debug shell in {where} failed: {exc.message}")
        return DebugEnded(outcome.target, outcome.exit_status, outcome.message)

    async def _debug(
        self,
        session: Session,
        command: DebugCommand,
        progress: Callable[[str], None],
        attach: Callable[[AttachBridge], Awaitable[int]],
    ) -> DebugOutcome:
        vault = self._door.vault
        if vault is None:
            raise BackendUnavailable("debug shells need Vault, which this bastion does not use")
        chan = self._chan
        assert chan is not None  # noqa: S101 - a session exists only with its channel
        return await run_debug_shell(
            session,
            command,
            config=self._door.config,
            vault=vault,
            principal=self._principal(),
            terminal=Terminal(
                progress=progress,
                size=lambda: (self._size.cols, self._size.rows),
                attach=attach,
                write=chan.write,
                pause_input=self._pause_input,
                give_up=self._interrupted,
            ),
            approvals=self._door.broker.approvals,
            alerts=self._door.alerts,
        )

    async def _attach(self, bridge: AttachBridge) -> int:
        """The terminal is the debug shell's until it ends."""
        self._bridge = bridge
        bridge.resize(self._size.cols, self._size.rows)
        if self._typeahead:  # typed while the shell was starting: it goes to the shell
            bridge.feed(bytes(self._typeahead))
            self._typeahead.clear()
        try:
            return await bridge.run()
        finally:
            self._bridge = None

    def _notify(self, notice: Notice) -> None:
        """A deadline's warning: to the console, or (attached, or with no console) into the
        terminal as a bell and one line: the shell's state is untouched, and it redraws its
        prompt at the next Enter."""
        if self._chan is not None and (self._bridge is not None or self._outbox is None):
            line = f"\a\r\n\x1b[7m bastion: {notice.message()} \x1b[0m\r\n"
            with contextlib.suppress(OSError, asyncssh.Error):
                self._chan.write(line.encode())
            return
        if self._outbox is not None:
            message = NoticeMessage(
                str(notice.kind), round(notice.seconds_left, 1), notice.message()
            )
            self._outbox.send(message)

    def _welcome(self, session: Session) -> Welcome:
        identity = self._identity
        return Welcome(
            user=identity.user,
            groups=list(identity.groups),
            clusters=self._browser.clusters() if self._browser is not None else [],
            hard_deadline=session.deadlines.hard_deadline,
            idle_timeout=session.deadlines.idle_timeout,
            auditor=is_auditor(auditors_of(self._door.config), identity.user, identity.groups),
        )

    def _deadlines_changed(self, deadlines: Deadlines) -> None:
        if self._outbox is not None:
            self._outbox.send(DeadlinesChanged(deadlines.hard_deadline, deadlines.idle_timeout))

    def _watch_deadlines(self, session: Session) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(
                session.watch_deadlines(self._notify)
            )

    def _watch_notices(self, request_id: int, outbox: _Outbox) -> None:
        # One subscription per console: asking again replaces it (a console cannot pile
        # them up in the worker).
        for unsubscribe in self._notice_watches:
            unsubscribe()
        self._notice_watches.clear()
        feed = self._door.notices
        if feed is None:
            outbox.send(NoticesChanged(request_id, []))
            return
        self._notice_watches.append(
            feed.subscribe(
                self._identity.user, lambda items: outbox.send(NoticesChanged(request_id, items))
            )
        )

    def _close_console(self) -> None:
        if self._prompt is not None:
            self._prompt.cancel()
        if self._console is not None:
            self._console.close()

    # ------------------------------------------------------------------ the channel
    def _pause_input(self, paused: bool) -> None:
        if self._chan is None:
            return
        if paused:
            self._chan.pause_reading()
        else:
            self._chan.resume_reading()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._session is not None:
            self._session.touch()
        if self._prompt is not None and self._prompt.open:
            self._prompt.feed(data)
        elif self._watch is not None:
            self._watch.keys.put_nowait(data)  # the watch's own keys; never the shell's
        elif self._bridge is not None:
            self._bridge.feed(data)
        elif self._console is not None and not self._handing_over:
            self._console.feed(data)
        elif len(self._typeahead) + len(data) <= _TYPEAHEAD_MAX:
            # Typed before the console or the shell is up: kept, as a terminal would, and
            # handed to whichever comes next.
            self._typeahead += data

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._size = TerminalSize(width, height, pixwidth, pixheight)
        if self._bridge is not None:
            self._bridge.resize(self._size.cols, self._size.rows)
        if self._console is not None:
            self._console.resize(self._size)
            if self._recorder is not None:
                with contextlib.suppress(RecordingUnavailable):  # its output says so next
                    self._recorder.resize(self._size.cols, self._size.rows)

    def pause_writing(self) -> None:
        if self._watch is not None:
            self._watch.writable.clear()
        if self._bridge is not None:
            self._bridge.pause_output(True)
        if self._console is not None:
            self._console.pause_output(True)

    def resume_writing(self) -> None:
        if self._watch is not None:
            self._watch.writable.set()
        if self._bridge is not None:
            self._bridge.pause_output(False)
        if self._console is not None:
            self._console.pause_output(False)

    def eof_received(self) -> bool:
        # The client will send no more input (e.g. `echo x | ssh -tt`). Like sshd, keep the
        # session: the console or shell ends on its own or when the channel closes.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.end_console()

    def end_console(self) -> None:
        # No awaits: on an abrupt disconnect asyncssh may destroy the caller's task. The
        # wipe runs in its own task (it stops an attached shell first); closing the console
        # lets _run finish.
        if self._session is not None:
            self._session.end_soon(Ending.DISCONNECT)
        if self._console is not None:
            self._console.close()


_ENDINGS = {
    Ending.IDLE: "the session was idle too long and has ended",
    Ending.HARD_LIMIT: "the session reached its time limit and has ended",
    Ending.ADMIN_KILL: "an administrator ended this session",
    Ending.SHUTDOWN: "the bastion is shutting down; this session has ended",
    Ending.ERROR: "the session could not be recorded and has ended",
    Ending.GUARD: "a guard rule ended this session; it is in the audit log",
}


def _lines(buffer: bytes) -> tuple[list[Message], bytes]:
    """The complete requests in ``buffer``, and what is left of it; ProtocolError for
    anything else a console sends."""
    *complete, rest = buffer.split(b"\n")
    if len(rest) > MAX_LINE:
        raise ProtocolError("a line longer than the protocol allows")
    requests = []
    for line in complete:
        message = decode(line)
        if type(message) not in CONSOLE_SENDS:
            raise ProtocolError(f"a console may not send {message.type}")
        requests.append(message)
    return requests, rest


class _Outbox:
    """Lines to one console, in order, written by one task. A console that reads slowly
    slows down :meth:`write` (pages of pods are megabytes) instead of losing lines; the
    small messages of :meth:`send` never wait. A console gone is a console that misses
    what follows."""

    HIGH = 1 << 20  # bytes queued before write() waits
    LOW = 1 << 18  # ... until the queue is back under this

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._broken = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    def send(self, message: Message) -> None:
        with contextlib.suppress(ProtocolError):  # too long: never sent (the broker's bug)
            self._put(encode(message))

    async def write(self, line: bytes) -> None:
        self._put(line)
        await self._room.wait()

    def _put(self, line: bytes) -> None:
        if self._broken:
            return
        self._queue.append(line)
        self._queued += len(line)
        self._ready.set()
        if self._queued > self.HIGH:
            self._room.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._ready.wait()
                while self._queue:
                    line = self._queue.popleft()
                    await loop.sock_sendall(self._sock, line)
                    self._queued -= len(line)
                    if self._queued <= self.LOW:
                        self._room.set()
                self._ready.clear()
        except OSError:
            self._broken = True
            self._queue.clear()
            self._room.set()  # nobody waits for a console that is gone

    def close(self) -> None:
        # No await: it runs in finally blocks that an abrupt disconnect may be unwinding.
        self._task.cancel()
        self._broken = True
        self._queue.clear()
        self._room.set()
