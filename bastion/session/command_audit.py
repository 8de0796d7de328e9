"""A debug shell's attach stream, watched: command reports become audit events, and the
guard sees every command and the output volume.

:class:`WatchedStream` sits between the attach stream and :class:`bastion.attach_bridge.
AttachBridge`, so the bridge, the recorder and the operator's terminal all get the output
with the shell's command reports already taken out (:mod:`bastion.command_marker`). For each
report of a new command it writes ``command.run`` (the command line redacted with the
recording's rules and the session's secrets, its exit status, and its duration as the
bastion saw it: from the operator's Enter to the next prompt), then evaluates the guard's
command rules; every output chunk goes through the output meter. A guard trigger is written
as ``guard.triggered`` before its action runs (:class:`bastion.session.guard.SessionGuard`).

Both events are written before the output that carried the report is handed on, so a shell
whose audit events cannot be written stops there (the session's record() ends it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bastion.attach_bridge import AttachedStream
from bastion.command_marker import CommandReport, MarkerFilter
from bastion.session.guard import SessionGuard, redact_text
from bastion.session.session import Session

__all__ = ["WatchedStream"]


class WatchedStream:
    """An :class:`AttachedStream` whose output has lost the shell's command reports."""

    def __init__(
        self,
        stream: AttachedStream,
        *,
        session: Session,
        nonce: str,
        guard: SessionGuard,
        secrets: list[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._session = session
        self._filter = MarkerFilter(nonce)
        self._guard = guard
        self._secrets = secrets
        self._clock = clock
        # The last report's history entry: busybox ash stops numbering when its history is
        # full (255), so the line tells a new entry from the old one too.
        self._last: tuple[int | None, str] | None = None
        self._baseline = False  # the first prompt's report was seen
        self._entered: float | None = None  # first Enter since the last prompt
        self._ended = False
        self.commands = 0

    @property
    def exit_status(self) -> int | None:
        return self._stream.exit_status

    @exit_status.setter
    def exit_status(self, value: int | None) -> None:
        self._stream.exit_status = value

    @property
    def failure(self) -> str | None:
        return self._stream.failure

    @failure.setter
    def failure(self, value: str | None) -> None:
        self._stream.failure = value

    @property
    def forged_reports(self) -> int:
        return self._filter.forged

    async def read(self) -> bytes | None:
        while not self._ended:
            data = await self._stream.read()
            if data is None:
                self._ended = True
                data, _ = self._filter.flush()
                return data or None
            clean, reports = self._filter.feed(data)
            if reports:
                # A notice about a command goes where its report was: before the prompt.
                pieces, last = [], 0
                for report in reports:
                    pieces += [clean[last : report.at], await self._reported(report)]
                    last = report.at
                clean = b"".join(pieces) + clean[last:]
            if clean:
                clean += await self._guard.output(len(clean), self._clock())
                return clean
        return None

    async def write(self, data: bytes) -> None:
        if self._entered is None and (b"\r" in data or b"\n" in data):
            self._entered = self._clock()
        await self._stream.write(data)

    async def resize(self, cols: int, rows: int) -> None:
        await self._stream.resize(cols, rows)

    async def close_stdin(self) -> None:
        await self._stream.close_stdin()

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def _reported(self, report: CommandReport) -> bytes:
        """Audit one prompt's report if it names a new command; the guard's notices."""
        if not self._baseline:
            # The first prompt: no command ran before it, and a line typed before it showed
            # up is the first command's.
            self._baseline = True
            self._last = (report.number, report.command)
            return b""
        entered, self._entered = self._entered, None
        entry = (report.number, report.command)
        if report.number is None or entry == self._last:
            return b""  # an empty line: the history did not move
        self._last = entry
        self.commands += 1
        command = redact_text(report.command, self._secrets)
        await self._session.record(
            "command.run",
            outcome="ran",
            command=command,
            exit_status=report.exit_status,
            # Lines typed ahead share the first one's Enter: theirs is not known.
            duration_ms=None if entered is None else round((self._clock() - entered) * 1000),
            history=report.number,
        )
        return await self._guard.command(report.command)
