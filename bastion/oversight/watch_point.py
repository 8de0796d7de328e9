"""Where auditors watch one debug shell: a Unix socket served by the shell's own worker.

``<state_dir>/watch/<session id>.sock`` exists while the session runs a debug shell (or
waits for a watcher to start one). The directory is 0700 and the socket 0600, owned by the
service user, so only processes of that user reach it; and of those, only a **bastion
worker serving a live auditor's session** is let in: the peer's pid (``SO_PEERCRED``) and
its start time must be those the state journal records as the owner of the session the
watcher names, and that session's user must be an auditor. A console (same user, but a
different process) or a stale session is refused; the worker refuses what its own
operator could not do.

The protocol: the watcher sends one JSON line ``{"session": ID}`` (its own session); the
point answers one JSON line (``{"ok": true, "watched": USER, "target": ...}`` or
``{"ok": false, "error": SENTENCE}``), then sends the shell's output, **as the recording
process redacted it for the recording** (:meth:`bastion.recording.recorder.Recorder.watch`),
never the worker's raw bytes. The watcher may send one more JSON line, ``{"terminate":
REASON}``. Nothing the watcher sends reaches the shell.

The watched operator is told when someone starts and stops watching. A moderated shell
(:mod:`bastion.oversight.roles`) waits here until a watcher is in; if the last watcher leaves
while it runs, the session ends (docs/oversight.md: the safe choice: an unwatched moderated
shell is what the policy forbids).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bastion.errors import PolicyDenied
from bastion.recording.errors import RecordingUnavailable
from bastion.recording.recorder import Recorder
from bastion.session.lifecycle import Ending
from bastion.session.session import Session
from bastion.terminal_text import printable

__all__ = [
    "MAX_WATCHER_BACKLOG",
    "Verify",
    "WatchPoint",
    "Watcher",
    "read_watchers",
    "short_path",
    "tell_operator",
    "watch_dir",
    "watch_socket",
    "watchers_file",
]

log = logging.getLogger(__name__)

# A watcher this far behind is cut off: a slow auditor never holds the session's output.
MAX_WATCHER_BACKLOG: Final = 4 * 1024 * 1024
HELLO_TIMEOUT: Final = 5.0
MAX_LINE: Final = 4096
# (peer pid, the session it names) -> the auditor's user name, or the sentence refusing it.
Verify = Callable[[int, str], Awaitable["Watcher | str"]]


@dataclass(frozen=True)
class Watcher:
    user: str
    session: str


def watch_dir(state_dir: Path) -> Path:
    return state_dir / "watch"


def watch_socket(state_dir: Path, session_id: str) -> Path:
    if not session_id.isalnum():
        raise ValueError(f"{session_id!r} is not a session id")
    return watch_dir(state_dir) / f"{session_id}.sock"


@contextlib.contextmanager
def short_path(path: Path) -> Iterator[str]:
    """``path`` as a name short enough for a Unix socket (108 bytes), whatever the length
    of the state directory: through an open descriptor of its directory."""
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def watchers_file(state_dir: Path, session_id: str) -> Path:
    """Who watches the session now, one name a line, for ``bastion sessions list``."""
    return watch_socket(state_dir, session_id).with_suffix(".watchers")


def read_watchers(state_dir: Path, session_id: str) -> list[str] | None:
    """The session's watchers; None when it has no debug shell to watch."""
    if not watch_socket(state_dir, session_id).exists():
        return None
    try:
        text = watchers_file(state_dir, session_id).read_text()
    except FileNotFoundError:
        return []
    return [printable(line) for line in text.splitlines() if line]


