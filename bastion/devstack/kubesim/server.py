"""kubesim's HTTPS API: authentication, RBAC, routing and the generic REST verbs.

Paths, verbs, status codes and error bodies follow the Kubernetes API conventions closely
enough for unmodified clients (the official Python client, client-go inside OpenBao):

* ``/api/v1/...`` and ``/apis/{group}/{version}/...`` with namespaced and cluster-scoped
  resources, subresources, ``watch``, ``labelSelector``/``fieldSelector``, ``limit``/
  ``continue``;
* request bodies as JSON or as Kubernetes protobuf (``k8s\\0`` envelope), responses as JSON;
* errors as ``Status`` objects (``401`` unauthenticated, ``403`` with the RBAC wording,
  ``404``, ``409``, ``422`` with causes, ``415``).

Pod behaviour (containers as processes, ephemeral containers, attach and exec) lives in
:mod:`bastion.devstack.kubesim.pods`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from bastion.devstack.kubesim import protobuf
from bastion.devstack.kubesim.errors import ApiError
from bastion.devstack.kubesim.patch import JSON_MERGE, JSON_PATCH, STRATEGIC, apply_patch
from bastion.devstack.kubesim.rbac import Attributes, Authorizer, UserInfo
from bastion.devstack.kubesim.selectors import build_predicate
from bastion.devstack.kubesim.store import RESOURCES, ResourceType, Store, now_rfc3339
from bastion.devstack.kubesim.tokens import ISSUER, TokenSigner
from bastion.devstack.kubesim.validation import validate_object

__all__ = ["ApiServer", "RequestInfo"]

log = logging.getLogger("kubesim")

JSON = "application/json"
ADMIN_USER = UserInfo("kubesim-admin", ("system:masters", "system:authenticated"))
MIN_TOKEN_SECONDS = 600
_WATCH_POLL = 1.0  # seconds between checks that a quiet watch's client is still there
DEFAULT_TOKEN_SECONDS = 3600
VERSION = {
    "major": "1",
    "minor": "35",
    "gitVersion": "v1.35.0-kubesim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-12-17T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class RequestInfo:
    """What a request is about, parsed from its path (the API server's RequestInfo)."""

    resource: ResourceType
    namespace: str
    name: str
    subresource: str
    verb: str


@dataclass
class ApiServer:
    store: Store
    signer: TokenSigner
    admin_token: str
    authorizer: Authorizer = field(init=False)
    # Hooks for pod behaviour: (info, request, user) → response, by subresource.
    pod_handlers: dict[str, Callable[..., Awaitable[web.StreamResponse]]] = field(
        default_factory=dict
    )
    # Called after a pod is created / before it is deleted (containers as processes).
    on_pod_created: Callable[[dict[str, Any]], None] | None = None
    on_pod_deleting: Callable[[dict[str, Any], int], Awaitable[None]] | None = None
    # Observers of every request and response (the contract tests record them).
    observers: list[Callable[[str, str, int, str, bytes], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.authorizer = Authorizer(self.store)

    # ------------------------------------------------------------------ application
    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._errors], client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _json(exc.status(), exc.code)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("kubesim: internal error on %s %s", request.method, request.path)
            response = _json(ApiError(500, "kubesim internal error").status(), 500)
        if isinstance(response, web.Response) and self.observers:
            body = response.body if isinstance(response.body, bytes) else b""
            for observe in self.observers:
                observe(
                    request.method,
                    request.path_qs,
                    response.status,
                    response.content_type,
                    body,
                )
        return response

    # ------------------------------------------------------------------ authentication
    def authenticate(self, request: web.Request) -> UserInfo:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "Unauthorized")
        if token == self.admin_token:
            return ADMIN_USER
        claims = self.signer.verify(token.strip())
        if claims is None:
            raise ApiError(401, "Unauthorized")
        sa_type = RESOURCES[("", "serviceaccounts")]
        if not self.store.exists(sa_type, claims.namespace, claims.name):
            raise ApiError(401, "Unauthorized")
        account = self.store.get(sa_type, claims.namespace, claims.name)
        if account["metadata"]["uid"] != claims.uid:
            raise ApiError(401, "Unauthorized")
        return UserInfo.service_account(claims.namespace, claims.name, claims.uid)

    def authorize(self, user: UserInfo, attrs: Attributes) -> None:
        if not self.authorizer.allowed(user, attrs):
            raise ApiError(
                403,
                self.authorizer.forbidden_message(user, attrs),
                details={
                    "name": attrs.name,
                    "group": attrs.group,
                    "kind": attrs.combined_resource,
                },
            )

    # ------------------------------------------------------------------ routing
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        user = self.authenticate(request)
        parts = [p for p in request.path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis") or _is_discovery(parts):
            return self._non_resource(request, user, parts)
        info = self._request_info(request, parts)
        attrs = Attributes(
            verb=info.verb,
            group=info.resource.group,
            resource=info.resource.plural,
            subresource=info.subresource,
            namespace=info.namespace,
            name=info.name,
        )
        if info.subresource in ("attach", "exec"):
            # A websocket upgrade is a GET, but it starts something: both verbs are needed.
            self.authorize(user, attrs)
            self.authorize(
                user, Attributes("create", "", "pods", info.subresource, info.namespace, info.name)
            )
        else:
            self.authorize(user, attrs)
        return await self._handle(request, user, info)

    def _request_info(self, request: web.Request, parts: list[str]) -> RequestInfo:
        if parts[0] == "api":
            group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
        else:
            if len(parts) < 3:
                raise _not_found()
            group, version, rest = parts[1], parts[2], parts[3:]
        if version != "v1" or not rest:
            raise _not_found()
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        if len(rest) > 3:
            raise _not_found()
        if plural == "namespaces" and namespace:
            # /api/v1/namespaces/{name}/status and friends: the namespace is the object.
            name, subresource, namespace = namespace, name, ""
        rt = _special_resource(group, plural) or RESOURCES.get((group, plural))
        if rt is None:
            raise _not_found()
        if namespace and not rt.namespaced:
            raise _not_found()
        verb = _verb(request, bool(name))
        return RequestInfo(rt, namespace, name, subresource, verb)

    def _non_resource(
        self, request: web.Request, user: UserInfo, parts: list[str]
    ) -> web.StreamResponse:
        path = "/" + "/".join(parts)
        verb = {"GET": "get", "HEAD": "get", "POST": "post"}.get(request.method, "get")
        self.authorize(user, Attributes(verb=verb, path=path))
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok", content_type="text/plain")
        if path == "/version":
            return _json(VERSION)
        document = _discovery(parts)
        if document is None:
            raise _not_found()
        return _json(document)

    async def _handle(
        self, request: web.Request, user: UserInfo, info: RequestInfo
    ) -> web.StreamResponse:
        rt = info.resource
        if rt.kind == "SelfSubjectAccessReview":
            return await self._self_subject_access_review(request, user)
        if info.subresource:
            return await self._subresource(request, user, info)
        match info.verb:
            case "list":
                return self._list(request, info)
            case "watch":
                return await self._watch(request, info)
            case "get":
                return _raw(self.store.get_raw(rt, info.namespace, info.name))
            case "create":
                return await self._create(request, user, info)
            case "update":
                return await self._update(request, user, info)
            case "patch":
                return await self._patch(request, user, info)
            case "delete":
                return await self._delete(request, info)
            case "deletecollection":
                raise ApiError(
                    405,
                    "the server does not allow this method on the requested resource",
                    reason="MethodNotAllowed",
                )
        raise ApiError(
            405,
            "the server does not allow this method on the requested resource",
            reason="MethodNotAllowed",
        )

    async def _subresource(
        self, request: web.Request, user: UserInfo, info: RequestInfo
    ) -> web.StreamResponse:
        rt = info.resource
        if rt.plural == "serviceaccounts" and info.subresource == "token":
            if info.verb != "create":
                raise _method_not_allowed()
            return await self._token_request(request, info)
        if rt.plural == "pods" and info.subresource in self.pod_handlers:
            return await self.pod_handlers[info.subresource](request, user, info)
        if info.subresource == "status" and info.verb == "get":
            return _raw(self.store.get_raw(rt, info.namespace, info.name))
        raise _not_found()

    # ------------------------------------------------------------------ bodies
    async def read_body(self, request: web.Request) -> Any:
        raw = await request.read()
        # No Content-Type (the Python client's DELETE bodies): JSON, as the API server assumes.
        media = request.content_type if "Content-Type" in request.headers else JSON
        if not raw.strip():
            return None
        if media == protobuf.PROTOBUF:
            try:
                return protobuf.decode_body(raw)
            except protobuf.ProtobufError as exc:
                raise ApiError(
                    400, f"the body of the request could not be decoded: {exc}"
                ) from None
        if media in (JSON, JSON_PATCH, JSON_MERGE, STRATEGIC, "") or media.endswith("+json"):
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ApiError(
                    400, f"the body of the request could not be decoded: {exc}"
                ) from None
        raise ApiError(
            415,
            f"the body of the request was in an unknown format ({media}) - accepted media "
            f"types include: {JSON}, {protobuf.PROTOBUF}",
            reason="UnsupportedMediaType",
        )

    def _check_kind(self, rt: ResourceType, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, f"expected a {rt.kind} object in the request body")
        kind = body.get("kind")
        version = body.get("apiVersion")
        if (kind and kind != rt.kind) or (version and version != rt.api_version):
            raise ApiError(
                400,
                f"the API version in the data ({version}) does not match the expected API "
                f"version ({rt.api_version})"
                if version != rt.api_version
                else f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})",
            )
        return body

    # ------------------------------------------------------------------ verbs
    def _list(self, request: web.Request, info: RequestInfo) -> web.Response:
        rt = info.resource
        predicate = build_predicate(
            rt.plural, request.query.get("labelSelector"), request.query.get("fieldSelector")
        )
        limit = _int_param(request, "limit", 0)
        page = self.store.list(
            rt,
            info.namespace or None,
            predicate,
            limit=limit,
            continue_token=request.query.get("continue") or None,
        )
        meta: dict[str, Any] = {"resourceVersion": str(page.resource_version)}
        if page.continue_token:
            meta["continue"] = page.continue_token
            meta["remainingItemCount"] = page.remaining
        head = orjson.dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
        body = head[:-1] + b',"items":[' + b",".join(page.items) + b"]}"
        return _raw(body)

    async def _watch(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        rt = info.resource
        predicate = build_predicate(
            rt.plural, request.query.get("labelSelector"), request.query.get("fieldSelector")
        )
        accept = predicate or (lambda _obj: True)
        namespace = info.namespace or None
        since_text = request.query.get("resourceVersion", "")
        initial: list[bytes] = []
        if info.name:
            accept = _named(info.name, accept)
        if since_text in ("", "0"):
            page = self.store.list(rt, namespace, accept)
            initial = page.items
            since = page.resource_version
        else:
            since = _parse_rv(since_text)
        watch = self.store.watch(rt, namespace, accept, since)
        response = web.StreamResponse(
            headers={"Content-Type": JSON, "Transfer-Encoding": "chunked"}
        )
        timeout = _int_param(request, "timeoutSeconds", 0) or None
        try:
            await response.prepare(request)
            for raw in initial:
                await response.write(b'{"type":"ADDED","object":' + raw + b"}\n")
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        event = await asyncio.wait_for(watch.queue.get(), _WATCH_POLL)
                    except TimeoutError:
                        # aiohttp does not cancel a handler whose client left: a watch with
                        # nothing to say would hold the connection (and kubesim's stop) open.
                        if request.transport is None or request.transport.is_closing():
                            break
                        continue
                    if event is None:
                        if watch.overflowed:
                            expired = ApiError(
                                410,
                                "too old resource version: the watch fell too far behind",
                                reason="Expired",
                            )
                            await response.write(
                                b'{"type":"ERROR","object":'
                                + orjson.dumps(expired.status())
                                + b"}\n"
                            )
                        break
                    await response.write(
                        b'{"type":"' + event.type.encode() + b'","object":' + event.raw + b"}\n"
                    )
        except (TimeoutError, ConnectionResetError):
            pass
        finally:
            self.store.stop_watch(watch)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _create(
        self, request: web.Request, user: UserInfo, info: RequestInfo
    ) -> web.Response:
        rt = info.resource
        if info.name:
            raise _method_not_allowed()
        body = self._check_kind(rt, await self.read_body(request))
        meta = body.setdefault("metadata", {})
        if rt.namespaced and meta.get("namespace") not in (None, "", info.namespace):
            raise ApiError(
                400,
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        _apply_defaults(rt, body)
        self._validate(rt, body)
        self._prevent_escalation(user, rt, info.namespace, body)
        if rt.kind == "Pod":
            _default_pod(body)
        if _dry_run(request):
            return _json(body, 201)
        created = self.store.create(rt, info.namespace, body)
        if rt.kind == "Pod" and self.on_pod_created is not None:
            self.on_pod_created(created)
        return _raw(self.store.get_raw(rt, info.namespace, created["metadata"]["name"]), 201)

    async def _update(
        self, request: web.Request, user: UserInfo, info: RequestInfo
    ) -> web.Response:
        rt = info.resource
        body = self._check_kind(rt, await self.read_body(request))
        return self._store_update(request, user, info, body)

    async def _patch(self, request: web.Request, user: UserInfo, info: RequestInfo) -> web.Response:
        rt = info.resource
        patch = await self.read_body(request)
        current = self.store.get(rt, info.namespace, info.name)
        patched = apply_patch(current, request.content_type, patch)
        return self._store_update(request, user, info, patched)

    def _store_update(
        self, request: web.Request, user: UserInfo, info: RequestInfo, body: dict[str, Any]
    ) -> web.Response:
        rt = info.resource
        current = self.store.get(rt, info.namespace, info.name)
        if rt.kind in ("RoleBinding", "ClusterRoleBinding") and body.get("roleRef") != current.get(
            "roleRef"
        ):
            raise ApiError.invalid(
                rt.kind,
                info.name,
                [("roleRef", "FieldValueInvalid", "Invalid value: cannot change roleRef")],
                rt.group,
            )
        if rt.kind == "Pod":
            # Only metadata (labels, annotations) may change through the main resource here;
            # containers change through pods/ephemeralcontainers, status through the runtime.
            kept = dict(current)
            kept["metadata"] = {
                **current["metadata"],
                **{
                    k: v
                    for k, v in body.get("metadata", {}).items()
                    if k in ("labels", "annotations", "resourceVersion")
                },
            }
            if body.get("spec") != current.get("spec"):
                raise ApiError.invalid(
                    "Pod",
                    info.name,
                    [
                        (
                            "spec",
                            "FieldValueForbidden",
                            "Forbidden: pod updates may not change fields other than "
                            "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                            "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions "
                            "to existing tolerations), `spec.terminationGracePeriodSeconds` "
                            "(allow it to be set to 1 if it was previously negative)",
                        )
                    ],
                )
            body = kept
        self._validate(rt, body)
        self._prevent_escalation(user, rt, info.namespace, body)
        if _dry_run(request):
            return _json(body)
        self.store.update(rt, info.namespace, info.name, body)
        return _raw(self.store.get_raw(rt, info.namespace, info.name))

    async def _delete(self, request: web.Request, info: RequestInfo) -> web.Response:
        rt = info.resource
        options: dict[str, Any] = {}
        if request.can_read_body:
            body = await self.read_body(request)
            if isinstance(body, dict):
                options = body
        current = self.store.get(rt, info.namespace, info.name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
            raise ApiError.conflict(
                rt.group,
                rt.plural,
                info.name,
                f"Precondition failed: UID in precondition: {pre['uid']}, "
                f"UID in object meta: {current['metadata']['uid']}",
            )
        if _dry_run(request) or options.get("dryRun"):
            return _json(current)
        if rt.kind == "Namespace":
            return await self._delete_namespace(info.name)
        if rt.kind == "Pod":
            grace = options.get("gracePeriodSeconds")
            if grace is None:
                grace = _int_param(request, "gracePeriodSeconds", -1)
            if grace < 0:
                grace = int(current["spec"].get("terminationGracePeriodSeconds", 30))
            return await self._delete_pod(info, current, grace)
        deleted = self.store.delete(rt, info.namespace, info.name)
        if not rt.group:
            # The core group answers with the deleted object, RBAC with a Success Status.
            return _json(deleted)
        return _success(info.name, rt.group, rt.plural, deleted["metadata"]["uid"])

    async def _delete_pod(
        self, info: RequestInfo, current: dict[str, Any], grace: int
    ) -> web.Response:
        rt = info.resource
        if grace > 0 and "deletionTimestamp" not in current["metadata"]:
            marked = dict(current)
            marked["metadata"] = {
                **current["metadata"],
                "deletionTimestamp": now_rfc3339(),
                "deletionGracePeriodSeconds": grace,
            }
            self.store.update(rt, info.namespace, info.name, marked)
            response = self.store.get_raw(rt, info.namespace, info.name)
            asyncio.get_running_loop().create_task(self._finish_pod_deletion(info, grace))
            return _raw(response)
        await self._finish_pod_deletion(info, 0)
        return _json(current)

    async def _finish_pod_deletion(self, info: RequestInfo, grace: int) -> None:
        rt = info.resource
        if not self.store.exists(rt, info.namespace, info.name):
            return
        pod = self.store.get(rt, info.namespace, info.name)
        if self.on_pod_deleting is not None:
            await self.on_pod_deleting(pod, grace)
        with contextlib.suppress(ApiError):
            self.store.delete(rt, info.namespace, info.name)

    async def _delete_namespace(self, name: str) -> web.Response:
        ns_type = RESOURCES[("", "namespaces")]
        namespace = self.store.get(ns_type, "", name)
        pod_type = RESOURCES[("", "pods")]
        if self.on_pod_deleting is not None:
            # Pods' processes end with their namespace, as their containers would.
            for pod in list(self.store.items(pod_type, name)):
                await self.on_pod_deleting(pod, 0)
        for rt in RESOURCES.values():
            if rt.namespaced:
                for obj in list(self.store.items(rt, name)):
                    with contextlib.suppress(ApiError):
                        self.store.delete(rt, name, obj["metadata"]["name"])
        self.store.delete(ns_type, "", name)
        # The OpenAPI document gives a Status for a namespace delete, not the Namespace.
        return _success(name, "", "namespaces", namespace["metadata"]["uid"])

    # ------------------------------------------------------------------ special resources
    async def _token_request(self, request: web.Request, info: RequestInfo) -> web.Response:
        sa_type = info.resource
        account = self.store.get(sa_type, info.namespace, info.name)
        body = await self.read_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "expected a TokenRequest object in the request body")
        spec = dict(body.get("spec") or {})
        seconds = int(spec.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
        if seconds < MIN_TOKEN_SECONDS:
            raise ApiError.invalid(
                "TokenRequest",
                "",
                [
                    (
                        "spec.expirationSeconds",
                        "FieldValueInvalid",
                        f"Invalid value: {seconds}: may not specify a duration less than 10 "
                        "minutes",
                    )
                ],
                "authentication.k8s.io",
            )
        if seconds > 2**32:
            raise ApiError.invalid(
                "TokenRequest",
                "",
                [
                    (
                        "spec.expirationSeconds",
                        "FieldValueTooLong",
                        f"Invalid value: {seconds}: may not specify a duration larger than 2^32 "
                        "seconds",
                    )
                ],
                "authentication.k8s.io",
            )
        audiences = tuple(spec.get("audiences") or (ISSUER,))
        token, expires = self.signer.issue(
            namespace=info.namespace,
            name=info.name,
            uid=account["metadata"]["uid"],
            expiration_seconds=seconds,
            audiences=audiences,
        )
        spec["audiences"] = list(audiences)
        spec["expirationSeconds"] = seconds
        spec.setdefault("boundObjectRef", None)
        if spec["boundObjectRef"] is None:
            del spec["boundObjectRef"]
        expiry = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return _json(
            {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {
                    "name": info.name,
                    "namespace": info.namespace,
                    "creationTimestamp": now_rfc3339(),
                },
                "spec": spec,
                "status": {"token": token, "expirationTimestamp": expiry},
            },
            201,
        )

    async def _self_subject_access_review(
        self, request: web.Request, user: UserInfo
    ) -> web.Response:
        if request.method != "POST":
            raise _method_not_allowed()
        body = await self.read_body(request)
        spec = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise ApiError.invalid(
                "SelfSubjectAccessReview",
                "",
                [("spec", "FieldValueRequired", "Required value")],
                "authorization.k8s.io",
            )
        resource_attrs = spec.get("resourceAttributes")
        non_resource = spec.get("nonResourceAttributes")
        if isinstance(resource_attrs, dict):
            attrs = Attributes(
                verb=resource_attrs.get("verb", ""),
                group=resource_attrs.get("group", ""),
                resource=resource_attrs.get("resource", ""),
                subresource=resource_attrs.get("subresource", ""),
                namespace=resource_attrs.get("namespace", ""),
                name=resource_attrs.get("name", ""),
            )
        elif isinstance(non_resource, dict):
            attrs = Attributes(verb=non_resource.get("verb", ""), path=non_resource.get("path", ""))
        else:
            raise ApiError.invalid(
                "SelfSubjectAccessReview",
                "",
                [
                    (
                        "spec.resourceAttributes",
                        "FieldValueRequired",
                        "Required value: exactly one of nonResourceAttributes or "
                        "resourceAttributes must be specified",
                    )
                ],
                "authorization.k8s.io",
            )
        allowed = self.authorizer.allowed(user, attrs)
        status: dict[str, Any] = {"allowed": allowed}
        if allowed:
            status["reason"] = "RBAC: allowed by kubesim"
        return _json(
            {
                "kind": "SelfSubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": status,
            },
            201,
        )

    # ------------------------------------------------------------------ checks
    def _validate(self, rt: ResourceType, body: dict[str, Any]) -> None:
        causes = validate_object(rt.kind, body)
        if causes:
            name = body.get("metadata", {}).get("name", "")
            raise ApiError.invalid(rt.kind, name, causes, rt.group)

    def _prevent_escalation(
        self, user: UserInfo, rt: ResourceType, namespace: str, body: dict[str, Any]
    ) -> None:
        if rt.kind in ("Role", "ClusterRole"):
            if self.authorizer.allowed(
                user,
                Attributes(
                    "escalate", rt.group, rt.plural, "", namespace, body["metadata"]["name"]
                ),
            ):
                return
            missing = self.authorizer.missing_permissions(user, namespace, body.get("rules") or [])
        elif rt.kind in ("RoleBinding", "ClusterRoleBinding"):
            ref = body["roleRef"]
            plural = "clusterroles" if ref["kind"] == "ClusterRole" else "roles"
            if self.authorizer.allowed(
                user, Attributes("bind", rt.group, plural, "", namespace, ref["name"])
            ):
                return
            rules = self.authorizer.role_rules(ref, namespace)
            missing = self.authorizer.missing_permissions(user, namespace, rules)
        else:
            return
        if missing:
            name = body["metadata"].get("name", "")
            raise ApiError(
                403,
                f'{rt.plural}.{rt.group} "{name}" is forbidden: user "{user.name}" (groups='
                f"{list(user.groups)}) is attempting to grant RBAC permissions not currently "
                f"held:\n" + "\n".join(missing),
                details={"name": name, "group": rt.group, "kind": rt.plural},
            )


# ---------------------------------------------------------------------------- helpers
def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=JSON)


def _success(name: str, group: str, plural: str, uid: str) -> web.Response:
    return _json(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": group, "kind": plural, "uid": uid},
        }
    )


def _raw(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON)


def _not_found() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", details={})


def _method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "the server does not allow this method on the requested resource",
        reason="MethodNotAllowed",
    )


