"""The console's read-only view of the clusters, for one session: namespaces, pods (paged,
then watched), one pod's details, and what a debug of a container would be.

Everything is filtered by the operator's grants before it leaves the broker, and masked
(:mod:`bastion.session.pod_view`); the console never holds a credential.

The credential: one per cluster and session, from the cluster's ``browse_vault_role`` (a
ClusterRole-type Vault role with :data:`bastion.kube_permissions.BROWSE_RULES`, bound
cluster-wide), asked for the first time the console needs that cluster, journalled as a
``lease`` of the session (the wipe and the reaper revoke it), valid until the session's hard
deadline, and kept in memory only. A credential Kubernetes no longer accepts (its lease was
revoked, e.g. by the end of a debug) is replaced once, at the next request that meets it.

Lists are read as raw JSON, decoded field-selectively (:func:`pod_view.read_pod_list`):
a first page of :data:`PAGE` pods goes to the console at once, then pages of
:data:`REST_PAGE`, each asked for as soon as the one before has arrived (its ``continue``
token is skimmed first), so the API server prepares a page while the broker decodes the
last. Then a watch from the list's resourceVersion sends changes in batches every
:data:`COALESCE` seconds; a watch too old to resume (410) lists again and sends the
difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import msgspec
import orjson

from bastion.config import Config
from bastion.config.models import Cluster
from bastion.console_protocol import (
    MAX_ITEMS,
    DebugOptions,
    DecideApproval,
    Failed,
    GetDebugOptions,
    GetPod,
    GetView,
    HiddenItem,
    ListApprovals,
    ListNamespaces,
    Message,
    Namespaces,
    PodDetail,
    PodRow,
    PodsChanged,
    PodsPage,
    ProtocolError,
    StopWatch,
    ViewResult,
    WatchPods,
    encode,
)
from bastion.errors import BackendUnavailable, BastionError, PolicyDenied
from bastion.kube import CredentialRefused, KubeApi, WatchExpired
from bastion.labels import LabelSelector
from bastion.policy import (
    DebugRequest,
    DebugTarget,
    Decision,
    Grant,
    Mode,
    Principal,
    approved_images,
    decide,
)
from bastion.session.approvals import ApprovalDesk
from bastion.session.introspect import ViewRequest, allowed_views, open_view, view_message
from bastion.session.pod_view import (
    PodList,
    container_infos,
    event_rows,
    key_values,
    list_row,
    pod_row,
    pod_status,
    read_pod_list,
)
from bastion.session.session import Session
from bastion.vault import MIN_KUBE_TTL, KubeCredential, VaultClient

__all__ = ["COALESCE", "PAGE", "REST_PAGE", "Browser", "Reply"]

log = logging.getLogger(__name__)

PAGE = 500  # pods in the first page, and at most in one PodsPage
# Pods per API page after the first: 3 MB of JSON, about 8 ms to decode into rows; fewer
# round trips than pages of 500, and two pages in flight stay a few MB of broker memory.
REST_PAGE = 2000
COALESCE = 0.1  # seconds: changes within this are sent as one PodsChanged
WATCH_SECONDS = 290  # the server ends each watch after this; it is resumed at once
_RENEW_BEFORE = 60.0  # seconds: a credential this close to its end is replaced first
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_POD = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_CONTAINER = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_UNEXPECTED = "the bastion could not answer this request; try again, or tell an administrator"

Reply = Callable[[bytes], Awaitable[None]]
"""Sends one encoded message to the console; waits while the console is behind."""


def _lines(message: Message) -> Iterator[bytes]:
    """``message`` encoded, split into several of the same type when it is longer than the
    protocol allows (pages and changes only: their rows can be sent in any grouping)."""
    try:
        line = encode(message)
    except ProtocolError:  # too long for one line
        pass
    else:
        yield line
        return
    if isinstance(message, PodsPage) and len(message.rows) > 1:
        half = len(message.rows) // 2
        first = PodsPage(message.id, message.rows[:half], False, 0, message.hidden_reason)
        rest = PodsPage(
            message.id,
            message.rows[half:],
            message.complete,
            message.hidden,
            message.hidden_reason,
        )
        yield from _lines(first)
        yield from _lines(rest)
        return
    if isinstance(message, PodsChanged) and len(message.upserts) + len(message.deletes) > 1:
        half = len(message.upserts) // 2
        if half:
            yield from _lines(PodsChanged(message.id, message.upserts[:half], []))
            yield from _lines(PodsChanged(message.id, message.upserts[half:], message.deletes))
        else:
            cut = len(message.deletes) // 2
            yield from _lines(PodsChanged(message.id, message.upserts, message.deletes[:cut]))
            yield from _lines(PodsChanged(message.id, [], message.deletes[cut:]))
        return
    if isinstance(message, PodsPage | PodsChanged):
        # One pod too large for a line (thousands of labels): shown without its labels.
        rows = message.rows if isinstance(message, PodsPage) else message.upserts
        slim = [msgspec.structs.replace(row, labels=()) for row in rows]
        if isinstance(message, PodsPage):
            yield encode(PodsPage(message.id, slim, message.complete, message.hidden, ""))
        else:
            yield encode(PodsChanged(message.id, slim, message.deletes))
        return
    yield encode(Failed(getattr(message, "id", 0), "the answer is too large to show"))


@dataclass
class _Access:
    """One cluster's browse credential and the open API client using it."""

    credential: KubeCredential
    kube: KubeApi
    ends_at: float  # the session clock's time when the credential ends


