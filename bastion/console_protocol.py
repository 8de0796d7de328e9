"""The console ⇄ broker protocol: message types and their encoding. Pure leaf module.

The console process (``tui``) and the session broker (``bastion.session``) both import this
module, and it imports neither of them: importing it must not pull in the broker.

Transport: a Unix socketpair; the console's end is the descriptor named by the environment
variable ``BASTION_BROKER_FD``. Framing: one JSON object per line, UTF-8, at most
``MAX_LINE`` bytes. Every message has a ``type``; unknown types, missing or extra fields and
wrong value types are protocol errors (the broker ends the session's console rather than
guess what a confused or compromised console meant). A console may send only the requests
in :data:`CONSOLE_SENDS`.

Requests carry an ``id`` chosen by the console; every answer to a request repeats it
(``Failed`` included), so the console can have several in flight. A pod watch answers with
``PodsPage`` messages (the first one at once, the rest as they load, the last with
``complete``) and then ``PodsChanged`` until ``StopWatch``. ``WatchNotices`` subscribes the
console to the notices every operator must see (a break-glass session in progress, later
approval requests and who is watching): ``NoticesChanged`` carries the whole current set,
at once and again at each change, until the console ends.

Four-eyes approval (docs/approvals.md): a debug that needs another operator's approval is
answered with ``AwaitsApproval`` instead of a shell; the console then polls
``ListApprovals`` every few seconds (its operator's own requests, and those they may
decide) and sends ``DecideApproval`` for an approver's decision.

Pod rows are the protocol's bulk (50,000 in a big namespace), so they are encoded compactly:
each :class:`PodRow` is a JSON array of its fields in order, not an object, and the two
messages carrying them (``pods``, ``pods_changed``) are encoded and decoded by msgspec
against their exact types (a page of 500 rows decodes in well under a millisecond, with no
dict per row). They are checked as strictly as every other message.

Everything the broker sends is already filtered by policy and masked (secret values never
leave the broker); strings from the cluster are *not* neutralised for terminals here: the
console must do that before display.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, ClassVar

import msgspec

__all__ = [
    "BROKER_FD_ENV",
    "CONSOLE_SENDS",
    "MAX_LINE",
    "ApprovalDecided",
    "ApprovalItem",
    "Approvals",
    "AwaitsApproval",
    "ContainerInfo",
    "DeadlinesChanged",
    "DebugEnded",
    "DebugOptions",
    "DebugProgress",
    "DebugRefused",
    "DebugRequest",
    "DecideApproval",
    "EnvVar",
    "EventRow",
    "Failed",
    "GetDebugOptions",
    "GetPod",
    "GetView",
    "Handover",
    "HiddenItem",
    "KeyValue",
    "ListApprovals",
    "ListNamespaces",
    "ListSessions",
    "LiveSessionItem",
    "LiveSessions",
    "Message",
    "Namespaces",
    "Notice",
    "NoticeItem",
    "NoticesChanged",
    "PodDetail",
    "PodRow",
    "PodsChanged",
    "PodsPage",
    "ProtocolError",
    "StopWatch",
    "ViewResult",
    "ViewRow",
    "WatchNotices",
    "WatchPods",
    "WatchSession",
    "Welcome",
    "decode",
    "encode",
]

BROKER_FD_ENV = "BASTION_BROKER_FD"
MAX_LINE = 1024 * 1024  # a page of pods; the broker sizes pages to stay well under it
MAX_ITEMS = 20_000  # items in one list field


class ProtocolError(ValueError):
    """A line that is not a valid message."""


# ---------------------------------------------------------------------------- records
# Plain values inside messages. Fields may be str, int, float, bool, list[str] or a list of
# another record.


@dataclass(frozen=True)
class HiddenItem:
    name: str
    reason: str  # why policy hides it, one sentence


_Strings = Annotated[tuple[str, ...], msgspec.Meta(max_length=MAX_ITEMS)]


class PodRow(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, gc=False):
    """One pod as the list shows it: only the fields shown, nothing secret. On the wire an
    array of the fields in this order: ``["api-1","1/1","Running",0,"2026-11-29T01:00:00Z",
    "node-1",["app=api"],["app"]]``. Not tracked by the cyclic GC (it holds only strings)."""

    name: str
    ready: str  # "1/2"
    status: str  # Running, Pending, CrashLoopBackOff, Completed, Terminating, ...
    restarts: int
    created: str  # RFC 3339; the console shows the age
    node: str
    labels: _Strings  # "key=value"
    containers: _Strings


@dataclass(frozen=True)
class NoticeItem:
    """Something every operator's console shows until it is over, as a banner."""

    id: str
    kind: str  # "break_glass"; the console words the banner by kind
    user: str  # whom it is about
    since: float  # epoch seconds
    text: str  # e.g. the reason given; from an operator: neutralise before display


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str  # a literal value, "<secret NAME/KEY>", "<configmap NAME/KEY>", "<redacted>", ...
    source: str  # "value", "secret", "configmap", "field", "resource", "redacted"


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    image: str
    state: str  # running, waiting (reason), terminated (reason, exit code)
    ready: bool
    restarts: int
    env: list[EnvVar]
    config_maps: list[str]  # configmaps it reads (envFrom, env, volumes)
    debuggable: bool  # policy allows a debug here for this operator


