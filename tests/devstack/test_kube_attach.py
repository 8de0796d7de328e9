"""bastion.kube_attach against kubesim over TLS, and the attach bridge end to end.

Every debug container here is an ephemeral container whose process is a real shell (or
``cat``) on a PTY, as ``kubectl debug -it`` makes it: ``stdin``, ``stdinOnce`` and ``tty``.
The admin token opens most streams; the refusals use a service account's token and a Vault
debug credential, as the bastion does.

Attach versus exit codes: the kubelet's attach ends with a ``Success`` status however the
container ended (only exec reports exit codes), and kubesim does the same. So the exit-code
parsing is checked on kubesim's exec stream, whose ``NonZeroExitCode`` statuses differ between
v5 (API server) and v4 (kubelet), and attach is checked to report 0 while the pod's status
holds the real code.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from kubernetes import client

from bastion.attach_bridge import AttachBridge
from bastion.devstack.background import kube_client
from bastion.errors import BackendUnavailable, PolicyDenied
from bastion.kube_attach import PROTOCOLS, V4, V5, AttachStream, _parse_status, open_attach
from bastion.vault import KubeToken, VaultClient
from devstack.kubesim_harness import TOOLBOX, ThreadedKubeSim, ThreadedStack
from devstack.test_vault import MIN, vault_config

NS = "payments"
TIMEOUT = 10.0
MB = 1_000_000
KIB = 1024

_names = iter(range(1_000_000))


# ------------------------------------------------------------------------------ helpers
@pytest.fixture
async def http(kubesim: ThreadedKubeSim) -> AsyncIterator[aiohttp.ClientSession]:
    """The session the bastion builds for a cluster (KubeApi.__aenter__): its CA pinned."""
    async with session_for(kubesim.sim.url, str(kubesim.sim.ca_file)) as session:
        yield session


def session_for(url: str, ca_file: str | None) -> aiohttp.ClientSession:
    context = ssl.create_default_context(cafile=ca_file)
    return aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(ssl=context),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        trust_env=False,
    )


def admin(kubesim: ThreadedKubeSim) -> KubeToken:
    return KubeToken(kubesim.sim.admin_token)


def debug_container(
    core: client.CoreV1Api,
    pod: str,
    command: list[str] | None = None,
    namespace: str = NS,
    security: dict[str, Any] | None = None,
) -> str:
    """Add a ``kubectl debug -it`` style container to ``pod``, wait until it runs; its name."""
    name = f"dbg-{next(_names)}"
    container = {
        "name": name,
        "image": TOOLBOX,
        "command": command or ["/bin/sh"],
        "stdin": True,
        "stdinOnce": True,
        "tty": True,
        **({"securityContext": security} if security else {}),
    }
    core.patch_namespaced_pod_ephemeralcontainers(
        pod, namespace, {"spec": {"ephemeralContainers": [container]}}
    )
    wait_for_state(core, pod, name, "running", namespace)
    return name


def wait_for_state(
    core: client.CoreV1Api, pod: str, name: str, state: str, namespace: str = NS
) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        current = core.read_namespaced_pod(pod, namespace)
        for status in current.status.ephemeral_container_statuses or []:
            if status.name == name and getattr(status.state, state):
                return getattr(status.state, state)
        time.sleep(0.05)
    raise AssertionError(f"{name} never reached {state}")


async def read_until(stream: AttachStream, needle: bytes) -> bytes:
    seen = b""
    async with asyncio.timeout(TIMEOUT):
        while needle not in seen:
            data = await stream.read()
            assert data is not None, f"the stream ended before {needle!r}; got {seen[-200:]!r}"
            seen += data
    return seen


async def read_to_end(stream: AttachStream) -> bytes:
    seen = b""
    async with asyncio.timeout(TIMEOUT):
        while (data := await stream.read()) is not None:
            seen += data
    return seen


async def attach(
    http: aiohttp.ClientSession, token: KubeToken, pod: str, container: str, **options: Any
) -> AttachStream:
    options = {"cols": 80, "rows": 24, "timeout": TIMEOUT, **options}
    return await open_attach(
        http, token, namespace=options.pop("namespace", NS), pod=pod, container=container, **options
    )


# ------------------------------------------------------------------------------ the stream
async def test_v5_is_negotiated_and_sizes_reach_the_terminal(
    kubesim: ThreadedKubeSim, core: client.CoreV1Api, http: aiohttp.ClientSession
) -> None:
    name = debug_container(core, "db-0")
    async with await attach(http, admin(kubesim), "db-0", name, cols=100, rows=30) as stream:
        assert stream.protocol == V5
        await stream.write(b"stty size\n")
        await read_until(stream, b"30 100")
        await stream.resize(132, 43)
        await stream.write(b"stty size\n")
        await read_until(stream, b"43 132")
        await stream.resize(0, 10)  # a size-less window change is not sent
        await stream.write(b"stty size; exit 3\n")
        tail = await read_to_end(stream)
    assert b"43 132" in tail
    # The kubelet's attach says Success whatever the exit; the pod's status has the code.
    assert (stream.exit_status, stream.failure) == (0, None)
    assert wait_for_state(core, "db-0", name, "terminated").exit_code == 3


async def test_v4_is_used_when_v5_is_not_offered_and_eof_closes_the_connection(
    kubesim: ThreadedKubeSim, core: client.CoreV1Api, http: aiohttp.ClientSession
) -> None:
    name = debug_container(core, "db-0")
    stream = await attach(http, admin(kubesim), "db-0", name, cols=90, rows=20, protocols=(V4,))
    try:
        assert stream.protocol == V4
        await stream.write(b"stty size\n")
        await read_until(stream, b"20 90")
        await stream.close_stdin()  # v4 has no stdin close: the connection goes
        assert await read_to_end(stream) == b""
        # No status can come over a closed connection.
        assert (stream.exit_status, stream.failure) == (None, None)
        with pytest.raises(BackendUnavailable, match="has closed"):
            await stream.write(b"more")
    finally:
        await stream.aclose()
    # stdinOnce: the container's stdin closed with the stream, a hangup for its shell.
    assert wait_for_state(core, "db-0", name, "terminated").exit_code == 128 + 1  # SIGHUP


async def test_closing_stdin_ends_a_cat_and_the_status_still_arrives(
    kubesim: ThreadedKubeSim, core: client.CoreV1Api, http: aiohttp.ClientSession
) -> None:
    name = debug_container(core, "db-0", ["cat"])
    async with await attach(http, admin(kubesim), "db-0", name) as stream:
        await stream.write(b"hello\n")
        await read_until(stream, b"hello\r\nhello\r\n")  # the echo, then cat's copy
        await stream.close_stdin()
        await stream.close_stdin()  # once is enough; twice is harmless
        await read_to_end(stream)
        # v5: the connection stayed open after the CLOSE signal, so the status came.
        assert (stream.exit_status, stream.failure) == (0, None)
    assert wait_for_state(core, "db-0", name, "terminated").exit_code == 128 + 1  # SIGHUP


async def test_frames_already_received_are_read_as_one_piece_up_to_the_limit(
    kubesim: ThreadedKubeSim, core: client.CoreV1Api, http: aiohttp.ClientSession
) -> None:
    # The PTY hands out about 4 KiB a read, one frame each: 200 kB is about 50 frames.
    total, limit = 200_000, 16 * KIB
    name = debug_container(core, "db-0")
    async with await attach(http, admin(kubesim), "db-0", name) as stream:
        await stream.write(b"stty -echo; head -c %d /dev/zero | tr '\\0' Q; echo; exit\n" % total)
        await asyncio.sleep(1.0)  # let the frames arrive and wait in aiohttp's queue
        sizes, xs = [], 0
        async with asyncio.timeout(TIMEOUT):
            while (data := await stream.read(limit)) is not None:
                sizes.append(len(data))
                xs += data.count(b"Q")
    assert xs == total + 1  # and the one in the echo of the command line
    # Joined: far fewer reads than frames, none past the limit.
    assert len(sizes) < total // 4096
    assert max(sizes) <= limit
    assert max(sizes) > limit - 4 * KIB


@pytest.mark.skipif(os.geteuid() != 0, reason="kubesim switches users only as root")
@pytest.mark.parametrize(
    ("security", "ids"),
    [
        ({"runAsUser": 65532, "runAsGroup": 65532}, b"65532 65532 65532"),
        ({"runAsUser": 1234}, b"1234 0 0"),  # no group asked: Kubernetes' default, 0
    ],
)
async def test_the_process_runs_as_the_security_contexts_user(
    kubesim: ThreadedKubeSim,
    core: client.CoreV1Api,
    http: aiohttp.ClientSession,
    security: dict[str, Any],
    ids: bytes,
) -> None:
    name = debug_container(core, "db-0", security=security)
    async with await attach(http, admin(kubesim), "db-0", name) as stream:
        await stream.write(b"echo ID=$(id -u) $(id -g) $(id -G) HOME=$HOME; exit\n")
        seen = await read_to_end(stream)
    # No supplementary groups (kubesim's, root's) and a home it may enter.
    assert b"ID=%s HOME=/\r\n" % ids in seen, seen[-200:]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("code", [0, 7, 255])
async def test_exit_codes_are_read_from_the_servers_status(
    kubesim: ThreadedKubeSim, http: aiohttp.ClientSession, protocol: str, code: int
) -> None:
    # exec's stream carries the exit code in both protocols' own wording (§6).
    ws = await http.ws_connect(
        f"/api/v1/namespaces/{NS}/pods/db-0/exec",
        params=[
            *(("command", part) for part in ("/bin/sh", "-c", f"exit {code}")),
            ("container", "app"),
            ("stdout", "true"),
        ],
        headers={"Authorization": f"Bearer {kubesim.sim.admin_token}"},
        protocols=(protocol,),
    )
    async with AttachStream(ws, ws.protocol or "", "exec in db-0") as stream:
        assert await read_to_end(stream) == b""
    assert (stream.exit_status, stream.failure) == (code, None)


async def test_a_failure_status_is_one_printable_sentence(
    kubesim: ThreadedKubeSim, http: aiohttp.ClientSession
) -> None:
    ws = await http.ws_connect(
        f"/api/v1/namespaces/{NS}/pods/db-0/exec",
        params=[("command", "no-such-tool\x1b[2J"), ("container", "app"), ("stdout", "true")],
        headers={"Authorization": f"Bearer {kubesim.sim.admin_token}"},
        protocols=PROTOCOLS,
    )
    async with AttachStream(ws, ws.protocol or "", "container app of pod payments/db-0") as stream:
        await read_to_end(stream)
    assert stream.exit_status is None
    assert stream.failure == (
        "the attach to container app of pod payments/db-0 failed: Internal error occurred: "
        'error executing command in container: exec: "no-such-tool?[2J": executable file not '
        "found in $PATH"
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (b'{"metadata":{},"status":"Success"}', (0, None)),
        (
            b'{"status":"Failure","reason":"NonZeroExitCode",'
            b'"details":{"causes":[{"reason":"ExitCode","message":"300"}]}}',
            (None, "x ended with a non-zero exit code the cluster did not state"),
        ),
        (
            b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[]}}',
            (None, "x ended with a non-zero exit code the cluster did not state"),
        ),
        (b'{"status":"Failure"}', (None, "the attach to x failed: no reason given")),
        (
            b'{"status":"Pending"}',
            (None, "the attach to x ended with a status neither Success nor Failure"),
        ),
        (b"exit status 1", (None, "the attach to x ended with an unreadable status")),
    ],
)
def test_statuses_that_are_not_plain_exit_codes(
    status: bytes, expected: tuple[int | None, str | None]
) -> None:
    assert _parse_status(status, "x") == expected


# ------------------------------------------------------------------------------ refusals
async def test_a_bad_token_is_refused_without_showing_it(
    core: client.CoreV1Api, http: aiohttp.ClientSession
) -> None:
    name = debug_container(core, "api-1")
    secret = "not-a-token-but-still-secret"
    with pytest.raises(BackendUnavailable) as caught:
        await attach(http, KubeToken(secret), "api-1", name)
    assert caught.value.message == (
        f"could not attach to container {name} of pod payments/api-1: the session's credential "
        "was refused (401)"
    )
    assert secret not in str(caught.value)


async def test_a_credential_without_create_on_pods_attach_is_refused(
    kubesim: ThreadedKubeSim, core: client.CoreV1Api, http: aiohttp.ClientSession
) -> None:
    name = debug_container(core, "api-1")
    token = viewer_token(kubesim, core)
    with pytest.raises(BackendUnavailable) as caught:
        await attach(http, KubeToken(token), "api-1", name)
    assert caught.value.message == (
        f"could not attach to container {name} of pod payments/api-1: the session's credential "
        "may not attach there (403)"
    )
    assert "create on pods/attach" in (caught.value.hint or "")
    assert token not in str(caught.value)


def viewer_token(kubesim: ThreadedKubeSim, core: client.CoreV1Api) -> str:
    """A service account that may read pods and ``get`` pods/attach, but not ``create`` it."""
    core.create_namespaced_service_account(NS, {"metadata": {"name": "viewer"}})
    with kubesim.api_client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            NS,
            {
                "metadata": {"name": "viewer"},
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                    {"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["get"]},
                ],
            },
        )
        rbac.create_namespaced_role_binding(
            NS,
            {
                "metadata": {"name": "viewer"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "viewer",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "viewer"}],
            },
        )
    issued = core.create_namespaced_service_account_token(
        "viewer", NS, {"spec": {"expirationSeconds": 600}}
    )
    token: str = issued.status.token
    return token


async def test_what_is_wrong_with_the_container_is_said(
    kubesim: ThreadedKubeSim, core: client.CoreV1Api, http: aiohttp.ClientSession
) -> None:
    token = admin(kubesim)
    with pytest.raises(PolicyDenied) as caught:
        await attach(http, token, "db-0", "nope")
    assert caught.value.message == "could not attach: pod payments/db-0 has no container nope"

    ended = debug_container(core, "db-0", ["/bin/sh", "-c", "read line; exit 3"])
    async with await attach(http, token, "db-0", ended) as stream:
        await stream.write(b"go\n")
        await read_to_end(stream)
    wait_for_state(core, "db-0", ended, "terminated")
    with pytest.raises(PolicyDenied) as caught:
        await attach(http, token, "db-0", ended)
    assert caught.value.message == (
        f"could not attach: container {ended} of pod payments/db-0 has already ended (exit code 3)"
    )

    # The pod's own container runs without stdin or tty.
    with pytest.raises(PolicyDenied) as caught:
        await attach(http, token, "db-0", "app")
    assert caught.value.message == (
        "could not attach: container app of pod payments/db-0 was not started with stdin and "
        "tty, so a terminal cannot be attached to it"
    )


async def test_a_missing_pod_and_bad_names(
    kubesim: ThreadedKubeSim, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(PolicyDenied) as caught:
        await attach(http, admin(kubesim), "gone-7", "dbg")
    assert caught.value.message == (
        "could not attach to container dbg of pod payments/gone-7: the pod does not exist "
        "(any more)"
    )
    for pod, container in (("db-0/../x", "dbg"), ("db-0", "dbg?x=1"), ("db-0", "")):
        with pytest.raises(PolicyDenied, match="is not a valid"):
            await attach(http, admin(kubesim), pod, container)
    with pytest.raises(ValueError, match="protocols"):
        await attach(http, admin(kubesim), "db-0", "dbg", protocols=("v3.channel.k8s.io",))


async def test_a_certificate_from_another_ca_is_refused(kubesim: ThreadedKubeSim) -> None:
    async with session_for(kubesim.sim.url, None) as system_cas:  # not kubesim's CA
        with pytest.raises(BackendUnavailable) as caught:
            await attach(system_cas, admin(kubesim), "db-0", "dbg")
    assert caught.value.message == (
        "could not attach to container dbg of pod payments/db-0: the cluster's API certificate "
        "is not signed by its configured CA"
    )


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}"


async def test_an_api_that_does_not_answer_times_out(
    kubesim: ThreadedKubeSim, silent_server: str
) -> None:
    async with session_for(silent_server, str(kubesim.sim.ca_file)) as http:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as caught:
            await attach(http, admin(kubesim), "db-0", "dbg", timeout=0.3)
        assert time.monotonic() - started < 2
    assert caught.value.message == (
        "could not attach to container dbg of pod payments/db-0: the cluster's API did not "
        "answer within 0.3 s"
    )


async def test_a_vault_debug_credential_attaches_until_it_is_revoked(
    local_stack: ThreadedStack,
) -> None:
    info = local_stack.stack.info
    with kube_client(info["kube_api"], info["kube_ca"], info["kube_admin_token"]) as api:
        name = debug_container(client.CoreV1Api(api), "api-1")
    async with (
        VaultClient(vault_config(info)) as vault,
        session_for(info["kube_api"], info["kube_ca"]) as http,
    ):
        credential = await vault.issue_kube_credential(
            info["vault_kubernetes_mount"], "debug", NS, MIN
        )
        try:
            async with await attach(http, credential.token, "api-1", name) as stream:
                await stream.write(b"echo attached-as-$((6*7))\n")
                await read_until(stream, b"attached-as-42")
        finally:
            await vault.revoke_lease(credential.lease_id)
        with pytest.raises(BackendUnavailable, match=r"credential was refused \(401\)"):
            await attach(http, credential.token, "api-1", name)


# ------------------------------------------------------------------------------ the bridge
class SlowTerminal:
    """An SSH channel whose client takes output slower than the container makes it.

    Like asyncssh's channel: ``write`` never blocks and fills a buffer; over ``HIGH`` bytes
    the session's ``pause_writing`` (here: the bridge's ``pause_output(True)``) is called, and
    ``resume_writing`` once the client has drained it to ``LOW``. The client takes ``STEP``
    bytes every 2 ms (at most 24 MB/s).
    """

    HIGH, LOW, STEP = 256 * KIB, 64 * KIB, 48 * KIB

    def __init__(self) -> None:
        self.bridge: AttachBridge | None = None
        self.buffered = 0
        self.received = 0
        self.paused = False
        self.pauses = 0

    def write(self, data: bytes) -> None:
        assert self.bridge is not None
        self.buffered += len(data)
        self.received += len(data)
        if not self.paused and self.buffered > self.HIGH:
            self.paused = True
            self.pauses += 1
            self.bridge.pause_output(True)

    async def drain(self) -> None:
        assert self.bridge is not None
        while True:
            await asyncio.sleep(0.002)
            self.buffered -= min(self.buffered, self.STEP)
            if self.paused and self.buffered <= self.LOW:
                self.paused = False
                self.bridge.pause_output(False)


class HeldBytes:
    """What the bastion holds of the container's output, measured at its two stages.

    aiohttp: the bytes its WebSocket parser was handed by the TLS layer (counted by a proxy
    put in front of the parser) minus the wire bytes of the frames ``read()`` returned (frame
    header, channel byte, payload): its queue, the frame in progress and the unparsed rest of
    a socket read, together. The bridge: :attr:`AttachBridge.buffered_output`. Empty frames
    and control frames are not subtracted, so the figure errs high by a few bytes.
    """

    def __init__(self, stream: AttachStream) -> None:
        self.fed = 0
        self.returned = 0
        self.most = 0
        self.most_queue = 0
        self.frames = 0
        self.bridge: AttachBridge | None = None
        self._stream = stream
        # Test-only reach into aiohttp 3.14: the upgraded connection's protocol and parser.
        protocol = stream._ws._writer.protocol
        self._parser = protocol._payload_parser
        protocol._payload_parser = self
        self._read = stream.read
        stream.read = self.read  # type: ignore[method-assign]

    def feed_data(self, data: bytes) -> Any:
        self.fed += len(data)
        return self._parser.feed_data(data)

    def feed_eof(self) -> Any:
        return self._parser.feed_eof()

    async def read(self) -> bytes | None:
        data = await self._read()
        if data is not None:
            payload = len(data) + 1
            header = 2 if payload < 126 else 4 if payload < 1 << 16 else 10
            self.returned += header + payload
            self.frames += 1
        self.sample()
        return data

    def sample(self) -> None:
        assert self.bridge is not None
        held = self.fed - self.returned + self.bridge.buffered_output
        self.most = max(self.most, held)
        queue = self._stream._ws._reader._size + self.bridge.buffered_output
        self.most_queue = max(self.most_queue, queue)


async def test_50_mb_through_the_bridge_to_a_slow_terminal_stays_bounded(
    kubesim: ThreadedKubeSim, core: client.CoreV1Api, http: aiohttp.ClientSession
) -> None:
    """The bound: aiohttp stops parsing past 512 KiB queued, with one frame (kubesim: at most
    64 KiB) over the mark and at most one unparsed TLS read (256 KiB) behind it; the bridge
    holds one frame (64 KiB). 1 MiB covers that with room; a bastion that kept reading the
    socket while the terminal is slow would hold tens of megabytes here."""
    name = debug_container(core, "db-0")
    stream = await attach(http, admin(kubesim), "db-0", name)
    held = HeldBytes(stream)
    terminal = SlowTerminal()
    zeros = 0

    def record(data: bytes) -> None:
        nonlocal zeros
        zeros += data.count(0)
        held.sample()

    bridge = AttachBridge(
        stream, write=terminal.write, pause_input=lambda _: None, on_output=record
    )
    terminal.bridge = held.bridge = bridge
    drain = asyncio.create_task(terminal.drain())
    started = time.perf_counter()
    try:
        bridge.feed(b"head -c 50000000 /dev/zero; exit\n")
        assert await bridge.run() == 0
    finally:
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
    seconds = time.perf_counter() - started
    assert zeros == 50 * MB
    assert terminal.pauses > 10, "the terminal was never the bottleneck"
    print(
        f"\n50 MB to a 24 MB/s terminal in {seconds:.1f} s, {held.frames} frames, "
        f"{terminal.pauses} output pauses; most held by the bastion: {held.most / KIB:.0f} KiB "
        f"(aiohttp queue + bridge alone: {held.most_queue / KIB:.0f} KiB)"
    )
    assert held.most_queue > 256 * KIB, "aiohttp's queue never filled: nothing was measured"
    assert held.most < 1024 * KIB
