"""What the console may see of a pod: its list row, its details with secrets masked, its
events. Pure: raw API JSON (dicts) in, :mod:`bastion.console_protocol` records out.

Masking happens here, in the broker, so no secret value ever reaches the console process:
``secretKeyRef`` becomes ``<secret NAME/KEY>``, ``configMapKeyRef`` ``<configmap NAME/KEY>``,
field and resource references are described, and literal values that look like secrets
(:data:`bastion.redact.PATTERNS`: JWTs, Vault tokens, private keys, ``password=`` ...)
become ``<redacted>``. Strings are *not* neutralised for terminals here (the console does
that before display).

Pod lists are the bulk: a page of 2,000 pods is about 3 MB of JSON, of which a row needs a
few dozen bytes. :func:`read_pod_list` decodes only those fields into typed records (msgspec
skips everything else without building it): such a page becomes rows about five times
faster than by parsing it into dicts and picking the fields out, with far fewer objects for
the GC to walk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from bastion.console_protocol import ContainerInfo, EnvVar, EventRow, KeyValue, PodRow
from bastion.redact import redact

__all__ = [
    "MAX_EVENTS",
    "REDACTED",
    "ListedPod",
    "PodList",
    "config_maps",
    "container_infos",
    "event_rows",
    "key_values",
    "list_row",
    "masked_env",
    "pod_row",
    "pod_status",
    "read_pod_list",
]

REDACTED = "<redacted>"
MAX_EVENTS = 20
Obj = dict[str, Any]


def _dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# ---------------------------------------------------------------------------- typed pods
# Only what a list row needs, named as the API sends it. Every field may be missing or null,
# as in the dicts this replaces; unknown fields are skipped. Not tracked by the cyclic GC:
# decoded JSON cannot hold a reference cycle.
class _Reason(msgspec.Struct, gc=False):
    reason: str | None = None


class _ContainerState(msgspec.Struct, gc=False):
    waiting: _Reason | None = None
    terminated: _Reason | None = None


class _ContainerStatus(msgspec.Struct, gc=False):
    ready: bool | None = None
    restartCount: int | None = None
    state: _ContainerState | None = None


class _Status(msgspec.Struct, gc=False):
    phase: str | None = None
    reason: str | None = None
    containerStatuses: list[_ContainerStatus] | None = None


class _Container(msgspec.Struct, gc=False):
    name: str | None = None


class _Spec(msgspec.Struct, gc=False):
    nodeName: str | None = None
    containers: list[_Container] | None = None


class _Meta(msgspec.Struct, gc=False):
    name: str | None = None
    creationTimestamp: str | None = None
    deletionTimestamp: str | None = None
    labels: dict[str, str] | None = None


class ListedPod(msgspec.Struct, gc=False):
    """A pod of a list, reduced to what its row and the policy's pod selectors need."""

    metadata: _Meta | None = None
    spec: _Spec | None = None
    status: _Status | None = None

    @property
    def labels(self) -> dict[str, str]:
        return (self.metadata.labels if self.metadata else None) or {}


class _ListMeta(msgspec.Struct, gc=False):
    resourceVersion: str | None = None
    continue_: str | None = msgspec.field(default=None, name="continue")


class PodList(msgspec.Struct, gc=False):
    """A page of a pod list: its pods, the list's resourceVersion, and the ``continue``
    token of the next page ("" on the last one)."""

    items: list[ListedPod] | None = None
    metadata: _ListMeta | None = None

    @property
    def pods(self) -> list[ListedPod]:
        return self.items or []

    @property
    def version(self) -> str:
        return (self.metadata.resourceVersion if self.metadata else None) or ""

    @property
    def token(self) -> str:
        return (self.metadata.continue_ if self.metadata else None) or ""


class _ListHead(msgspec.Struct, gc=False):
    metadata: _ListMeta | None = None


_LIST = msgspec.json.Decoder(PodList)
_HEAD = msgspec.json.Decoder(_ListHead)
_NO_META, _NO_SPEC, _NO_STATUS = _Meta(), _Spec(), _Status()