@dataclass(frozen=True)
class EventRow:
    type: str  # Normal, Warning
    reason: str
    message: str
    count: int
    last_seen: str  # RFC 3339


@dataclass(frozen=True)
class ApprovalItem:
    """One approval request as a console shows it."""

    id: str
    requester: str
    cluster: str
    namespace: str
    pod: str
    container: str
    mode: str
    image: str
    run_as_user: int
    duration_seconds: float  # the session length the debug would get
    reason: str  # the requester's, as typed (untrusted: neutralise before display)
    status: str  # pending, approved, denied, expired, used
    expires_at: float  # epoch seconds: when the request (or the unused approval) lapses
    approvers: str  # who may approve, in words
    decided_by: str  # "" until decided
    decision_reason: str
    mine: bool  # the console's operator asked for it
    can_decide: bool  # the console's operator may approve or deny it now


@dataclass(frozen=True)
class LiveSessionItem:
    """One live session as an auditor's console lists it (docs/oversight.md)."""

    id: str
    user: str
    source: str
    started: float  # epoch seconds
    state: str
    target: str  # CLUSTER/NAMESPACE/POD of its debug shell, or ""
    break_glass: bool
    watchers: list[str]
    watchable: bool  # it runs a debug shell (or waits for a watcher to start one)


@dataclass(frozen=True)
class Message:
    type: ClassVar[str] = ""


# ---------------------------------------------------------------------------- broker → console
@dataclass(frozen=True)
class Welcome(Message):
    """The first message of every console: who, where, and the session's deadlines."""

    type: ClassVar[str] = "welcome"
    user: str
    groups: list[str]
    clusters: list[str]  # the clusters some grant of this operator covers
    hard_deadline: float  # epoch seconds
    idle_timeout: float  # seconds without input before the session ends
    auditor: bool = False  # may list and watch live sessions (docs/oversight.md)


@dataclass(frozen=True)
class DeadlinesChanged(Message):
    """A grant's limits narrowed the session's deadlines (a debug began)."""

    type: ClassVar[str] = "deadlines"
    hard_deadline: float
    idle_timeout: float


@dataclass(frozen=True)
class Notice(Message):
    """Broker → console: a deadline is near (``seconds_left`` > 0) or has passed."""

    type: ClassVar[str] = "notice"
    kind: str  # "idle" or "hard"
    seconds_left: float
    message: str


@dataclass(frozen=True)
class NoticesChanged(Message):
    """Broker → console: the notices in force now (all of them), for a ``WatchNotices``."""

    type: ClassVar[str] = "notices"
    id: int
    notices: list[NoticeItem]


@dataclass(frozen=True)
class Namespaces(Message):
    type: ClassVar[str] = "namespaces"
    id: int
    cluster: str
    allowed: list[str]
    hidden: list[HiddenItem]


@dataclass(frozen=True)
class PodsPage(Message):
    """Part of a namespace's pods, in the API's order; ``complete`` on the last one."""

    type: ClassVar[str] = "pods"
    id: int
    rows: list[PodRow]
    complete: bool
    hidden: int  # pods of this page that policy hides (pod selectors)
    hidden_reason: str


@dataclass(frozen=True)
class PodsChanged(Message):
    """Live changes to a watched namespace: new or changed pods, and deleted names."""

    type: ClassVar[str] = "pods_changed"
    id: int
    upserts: list[PodRow]
    deletes: list[str]