def peer_pid(sock: socket.socket) -> tuple[int, int]:
    """The connecting process's pid and uid, as the kernel saw them at ``connect``."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


class WatchPoint:
    """One session's watch socket and its watchers; see the module docstring."""

    def __init__(
        self,
        session: Session,
        *,
        state_dir: Path,
        verify: Verify,
        tell: Callable[[str], None],
        target: str,
        moderated: bool = False,
    ) -> None:
        self._session = session
        self.path = watch_socket(state_dir, session.id)
        self._verify = verify
        self._tell = tell
        self._target = target
        self.moderated = moderated
        self._server: asyncio.Server | None = None
        self._watchers: dict[asyncio.StreamWriter, Watcher] = {}
        self._joined = asyncio.Event()
        self._recorder: Recorder | None = None
        self._running = False  # the shell runs: losing the last watcher ends a moderated one
        self._listed = self.path.with_suffix(".watchers")

    @property
    def watchers(self) -> list[str]:
        return sorted({w.user for w in self._watchers.values()})

    async def start(self) -> None:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # noqa: PTH101 - an existing directory is narrowed too
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket left by a worker that died; session ids are unique
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with short_path(self.path) as short:
                sock.bind(short)
            os.chmod(self.path, 0o600)  # noqa: PTH101 - the directory already keeps others out
            sock.listen(8)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            raise

    async def close(self) -> None:
        self.detach()
        self._running = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for path in (self.path, self._listed):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for writer in list(self._watchers):
            writer.close()
        self._watchers.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    # ------------------------------------------------------------------ the moderated gate
    async def wait_for_watcher(
        self, seconds: float, *, reason: str, give_up: Callable[[], bool] = lambda: False
    ) -> None:
        """Return once a watcher is in; PolicyDenied when none came within ``seconds`` or
        the operator gave up (Ctrl-C). Nothing of the shell exists before this returns."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._watchers:
            if give_up():
                raise PolicyDenied(
                    "you stopped waiting for a watcher; the debug shell did not start"
                )
            left = deadline - loop.time()
            if left <= 0:
                raise PolicyDenied(
                    f"no auditor joined within {seconds:.0f} s ({reason}); the debug shell "
                    "did not start: ask an auditor to watch, then try again"
                )
            self._joined.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._joined.wait(), min(left, 0.25))

    def running(self) -> None:
        """The shell is being created: from now on a moderated session needs its watcher
        (PolicyDenied if the one who came has left already)."""
        if self.moderated and not self._watchers:
            raise PolicyDenied(
                "the watcher left before the debug shell started, so it did not start; "
                "ask an auditor to watch, then try again"
            )
        self._running = True

    # ------------------------------------------------------------------ the feed
    def attach(self, recorder: Recorder) -> None:
        """Feed watchers from this recording (as redacted for it) while any watch."""
        self._recorder = recorder
        if self._watchers:
            self._feed(on=True)

    def detach(self) -> None:
        self._feed(on=False)
        self._recorder = None

    def _feed(self, *, on: bool) -> None:
        if self._recorder is not None:
            # A recording that failed ends the session itself: nothing to feed or stop then.
            with contextlib.suppress(RecordingUnavailable):
                self._recorder.watch(self._broadcast if on else None)

    def _publish(self) -> None:
        """Who watches, for ``bastion sessions list`` (best effort: the socket is the truth)."""
        temporary = self._listed.with_suffix(".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write("".join(f"{name}\n" for name in self.watchers))
            temporary.replace(self._listed)
        except OSError as exc:
            log.warning("session %s: watchers not listed: %s", self._session.id, exc)

    def _broadcast(self, redacted: bytes) -> None:
        for writer, watcher in list(self._watchers.items()):
            transport = writer.transport
            if transport.get_write_buffer_size() > MAX_WATCHER_BACKLOG:
                log.warning("session %s: watcher %s fell behind", self._session.id, watcher.user)
                writer.close()  # its handler sees the end and says the watcher left
                continue
            writer.write(redacted)

    # ------------------------------------------------------------------ one watcher
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        watcher: Watcher | None = None
        try:
            watcher = await self._admit(reader, writer)
            if watcher is None:
                return
            await self._follow(reader, watcher)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            if watcher is not None:
                self._left(writer, watcher)
            writer.close()

    async def _admit(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Watcher | None:
        sock = writer.get_extra_info("socket")
        pid, uid = peer_pid(sock)
        line = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
        hello = _json_line(line)
        named = hello.get("session") if hello is not None else None
        if uid != os.geteuid() or not isinstance(named, str) or not named.isalnum():
            verdict: Watcher | str = "this socket serves bastion workers only"
        else:
            verdict = await self._verify(pid, named)
        if isinstance(verdict, str):
            writer.write(_line({"ok": False, "error": verdict}))
            await writer.drain()
            return None
        if self._session.ending is not None:
            writer.write(_line({"ok": False, "error": f"session {self._session.id} has ended"}))
            await writer.drain()
            return None
        writer.write(
            _line({"ok": True, "watched": self._session.info.user, "target": self._target})
        )
        await writer.drain()
        first = not self._watchers
        self._watchers[writer] = verdict
        self._joined.set()
        self._publish()
        if first:
            self._feed(on=True)
        self._tell(f"auditor {verdict.user} is watching this session")
        return verdict

    async def _follow(self, reader: asyncio.StreamReader, watcher: Watcher) -> None:
        """Read the watcher's requests until it leaves; its bytes go nowhere else."""
        while True:
            line = await reader.readline()
            if not line:
                return
            request = _json_line(line)
            reason = request.get("terminate") if request is not None else None
            if isinstance(reason, str) and reason.strip():
                await self._terminate(watcher, reason.strip())
                return

    async def _terminate(self, watcher: Watcher, reason: str) -> None:
        session = self._session
        if session.ending is not None:
            return
        # The auditor's worker recorded the request before sending it; this records that
        # the session honoured it, before it ends.
        await session.record(
            "session.terminated",
            outcome="terminated",
            by=watcher.user,
            by_session=watcher.session,
            reason=reason,
        )
        session.ending_note = f"auditor {watcher.user} ended this session: {reason}"
        session.end_soon(Ending.ADMIN_KILL)

    def _left(self, writer: asyncio.StreamWriter, watcher: Watcher) -> None:
        if self._watchers.pop(writer, None) is None:
            return
        self._publish()
        session = self._session
        if session.ending is not None:
            return
        self._tell(f"auditor {watcher.user} stopped watching this session")
        if not self._watchers:
            self._feed(on=False)
            if self.moderated and self._running:
                session.ending_note = (
                    "this session must be watched and its last watcher left, so it has ended"
                )
                session.end_soon(Ending.ADMIN_KILL)


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode() + b"\n"


def _json_line(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def tell_operator(write: Callable[[bytes], None]) -> Callable[[str], None]:
    """A notice into the watched operator's terminal: a bell and one reversed line."""

    def tell(message: str) -> None:
        with contextlib.suppress(Exception):  # the operator may be gone already
            write(f"\a\r\n\x1b[7m bastion: {printable(message)} \x1b[0m\r\n".encode())

    return tell