def _named(name: str, accept: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    def predicate(obj: dict[str, Any]) -> bool:
        return bool(obj["metadata"].get("name") == name and accept(obj))

    return predicate


def _dry_run(request: web.Request) -> bool:
    return request.query.get("dryRun") == "All"


def _int_param(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text in (None, ""):
        return default
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, f'invalid value for {name}: "{text}"') from None


def _parse_rv(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, f'invalid resource version: "{text}"') from None


def _verb(request: web.Request, named: bool) -> str:
    method = request.method
    if method == "GET":
        if request.query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if named else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }.get(method, method.lower())


_SSAR = ResourceType(
    "authorization.k8s.io",
    "v1",
    "selfsubjectaccessreviews",
    "SelfSubjectAccessReview",
    namespaced=False,
    verbs=("create",),
)


def _special_resource(group: str, plural: str) -> ResourceType | None:
    if (group, plural) == ("authorization.k8s.io", "selfsubjectaccessreviews"):
        return _SSAR
    return None


def _apply_defaults(rt: ResourceType, body: dict[str, Any]) -> None:
    """What the API server fills in on create, and what it owns regardless of the client."""
    meta = body["metadata"]
    # Protobuf clients send every field, empty ones included: empty means unset.
    for key in [k for k, v in meta.items() if v in ("", None, {}, [])]:
        del meta[key]
    for owned in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
        meta.pop(owned, None)
    if rt.kind in ("RoleBinding", "ClusterRoleBinding"):
        ref = body.get("roleRef")
        if isinstance(ref, dict) and not ref.get("apiGroup"):
            ref["apiGroup"] = "rbac.authorization.k8s.io"
        for subject in body.get("subjects") or []:
            if isinstance(subject, dict) and subject.get("kind") in ("User", "Group"):
                subject.setdefault("apiGroup", "rbac.authorization.k8s.io")