@dataclass(frozen=True)
class PodDetail(Message):
    type: ClassVar[str] = "pod"
    id: int
    name: str
    namespace: str
    node: str
    status: str
    created: str
    labels: list[KeyValue]
    annotations: list[KeyValue]
    containers: list[ContainerInfo]
    events: list[EventRow]
    # The read-only views policy allows on this pod (docs/introspection.md), in key order.
    views: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DebugOptions(Message):
    """What a debug of this container would be, for the confirmation: what policy allows."""

    type: ClassVar[str] = "debug_options"
    id: int
    images: list[str]  # approved, pinned by digest; the first is the default
    modes: list[str]
    target_container: str
    max_session_seconds: float
    reason_required: bool
    recorded: bool
    approval: str = ""  # "": none needed; else who must approve, in words


@dataclass(frozen=True)
class Failed(Message):
    """A request could not be answered: one sentence, with what to do."""

    type: ClassVar[str] = "failed"
    id: int
    message: str


@dataclass(frozen=True)
class DebugProgress(Message):
    """Broker → console: a step of starting the debug shell, for the operator to watch."""

    type: ClassVar[str] = "progress"
    message: str


@dataclass(frozen=True)
class DebugRefused(Message):
    """Broker → console: the debug did not start (one sentence); nothing of it is left."""

    type: ClassVar[str] = "refused"
    message: str


@dataclass(frozen=True)
class Handover(Message):
    """Broker → console: the shell is ready; restore the terminal and exit now, the broker
    attaches the operator's terminal to the debug container."""

    type: ClassVar[str] = "handover"
    message: str


@dataclass(frozen=True)
class DebugEnded(Message):
    """Broker → the next console: how the last debug shell ended, shown on arrival."""

    type: ClassVar[str] = "ended"
    target: str
    exit_status: int
    message: str


@dataclass(frozen=True)
class AwaitsApproval(Message):
    """Broker → console: the debug did not start because it needs another operator's
    approval; request ``request_id`` waits for one (``ListApprovals`` follows it)."""

    type: ClassVar[str] = "awaits_approval"
    request_id: str
    message: str


@dataclass(frozen=True)
class Approvals(Message):
    """The answer to ``ListApprovals``: the operator's own recent requests, then the open
    ones they may decide."""

    type: ClassVar[str] = "approvals"
    id: int
    items: list[ApprovalItem]


@dataclass(frozen=True)
class ApprovalDecided(Message):
    """The answer to ``DecideApproval`` that the broker made: ``status`` is the request's
    new one (approved or denied)."""

    type: ClassVar[str] = "approval_decided"
    id: int
    request_id: str
    status: str
    message: str


@dataclass(frozen=True)
class LiveSessions(Message):
    """The answer to ``ListSessions`` (auditors only)."""

    type: ClassVar[str] = "live_sessions"
    id: int
    items: list[LiveSessionItem]


# ---------------------------------------------------------------------------- console → broker
@dataclass(frozen=True)
class ListNamespaces(Message):
    type: ClassVar[str] = "list_namespaces"
    id: int
    cluster: str


@dataclass(frozen=True)
class WatchPods(Message):
    type: ClassVar[str] = "watch_pods"
    id: int
    cluster: str
    namespace: str


@dataclass(frozen=True)
class WatchNotices(Message):
    """Console → broker: send the notices in force now, and again whenever they change."""

    type: ClassVar[str] = "watch_notices"
    id: int


@dataclass(frozen=True)
class StopWatch(Message):
    type: ClassVar[str] = "stop_watch"
    id: int  # the id of the WatchPods


@dataclass(frozen=True)
class GetPod(Message):
    type: ClassVar[str] = "get_pod"
    id: int
    cluster: str
    namespace: str
    pod: str


@dataclass(frozen=True)
class GetDebugOptions(Message):
    type: ClassVar[str] = "get_debug_options"
    id: int
    cluster: str
    namespace: str
    pod: str
    container: str


@dataclass(frozen=True)
class DebugRequest(Message):
    """Console → broker: start a debug shell. Every field is untrusted: the broker decides
    with the pod's real labels and refuses privileges beyond the restricted profile."""

    type: ClassVar[str] = "debug"
    cluster: str  # "" = the bastion's only cluster
    namespace: str
    pod: str
    container: str  # "" = the pod's only container
    mode: str
    image: str  # "" = the one image policy approves there
    reason: str
    run_as_user: int
    privileged: bool
    add_capabilities: list[str]


