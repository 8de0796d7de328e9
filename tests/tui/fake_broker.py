"""An in-memory session broker for the console's tests: scripted clusters, namespaces, pods
(50,000 of them, or hostile ones), pod details as the real broker masks them, debug options
and a scripted debug. Every line goes through the protocol's real encode and decode.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

from bastion.console_protocol import (
    CONSOLE_SENDS,
    ApprovalDecided,
    ApprovalItem,
    Approvals,
    AwaitsApproval,
    ContainerInfo,
    DebugEnded,
    DebugOptions,
    DebugProgress,
    DebugRefused,
    DebugRequest,
    DecideApproval,
    EnvVar,
    EventRow,
    Failed,
    GetDebugOptions,
    GetPod,
    GetView,
    Handover,
    HiddenItem,
    KeyValue,
    ListApprovals,
    ListNamespaces,
    ListSessions,
    LiveSessionItem,
    LiveSessions,
    Message,
    Namespaces,
    NoticeItem,
    NoticesChanged,
    PodDetail,
    PodRow,
    PodsChanged,
    PodsPage,
    StopWatch,
    ViewResult,
    ViewRow,
    WatchNotices,
    WatchPods,
    WatchSession,
    Welcome,
    decode,
    encode,
)
from tests.tui.rows import many, pod

IMAGE = "registry.example.com/debug-toolbox@sha256:" + "ab" * 32
HARD_DEADLINE = 1_795_867_200.0  # fixed: snapshot tests pin the clock to an hour before
HOSTILE_NAME = "evil-\x1b]0;owned\x07-[@click=app.quit]x[/]-\u202etxt"


def hostile_pods() -> list[PodRow]:
    return [
        pod(HOSTILE_NAME, node="node-\x1b[2J", labels=("app=evil",)),
        pod("bidi-\u202egnp.exe", status="CrashLoop\rBackOff", restarts=3),
        pod("markup-[b]bold[/b]-[$accent]", node="[red]node[/red]"),
    ]


def detail(request_id: int, namespace: str, name: str) -> PodDetail:
    """A pod's details as the broker sends them: env already masked."""
    return PodDetail(
        id=request_id,
        name=name,
        namespace=namespace,
        node="node-1",
        status="Running",
        created="2026-11-28T09:00:00Z",
        labels=[KeyValue("app", "web"), KeyValue("team", "[@click=app.quit]pay[/]")],
        annotations=[KeyValue("note", "line1\x1b[31m\rline2 \u202eevil")],
        containers=[
            ContainerInfo(
                name="app",
                image="registry.example.com/shop/web:1.4",
                state="running",
                ready=True,
                restarts=0,
                env=[
                    EnvVar("DB_PASSWORD", "<secret db-creds/password>", "secret"),
                    EnvVar("API_TOKEN", "<redacted>", "redacted"),
                    EnvVar("LOG_LEVEL", "debug", "value"),
                    EnvVar("FEATURES", "<configmap web-config/features>", "configmap"),
                ],
                config_maps=["web-config"],
                debuggable=True,
            ),
            ContainerInfo(
                name="sidecar",
                image="registry.example.com/proxy:2",
                state="waiting (CrashLoopBackOff)",
                ready=False,
                restarts=12,
                env=[],
                config_maps=[],
                debuggable=False,
            ),
        ],
        events=[
            EventRow("Warning", "BackOff", "Back-off restarting \x1b[1mfailed\x1b[0m", 12,
                     "2026-11-28T09:58:00Z"),
            EventRow("Normal", "Pulled", "Container image pulled", 1, "2026-11-28T09:00:10Z"),
        ],
    )  # fmt: skip


@dataclass
class Script:
    """What the fake broker knows and how it behaves."""

    clusters: list[str] = field(default_factory=lambda: ["prod"])
    namespaces: dict[str, list[str]] = field(
        default_factory=lambda: {"prod": ["hostile", "shop", "big"]}
    )
    hidden: list[HiddenItem] = field(
        default_factory=lambda: [HiddenItem("kube-system", "no grant of alice covers it")]
    )
    pods: dict[str, list[PodRow]] = field(
        default_factory=lambda: {
            "shop": [pod(f"web-{n}", node=f"node-{n % 3}") for n in range(5)]
            + [pod("db-0", status="CrashLoopBackOff", ready="0/1", restarts=7)],
            "hostile": hostile_pods(),
            "big": many(50_000),
        }
    )
    page: int = 500
    pods_hidden: int = 2
    hidden_reason: str = "grant 'shop-oncall' shows only pods with app in (web,db)"
    reason_required: bool = True
    debug_outcome: str = "handover"  # or "refused", or "approval" (AwaitsApproval)
    # What ListApprovals answers; DecideApproval changes it as the broker would (or refuses
    # the request ids in ``refuse``, with the sentence given).
    approvals: list[ApprovalItem] = field(default_factory=list)
    approval_needed: str = ""  # DebugOptions.approval: who must approve a debug there
    refuse: dict[str, str] = field(default_factory=dict)
    ended: DebugEnded | None = None
    silent: bool = False  # stops answering requests
    notices: list[NoticeItem] = field(default_factory=list)  # banners: what WatchNotices gets
    hard_deadline: float = HARD_DEADLINE
    # Oversight: an auditor's console lists these and may watch; others get Failed.
    auditor: bool = False
    live_sessions: list[LiveSessionItem] = field(default_factory=list)
    views: list[str] = field(default_factory=list)  # PodDetail.views
    shell: bool = True  # False: no container is debuggable (an introspect-only grant)