@dataclass(frozen=True)
class _View:
    """What policy shows of one namespace: the pod selectors of the grants covering it."""

    grants: tuple[Grant, ...]

    @property
    def everything(self) -> bool:
        return any(not grant.pod_selector.requirements for grant in self.grants)

    def shows(self, labels: dict[str, str]) -> bool:
        return self.everything or any(g.pod_selector.matches(labels) for g in self.grants)

    def hidden_reason(self, user: str) -> str:
        if self.everything:
            return ""
        selectors = " or ".join(sorted({_selector_text(g.pod_selector) for g in self.grants}))
        return f"policy lets {user} debug only pods matching {selectors} here"


def _selector_text(selector: LabelSelector) -> str:
    return repr(str(selector))


class Browser:
    """Answers one session's console requests (ListNamespaces, WatchPods, StopWatch, GetPod,
    GetDebugOptions, GetView; ListApprovals and DecideApproval go to the approvals desk). Use
    :meth:`submit` for each request; :meth:`stop_all` when the console ends; :meth:`close`
    when the session does."""

    def __init__(
        self,
        session: Session,
        *,
        config: Config,
        vault: VaultClient | None,
        principal: Principal,
        approvals: ApprovalDesk | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._session = session
        self._approvals = approvals
        self._config = config
        self._vault = vault
        self._principal = principal
        self._now = now
        self._policy = config.policy()
        self._access: dict[str, _Access] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watches: dict[int, asyncio.Task[None]] = {}
        self._timeout = config.limits.kubernetes_timeout.total_seconds()
        self._viewing = asyncio.Lock()

    # ------------------------------------------------------------------ requests
    def submit(self, request: Message, reply: Reply) -> None:
        """Start answering ``request``; answers (and failures, as ``Failed``) go to
        ``reply``. A WatchPods runs until its StopWatch, :meth:`stop_all` or :meth:`close`."""
        if isinstance(request, StopWatch):
            self.stop(request.id)
            return
        task = asyncio.get_running_loop().create_task(self._answer(request, reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if isinstance(request, WatchPods):
            self.stop(request.id)  # the same id again: the new watch replaces the old
            self._watches[request.id] = task
            task.add_done_callback(lambda _: self._forget_watch(request.id, task))

    def stop(self, watch_id: int) -> None:
        task = self._watches.pop(watch_id, None)
        if task is not None:
            task.cancel()

    def _forget_watch(self, watch_id: int, task: asyncio.Task[None]) -> None:
        if self._watches.get(watch_id) is task:
            del self._watches[watch_id]

    async def stop_all(self) -> None:
        """Cancel every request in flight (the console that asked is gone)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watches.clear()

    async def close(self) -> None:
        """Stop everything and forget the credentials (the session's wipe revokes them)."""
        await self.stop_all()
        self.forget_credentials()
        for access in list(self._access.values()):
            await access.kube.__aexit__(None, None, None)
        self._access.clear()

    def forget_credentials(self) -> None:
        """Drop the tokens: the next request asks Vault for a new credential."""
        for access in self._access.values():
            access.credential.token.drop()

    async def _answer(self, request: Message, reply: Reply) -> None:
        request_id = int(getattr(request, "id", 0))
        try:
            match request:
                case ListNamespaces():
                    await self.send(reply, await self._namespaces(request))
                case WatchPods():
                    await self._watch_pods(request, reply)
                case GetPod():
                    await self.send(reply, await self._pod(request))
                case GetDebugOptions():
                    await self.send(reply, await self._debug_options(request))
                case GetView():
                    await self.send(reply, await self._open_view(request))
                case ListApprovals() | DecideApproval() if self._approvals is not None:
                    answer = await self._approvals.answer(self._session, self._principal, request)
                    await self.send(reply, answer)
                case _:
                    await self.send(reply, Failed(request_id, f"{request.type} is not a request"))
        except asyncio.CancelledError:
            raise
        except BastionError as exc:
            await self.send(reply, Failed(request_id, exc.message))
        except ValueError as exc:
            await self.send(reply, Failed(request_id, str(exc)))
        except Exception:
            log.exception("session %s: %s failed", self._session.id, request.type)
            await self.send(reply, Failed(request_id, _UNEXPECTED))

    @staticmethod
    async def send(reply: Reply, message: Message) -> None:
        for line in _lines(message):
            await reply(line)

    # ------------------------------------------------------------------ policy
    def _grants(self, cluster: str, namespace: str) -> list[Grant]:
        now = self._now()
        return [
            grant
            for grant in self._policy.grants_for(self._principal)
            if grant.in_force(now)
            and grant.covers_cluster(cluster)
            and grant.covers_namespace(namespace)
        ]

    def _view(self, cluster: str, namespace: str) -> _View:
        _check(namespace, _NAMESPACE, "namespace")
        grants = self._grants(cluster, namespace)
        if not grants:
            raise PolicyDenied(
                f"no grant lets {self._principal.name} debug in namespace {namespace!r} of "
                f"cluster {cluster!r}; pick another namespace"
            )
        return _View(tuple(grants))

    @property
    def user(self) -> str:
        return self._principal.name

    def clusters(self) -> list[str]:
        """The configured clusters some grant of the operator covers (in force or not)."""
        grants = self._policy.grants_for(self._principal)
        return [
            c.name for c in self._config.clusters if any(g.covers_cluster(c.name) for g in grants)
        ]

    # ------------------------------------------------------------------ namespaces
    async def _namespaces(self, request: ListNamespaces) -> Namespaces:
        cluster = request.cluster
        if cluster not in self.clusters():
            raise PolicyDenied(f"no grant lets {self._principal.name} debug in cluster {cluster!r}")
        body = await self._read(cluster, "/api/v1/namespaces", "list the namespaces")
        names = sorted(
            str((item.get("metadata") or {}).get("name", "")) for item in body.get("items") or []
        )
        allowed, hidden = [], []
        mine = self._policy.grants_for(self._principal)
        now = self._now()
        for name in names:
            covering = [g for g in mine if g.covers_cluster(cluster) and g.covers_namespace(name)]
            if any(g.in_force(now) for g in covering):
                allowed.append(name)
            elif covering:
                grants = ", ".join(sorted(repr(g.name) for g in covering))
                hidden.append(HiddenItem(name, f"grant {grants} is not in force now"))
            else:
                hidden.append(HiddenItem(name, f"no grant of {self._principal.name} covers it"))
        return Namespaces(request.id, cluster, allowed, hidden[:MAX_ITEMS])

    # ------------------------------------------------------------------ pods
    async def _watch_pods(self, request: WatchPods, reply: Reply) -> None:
        watch = _PodWatch(self, request, reply, self._view(request.cluster, request.namespace))
        await watch.run()

    async def pages(self, cluster: str, path: str, doing: str, view: _View) -> AsyncIterator[_Page]:
        """The pods of ``path`` that ``view`` shows, page by page: :data:`PAGE` first (the
        console shows it at once), then :data:`REST_PAGE` at a time. Each page's
        ``continue`` token is skimmed as soon as it arrives and the next page asked for at
        once, so the API server and the network work while this one is decoded and sent.
        Decoding runs on a thread so that other sessions' keystrokes get turns meanwhile."""
        loop = asyncio.get_running_loop()
        fetch = loop.create_task(self._read_bytes(cluster, path, doing, {"limit": str(PAGE)}))
        try:
            while True:
                raw = await fetch
                token = _read(raw, doing, head_only=True).token
                if token:
                    params = {"limit": str(REST_PAGE), "continue": token}
                    fetch = loop.create_task(self._read_bytes(cluster, path, doing, params))
                page = await asyncio.to_thread(_parse_page, raw, view, doing)
                yield page
                if not token:
                    return
        finally:
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, BastionError):
                await fetch

    # ------------------------------------------------------------------ one pod
    async def _pod(self, request: GetPod) -> PodDetail:
        view = self._view(request.cluster, request.namespace)
        pod = await self._read_pod(request.cluster, request.namespace, request.pod, view)
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        events = await self._read(
            request.cluster,
            f"/api/v1/namespaces/{quote(request.namespace)}/events",
            f"list the events of pod {request.namespace}/{request.pod}",
            {"fieldSelector": f"involvedObject.kind=Pod,involvedObject.name={request.pod}"},
        )
        labels = dict(meta.get("labels") or {})
        uid = meta.get("uid")
        mine = [
            e
            for e in events.get("items") or []
            if not uid or (e.get("involvedObject") or {}).get("uid") in (None, "", uid)
        ]

        def debuggable(container: str) -> bool:
            target = DebugTarget(request.cluster, request.namespace, request.pod, labels, container)
            # Refused only for want of a reason still has limits: the reason comes later.
            return any(decision.limits for _, _, decision in self._decisions(target))

        return PodDetail(
            id=request.id,
            name=str(meta.get("name", "")),
            namespace=request.namespace,
            node=str(spec.get("nodeName") or ""),
            status=pod_status(pod),
            created=str(meta.get("creationTimestamp") or ""),
            labels=key_values(labels),
            annotations=key_values(meta.get("annotations")),
            containers=container_infos(pod, debuggable),
            events=event_rows(mine),
            views=allowed_views(
                self._policy,
                self._principal,
                DebugTarget(request.cluster, request.namespace, request.pod, labels),
                self._now(),
            ),
        )

    async def _open_view(self, request: GetView) -> ViewResult:
        """One view at a time: each moves the session through ``starting_debug``."""
        if self._vault is None:
            raise BackendUnavailable("views need Vault, which this bastion does not use")
        async with self._viewing:
            table = await open_view(
                self._session,
                ViewRequest(
                    cluster=request.cluster,
                    namespace=request.namespace,
                    pod=request.pod,
                    view=request.view,
                    container=request.container,
                    path=request.path,
                ),
                config=self._config,
                vault=self._vault,
                principal=self._principal,
                approvals=self._approvals,
                now=self._now,
            )
        return view_message(request.id, table)

    async def _read_pod(
        self, cluster: str, namespace: str, name: str, view: _View
    ) -> dict[str, Any]:
        _check(name, _POD, "pod")
        pod = await self._read(
            cluster,
            f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}",
            f"read pod {namespace}/{name}",
        )
        if not view.shows((pod.get("metadata") or {}).get("labels") or {}):
            raise PolicyDenied(
                f"pod {namespace}/{name} is hidden: {view.hidden_reason(self._principal.name)}"
            )
        return pod

    def _decisions(self, target: DebugTarget) -> list[tuple[Mode, list[str], Decision]]:
        """(mode, approved images, decision) for each mode some image is approved for."""
        now, policy, principal = self._now(), self._policy, self._principal
        found = []
        for mode in Mode:
            images = approved_images(policy, principal, target, mode, now)
            if images:
                request = DebugRequest(mode, images[0])
                found.append((mode, images, decide(policy, principal, target, request, now)))
        return found

    async def _debug_options(self, request: GetDebugOptions) -> DebugOptions:
        view = self._view(request.cluster, request.namespace)
        pod = await self._read_pod(request.cluster, request.namespace, request.pod, view)
        names = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
        container = request.container or (names[0] if len(names) == 1 else "")
        if not container:
            raise PolicyDenied(
                f"pod {request.namespace}/{request.pod} has several containers "
                f"({', '.join(names)}); choose one"
            )
        if container not in names:
            raise PolicyDenied(
                f"pod {request.namespace}/{request.pod} has no container {container!r}"
            )
        labels = dict((pod.get("metadata") or {}).get("labels") or {})
        decisions = self._decisions(
            DebugTarget(request.cluster, request.namespace, request.pod, labels, container)
        )
        usable = [(mode, images, d.limits) for mode, images, d in decisions if d.limits]
        if not usable:
            reasons = [decision.reason for _, _, decision in decisions]
            raise PolicyDenied(
                reasons[0]
                if reasons
                else f"no grant approves a debug image for {request.namespace}/{request.pod}"
            )
        images: dict[str, None] = {}
        for _, approved, _ in usable:
            images.update(dict.fromkeys(approved))
        return DebugOptions(
            id=request.id,
            images=list(images),
            modes=[str(mode) for mode, _, _ in usable],
            target_container=container,
            max_session_seconds=min(lim.max_session for _, _, lim in usable).total_seconds(),
            reason_required=any(lim.reason_required for _, _, lim in usable),
            recorded=True,
            approval=next((lim.approval.describe() for _, _, lim in usable if lim.approval), ""),
        )

    # ------------------------------------------------------------------ Kubernetes
    async def _read(
        self, cluster: str, path: str, doing: str, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return _object(await self._read_bytes(cluster, path, doing, params), doing)

    async def _read_bytes(
        self, cluster: str, path: str, doing: str, params: dict[str, str] | None = None
    ) -> bytes:
        """GET ``path`` with the cluster's browse credential, replaced once if refused."""
        for last in (False, True):
            access = await self.credential(cluster)
            try:
                return await access.kube.read_raw(path, doing, params)
            except CredentialRefused:
                if last:
                    raise
                await self.replace(cluster)
        raise AssertionError("unreachable")  # pragma: no cover

    async def replace(self, cluster: str) -> None:
        access = self._access.get(cluster)
        if access is not None:
            access.credential.token.drop()

    async def credential(self, cluster_name: str) -> _Access:
        lock = self._locks.setdefault(cluster_name, asyncio.Lock())
        async with lock:
            current = self._access.get(cluster_name)
            clock = self._session.now()
            if (
                current is not None
                and not current.credential.token.dropped
                and current.ends_at - clock > _RENEW_BEFORE
            ):
                return current
            if current is not None:
                del self._access[cluster_name]
                await current.kube.__aexit__(None, None, None)
            access = await self._issue(self._cluster(cluster_name))
            self._access[cluster_name] = access
            return access

    def _cluster(self, name: str) -> Cluster:
        cluster = self._config.cluster(name)
        if cluster is None:
            raise PolicyDenied(f"there is no cluster named {name!r} on this bastion")
        if cluster.browse_vault_role is None:
            raise PolicyDenied(
                f"cluster {name!r} has no browse_vault_role, so the console cannot "
                "list it; ask an administrator, or use 'debug NAMESPACE/POD'"
            )
        return cluster

    async def _issue(self, cluster: Cluster) -> _Access:
        vault = self._vault
        if vault is None:
            raise BackendUnavailable(
                "the console needs Vault to list clusters, and this bastion does not use it",
                hint="configure vault and clusters[].browse_vault_role",
            )
        role = cluster.browse_vault_role
        assert role is not None  # noqa: S101 - _cluster checked it
        session = self._session
        left = session.deadlines.hard_deadline - session.now()
        ttl = max(MIN_KUBE_TTL, timedelta(seconds=left))
        home = cluster.browse_account_namespace
        holder: list[KubeCredential] = []

        async def issue() -> KubeCredential:
            credential = await vault.issue_kube_credential(
                cluster.vault_mount, role, home, ttl, cluster_role_binding=True
            )
            holder.append(credential)
            return credential

        async def revoke() -> str:
            holder[0].token.drop()
            await vault.revoke_lease(holder[0].lease_id)
            return "revoked"

        issued_at = session.now()
        credential: KubeCredential = await session.track(
            "lease",
            {
                "cluster": cluster.name,
                "mount": cluster.vault_mount,
                "role": role,
                "namespace": home,
                "purpose": "browse",
            },
            create=issue,
            cleanup=revoke,
            created_ref=lambda c: {"lease_id": c.lease_id, "service_account": c.service_account},
        )
        await session.record(
            "session.browse_credential_issued",
            outcome="issued",
            cluster=cluster.name,
            vault_role=role,
            service_account=credential.service_account,
            lease_seconds=round(credential.lease_duration.total_seconds()),
        )
        kube = KubeApi(cluster, credential.token, timeout=self._timeout)
        await kube.__aenter__()
        ends = issued_at + credential.lease_duration.total_seconds()
        return _Access(credential, kube, ends)


class _PodWatch:
    """One WatchPods: the pages, then changes until cancelled. ``known`` is the names the
    console has (visible pods), so a re-list can tell it what went away."""

    def __init__(self, browser: Browser, request: WatchPods, reply: Reply, view: _View) -> None:
        self._browser = browser
        self._request = request
        self._reply = reply
        self._view = view
        self._path = f"/api/v1/namespaces/{quote(request.namespace)}/pods"
        self._known: set[str] = set()
        self._batch = _Batch(request.id, reply, browser.send)

    async def run(self) -> None:
        request, browser = self._request, self._browser
        reason = self._view.hidden_reason(browser.user)
        version = ""
        doing = f"list the pods of namespace {request.namespace}"
        async for page in browser.pages(request.cluster, self._path, doing, self._view):
            self._known.update(row.name for row in page.rows)
            version = version or page.version
            # The console gets pages of at most PAGE rows, whatever the API's page size.
            starts = range(0, max(len(page.rows), 1), PAGE)
            for start in starts:
                final = start == starts[-1]
                hidden = page.hidden if final else 0
                message = PodsPage(
                    request.id,
                    page.rows[start : start + PAGE],
                    page.last and final,
                    hidden,
                    reason if hidden else "",
                )
                await browser.send(self._reply, message)
        try:
            await self._follow(version)
        finally:
            self._batch.cancel()

    async def _follow(self, version: str) -> None:
        """Watch from ``version`` until cancelled; a watch too old to resume lists again."""
        while True:
            try:
                version = await self._watch_once(version)
            except WatchExpired:
                version = await self._relist()
            except CredentialRefused:
                await self._browser.replace(self._request.cluster)
            except BackendUnavailable as exc:
                log.info("pod watch interrupted (%s); resuming", exc.message)
                await asyncio.sleep(1.0)

    async def _watch_once(self, version: str) -> str:
        access = await self._browser.credential(self._request.cluster)
        params = {
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        doing = f"watch the pods of namespace {self._request.namespace}"
        async for kind, pod in access.kube.watch(self._path, doing, params):
            meta = pod.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            name = str(meta.get("name", ""))
            if kind == "BOOKMARK" or not name:
                continue
            if kind != "DELETED" and self._view.shows(meta.get("labels") or {}):
                self._known.add(name)
                self._batch.upsert(pod_row(pod))
            elif name in self._known:  # deleted, or its labels now hide it
                self._known.discard(name)
                self._batch.delete(name)
        return version

    async def _relist(self) -> str:
        doing = f"list the pods of namespace {self._request.namespace} again"
        seen: set[str] = set()
        version = ""
        async for page in self._browser.pages(self._request.cluster, self._path, doing, self._view):
            version = version or page.version
            for row in page.rows:
                seen.add(row.name)
                self._batch.upsert(row)
        for name in self._known - seen:
            self._batch.delete(name)
        self._known = seen
        return version


@dataclass(frozen=True)
class _Page:
    """One page of a pod list: the rows policy shows, how many it hides, and where the
    list goes on (``token``, empty on the last page)."""

    rows: list[PodRow]
    hidden: int
    version: str
    token: str

    @property
    def last(self) -> bool:
        return not self.token


def _object(raw: bytes, doing: str) -> dict[str, Any]:
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise BackendUnavailable(
            f"could not {doing}: the cluster's API sent something else than an object",
            hint="see the API server's logs",
        )
    return body


def _read(raw: bytes, doing: str, *, head_only: bool = False) -> PodList:
    try:
        return read_pod_list(raw, head_only=head_only)
    except ValueError as exc:
        raise BackendUnavailable(
            f"could not {doing}: {exc}", hint="see the API server's logs"
        ) from None


def _parse_page(raw: bytes, view: _View, doing: str) -> _Page:
    pods = _read(raw, doing)
    if view.everything:
        rows = [list_row(pod) for pod in pods.pods]
    else:
        rows = [list_row(pod) for pod in pods.pods if view.shows(pod.labels)]
    return _Page(rows, len(pods.pods) - len(rows), pods.version, pods.token)


def _check(value: str, pattern: re.Pattern[str], what: str) -> None:
    if not pattern.fullmatch(value):
        raise PolicyDenied(f"{value[:80]!r} is not a valid {what} name")


class _Batch:
    """Pod changes gathered for :data:`COALESCE` seconds, then sent as one PodsChanged
    (the latest state of each pod wins)."""

    def __init__(
        self,
        watch_id: int,
        reply: Reply,
        send: Callable[[Reply, Message], Awaitable[None]],
    ) -> None:
        self._id = watch_id
        self._reply = reply
        self._send = send
        self._pending: dict[str, PodRow | None] = {}
        self._flush: asyncio.Task[None] | None = None

    def upsert(self, row: PodRow) -> None:
        self._pending[row.name] = row
        self._soon()

    def delete(self, name: str) -> None:
        self._pending[name] = None
        self._soon()

    def _soon(self) -> None:
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(COALESCE)
        while self._pending:
            pending, self._pending = self._pending, {}
            rows = [row for row in pending.values() if row is not None]
            gone = [name for name, row in pending.items() if row is None]
            for start in range(0, max(len(rows), len(gone)), MAX_ITEMS):
                await self._send(
                    self._reply,
                    PodsChanged(
                        self._id, rows[start : start + MAX_ITEMS], gone[start : start + MAX_ITEMS]
                    ),
                )

    def cancel(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