@dataclass(frozen=True)
class GetView(Message):
    """Console → broker: one read-only view of a container. Untrusted: the broker decides
    with the view's scope and checks ``path`` (files view only) before any call."""

    type: ClassVar[str] = "get_view"
    id: int
    cluster: str
    namespace: str
    pod: str
    container: str
    view: str
    path: str


@dataclass(frozen=True)
class ViewRow:
    cells: list[str]


@dataclass(frozen=True)
class ViewResult(Message):
    """A view's table: untrusted cells (the console neutralises them), at most MAX_LINE."""

    type: ClassVar[str] = "view"
    id: int
    view: str
    target: str
    columns: list[str]
    rows: list[ViewRow]
    truncated: bool
    note: str


@dataclass(frozen=True)
class ListApprovals(Message):
    type: ClassVar[str] = "list_approvals"
    id: int


@dataclass(frozen=True)
class DecideApproval(Message):
    """Console → broker: approve (or deny) a request. The broker decides who may."""

    type: ClassVar[str] = "decide_approval"
    id: int
    request_id: str
    approve: bool
    reason: str


@dataclass(frozen=True)
class ListSessions(Message):
    """Console → broker: the live sessions (refused unless the operator is an auditor)."""

    type: ClassVar[str] = "list_sessions"
    id: int


@dataclass(frozen=True)
class WatchSession(Message):
    """Console → broker: watch ``session`` read-only. The broker checks the role, answers
    ``Handover`` (the console exits, the watch gets the terminal) or ``Failed``; the next
    console is told how the watch ended (``DebugEnded``)."""

    type: ClassVar[str] = "watch_session"
    id: int
    session: str


_MESSAGES: tuple[type[Message], ...] = (
    Welcome,
    DeadlinesChanged,
    Notice,
    NoticesChanged,
    Namespaces,
    PodsPage,
    PodsChanged,
    PodDetail,
    DebugOptions,
    Failed,
    DebugProgress,
    DebugRefused,
    Handover,
    DebugEnded,
    ListNamespaces,
    WatchPods,
    StopWatch,
    GetPod,
    GetDebugOptions,
    DebugRequest,
    AwaitsApproval,
    Approvals,
    ApprovalDecided,
    ListApprovals,
    DecideApproval,
    WatchNotices,
    LiveSessions,
    ListSessions,
    WatchSession,
    GetView,
    ViewResult,
)
_TYPES: dict[str, type[Message]] = {cls.type: cls for cls in _MESSAGES}
CONSOLE_SENDS: frozenset[type[Message]] = frozenset(
    {
        ListNamespaces,
        WatchPods,
        StopWatch,
        GetPod,
        GetDebugOptions,
        DebugRequest,
        ListApprovals,
        DecideApproval,
        WatchNotices,
        ListSessions,
        WatchSession,
        GetView,
    }
)
_RECORDS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        HiddenItem,
        KeyValue,
        EnvVar,
        ContainerInfo,
        EventRow,
        ApprovalItem,
        NoticeItem,
        LiveSessionItem,
        ViewRow,
    )
}
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "float": (int, float),
    "int": (int,),
    "bool": (bool,),
}


# ---------------------------------------------------------------------------- pod lines
# The exact shape of the two messages that carry pod rows, for msgspec (the ``type`` is the
# tag). The public messages stay the dataclasses above; these only encode and decode them.
_Rows = Annotated[list[PodRow], msgspec.Meta(max_length=MAX_ITEMS)]
_Names = Annotated[list[str], msgspec.Meta(max_length=MAX_ITEMS)]


class _PodsPageLine(msgspec.Struct, tag_field="type", tag="pods", forbid_unknown_fields=True):
    id: int
    rows: _Rows
    complete: bool
    hidden: int
    hidden_reason: str


class _PodsChangedLine(
    msgspec.Struct, tag_field="type", tag="pods_changed", forbid_unknown_fields=True
):
    id: int
    upserts: _Rows
    deletes: _Names


class _Kind(msgspec.Struct):
    """What every line is first read as: its type alone (msgspec skips the rest unbuilt)."""

    type: str


_KIND = msgspec.json.Decoder(_Kind)
_POD_LINES: dict[str, msgspec.json.Decoder[Any]] = {
    "pods": msgspec.json.Decoder(_PodsPageLine),
    "pods_changed": msgspec.json.Decoder(_PodsChangedLine),
}
_ENCODER = msgspec.json.Encoder()
# msgspec's error paths: $.field, $.rows[3][1], $.rows[3][6][0], $.deletes[2]
_PATH = re.compile(r"\$\.(?P<field>\w+)(?:\[(?P<row>\d+)\]\[(?P<position>\d+)\])?(?P<rest>.*)")


