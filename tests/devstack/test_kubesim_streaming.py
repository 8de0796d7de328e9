"""kubesim's container processes and the attach/exec WebSocket streams, end to end.

A tiny aiohttp app (plain HTTP on 127.0.0.1, port 0) serves ``serve_stream`` for real local
processes; aiohttp's WebSocket client checks the framing byte by byte, and the official
``kubernetes`` client checks that a real client is satisfied. After every test no child
process, no member of a started process's session and no extra fd may be left behind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client import ApiClient, Configuration, CoreV1Api
from kubernetes.stream import stream

from bastion.devstack.kubesim.processes import (
    STDERR,
    STDOUT,
    ContainerProcess,
    ExecutableNotFoundError,
    OutputChunk,
    StdinClosedError,
    SubscriberTooSlowError,
)
from bastion.devstack.kubesim.streaming import SUPPORTED_PROTOCOLS, select_subprotocol, serve_stream

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
TIMEOUT = 15.0
TRUE = {"true", "True", "1"}


# ------------------------------------------------------------------------------ leak guards
def _proc_stat(pid: int) -> list[bytes] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()  # state, ppid, pgrp, session, ...


def _live_processes() -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _proc_stat(int(entry.name))) and fields[0] != b"Z":
            found[int(entry.name)] = fields
    return found


def _children() -> set[int]:
    me = os.getpid()
    return {pid for pid, fields in _live_processes().items() if int(fields[1]) == me}


def _session_members(session: int) -> set[int]:
    return {pid for pid, fields in _live_processes().items() if int(fields[3]) == session}


def _fd_count() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


STARTED: list[ContainerProcess] = []


@pytest.fixture(autouse=True)
async def no_leaked_processes_or_fds() -> AsyncIterator[None]:
    STARTED.clear()
    children, fds = _children(), _fd_count()
    yield
    # Closed transports release their sockets a loop iteration or two later.
    for _ in range(200):
        if _fd_count() == fds and _children() == children:
            break
        await asyncio.sleep(0.01)
    assert _children() == children, "child processes were left running"
    assert _fd_count() == fds, "file descriptors were leaked"
    for process in STARTED:
        if not process.started:
            continue
        assert process.finished, f"{process!r} was not waited for"
        assert not _session_members(process.pid), f"{process!r} left processes in its session"


# ------------------------------------------------------------------------------ helpers
@pytest.fixture
def env() -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "TERM": "xterm", "LANG": "C.UTF-8"}


def make_process(
    argv: list[str], tmp_path: Path, env: dict[str, str], **kw: Any
) -> ContainerProcess:
    process = ContainerProcess(argv, cwd=tmp_path, env=env, **kw)
    STARTED.append(process)
    return process


@dataclass
class Harness:
    """An app that serves exec (a fresh process per request) and attach (a given process)."""

    workdir: Path
    env: dict[str, str]
    base_url: str = ""
    attach_target: ContainerProcess | None = None
    attach_options: dict[str, Any] = field(default_factory=dict)
    stdin_closed_calls: int = 0
    active: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def exec_handler(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        tty = query.get("tty") in TRUE
        stdin = query.get("stdin") in TRUE
        process = make_process(
            query.getall("command", []), self.workdir, self.env, tty=tty, stdin=stdin
        )
        return await self._serve(
            serve_stream(
                request,
                process,
                stdin=stdin,
                stdout=query.get("stdout", "true") in TRUE,
                stderr=query.get("stderr") in TRUE,
                tty=tty,
                owns_process=True,
            )
        )

    async def attach_handler(self, request: web.Request) -> web.StreamResponse:
        assert self.attach_target is not None
        query = request.query
        stdin = query.get("stdin") in TRUE

        def stdin_closed() -> None:
            self.stdin_closed_calls += 1

        return await self._serve(
            serve_stream(
                request,
                self.attach_target,
                stdin=stdin,
                stdout=query.get("stdout", "true") in TRUE,
                stderr=query.get("stderr") in TRUE,
                tty=self.attach_target.tty,
                on_stdin_closed=stdin_closed if stdin else None,
                report_exit=False,
                owns_process=False,
            )
        )

    async def _serve(self, call: Awaitable[web.WebSocketResponse]) -> web.StreamResponse:
        self.active += 1
        self.idle.clear()
        try:
            return await call
        finally:
            self.active -= 1
            if not self.active:
                self.idle.set()

    def url(self, path: str, **query: str | list[str]) -> str:
        parts = [
            f"{key}={item}"
            for key, value in query.items()
            for item in ([value] if isinstance(value, str) else value)
        ]
        return f"{self.base_url}{path}?{'&'.join(parts)}"

    def exec_url(self, *command: str, **query: str) -> str:
        return self.url("/api/v1/namespaces/default/pods/box/exec", command=list(command), **query)

    def attach_url(self, **query: str) -> str:
        return self.url("/api/v1/namespaces/default/pods/box/attach", **query)


@pytest.fixture
async def harness(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, env)
    h.idle.set()
    app = web.Application()
    prefix = "/api/v1/namespaces/{namespace}/pods/{name}"
    app.router.add_get(f"{prefix}/exec", h.exec_handler)
    app.router.add_get(f"{prefix}/attach", h.attach_handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    h.base_url = f"http://{host}:{port}"
    try:
        yield h
        async with asyncio.timeout(TIMEOUT):
            await h.idle.wait()
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def connect(
    url: str, protocols: tuple[str, ...] = (V5,)
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with (
        asyncio.timeout(TIMEOUT),
        aiohttp.ClientSession() as session,
        session.ws_connect(url, protocols=protocols, autoclose=True) as ws,
    ):
        yield ws


async def next_frame(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, bytes] | None:
    """The next data frame as (channel, payload); None once the server has closed."""
    msg = await ws.receive()
    if msg.type is aiohttp.WSMsgType.BINARY:
        return msg.data[0], msg.data[1:]
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
    return None


async def drain(ws: aiohttp.ClientWebSocketResponse) -> dict[int, bytes]:
    """Everything until the server closes, joined per channel."""
    joined: dict[int, bytes] = {}
    while (frame := await next_frame(ws)) is not None:
        joined[frame[0]] = joined.get(frame[0], b"") + frame[1]
    return joined


async def read_until(ws: aiohttp.ClientWebSocketResponse, channel: int, needle: bytes) -> bytes:
    seen = b""
    while needle not in seen:
        frame = await next_frame(ws)
        assert frame is not None, f"closed before {needle!r} arrived; got {seen!r}"
        if frame[0] == channel:
            seen += frame[1]
    return seen


async def ready(ws: aiohttp.ClientWebSocketResponse, channel: int = 1) -> None:
    assert await next_frame(ws) == (channel, b"")


def pid_gone(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is None or fields[0] == b"Z"


# ------------------------------------------------------------------------------ exec, v5
async def test_v5_stdin_echo_and_close_ends_cat(harness: Harness) -> None:
    url = harness.exec_url("cat", stdin="true", stdout="true", stderr="true")
    # Listed second, v5 still wins: the API server translates any request that offers it.
    async with connect(url, protocols=(V4, V5)) as ws:
        assert ws.protocol == V5
        await ready(ws)
        await ws.send_bytes(b"\x00hello\n")
        assert await read_until(ws, 1, b"hello\n") == b"hello\n"
        await ws.send_bytes(b"\xff\x00")  # CLOSE stdin: cat sees EOF and exits 0
        rest = await drain(ws)
        assert ws.close_code == aiohttp.WSCloseCode.OK
    assert rest == {3: b'{"metadata":{},"status":"Success"}'}


async def test_v5_nonzero_exit_status_json(harness: Harness) -> None:
    async with connect(harness.exec_url("sh", "-c", "exit%203", stdout="true")) as ws:
        await ready(ws)
        got = await drain(ws)
    assert json.loads(got[3]) == {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: "
        "command terminated with exit code 3",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }
    # Go's field order, byte for byte.
    assert got[3].startswith(b'{"metadata":{},"status":"Failure","message":')


async def test_text_frames_from_python_client_style_are_accepted(harness: Harness) -> None:
    async with connect(harness.exec_url("cat", stdin="true", stdout="true")) as ws:
        await ready(ws)
        await ws.send_str("\x00as text\n")  # the Python client sends str data this way
        assert await read_until(ws, 1, b"as text\n") == b"as text\n"
        await ws.send_bytes(b"\xff\x00")
        assert (await drain(ws))[3] == b'{"metadata":{},"status":"Success"}'


async def test_stderr_is_a_separate_channel_without_tty(harness: Harness) -> None:
    url = harness.exec_url("sh", "-c", "echo out;echo err >%262", stdout="true", stderr="true")
    async with connect(url) as ws:
        await ready(ws)
        got = await drain(ws)
    assert got == {1: b"out\n", 2: b"err\n", 3: b'{"metadata":{},"status":"Success"}'}


async def test_tty_merges_stderr_into_stdout(harness: Harness) -> None:
    url = harness.exec_url("sh", "-c", "echo err >%262", stdout="true", stderr="true", tty="true")
    async with connect(url) as ws:
        await ready(ws)
        got = await drain(ws)
    assert got[1] == b"err\r\n"
    assert 2 not in got


@pytest.mark.parametrize(
    ("query", "channel"),
    [({"stderr": "true", "stdout": "false"}, 2), ({"stdin": "true", "stdout": "false"}, 3)],
)
async def test_ready_marker_goes_to_lowest_writable_stream(
    harness: Harness, query: dict[str, str], channel: int
) -> None:
    async with connect(harness.exec_url("true", **query)) as ws:
        await ready(ws, channel)
        assert (await drain(ws))[3] == b'{"metadata":{},"status":"Success"}'


async def test_tty_resize_reaches_the_program(harness: Harness) -> None:
    url = harness.exec_url("sh", stdin="true", stdout="true", tty="true")
    async with connect(url) as ws:
        await ready(ws)
        await ws.send_bytes(b'\x04{"Width":100,"Height":40}\n')
        await ws.send_bytes(b"\x00stty size\n")
        assert b"40 100" in await read_until(ws, 1, b"40 100")
        # A JSON stream, not one object per message; Go matches field names in any case.
        await ws.send_bytes(b'\x04{"width":120,')
        await ws.send_bytes(b'\x04"height":50}\n{"Width":132,"Height":43}\n')
        await ws.send_bytes(b"\x00stty size\n")
        assert b"43 132" in await read_until(ws, 1, b"43 132")
        await ws.send_bytes(b"\x00exit 5\n")
        got = await drain(ws)
    assert json.loads(got[3])["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]


async def test_client_pings_are_answered(harness: Harness) -> None:
    async with (
        asyncio.timeout(TIMEOUT),
        aiohttp.ClientSession() as session,
        # aiohttp closes the connection if a ping goes unanswered for half the interval.
        session.ws_connect(harness.exec_url("sleep", "1"), protocols=(V5,), heartbeat=0.2) as ws,
    ):
        await ready(ws)
        assert await drain(ws) == {3: b'{"metadata":{},"status":"Success"}'}
        assert ws.close_code == aiohttp.WSCloseCode.OK


async def test_exec_of_unknown_command_reports_internal_error(harness: Harness) -> None:
    async with connect(harness.exec_url("no-such-program", stdout="true")) as ws:
        await ready(ws)
        got = await drain(ws)
    cause = 'error executing command in container: exec: "no-such-program": ' + (
        "executable file not found in $PATH"
    )
    assert json.loads(got[3]) == {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {cause}",
        "reason": "InternalError",
        "details": {"causes": [{"message": cause}]},
        "code": 500,
    }


async def test_malformed_close_signal_is_a_protocol_error(harness: Harness) -> None:
    async with connect(harness.exec_url("cat", stdin="true", stdout="true")) as ws:
        await ready(ws)
        await ws.send_bytes(b"\xff\x00\x00")
        assert await drain(ws) == {}
        assert ws.close_code == aiohttp.WSCloseCode.PROTOCOL_ERROR
    await harness.idle.wait()
    assert STARTED[0].returncode is not None  # the exec'd process was ended


# ------------------------------------------------------------------------------ exec, v4
async def test_v4_status_wording_and_no_close_signal(harness: Harness) -> None:
    async with connect(harness.exec_url("sh", "-c", "exit%203"), protocols=(V4,)) as ws:
        assert ws.protocol == V4
        await ready(ws)
        got = await drain(ws)
    assert json.loads(got[3])["message"] == (
        "command terminated with non-zero exit code: "
        "error executing command [sh -c exit 3], exit code 3"
    )

    async with connect(harness.exec_url("cat", stdin="true"), protocols=(V4,)) as ws:
        await ready(ws)
        await ws.send_bytes(b"\xff\x00")  # no such channel before v5: dropped
        await ws.send_bytes(b"\x00still open\n")
        assert await read_until(ws, 1, b"still open\n") == b"still open\n"
    # The client left: an exec'd process does not outlive its stream.
    async with asyncio.timeout(TIMEOUT):
        await harness.idle.wait()
    cat = STARTED[-1]
    assert cat.returncode == -signal.SIGTERM
    assert pid_gone(cat.pid)


# ------------------------------------------------------------------------------ negotiation
async def test_unsupported_subprotocol_is_refused_before_upgrade(harness: Harness) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        async with connect(harness.exec_url("true"), protocols=("v6.example",)):
            pass
    assert caught.value.status == 403
    assert not any(process.started for process in STARTED)  # refused before starting it


async def test_no_streams_requested_is_a_bad_request(harness: Harness) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        async with connect(harness.exec_url("true", stdout="false")):
            pass
    assert caught.value.status == 400


async def test_no_subprotocol_gets_v1_semantics(harness: Harness) -> None:
    async with connect(harness.exec_url("true"), protocols=()) as ws:
        assert ws.protocol is None
        await ready(ws)
        assert await drain(ws) == {}  # v1: nothing on success
    async with connect(
        harness.exec_url("sh", "-c", "exit%202"), protocols=("channel.k8s.io",)
    ) as ws:
        assert ws.protocol == "channel.k8s.io"
        await ready(ws)
        got = await drain(ws)
    assert got == {  # v1: the error text, not JSON
        3: b"command terminated with non-zero exit code: "
        b"error executing command [sh -c exit 2], exit code 2"
    }


async def test_base64_variant(harness: Harness) -> None:
    async with (
        asyncio.timeout(TIMEOUT),
        aiohttp.ClientSession() as session,
        session.ws_connect(
            harness.exec_url("cat", stdin="true"), protocols=("v4.base64.channel.k8s.io",)
        ) as ws,
    ):
        assert (await ws.receive()).data == "1"  # ready marker: the channel digit only
        await ws.send_str("0" + base64.b64encode(b"b64 data\n").decode())
        msg = await ws.receive()
        assert msg.data[0] == "1"
        assert base64.b64decode(msg.data[1:]) == b"b64 data\n"


@given(st.lists(st.sampled_from([*SUPPORTED_PROTOCOLS, "", " ", "v9.example", "v5"])))
def test_subprotocol_selection(offered: list[str]) -> None:
    chosen = select_subprotocol(offered)
    names = [name.strip() for name in offered if name.strip()]
    if V5 in names:
        assert chosen == V5
    elif not names:
        assert chosen == ""
    elif any(name in SUPPORTED_PROTOCOLS for name in names):
        assert chosen == next(name for name in names if name in SUPPORTED_PROTOCOLS)
    else:
        assert chosen is None


# ------------------------------------------------------------------------------ attach
async def test_two_attachments_share_output_and_leaving_does_not_kill(
    harness: Harness, tmp_path: Path, env: dict[str, str]
) -> None:
    shell = make_process(["sh"], tmp_path, env, tty=True, stdin=True)
    await shell.start()
    harness.attach_target = shell
    async with connect(harness.attach_url(stdout="true")) as viewer:
        await ready(viewer)
        async with connect(harness.attach_url(stdin="true", stdout="true")) as typist:
            await ready(typist)
            await typist.send_bytes(b"\x00echo marker-$((6*7))\n")
            assert b"marker-42" in await read_until(typist, 1, b"marker-42")
            assert b"marker-42" in await read_until(viewer, 1, b"marker-42")
        # The typist left: its stdin ended, but attach never ends the container.
        for _ in range(100):
            if harness.stdin_closed_calls:
                break
            await asyncio.sleep(0.01)
        assert harness.stdin_closed_calls == 1
        assert shell.returncode is None
        await shell.write_stdin(b"echo still-$((1+1))\n")
        assert b"still-2" in await read_until(viewer, 1, b"still-2")
        await shell.write_stdin(b"exit 4\n")
        # The kubelet ends an attach with Success, whatever the container's exit code.
        assert (await drain(viewer))[3] == b'{"metadata":{},"status":"Success"}'
    assert await shell.wait() == 4


async def test_slow_websocket_client_is_dropped_and_others_get_everything(
    harness: Harness, tmp_path: Path, env: dict[str, str]
) -> None:
    size = 24 * 1024 * 1024  # well beyond what loopback socket buffers absorb
    producer = make_process(
        ["sh", "-c", f"read go; head -c {size} /dev/zero"],
        tmp_path,
        env,
        tty=False,
        stdin=True,
        subscriber_buffer=256 * 1024,
        stall_timeout=0.3,
    )
    await producer.start()
    harness.attach_target = producer
    async with connect(harness.attach_url(stdout="true")) as stuck:
        await ready(stuck)
        async with connect(harness.attach_url(stdout="true")) as reader:
            await ready(reader)
            await producer.write_stdin(b"go\n")
            received = 0
            while (frame := await next_frame(reader)) is not None:
                if frame[0] == 1:
                    received += len(frame[1])
            assert received == size
        # Only now does the stuck client read: some output, then an internal-error close.
        assert await drain(stuck)
        assert stuck.close_code == aiohttp.WSCloseCode.INTERNAL_ERROR
    assert await producer.wait() == 0


# ------------------------------------------------------------------------------ the official client
def _close_client(client: Any, api: CoreV1Api) -> None:
    client.close()
    # websocket-client answers the server's close frame and marks itself disconnected, after
    # which its close() returns early and leaves the socket open: close it ourselves.
    client.sock.shutdown()
    api.api_client.close()


def _core_api(base_url: str) -> CoreV1Api:
    configuration = Configuration(host=base_url)
    return CoreV1Api(ApiClient(configuration))


async def test_official_python_client_exec(harness: Harness) -> None:
    def run() -> tuple[str, str, int]:
        api = _core_api(harness.base_url)
        client = stream(
            api.connect_get_namespaced_pod_exec,
            "box",
            "default",
            command=["sh", "-c", "echo hello; echo oops >&2; exit 7"],
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
            _preload_content=False,
        )
        try:
            client.run_forever(timeout=TIMEOUT)
            return client.read_stdout(), client.read_stderr(), client.returncode
        finally:
            _close_client(client, api)

    assert await asyncio.to_thread(run) == ("hello\n", "oops\n", 7)


async def test_official_python_client_stdin_close_v5(harness: Harness) -> None:
    def run() -> tuple[str, int, str]:
        api = _core_api(harness.base_url)
        client = stream(
            api.connect_get_namespaced_pod_exec,
            "box",
            "default",
            command=["cat"],
            stderr=True,
            stdin=True,
            stdout=True,
            tty=False,
            _preload_content=False,
        )
        try:
            client.write_stdin("typed\n")
            line = client.readline_stdout(timeout=TIMEOUT)
            client.close_channel(0)
            client.run_forever(timeout=TIMEOUT)
            return line, client.returncode, client.subprotocol
        finally:
            _close_client(client, api)

    assert await asyncio.to_thread(run) == ("typed", 0, V5)


# ------------------------------------------------------------------------------ processes
async def _collect(process: ContainerProcess) -> list[OutputChunk]:
    with process.subscribe() as sub:
        return [chunk async for chunk in sub]


async def test_closing_stdin_of_a_tty_shell_is_a_hangup(
    tmp_path: Path, env: dict[str, str]
) -> None:
    shell = make_process(["sh"], tmp_path, env, tty=True, stdin=True)
    await shell.start()
    shell.close_stdin()
    async with asyncio.timeout(TIMEOUT):
        assert await shell.wait() == -signal.SIGHUP
    assert shell.exit_code == 128 + signal.SIGHUP
    assert shell.started_at is not None
    assert shell.terminated_at is not None
    assert shell.started_at <= shell.terminated_at
    assert shell.started_at.tzinfo is not None
    with pytest.raises(StdinClosedError):
        await shell.write_stdin(b"too late\n")


async def test_pipes_keep_channels_apart_and_stdin_eof(tmp_path: Path, env: dict[str, str]) -> None:
    process = make_process(
        ["sh", "-c", "cat; echo done >&2; exit 9"], tmp_path, env, tty=False, stdin=True
    )
    sub = process.subscribe()  # before start: nothing is missed
    await process.start()
    await process.write_stdin(b"piped\n")
    process.close_stdin()
    async with asyncio.timeout(TIMEOUT):
        chunks = [chunk async for chunk in sub]
        assert await process.wait() == 9
    assert b"".join(c.data for c in chunks if c.channel == STDOUT) == b"piped\n"
    assert b"".join(c.data for c in chunks if c.channel == STDERR) == b"done\n"


async def test_output_with_no_subscriber_never_blocks(tmp_path: Path, env: dict[str, str]) -> None:
    for tty in (True, False):
        process = make_process(
            ["sh", "-c", "head -c 4000000 /dev/zero"], tmp_path, env, tty=tty, stdin=False
        )
        await process.start()
        async with asyncio.timeout(TIMEOUT):
            assert await process.wait() == 0


@pytest.mark.parametrize(
    "script",
    [
        "head -c 8388608 /dev/zero",
        # Both pumps (stdout and stderr) wait for room at once: a reader that drains between
        # two waits must not be taken for one that stayed full.
        "head -c 4194304 /dev/zero & head -c 4194304 /dev/zero >&2; wait",
    ],
)
async def test_slow_subscriber_is_dropped_others_unaffected(
    tmp_path: Path, env: dict[str, str], script: str
) -> None:
    process = make_process(
        ["sh", "-c", script],
        tmp_path,
        env,
        tty=False,
        stdin=False,
        subscriber_buffer=128 * 1024,
        stall_timeout=0.2,
    )
    idle = process.subscribe()  # never reads
    busy = process.subscribe()
    await process.start()
    async with asyncio.timeout(TIMEOUT):
        received = sum([len(chunk.data) async for chunk in busy])
        assert await process.wait() == 0
    assert received == 8 * 1024 * 1024
    assert idle.dropped
    assert not busy.dropped
    with pytest.raises(SubscriberTooSlowError):
        await anext(idle)


async def test_subscribers_see_no_replay(tmp_path: Path, env: dict[str, str]) -> None:
    process = make_process(
        ["sh", "-c", "echo early; read x; echo late"], tmp_path, env, tty=False, stdin=True
    )
    await process.start()
    await asyncio.sleep(0.2)  # "early" is written and read (and discarded) before we look
    collector = asyncio.create_task(_collect(process))
    await asyncio.sleep(0.05)
    await process.write_stdin(b"go\n")
    async with asyncio.timeout(TIMEOUT):
        chunks = await collector
        await process.wait()
    assert b"".join(c.data for c in chunks) == b"late\n"
    # After the end, a new subscription is simply over.
    assert await _collect(process) == []


async def test_stop_escalates_and_the_session_is_torn_down(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # The shell ignores SIGTERM; its background job sits in the same session holding stdout.
    process = make_process(
        ["sh", "-c", "trap '' TERM; sleep 60 & echo $!; wait"],
        tmp_path,
        env,
        tty=False,
        stdin=False,
    )
    sub = process.subscribe()
    await process.start()
    async with asyncio.timeout(TIMEOUT):
        first = await anext(sub)
        sleeper = int(first.data)
        assert await process.stop(grace=0.3) == -signal.SIGKILL
    assert process.exit_code == 137
    assert pid_gone(sleeper)
    sub.close()


async def test_unknown_program_fails_at_start(tmp_path: Path, env: dict[str, str]) -> None:
    process = ContainerProcess(["no-such-program"], cwd=tmp_path, env=env, tty=True, stdin=True)
    early = process.subscribe()
    with pytest.raises(ExecutableNotFoundError) as caught:
        await process.start()
    assert str(caught.value) == 'exec: "no-such-program": executable file not found in $PATH'
    assert caught.value.strerror == "executable file not found in $PATH"
    assert not process.started
    assert [chunk async for chunk in early] == []  # ended, not left hanging


async def test_resize_before_start_and_initial_size(tmp_path: Path, env: dict[str, str]) -> None:
    default = make_process(["stty", "size"], tmp_path, env, tty=True, stdin=True)
    wide = make_process(["stty", "size"], tmp_path, env, tty=True, stdin=True)
    wide.resize(cols=200, rows=60)
    results: list[bytes] = []
    for process in (default, wide):
        collector = asyncio.create_task(_collect(process))
        await asyncio.sleep(0)
        await process.start()
        async with asyncio.timeout(TIMEOUT):
            results.append(b"".join(c.data for c in await collector))
            await process.wait()
    assert results == [b"24 80\r\n", b"60 200\r\n"]


async def test_many_writers_do_not_interleave(tmp_path: Path, env: dict[str, str]) -> None:
    process = make_process(["cat"], tmp_path, env, tty=False, stdin=True)
    sub = process.subscribe()
    await process.start()
    blocks = [bytes([ord("a") + i]) * 200_000 for i in range(4)]

    async def drain_output() -> bytes:
        return b"".join([chunk.data async for chunk in sub])

    reader = asyncio.create_task(drain_output())
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*(process.write_stdin(block) for block in blocks))
        process.close_stdin()
        out = await reader
        await process.wait()
    assert sorted(out[i : i + 200_000] for i in range(0, len(out), 200_000)) == blocks