class FakeBroker:
    """The broker's side of a :class:`MemoryTransport`; records what the console sent."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        # Messages are encoded when the console reads them, as a broker sends page by page.
        self.to_console: asyncio.Queue[Message | bytes] = asyncio.Queue()
        self.received: list[Message] = []
        self.watches: set[int] = set()
        self.notice_watch: int | None = None
        self.closed = False

    def transport(self) -> MemoryTransport:
        self.push(Welcome("alice", ["oncall"], self.script.clusters, self.script.hard_deadline,
                          900.0, self.script.auditor))  # fmt: skip
        if self.script.ended is not None:
            self.push(self.script.ended)
        return MemoryTransport(self)

    def push(self, message: Message) -> None:
        self.to_console.put_nowait(message)

    def hang_up(self) -> None:
        self.to_console.put_nowait(b"")

    def handle(self, line: bytes) -> None:
        message = decode(line.rstrip(b"\n"))
        assert type(message) in CONSOLE_SENDS, message
        self.received.append(message)
        if self.script.silent:
            return
        match message:
            case ListNamespaces(id=request_id, cluster=cluster):
                self.push(Namespaces(request_id, cluster, self.script.namespaces.get(cluster, []),
                                     self.script.hidden))  # fmt: skip
            case WatchPods(id=request_id, namespace=namespace):
                self.watches.add(request_id)
                self._pages(request_id, self.script.pods.get(namespace, []))
            case StopWatch(id=request_id):
                self.watches.discard(request_id)
            case WatchNotices(id=request_id):
                self.notice_watch = request_id
                self.push(NoticesChanged(request_id, list(self.script.notices)))
            case GetPod(id=request_id, namespace=namespace, pod=name):
                self._pod(request_id, namespace, name)
            case GetView(id=request_id, view=view, container=container, path=path):
                self._view(request_id, view, container, path)
            case GetDebugOptions(id=request_id, container=container):
                self.push(DebugOptions(request_id, [IMAGE], ["ephemeral", "copy"], container,
                                       3600.0, self.script.reason_required, True,
                                       self.script.approval_needed))  # fmt: skip
            case ListApprovals(id=request_id):
                self.push(Approvals(request_id, list(self.script.approvals)))
            case DecideApproval(id=request_id, request_id=wanted, approve=approve, reason=why):
                self._decide(request_id, wanted, approve=approve, reason=why)
            case ListSessions() | WatchSession():
                self._oversight(message)
            case DebugRequest():
                self.push(DebugProgress("asking Vault for a credential"))
                if self.script.debug_outcome == "approval":
                    self.push(AwaitsApproval("3f2a9c0d81e4", "this debug needs approval"))
                    return
                self.push(DebugProgress("starting the debug container"))
                if self.script.debug_outcome == "refused":
                    self.push(DebugRefused("image pull failed; try again or pick another image"))
                else:
                    self.push(Handover("attaching your terminal to the debug shell"))

    def _oversight(self, message: ListSessions | WatchSession) -> None:
        if isinstance(message, ListSessions):
            if self.script.auditor:
                self.push(LiveSessions(message.id, list(self.script.live_sessions)))
            else:
                self.push(Failed(message.id, "only auditors may list live sessions"))
        elif message.session.startswith("gone"):
            self.push(Failed(message.id, f"there is no live session {message.session!r}"))
        else:
            self.push(Handover(f"watching session {message.session}"))

    def _pod(self, request_id: int, namespace: str, name: str) -> None:
        if name.startswith("gone"):
            self.push(Failed(request_id, f"pod {namespace}/{name} is gone; refresh"))
            return
        shown = detail(request_id, namespace, name)
        containers = [
            replace(c, debuggable=c.debuggable and self.script.shell) for c in shown.containers
        ]
        self.push(replace(shown, containers=containers, views=self.script.views))

    def _view(self, request_id: int, view: str, container: str, path: str) -> None:
        if view not in self.script.views:
            self.push(Failed(request_id, f"the {view} view is not allowed for alice"))
            return
        self.push(ViewResult(request_id, view, f"prod/shop/web-1 {container} {path}",
                             ["PID", "COMMAND"],
                             [ViewRow(["1", "server \x1b[2J[b]x[/b]"]), ViewRow(["7", "sh"])],
                             False, ""))  # fmt: skip

    def _decide(self, request_id: int, wanted: str, *, approve: bool, reason: str) -> None:
        if wanted in self.script.refuse:
            self.push(Failed(request_id, self.script.refuse[wanted]))
            return
        status = "approved" if approve else "denied"
        self.script.approvals = [
            replace(item, status=status, decided_by="alice", decision_reason=reason,
                    can_decide=False) if item.id == wanted else item
            for item in self.script.approvals
        ]  # fmt: skip
        self.push(ApprovalDecided(request_id, wanted, status, f"request {wanted} {status}"))

    def _pages(self, request_id: int, rows: list[PodRow]) -> None:
        size = self.script.page
        chunks = [rows[n : n + size] for n in range(0, len(rows), size)] or [[]]
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            hidden = self.script.pods_hidden if last else 0
            self.push(PodsPage(request_id, chunk, last, hidden, self.script.hidden_reason))

    def change(self, watch_id: int, upserts: list[PodRow], deletes: list[str]) -> None:
        self.push(PodsChanged(watch_id, upserts, deletes))

    def notices_changed(self, notices: list[NoticeItem]) -> None:
        """What the broker's feed sends when a notice goes up or comes down."""
        assert self.notice_watch is not None, "the console never asked for notices"
        self.push(NoticesChanged(self.notice_watch, notices))


class MemoryTransport:
    """The console's end: lines to the fake broker are handled at once, in order."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    async def send(self, line: bytes) -> None:
        if self.broker.closed:
            raise BrokenPipeError
        self.broker.handle(line)

    async def receive(self) -> bytes:
        item = await self.broker.to_console.get()
        return item if isinstance(item, bytes) else encode(item)

    def close(self) -> None:
        self.broker.closed = True