def encode(message: Message) -> bytes:
    if isinstance(message, PodsPage):
        data = _ENCODER.encode(
            _PodsPageLine(
                message.id, message.rows, message.complete, message.hidden, message.hidden_reason
            )
        )
    elif isinstance(message, PodsChanged):
        data = _ENCODER.encode(_PodsChangedLine(message.id, message.upserts, message.deletes))
    else:
        line = json.dumps({"type": message.type, **asdict(message)}, separators=(",", ":"))
        data = line.encode()
    data += b"\n"
    if len(data) > MAX_LINE:
        raise ProtocolError(f"a {message.type} message of {len(data)} bytes is too long")
    return data


def decode(line: bytes) -> Message:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"a line of {len(line)} bytes is longer than {MAX_LINE}")
    try:
        kind = _KIND.decode(line).type
    except msgspec.ValidationError:
        raise ProtocolError("a message is a JSON object with a string 'type'") from None
    except (UnicodeDecodeError, msgspec.DecodeError) as exc:
        raise ProtocolError(f"not a JSON line: {exc}") from None
    pods = _POD_LINES.get(kind)
    if pods is not None:
        return _pods_message(pods, line, kind)
    try:
        data: Any = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not a JSON line: {exc}") from None
    cls = _TYPES.get(data.pop("type"))
    if cls is None:
        raise ProtocolError(f"unknown message type; known: {', '.join(sorted(_TYPES))}")
    message: Message = _build(cls, data, cls.type)
    return message


def _pods_message(decoder: msgspec.json.Decoder[Any], line: bytes, kind: str) -> Message:
    try:
        wire = decoder.decode(line)
    except (UnicodeDecodeError, msgspec.DecodeError) as exc:
        raise ProtocolError(_where(str(exc), kind)) from None
    if isinstance(wire, _PodsPageLine):
        return PodsPage(wire.id, wire.rows, wire.complete, wire.hidden, wire.hidden_reason)
    return PodsChanged(wire.id, wire.upserts, wire.deletes)


def _where(error: str, kind: str) -> str:
    """msgspec's error in the protocol's words: ``Expected `int`, got `str` - at
    `$.rows[3][3]``` becomes ``pods.rows[3].restarts: expected `int`, got `str```."""
    what, _, path = error.partition(" - at `")
    what = what[:1].lower() + what[1:]
    found = _PATH.fullmatch(path.rstrip("`"))
    if found is None:
        return f"{kind}: {what}"
    where = f"{kind}.{found['field']}"
    if found["row"] is not None:
        position = int(found["position"])
        names = PodRow.__struct_fields__
        where += f"[{found['row']}].{names[position] if position < len(names) else position}"
    return f"{where}{found['rest']}: {what}"


def _build(cls: type[Any], data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ProtocolError(f"{where} must be an object")
    expected = {f.name: str(f.type) for f in fields(cls)}
    if set(data) != set(expected):
        raise ProtocolError(
            f"{where} takes exactly the fields {', '.join(sorted(expected))}, "
            f"got {', '.join(sorted(data)) or 'none'}"
        )
    values = {
        name: _value(annotation, data[name], f"{where}.{name}")
        for name, annotation in expected.items()
    }
    return cls(**values)


def _value(annotation: str, value: Any, where: str) -> Any:
    scalar = _SCALARS.get(annotation)
    if scalar is not None:
        # bool is an int in Python, and JSON's true is not a number.
        if isinstance(value, bool) and bool not in scalar:
            raise ProtocolError(f"{where} has the wrong type")
        if not isinstance(value, scalar):
            raise ProtocolError(f"{where} has the wrong type")
        return value
    if annotation.startswith("list[") and annotation.endswith("]"):
        if not isinstance(value, list):
            raise ProtocolError(f"{where} has the wrong type")
        if len(value) > MAX_ITEMS:
            raise ProtocolError(f"{where} has more than {MAX_ITEMS} items")
        inner = annotation[5:-1]
        if inner == "str":
            if not all(isinstance(item, str) for item in value):
                raise ProtocolError(f"{where} must be a list of strings")
            return value
        record = _RECORDS.get(inner)
        if record is not None:
            return [_build(record, item, f"{where}[]") for item in value]
    raise ProtocolError(f"{where}: the protocol has no field type {annotation}")
