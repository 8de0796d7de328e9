"""The bastion's Kubernetes API client, for one session's credential.

aiohttp with TLS verified against the cluster's pinned CA (``clusters[].ca_file``); plain
HTTP is refused; the bearer token comes from a :class:`bastion.vault.KubeToken` and is put
only in the request header, never in a URL, a log line or an error. Raw JSON in and out:
the official client's model objects cost about 0.5 ms a pod to build (TOOLS.md) and add
nothing here.

Every call fits the session role's rules (:mod:`bastion.kube_permissions`): pods get, list
and watch; ``pods/ephemeralcontainers`` patch; pods create and delete for copy and toolbox
modes only; :meth:`KubeApi.read_raw` and :meth:`KubeApi.watch` also serve the console's
read-only browse credential (namespaces, pods, events). Every failure is one sentence for the
operator (BackendUnavailable or PolicyDenied), with a hint for the administrator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import orjson

from bastion.config.models import Cluster
from bastion.debug_container import ContainerState, container_names, container_state
from bastion.errors import BackendUnavailable, BastionError, PolicyDenied
from bastion.vault import KubeToken

__all__ = ["DELETE_GRACE_SECONDS", "CredentialRefused", "KubeApi", "WatchExpired"]

_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_JSON = "application/json"
_STRATEGIC = "application/strategic-merge-patch+json"
# Long enough for the kubelet to stop the shell cleanly, short enough that a wipe is quick.
DELETE_GRACE_SECONDS = 1
_MAX_WATCH_LINE = 8 * 1024 * 1024  # one pod as JSON; far above any real one


class CredentialRefused(BackendUnavailable):
    """401: the token is no longer valid (its lease was revoked, it expired, or its service
    account was deleted). A caller that can get a new credential may try once more."""


class WatchExpired(Exception):
    """410: the resourceVersion to watch from is too old: list again."""


class KubeApi:
    """Requests to one cluster with one session's token. Use ``async with``."""

    def __init__(self, cluster: Cluster, token: KubeToken, *, timeout: float = 10.0) -> None:
        if not cluster.api_url.startswith("https://"):
            raise BackendUnavailable(
                f"cluster {cluster.name}'s API address is not https://; the bastion refuses "
                "plain HTTP",
                hint="set clusters[].api_url to the API server's https:// address",
            )
        self._cluster = cluster
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeApi:
        context = ssl.create_default_context(cafile=str(self._cluster.ca_file))
        self._session = aiohttp.ClientSession(
            base_url=self._cluster.api_url,
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=self._timeout,
            trust_env=False,  # no proxy or CA bundle from the environment
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def http(self) -> aiohttp.ClientSession:
        """The open HTTP session (pinned CA, cluster base URL), for the attach websocket.
        It carries no credential: callers add the Authorization header themselves."""
        if self._session is None:
            raise RuntimeError("KubeApi is used outside 'async with'")
        return self._session

    # ------------------------------------------------------------------ pods
    async def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        path = _pod_path(namespace, name)
        _, pod = await self._call("GET", path, f"read pod {namespace}/{name}")
        return pod

    async def read_log(
        self, namespace: str, pod: str, container: str, *, tail_lines: int, limit_bytes: int
    ) -> str:
        """The container's last ``tail_lines`` log lines, at most ``limit_bytes`` (the API
        server stops there), decoded leniently: a log is untrusted bytes."""
        _check_names(namespace, pod)
        _check_label(container, "container")
        raw = await self.read_raw(
            _pod_path(namespace, pod) + "/log",
            f"read the log of container {container} in pod {namespace}/{pod}",
            {"container": container, "tailLines": str(tail_lines), "limitBytes": str(limit_bytes)},
        )
        return raw[:limit_bytes].decode("utf-8", errors="replace")

    async def add_ephemeral_container(
        self, namespace: str, pod: str, container: dict[str, Any]
    ) -> dict[str, Any]:
        """Add ``container`` to the pod's ``spec.ephemeralContainers``; the updated pod.

        A strategic merge patch merges the list by name, so the containers already there
        are kept without sending them (and without a read-modify-write race).
        """
        name = str(container.get("name", ""))
        _check_label(name, "container")
        _, updated = await self._call(
            "PATCH",
            _pod_path(namespace, pod) + "/ephemeralcontainers",
            f"add debug container {name} to pod {namespace}/{pod}",
            body={"spec": {"ephemeralContainers": [container]}},
            content_type=_STRATEGIC,
        )
        return updated

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.get("metadata") or {}
        name = str(meta.get("name", ""))
        _check_names(namespace, name)
        if meta.get("namespace", namespace) != namespace:
            raise ValueError(f"pod {name} is for namespace {meta['namespace']}, not {namespace}")
        _, created = await self._call(
            "POST",
            f"/api/v1/namespaces/{quote(namespace)}/pods",
            f"create pod {namespace}/{name}",
            body=body,
            accept=(200, 201, 202),
        )
        return created

    async def delete_pod(self, namespace: str, name: str, *, uid: str | None = None) -> str:
        """Delete a pod the session created: ``"deleted"``, or ``"already gone"`` when it no
        longer exists. With ``uid``, a different pod that took the name since is left alone
        (and the session's own counts as already gone)."""
        options: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": DELETE_GRACE_SECONDS,
        }
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        status, _ = await self._call(
            "DELETE",
            _pod_path(namespace, name),
            f"delete pod {namespace}/{name}",
            body=options,
            accept=(200, 202, 404, 409) if uid is not None else (200, 202, 404),
        )
        return "deleted" if status in (200, 202) else "already gone"

    async def wait_for_container(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        until: Literal["running", "terminated"],
        timeout: float,  # noqa: ASYNC109 - bounds reads and watches together, named in the error
    ) -> ContainerState:
        """Follow the pod until ``container`` is ``until``, and return its state then.

        Reads the pod, then watches it from that read's resourceVersion; a watch that ends
        or is too old (410) starts over from a fresh read. A container that terminates while
        it should start, or that cannot start (image pull error, crash loop), is reported
        as one sentence; so is a pod that is deleted meanwhile.
        """
        _check_names(namespace, pod)
        _check_label(container, "container")
        last = ContainerState(container, "unknown")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                while True:
                    current = await self.get_pod(namespace, pod)
                    last = container_state(current, container)
                    if _settled(current, namespace, container, until):
                        return last
                    version = str((current.get("metadata") or {}).get("resourceVersion", ""))
                    remaining = deadline - loop.time()
                    watch = self._watch_pod(namespace, pod, version, remaining)
                    async with contextlib.aclosing(watch) as changes:  # closes the stream
                        async for changed in changes:
                            last = container_state(changed, container)
                            if _settled(changed, namespace, container, until):
                                return last
        except TimeoutError:
            raise BackendUnavailable(
                f"debug container {container} in pod {namespace}/{pod} was not {until} "
                f"within {timeout:g} seconds (last seen: {last.describe()})",
                hint="kubectl describe pod shows the pod's events (scheduling, image pulls)",
            ) from None

    async def _watch_pod(
        self, namespace: str, pod: str, version: str, remaining: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The pod as each change leaves it, watched from ``version``; ends when the watch
        does or when ``version`` is too old to watch from (410), so the caller reads again."""
        doing = f"watch pod {namespace}/{pod}"
        params = {
            "watch": "true",
            "fieldSelector": f"metadata.name={pod}",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, math.ceil(remaining))),
        }
        # The session's total timeout would cut the stream; the caller's deadline bounds it.
        streaming = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total)
        try:
            async with self.http.get(
                f"/api/v1/namespaces/{quote(namespace)}/pods",
                params=params,
                headers=self._headers(None),
                allow_redirects=False,
                timeout=streaming,
            ) as answer:
                if answer.status == 410:
                    return
                if answer.status != 200:
                    status = answer.status
                    payload = await answer.json(content_type=None) if status < 500 else None
                    raise _refusal(status, payload, doing, self._cluster.name)
                async for event in _events(answer, doing, self._cluster.name):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            return
                        code = int(obj.get("code") or 500)
                        raise _refusal(code, obj, doing, self._cluster.name)
                    if kind == "DELETED":
                        raise PolicyDenied(
                            f"pod {namespace}/{pod} was deleted while the bastion waited for it"
                        )
                    if kind in ("ADDED", "MODIFIED"):
                        yield obj
        except (aiohttp.ClientSSLError, ssl.SSLError):
            raise self._untrusted(doing) from None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise self._silent(doing, exc) from None

    # ------------------------------------------------------------------ raw reads
    async def read_raw(
        self, path: str, doing: str, params: Mapping[str, str] | None = None
    ) -> bytes:
        """GET ``path``: the body as it came, for a fast JSON parser (a page of 500 pods is
        about 1 MB, and building objects for it is what costs)."""
        try:
            async with self.http.get(
                path, params=params, headers=self._headers(None), allow_redirects=False
            ) as answer:
                status = answer.status
                body = await answer.read()
        except (aiohttp.ClientSSLError, ssl.SSLError):
            raise self._untrusted(doing) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._silent(doing, exc) from None
        if status == 200:
            return body
        payload: Any = None
        if status < 500:
            with contextlib.suppress(ValueError):
                payload = orjson.loads(body)
        raise _refusal(status, payload, doing, self._cluster.name)

    async def watch(
        self, path: str, doing: str, params: Mapping[str, str]
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """(type, object) for each event of a watch on ``path`` (``watch=true`` is added);
        ends when the server ends the stream; WatchExpired when the resourceVersion is too
        old. Not bounded by the client timeout: pass ``timeoutSeconds``."""
        streaming = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total)
        try:
            async with self.http.get(
                path,
                params={**params, "watch": "true"},
                headers=self._headers(None),
                allow_redirects=False,
                timeout=streaming,
            ) as answer:
                if answer.status == 410:
                    raise WatchExpired(doing)
                if answer.status != 200:
                    status = answer.status
                    payload = await answer.json(content_type=None) if status < 500 else None
                    raise _refusal(status, payload, doing, self._cluster.name)
                async for event in _events(answer, doing, self._cluster.name):
                    kind, obj = str(event.get("type")), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise WatchExpired(doing)
                        raise _refusal(int(obj.get("code") or 500), obj, doing, self._cluster.name)
                    yield kind, obj
        except (aiohttp.ClientSSLError, ssl.SSLError):
            raise self._untrusted(doing) from None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise self._silent(doing, exc) from None

    # ------------------------------------------------------------------ HTTP
    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._token.reveal()}", "Accept": _JSON}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    async def _call(
        self,
        method: str,
        path: str,
        doing: str,
        *,
        body: dict[str, Any] | None = None,
        content_type: str = _JSON,
        accept: Collection[int] = (200,),
    ) -> tuple[int, dict[str, Any]]:
        session = self.http
        data = json.dumps(body).encode() if body is not None else None
        headers = self._headers(content_type if data is not None else None)
        try:
            async with session.request(
                method, path, headers=headers, data=data, allow_redirects=False
            ) as answer:
                status = answer.status
                payload: Any = await answer.json(content_type=None) if status < 500 else None
        except (aiohttp.ClientSSLError, ssl.SSLError):
            raise self._untrusted(doing) from None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise self._silent(doing, exc) from None
        if status in accept and isinstance(payload, dict):
            return status, payload
        raise _refusal(status, payload, doing, self._cluster.name)

    def _untrusted(self, doing: str) -> BackendUnavailable:
        cluster = self._cluster.name
        return BackendUnavailable(
            f"could not {doing}: cluster {cluster}'s API certificate is not signed by its "
            "configured CA",
            hint=f"check clusters[{cluster}].ca_file",
        )

    def _silent(self, doing: str, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"could not {doing}: cluster {self._cluster.name}'s API did not answer "
            f"({type(exc).__name__})",
            hint="check that the API server is up and reachable from the bastion",
        )


async def _events(
    answer: aiohttp.ClientResponse, doing: str, cluster: str
) -> AsyncIterator[dict[str, Any]]:
    """The watch stream's events, one JSON object a line; lines are split here rather than
    by aiohttp's readline, whose limit (twice ``read_bufsize``: 512 KiB) a pod with a large
    spec passes (etcd keeps objects up to 1.5 MiB)."""
    parts: list[bytes] = []  # the line so far, joined once it is complete
    size = 0
    async for chunk in answer.content.iter_any():
        rest = chunk
        while rest:
            head, newline, rest = rest.partition(b"\n")
            parts.append(head)
            size += len(head)
            if not newline:
                break
            line = b"".join(parts)
            parts.clear()
            size = 0
            event = orjson.loads(line) if line.strip() else None
            if isinstance(event, dict):
                yield event
        if size > _MAX_WATCH_LINE:
            raise BackendUnavailable(
                f"could not {doing}: cluster {cluster}'s API sent an event larger than "
                f"{_MAX_WATCH_LINE} bytes",
                hint="see the API server's logs",
            )


def _settled(
    pod: dict[str, Any], namespace: str, container: str, until: Literal["running", "terminated"]
) -> bool:
    """True once ``container`` is ``until``; raises when it never will be."""
    name = (pod.get("metadata") or {}).get("name", "?")
    if container not in container_names(pod):
        raise PolicyDenied(f"pod {namespace}/{name} has no container {container!r}")
    state = container_state(pod, container)
    if state.state == until:
        return True
    if state.state == "terminated":
        raise BackendUnavailable(
            f"debug container {container} in pod {namespace}/{name} ended before it was "
            f"running: {state.describe()}",
            hint="kubectl logs with --container shows what it printed",
        )
    if state.blocked:
        raise BackendUnavailable(
            f"debug container {container} in pod {namespace}/{name} cannot start: "
            f"{state.describe()}",
            hint="check that the image exists and that the cluster's nodes can pull it",
        )
    return False


def _pod_path(namespace: str, name: str) -> str:
    _check_names(namespace, name)
    return f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}"


def _check_names(namespace: str, pod: str) -> None:
    for value, what in ((namespace, "namespace"), (pod, "pod")):
        if not _NAME.fullmatch(value):
            raise PolicyDenied(f"{value!r} is not a valid {what} name")


def _check_label(value: str, what: str) -> None:
    if not _LABEL.fullmatch(value):
        raise PolicyDenied(f"{value!r} is not a valid {what} name")


def _causes(body: dict[str, Any]) -> str:
    causes = (body.get("details") or {}).get("causes") or []
    parts = [
        f"{c.get('field')}: {c.get('message')}" if c.get("field") else str(c.get("message"))
        for c in causes
        if isinstance(c, dict)
    ]
    text = "; ".join(parts) or str(body.get("message") or "no reason given")
    return text if len(text) <= 300 else text[:299] + "…"


def _refusal(status: int, body: Any, doing: str, cluster: str) -> BastionError:
    """The one place an API status becomes an operator's sentence."""
    answer = body if isinstance(body, dict) else {}
    message = str(answer.get("message") or "")
    if status == 404:
        return PolicyDenied(f"could not {doing}: it does not exist (any more)")
    if status in (401, 403):
        refused = CredentialRefused if status == 401 else BackendUnavailable
        return refused(
            f"could not {doing}: the session's credential was refused ({status})",
            hint="the Vault role's Kubernetes rules must allow what debug sessions need "
            "(bastion.kube_permissions); " + message[:200],
        )
    if status == 409 and answer.get("reason") == "AlreadyExists":
        return PolicyDenied(f"could not {doing}: it already exists")
    if status == 409:
        return PolicyDenied(f"could not {doing}: it changed meanwhile; try again")
    if status == 422:
        return PolicyDenied(
            f"could not {doing}: the cluster refused it as invalid ({_causes(answer)})"
        )
    return BackendUnavailable(
        f"could not {doing}: cluster {cluster}'s API answered {status}",
        hint=message[:200] or "see the API server's logs",
    )
