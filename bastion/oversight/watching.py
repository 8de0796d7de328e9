"""An auditor watching a live debug shell: ``ssh -t auditor@bastion watch SESSION``.

The auditor's worker (this module) checks the role, records ``oversight.watch_started``
before it connects, then connects to the watched session's watch socket
(:mod:`bastion.oversight.watch_point`, served by whichever worker runs that session) and
copies what it sends, the shell's output as redacted for its recording, to the auditor's
terminal. The auditor's keys go nowhere near the shell: ``q`` (or Ctrl-C) leaves, ``t``
asks for a reason and terminates the session (``oversight.terminate_requested`` is
recorded before the request is sent; the watched worker records ``session.terminated``
and wipes the session as for any ending). ``oversight.watch_ended`` closes the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

from bastion.config import Config
from bastion.errors import PolicyDenied
from bastion.oversight.admission import auditors_of
from bastion.oversight.roles import is_auditor
from bastion.oversight.watch_point import short_path, watch_socket
from bastion.session.session import Session
from bastion.terminal_text import printable

__all__ = ["KEYS_HELP", "WatchTerminal", "check_watch", "watch_session"]

KEYS_HELP: Final = "read-only; q leaves, t terminates the session (you give a reason)"
REASON_TIME: Final = 120.0
MIN_REASON: Final = 4
READ_SIZE: Final = 64 * 1024


class WatchTerminal:
    """What the SSH side gives a watch: the auditor's terminal and keys."""

    def __init__(
        self,
        *,
        write: Callable[[bytes], None],
        ask: Callable[[str, float], Awaitable[str | None]],
    ) -> None:
        self.write = write
        self.ask = ask
        self.keys: asyncio.Queue[bytes] = asyncio.Queue()
        self.writable = asyncio.Event()  # cleared while the auditor's channel is full
        self.writable.set()

    def say(self, text: str) -> None:
        self.write(f"bastion: {printable(text)}\r\n".encode())


async def watch_session(
    session: Session,
    config: Config,
    *,
    groups: frozenset[str],
    watched: str,
    terminal: WatchTerminal,
) -> int:
    """Watch session ``watched`` until it ends or the auditor leaves; 0, or raises
    PolicyDenied (one sentence) when the watch cannot start."""
    record = await check_watch(session, config, groups=groups, watched=watched)
    path = watch_socket(config.paths.state_dir, watched)
    # Audit before action: no byte of the session is read unless this is on record.
    await session.record(
        "oversight.watch_started", outcome="watching", watched=watched, watched_user=record.user
    )
    if session.ending is not None:
        raise PolicyDenied("the watch could not be recorded, so it did not start")
    try:
        return await _watch(session, path, watched, terminal)
    finally:
        await session.record(
            "oversight.watch_ended", outcome="ended", watched=watched, watched_user=record.user
        )


async def check_watch(
    session: Session, config: Config, *, groups: frozenset[str], watched: str
) -> Any:
    """The watched session's journal record, if ``session``'s user may watch it now; else
    PolicyDenied (a non-auditor's attempt is audited)."""
    user = session.info.user
    if not is_auditor(auditors_of(config), user, groups):
        await session.record("oversight.refused", outcome="refused", watched=watched[:40])
        raise PolicyDenied(
            "only auditors may watch sessions, and you are not one: ask an administrator "
            "to add you to oversight.auditors"
        )
    record = await session.lookup(watched) if watched.isalnum() else None
    if record is None or record.closed:
        raise PolicyDenied(
            f"there is no live session {watched[:40]!r}: 'bastion sessions list' shows them"
        )
    if watched == session.id:
        raise PolicyDenied("you cannot watch your own session")
    return record


async def _watch(session: Session, path: Any, watched: str, terminal: WatchTerminal) -> int:
    try:
        with short_path(path) as short:
            reader, writer = await asyncio.open_unix_connection(short)
    except OSError:
        raise PolicyDenied(
            f"session {watched} runs no debug shell to watch right now; try again once "
            "it starts one"
        ) from None
    try:
        writer.write(json.dumps({"session": session.id}).encode() + b"\n")
        await writer.drain()
        answer = _answer(await asyncio.wait_for(reader.readline(), 10.0))
        if not answer.get("ok"):
            raise PolicyDenied(str(answer.get("error") or "the watch was refused"))
        terminal.say(
            f"watching session {watched} of {answer.get('watched')} on "
            f"{answer.get('target')}: {KEYS_HELP}"
        )
        copy = asyncio.ensure_future(_copy(reader, terminal))
        keys = asyncio.ensure_future(_keys(session, terminal, writer, watched))
        try:
            done, _ = await asyncio.wait({copy, keys}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (copy, keys):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if copy in done:
            terminal.say(f"\r\nsession {watched} has ended; the watch is over")
        else:
            terminal.say(f"\r\nyou stopped watching session {watched}")
        return 0
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _copy(reader: asyncio.StreamReader, terminal: WatchTerminal) -> None:
    while True:
        data = await reader.read(READ_SIZE)
        if not data:
            return
        terminal.write(data)
        # The SSH window is full: read no more until it drains (the watched worker cuts
        # off a watcher that falls far behind, rather than hold its session).
        await terminal.writable.wait()


async def _keys(
    session: Session, terminal: WatchTerminal, writer: asyncio.StreamWriter, watched: str
) -> None:
    """The watch screen's own keys; anything else is dropped, never sent on."""
    while True:
        data = await terminal.keys.get()
        if b"q" in data or b"\x03" in data:
            return
        if b"t" in data and await _terminate(session, terminal, writer, watched):
            # The session ends; its end closes the stream, and _copy sees it.
            await asyncio.Event().wait()


async def _terminate(
    session: Session, terminal: WatchTerminal, writer: asyncio.StreamWriter, watched: str
) -> bool:
    reason = await terminal.ask(
        "\r\nbastion: why terminate this session? (Enter sends, empty cancels) ", REASON_TIME
    )
    reason = (reason or "").strip()
    if len(reason) < MIN_REASON:
        terminal.say("not terminated: a reason of a few words is required")
        return False
    await session.record(
        "oversight.terminate_requested", outcome="requested", watched=watched, reason=reason
    )
    if session.ending is not None:
        return False  # not on record (the log failed and ends this session): not sent
    writer.write(json.dumps({"terminate": reason}).encode() + b"\n")
    await writer.drain()
    terminal.say("termination requested")
    return True


def _answer(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise PolicyDenied("the watched session's worker did not answer; try again")
    return value