def _default_pod(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("imagePullPolicy", "IfNotPresent")
            container.setdefault("resources", {})
    pod.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})


# ---------------------------------------------------------------------------- discovery
def _is_discovery(parts: list[str]) -> bool:
    if parts[0] == "api":
        return len(parts) <= 2
    return len(parts) <= 3


def _discovery(parts: list[str]) -> dict[str, Any] | None:
    if parts == ["api"]:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}
            ],
        }
    groups = sorted({rt.group for rt in RESOURCES.values() if rt.group} | {_SSAR.group})
    if parts == ["apis"]:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": f"{group}/v1", "version": "v1"},
                }
                for group in groups
            ],
        }
    if parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis" and parts[2] == "v1"):
        group = "" if parts[0] == "api" else parts[1]
        if group and group not in groups:
            return None
        types = [rt for rt in [*RESOURCES.values(), _SSAR] if rt.group == group]
        resources = []
        for rt in types:
            resources.append(
                {
                    "name": rt.plural,
                    "singularName": rt.kind.lower(),
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": list(rt.verbs),
                }
            )
            resources.extend(
                {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": kind,
                    "verbs": list(verbs),
                }
                for sub, kind, verbs in _SUBRESOURCES.get(rt.plural, ())
            )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/v1" if group else "v1",
            "resources": resources,
        }
    return None


_SUBRESOURCES: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "pods": (
        ("attach", "PodAttachOptions", ("create", "get")),
        ("ephemeralcontainers", "Pod", ("get", "patch", "update")),
        ("exec", "PodExecOptions", ("create", "get")),
        ("log", "Pod", ("get",)),
        ("status", "Pod", ("get",)),
    ),
    "serviceaccounts": (("token", "TokenRequest", ("create",)),),
}


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["http/1.1"])
    return context