def read_pod_list(raw: bytes, *, head_only: bool = False) -> PodList:
    """A page of ``GET .../pods`` (raw JSON). ``head_only``: only its resourceVersion and
    ``continue`` token, a skim of a few milliseconds even for thousands of pods, to ask for
    the next page before this one is decoded. ValueError when the body is no pod list."""
    try:
        if head_only:
            return PodList(metadata=_HEAD.decode(raw).metadata)
        return _LIST.decode(raw)
    except (UnicodeDecodeError, msgspec.DecodeError) as exc:
        raise ValueError(
            f"the cluster's API sent a pod list this bastion cannot read ({exc})"
        ) from None


def _as_pod(pod: Obj) -> ListedPod:
    try:
        return msgspec.convert(pod, ListedPod)
    except msgspec.ValidationError as exc:
        raise ValueError(f"the cluster's API sent a pod this bastion cannot read ({exc})") from None


def pod_status(pod: Obj) -> str:
    """The one word kubectl shows: Terminating, a container's waiting reason
    (CrashLoopBackOff, ImagePullBackOff ...), Completed, or the phase."""
    return _status(_as_pod(pod))


def _status(pod: ListedPod) -> str:
    meta, status = pod.metadata or _NO_META, pod.status or _NO_STATUS
    if meta.deletionTimestamp:
        return "Terminating"
    phase = status.phase or "Unknown"
    shown = status.reason or phase
    for container in status.containerStatuses or ():
        state = container.state
        if state is None:
            continue
        if state.waiting is not None and state.waiting.reason:
            shown = state.waiting.reason
        elif state.terminated is not None and phase == "Running":
            shown = state.terminated.reason or "Terminated"
    return "Completed" if shown == "Succeeded" else shown


def pod_row(pod: Obj) -> PodRow:
    """The list row of one pod given as a dict (a watch event's object)."""
    return list_row(_as_pod(pod))


def list_row(pod: ListedPod) -> PodRow:
    """The list row of a pod of :func:`read_pod_list`."""
    meta, spec = pod.metadata or _NO_META, pod.spec or _NO_SPEC
    statuses = (pod.status or _NO_STATUS).containerStatuses or ()
    containers = tuple(c.name or "" for c in spec.containers or ())
    return PodRow(
        name=meta.name or "",
        ready=f"{sum(1 for c in statuses if c.ready is True)}/{len(containers)}",
        status=_status(pod),
        restarts=sum(c.restartCount or 0 for c in statuses),
        created=meta.creationTimestamp or "",
        node=spec.nodeName or "",
        labels=tuple(f"{k}={v}" for k, v in (meta.labels or {}).items()),
        containers=containers,
    )


def _looks_secret(value: str) -> bool:
    _, kinds = redact(value)
    return bool(kinds)


def masked_env(container: Obj) -> list[EnvVar]:
    """The container's environment as the console may show it: no secret value."""
    shown: list[EnvVar] = []
    for entry in _list(container.get("env")):
        var = _dict(entry)
        name = str(var.get("name", ""))
        source = _dict(var.get("valueFrom"))
        if "value" in var or not source:
            value = str(var.get("value") or "")
            if _looks_secret(f"{name}={value}") or _looks_secret(value):
                shown.append(EnvVar(name, REDACTED, "redacted"))
            else:
                shown.append(EnvVar(name, value, "value"))
        elif "secretKeyRef" in source:
            ref = _dict(source["secretKeyRef"])
            shown.append(EnvVar(name, f"<secret {ref.get('name')}/{ref.get('key')}>", "secret"))
        elif "configMapKeyRef" in source:
            ref = _dict(source["configMapKeyRef"])
            text = f"<configmap {ref.get('name')}/{ref.get('key')}>"
            shown.append(EnvVar(name, text, "configmap"))
        elif "fieldRef" in source:
            ref = _dict(source["fieldRef"])
            shown.append(EnvVar(name, f"<field {ref.get('fieldPath')}>", "field"))
        elif "resourceFieldRef" in source:
            ref = _dict(source["resourceFieldRef"])
            where = f" of {ref['containerName']}" if ref.get("containerName") else ""
            shown.append(EnvVar(name, f"<resource {ref.get('resource')}{where}>", "resource"))
        else:
            # A source this bastion does not know (newer API): say so, show nothing of it.
            shown.append(EnvVar(name, REDACTED, "redacted"))
    for entry in _list(container.get("envFrom")):
        source = _dict(entry)
        prefix = str(source.get("prefix") or "")
        if "secretRef" in source:
            secret = _dict(source["secretRef"]).get("name")
            shown.append(EnvVar(f"{prefix}*", f"<every key of secret {secret}>", "secret"))
        elif "configMapRef" in source:
            config = _dict(source["configMapRef"]).get("name")
            shown.append(EnvVar(f"{prefix}*", f"<every key of configmap {config}>", "configmap"))
    return shown


