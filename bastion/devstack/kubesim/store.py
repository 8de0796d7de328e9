"""kubesim's object store: typed resources, resource versions, pagination and watches.

Objects are kept as plain JSON-shaped dicts together with their serialised bytes, so that a
list of 50,000 pods is a join of cached byte strings rather than 50,000 serialisations.
Every change bumps one global ``resourceVersion`` (as etcd's revision does) and is offered
to the matching watches; a bounded history lets a watch resume from a recent version and
answers ``410 Expired`` for an older one.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import collections
import itertools
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from bastion.devstack.kubesim.errors import ApiError

__all__ = [
    "RESOURCES",
    "Event",
    "ListPage",
    "ResourceType",
    "Store",
    "Watch",
    "now_rfc3339",
]

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


def _types() -> dict[tuple[str, str], ResourceType]:
    rbac = "rbac.authorization.k8s.io"
    types = [
        ResourceType("", "v1", "namespaces", "Namespace", namespaced=False),
        ResourceType("", "v1", "pods", "Pod", namespaced=True),
        ResourceType("", "v1", "serviceaccounts", "ServiceAccount", namespaced=True),
        ResourceType("", "v1", "events", "Event", namespaced=True),
        ResourceType(rbac, "v1", "roles", "Role", namespaced=True),
        ResourceType(rbac, "v1", "rolebindings", "RoleBinding", namespaced=True),
        ResourceType(rbac, "v1", "clusterroles", "ClusterRole", namespaced=False),
        ResourceType(rbac, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    ]
    return {(t.group, t.plural): t for t in types}


RESOURCES = _types()


@dataclass
class _Entry:
    obj: Obj
    raw: bytes | None = None

    def encoded(self) -> bytes:
        if self.raw is None:
            self.raw = orjson.dumps(self.obj)
        return self.raw


@dataclass(frozen=True)
class Event:
    type: str  # ADDED, MODIFIED, DELETED
    resource: ResourceType
    namespace: str
    rv: int
    obj: Obj
    raw: bytes


@dataclass(eq=False)  # a watch is one stream: identity, not value, makes it unique
class Watch:
    resource: ResourceType
    namespace: str | None
    predicate: Predicate
    buffer: int = 20_000
    queue: asyncio.Queue[Event | None] = field(init=False)
    overflowed: bool = False

    def __post_init__(self) -> None:
        # One slot more than the buffer, so the end marker always fits after a cut-off.
        self.queue = asyncio.Queue(maxsize=self.buffer + 1)


@dataclass(frozen=True)
class ListPage:
    items: list[bytes]
    resource_version: int
    continue_token: str | None
    remaining: int | None


class Store:
    HISTORY = 20_000
    WATCH_BUFFER = 20_000

    def __init__(self) -> None:
        self._rv = 1
        self._objects: dict[ResourceType, dict[tuple[str, str], _Entry]] = {
            t: {} for t in RESOURCES.values()
        }
        self._sorted: dict[ResourceType, list[tuple[str, str]] | None] = {}
        self._history: collections.deque[Event] = collections.deque(maxlen=self.HISTORY)
        self._watches: set[Watch] = set()

    # ------------------------------------------------------------------ basics
    @property
    def resource_version(self) -> int:
        return self._rv

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], _Entry]:
        return self._objects[rt]

    def _require_namespace(self, rt: ResourceType, namespace: str) -> None:
        if rt.namespaced and ("", namespace) not in self._objects[RESOURCES[("", "namespaces")]]:
            raise ApiError.not_found("", "namespaces", namespace)

    def exists(self, rt: ResourceType, namespace: str, name: str) -> bool:
        return (namespace if rt.namespaced else "", name) in self._bucket(rt)

    # ------------------------------------------------------------------ writes
    def create(self, rt: ResourceType, namespace: str, obj: Obj, *, silent: bool = False) -> Obj:
        """Store a new object, filling in the metadata the API server owns."""
        ns = namespace if rt.namespaced else ""
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
            )
        name = meta.get("name", "")
        self._require_namespace(rt, ns)
        key = (ns, name)
        if key in self._bucket(rt):
            raise ApiError.already_exists(rt.group, rt.plural, name)
        if rt.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta.setdefault("creationTimestamp", now_rfc3339())
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        entry = _Entry(obj)
        self._bucket(rt)[key] = entry
        self._sorted[rt] = None
        if not silent:
            self._publish("ADDED", rt, ns, rv, entry)
        return obj

    def update(self, rt: ResourceType, namespace: str, name: str, obj: Obj) -> Obj:
        """Replace an object; a stale ``metadata.resourceVersion`` is a 409 Conflict."""
        ns = namespace if rt.namespaced else ""
        current = self.get(rt, ns, name)
        meta = obj.setdefault("metadata", {})
        wanted = meta.get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError.conflict(
                rt.group,
                rt.plural,
                name,
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                f"the name of the object ({meta.get('name')}) does not match "
                f"the name on the URL ({name})",
            )
        for owned in ("uid", "creationTimestamp", "namespace", "deletionTimestamp"):
            if owned in current["metadata"]:
                meta[owned] = current["metadata"][owned]
        meta["name"] = name
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        entry = _Entry(obj)
        self._bucket(rt)[(ns, name)] = entry
        self._publish("MODIFIED", rt, ns, rv, entry)
        return obj

    def delete(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        ns = namespace if rt.namespaced else ""
        entry = self._bucket(rt).pop((ns, name), None)
        if entry is None:
            raise ApiError.not_found(rt.group, rt.plural, name)
        self._sorted[rt] = None
        rv = self._next_rv()
        entry.obj["metadata"]["resourceVersion"] = str(rv)
        entry.raw = None
        self._publish("DELETED", rt, ns, rv, entry)
        return entry.obj

    # ------------------------------------------------------------------ reads
    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        entry = self._bucket(rt).get((namespace if rt.namespaced else "", name))
        if entry is None:
            raise ApiError.not_found(rt.group, rt.plural, name)
        return entry.obj

    def get_raw(self, rt: ResourceType, namespace: str, name: str) -> bytes:
        self.get(rt, namespace, name)
        return self._bucket(rt)[(namespace if rt.namespaced else "", name)].encoded()

    def items(self, rt: ResourceType, namespace: str | None = None) -> Iterator[Obj]:
        for (ns, _), entry in list(self._bucket(rt).items()):
            if namespace is None or ns == namespace:
                yield entry.obj

    def encode_all(self, rt: ResourceType) -> None:
        for entry in self._bucket(rt).values():
            entry.encoded()

    def _keys(self, rt: ResourceType) -> list[tuple[str, str]]:
        keys = self._sorted.get(rt)
        if keys is None:
            keys = sorted(self._bucket(rt))
            self._sorted[rt] = keys
        return keys

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        predicate: Predicate | None,
        *,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> ListPage:
        """Objects in (namespace, name) order; ``limit``/``continue`` as the API server."""
        keys = self._keys(rt)
        start = 0
        list_rv = self._rv
        if continue_token:
            after, list_rv = _decode_continue(continue_token)
            start = bisect.bisect_right(keys, after)
        bucket = self._bucket(rt)

        def matching() -> Iterator[tuple[tuple[str, str], _Entry]]:
            for key in itertools.islice(keys, start, None):
                if namespace is not None and key[0] != namespace:
                    continue
                entry = bucket[key]
                if predicate is None or predicate(entry.obj):
                    yield key, entry

        found = matching()
        items: list[bytes] = []
        for key, entry in found:
            items.append(entry.encoded())
            if limit and len(items) == limit:
                remaining = sum(1 for _ in found)
                if remaining:
                    return ListPage(items, list_rv, _encode_continue(key, list_rv), remaining)
                break
        return ListPage(items, list_rv, None, None)

    # ------------------------------------------------------------------ watches
    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        predicate: Predicate,
        since: int | None,
    ) -> Watch:
        """A watch fed with every later change; ``since`` replays the history after it."""
        watch = Watch(rt, namespace, predicate, self.WATCH_BUFFER)
        if since is not None and since < self._rv:
            oldest = self._history[0].rv if self._history else self._rv + 1
            if since < oldest - 1:
                raise ApiError(
                    410,
                    f"too old resource version: {since} ({oldest - 1})",
                    reason="Expired",
                )
            for event in self._history:
                if event.rv > since and self._matches(watch, event):
                    watch.queue.put_nowait(event)
        self._watches.add(watch)
        return watch

    def stop_watch(self, watch: Watch) -> None:
        self._watches.discard(watch)

    def _matches(self, watch: Watch, event: Event) -> bool:
        return (
            watch.resource is event.resource
            and (watch.namespace is None or watch.namespace == event.namespace)
            and watch.predicate(event.obj)
        )

    def _publish(self, kind: str, rt: ResourceType, ns: str, rv: int, entry: _Entry) -> None:
        event = Event(kind, rt, ns, rv, entry.obj, entry.encoded())
        self._history.append(event)
        for watch in list(self._watches):
            if not self._matches(watch, event):
                continue
            if watch.queue.qsize() < watch.buffer:
                watch.queue.put_nowait(event)
            else:
                # A watcher that cannot keep up is cut off, as the API server does: what it
                # has not read is dropped and the end marker tells its stream to close.
                watch.overflowed = True
                self._watches.discard(watch)
                while not watch.queue.empty():
                    watch.queue.get_nowait()
                watch.queue.put_nowait(None)


def _encode_continue(after: tuple[str, str], rv: int) -> str:
    payload = orjson.dumps({"v": "kubesim/v1", "rv": rv, "start": list(after)})
    return base64.urlsafe_b64encode(payload).decode()


def _decode_continue(token: str) -> tuple[tuple[str, str], int]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        start = data["start"]
        return (str(start[0]), str(start[1])), int(data["rv"])
    except (ValueError, KeyError, TypeError, IndexError):
        raise ApiError(
            400,
            "continue key is not valid: incorrect encoded start resourceVersion "
            "(version meta.k8s.io/v1)",
        ) from None
