"""Questions asked on the operator's raw terminal, one line each (the break-glass reason).

The SSH channel is in raw mode (no line editor: the console and the debug shells need every
key as typed), so this reads the answer itself with :class:`bastion.breakglass.reason
.LineEditor`, echoing what is typed. While a question is open the session's input comes here
(``feed``) and nowhere else; nothing else runs in the session meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from bastion.breakglass.reason import LineEditor, Status

__all__ = ["TerminalPrompt"]


class TerminalPrompt:
    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._editor: LineEditor | None = None
        self._answer: asyncio.Future[str | None] | None = None

    @property
    def open(self) -> bool:
        """A question waits for its answer: input belongs to it."""
        return self._answer is not None and not self._answer.done()

    def feed(self, data: bytes) -> None:
        editor, answer = self._editor, self._answer
        if editor is None or answer is None or answer.done():
            return
        echo = editor.feed(data)
        if echo:
            self._write(echo)
        if editor.status is Status.DONE:
            answer.set_result(editor.line)
        elif editor.status is Status.REFUSED:
            answer.set_result(None)

    def cancel(self) -> None:
        """The session is ending: the open question gets no answer."""
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(None)

    async def ask(self, prompt: str, within: float, *, typed: bytes = b"") -> str | None:
        """Show ``prompt`` and return the line typed within ``within`` seconds (None:
        refused, timed out, or the session ended). ``typed``: keys that came before."""
        self._editor = LineEditor()
        self._answer = asyncio.get_running_loop().create_future()
        self._write(prompt.encode())
        if typed:
            self.feed(typed)
        try:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(self._answer), max(within, 0.0))
            self._write(b"\r\n")
            return None
        finally:
            self.cancel()
            self._editor = None