def config_maps(pod: Obj, container: Obj) -> list[str]:
    """The configmaps ``container`` reads: by env, envFrom, and mounted volumes (projected
    ones included), each once, in the order met."""
    found: dict[str, None] = {}
    for entry in _list(container.get("env")):
        ref = _dict(_dict(_dict(entry).get("valueFrom")).get("configMapKeyRef"))
        if ref.get("name"):
            found[str(ref["name"])] = None
    for entry in _list(container.get("envFrom")):
        ref = _dict(_dict(entry).get("configMapRef"))
        if ref.get("name"):
            found[str(ref["name"])] = None
    mounted = {str(_dict(m).get("name")) for m in _list(container.get("volumeMounts"))}
    for volume in map(_dict, _list(_dict(pod.get("spec")).get("volumes"))):
        if volume.get("name") not in mounted:
            continue
        direct = _dict(volume.get("configMap")).get("name")
        projected = [
            _dict(_dict(source).get("configMap")).get("name")
            for source in _list(_dict(volume.get("projected")).get("sources"))
        ]
        for name in (direct, *projected):
            if name:
                found[str(name)] = None
    return list(found)


def _state(status: Obj) -> str:
    state = _dict(status.get("state"))
    if "running" in state:
        return "running"
    if "waiting" in state:
        reason = _dict(state["waiting"]).get("reason")
        return f"waiting ({reason})" if reason else "waiting"
    if "terminated" in state:
        ended = _dict(state["terminated"])
        return f"terminated ({ended.get('reason') or 'no reason'}, exit {ended.get('exitCode')})"
    return "unknown"


def container_infos(pod: Obj, debuggable: Callable[[str], bool]) -> list[ContainerInfo]:
    """The pod's containers with their state, masked env and configmaps;
    ``debuggable(name)`` is the policy's answer for each."""
    spec, status = _dict(pod.get("spec")), _dict(pod.get("status"))
    statuses = {str(_dict(s).get("name")): _dict(s) for s in _list(status.get("containerStatuses"))}
    infos = []
    for container in map(_dict, _list(spec.get("containers"))):
        name = str(container.get("name", ""))
        current = statuses.get(name, {})
        infos.append(
            ContainerInfo(
                name=name,
                image=str(container.get("image", "")),
                state=_state(current) if current else "unknown",
                ready=current.get("ready") is True,
                restarts=int(current.get("restartCount") or 0),
                env=masked_env(container),
                config_maps=config_maps(pod, container),
                debuggable=debuggable(name),
            )
        )
    return infos


def key_values(mapping: Any) -> list[KeyValue]:
    return [KeyValue(str(k), str(v)) for k, v in _dict(mapping).items()]


def _last_seen(event: Obj) -> str:
    series = _dict(event.get("series"))
    return str(
        series.get("lastObservedTime")
        or event.get("lastTimestamp")
        or event.get("eventTime")
        or _dict(event.get("metadata")).get("creationTimestamp")
        or ""
    )


def event_rows(events: Iterable[Obj], limit: int = MAX_EVENTS) -> list[EventRow]:
    """The newest ``limit`` events, newest first. Messages are masked like env values:
    an event can quote a command line or a failing probe's URL."""
    rows = [
        EventRow(
            type=str(event.get("type") or "Normal"),
            reason=str(event.get("reason") or ""),
            message=redact(str(event.get("message") or ""))[0],
            count=int(event.get("count") or _dict(event.get("series")).get("count") or 1),
            last_seen=_last_seen(event),
        )
        for event in map(_dict, events)
    ]
    # RFC 3339 in UTC sorts as text; MicroTime's fraction only breaks ties.
    rows.sort(key=lambda row: row.last_seen, reverse=True)
    return rows[:limit]
