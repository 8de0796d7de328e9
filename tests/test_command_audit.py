"""The watched attach stream: which prompts are commands, where the guard's notices go, and
what an end or a warning does, against a scripted stream and a recording session double."""

from __future__ import annotations

from collections import deque
from typing import Any

from bastion.command_marker import encode_report
from bastion.config.guard import Guard
from bastion.session.command_audit import WatchedStream
from bastion.session.guard import SessionGuard
from bastion.session.lifecycle import Ending
from bastion.session.session import SessionInfo

NONCE = "0123456789abcdef0123456789abcdef"


def report(number: int | None, command: str = "", status: int = 0) -> bytes:
    line = b"" if number is None else f"{number:4d} {command}".encode()
    return encode_report(NONCE, status, line)


class Stream:
    """Chunks to read; what was written."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = deque(chunks)
        self.written: list[bytes] = []
        self.exit_status: int | None = 0
        self.failure: str | None = None

    async def read(self) -> bytes | None:
        return self.chunks.popleft() if self.chunks else None

    async def write(self, data: bytes) -> None:
        self.written.append(data)

    async def resize(self, cols: int, rows: int) -> None: ...
    async def close_stdin(self) -> None: ...
    async def aclose(self) -> None: ...


class FakeSession:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.info = SessionInfo("s1", "alice", "192.0.2.1", "c1")
        self.ended: Ending | None = None

    async def record(self, event: str, *, outcome: str, **fields: Any) -> None:
        self.events.append((event, {"outcome": outcome, **fields}))

    def end_soon(self, ending: Ending) -> None:
        self.ended = ending


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watched(chunks: list[bytes], guard: dict[str, Any] | None = None) -> tuple[
    WatchedStream, Stream, FakeSession, Clock
]:  # fmt: skip
    stream, session, clock = Stream(chunks), FakeSession(), Clock()
    rules = Guard.model_validate(guard or {})
    s: Any = session
    return (
        WatchedStream(
            stream,
            session=s,
            nonce=NONCE,
            guard=SessionGuard(s, rules, alerts=None, secrets=["tok-very-secret-value"]),
            secrets=["tok-very-secret-value"],
            clock=clock,
        ),
        stream,
        session,
        clock,
    )


async def read_all(w: WatchedStream) -> bytes:
    out = b""
    while (data := await w.read()) is not None:
        out += data
    return out


async def test_only_new_history_entries_are_commands() -> None:
    chunks = [
        report(None) + b"$ ",  # the first prompt
        b"ls\r\nfile\r\n" + report(1, "ls") + b"$ ",
        b"\r\n" + report(1, "ls") + b"$ ",  # an empty line
        b"ls\r\n" + report(2, "ls", 1) + b"$ ",
        # busybox ash with a full history: the number stays, the line changes
        b"id\r\n" + report(254, "echo tok-very-secret-value") + b"$ ",
        b"ps\r\n" + report(254, "ps") + b"$ ",
    ]
    w, _, session, _ = watched(chunks)
    out = await read_all(w)
    assert b"\x1b]7770" not in out
    assert out.count(b"$ ") == 6
    runs = [(f["command"], f["exit_status"], f["history"]) for e, f in session.events]
    assert runs == [
        ("ls", 0, 1),
        ("ls", 1, 2),
        ("echo [REDACTED:session-secret]", 0, 254),
        ("ps", 0, 254),
    ]
    assert w.commands == 4


async def test_duration_runs_from_the_first_enter_after_the_prompt() -> None:
    w, stream, session, clock = watched([])
    stream.chunks.append(report(None) + b"$ ")
    await w.read()
    clock.now = 101.0
    await w.write(b"sleep 2")
    await w.write(b"\r")
    clock.now = 101.5
    await w.write(b"\r")  # typed while it runs: not the start
    clock.now = 103.25
    stream.chunks.append(report(1, "sleep 2") + b"$ ")
    await w.read()
    stream.chunks.append(report(2, "true") + b"$ ")  # no Enter seen since that prompt
    await w.read()
    assert [f["duration_ms"] for _, f in session.events] == [2250, None]


async def test_a_warning_goes_before_the_next_prompt_and_end_ends() -> None:
    chunks = [
        report(None) + b"$ ",
        b"cat /proc/1/environ\r\nX=1\r\n" + report(1, "cat /proc/1/environ") + b"$ ",
        b"strace -p 1\r\n" + report(2, "strace -p 1") + b"$ ",
    ]
    guard = {"denied_commands": {"action": "end", "patterns": [{"regex": "^strace "}]}}
    w, _, session, _ = watched(chunks, guard)
    out = await read_all(w)
    warning = b"\r\nbastion guard: a command naming a sensitive path"
    assert out.index(b"X=1\r\n") < out.index(warning) < out.rindex(b"$ ")
    assert out.endswith(
        b"\r\nbastion guard: a command on the deny list: this session is being ended\r\n$ "
    )
    triggered = [f for e, f in session.events if e == "guard.triggered"]
    assert [(f["rule"], f["action"]) for f in triggered] == [
        ("sensitive_path", "warn"),
        ("denied_command", "end"),
    ]
    # Audit before action: the trigger is written before the end is asked for.
    assert [e for e, _ in session.events][-1] == "guard.triggered"
    assert session.ended is Ending.GUARD


async def test_output_volume_counts_what_the_operator_gets() -> None:
    chunks = [report(None) + b"$ ", b"x" * 3000, b"y" * 3000]
    guard = {"output_volume": {"bytes": 5000, "window": "10s", "action": "warn"}}
    w, _, session, _ = watched(chunks, guard)
    out = await read_all(w)
    assert out.endswith(b"y" * 3000 + b"\r\nbastion guard: more shell output than the guard "
                        b"allows in its window (6002 bytes of output within 10 s (limit 5000)); "
                        b"this is in the audit log\r\n")  # fmt: skip
    assert [f["rule"] for _, f in session.events] == ["output_volume"]


async def test_a_report_cut_at_the_end_of_the_stream_is_output() -> None:
    cut = report(3, "ls")[:-4]
    w, _, session, _ = watched([b"a", cut])
    assert await read_all(w) == b"a" + cut
    assert session.events == []
