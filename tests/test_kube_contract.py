"""Self-tests of kube_contract: the validator that holds kubesim to the official OpenAPI."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kube_contract as kc
import pytest
from aiohttp import web
from kube_contract import (
    STATUS,
    ContractError,
    ResponseLog,
    match_operation,
    record_watch_streams,
    response_recorder,
    schema_for,
    validate,
)

POD = "io.k8s.api.core.v1.Pod"
T0 = "2026-11-28T14:00:00Z"


def make_pod(i: int = 0, namespace: str = "team-a") -> dict[str, Any]:
    """A pod shaped like a real API server's answer (defaults filled in, status populated)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"web-7d4b9c-{i:05d}",
            "generateName": "web-7d4b9c-",
            "namespace": namespace,
            "uid": f"0b7f7d4e-0000-4000-8000-{i:012d}",
            "resourceVersion": str(1000 + i),
            "creationTimestamp": T0,
            "labels": {"app.kubernetes.io/name": "web", "pod-template-hash": "7d4b9c"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d4b9c",
                    "uid": "5e1c0a2b-0000-4000-8000-000000000001",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/web@sha256:" + "ab" * 32,
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [
                        {"name": "DB_HOST", "value": "db"},
                        {
                            "name": "DB_PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "db-creds", "key": "password"}},
                        },
                    ],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                        "limits": {"memory": "128Mi"},
                    },
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                        "periodSeconds": 10,
                        "timeoutSeconds": 1,
                        "successThreshold": 1,
                        "failureThreshold": 3,
                    },
                    "securityContext": {
                        "runAsNonRoot": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "ephemeralContainers": [
                {
                    "name": "debugger-abc12",
                    "image": "registry.example.com/toolbox@sha256:" + "cd" * 32,
                    "targetContainerName": "app",
                    "stdin": True,
                    "tty": True,
                    "securityContext": {"capabilities": {"drop": ["ALL"]}},
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "nodeName": "node-1",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
            ],
            "priority": 0,
        },
        "status": {
            "phase": "Running",
            "hostIP": "10.0.0.1",
            "podIP": "10.1.0.7",
            "podIPs": [{"ip": "10.1.0.7"}],
            "startTime": T0,
            "qosClass": "Burstable",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": T0,
                }
            ],
            "containerStatuses": [
                {
                    "name": "app",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "image": "registry.example.com/web@sha256:" + "ab" * 32,
                    "imageID": "registry.example.com/web@sha256:" + "ab" * 32,
                    "containerID": "containerd://0123456789abcdef",
                    "state": {"running": {"startedAt": T0}},
                    "lastState": {},
                }
            ],
        },
    }


def not_found(what: str = 'pods "nope"') -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"{what} not found",
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"},
        "code": 404,
    }


def token_request() -> dict[str, Any]:
    """A TokenRequest answer as the real API server writes it, nulls included."""
    return {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": "sa", "namespace": "team-a", "creationTimestamp": None},
        "spec": {
            "audiences": ["https://kubernetes.default.svc"],
            "boundObjectRef": None,
            "expirationSeconds": 600,
        },
        "status": {"token": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "expirationTimestamp": T0},
    }


def errors_of(obj: dict[str, Any], schema: str | None = None, *, strict: bool = True) -> list[str]:
    with pytest.raises(ContractError) as caught:
        validate(obj, schema, strict=strict)
    return caught.value.errors


# ---------------------------------------------------------------------------- validate()
def test_a_valid_pod_passes() -> None:
    validate(make_pod())
    validate(make_pod(), POD)


def test_a_misspelled_field_is_named_by_its_json_path() -> None:
    pod = make_pod()
    pod["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    errors = errors_of(pod)
    assert errors == [
        "$.spec.containers[0].imagePullPolicyy: unknown field (no such property in "
        "io.k8s.api.core.v1.Container); did you mean 'imagePullPolicy'?"
    ]
    with pytest.raises(ContractError, match=r"does not match io\.k8s\.api\.core\.v1\.Pod"):
        validate(pod)


def test_the_official_schemas_alone_allow_unknown_fields() -> None:
    pod = make_pod()
    pod["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    validate(pod, strict=False)


def test_wrong_types_and_missing_required_fields_are_named() -> None:
    pod = make_pod()
    pod["status"]["containerStatuses"][0]["restartCount"] = "0"
    del pod["spec"]["containers"][0]["name"]
    pod["metadata"]["labels"]["tier"] = 1
    assert errors_of(pod) == [
        "$.metadata.labels.tier: 1 is not of type 'string'",
        "$.spec.containers[0]: 'name' is a required property",
        "$.status.containerStatuses[0].restartCount: '0' is not of type 'integer'",
    ]


def test_keys_that_are_not_identifiers_are_quoted_in_paths() -> None:
    pod = make_pod()
    pod["metadata"]["labels"]["app.kubernetes.io/name"] = ["web"]
    assert errors_of(pod) == [
        "$.metadata.labels[\"app.kubernetes.io/name\"]: ['web'] is not of type 'string'"
    ]


def test_a_status_validates() -> None:
    validate(not_found(), STATUS)
    validate(not_found())  # picked from apiVersion v1, kind Status
    bad = not_found()
    bad["code"] = "404"
    bad["reson"] = "NotFound"
    assert errors_of(bad) == [
        "$.code: '404' is not of type 'integer'",
        "$.reson: unknown field (no such property in "
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status); did you mean 'reason'?",
    ]


def test_times_must_be_rendered_as_kubernetes_does() -> None:
    pod = make_pod()
    pod["metadata"]["creationTimestamp"] = "2026-11-28T14:00:00+00:00"
    assert errors_of(pod) == [
        "$.metadata.creationTimestamp: '2026-11-28T14:00:00+00:00' is not a metav1.Time as "
        "Kubernetes renders it (2006-01-02T15:04:05Z: UTC, whole seconds)"
    ]
    validate(pod, strict=False)  # still RFC 3339
    pod["metadata"]["creationTimestamp"] = "2026-11-28 14:00:00"
    assert errors_of(pod, strict=False) == [
        "$.metadata.creationTimestamp: '2026-11-28 14:00:00' is not an RFC 3339 date-time"
    ]
    pod["metadata"]["creationTimestamp"] = "2026-02-30T14:00:00Z"  # no such day
    assert len(errors_of(pod, strict=False)) == 1


def test_other_formats_are_checked() -> None:
    pod = make_pod()
    pod["spec"]["containers"][0]["ports"][0]["containerPort"] = 2**31
    pod["spec"]["containers"][0]["resources"]["limits"]["memory"] = "128 MiB"
    assert errors_of(pod) == [
        "$.spec.containers[0].ports[0].containerPort: 2147483648 is not a 32-bit integer",
        "$.spec.containers[0].resources.limits.memory: '128 MiB' is not a resource.Quantity "
        "string (e.g. 100m, 64Mi, 1.5)",
    ]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "a"}}
    assert errors_of(secret) == ["$.data.k: 'a' is not standard base64 with padding"]
    secret["data"]["k"] = "YQ=="
    validate(secret)


def test_int_or_string_accepts_both_and_nothing_else() -> None:
    pod = make_pod()
    probe = pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    probe["port"] = "http"
    validate(pod)
    probe["port"] = 80.5
    assert len(errors_of(pod)) == 1


def test_null_members_count_as_absent() -> None:
    validate(token_request())
    request = token_request()
    request["spec"]["audiences"] = None  # required: a null is as good as missing
    assert errors_of(request) == ["$.spec: 'audiences' is a required property"]


# ---------------------------------------------------------------------------- schema choice
@pytest.mark.parametrize(
    ("api_version", "kind", "schema"),
    [
        ("v1", "Pod", "io.k8s.api.core.v1.Pod"),
        ("v1", "PodList", "io.k8s.api.core.v1.PodList"),
        ("v1", "Status", "io.k8s.apimachinery.pkg.apis.meta.v1.Status"),
        ("v1", "WatchEvent", "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent"),
        ("v1", "ServiceAccount", "io.k8s.api.core.v1.ServiceAccount"),
        ("authentication.k8s.io/v1", "TokenRequest", "io.k8s.api.authentication.v1.TokenRequest"),
        (
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
        ),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", "io.k8s.api.rbac.v1.RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleList", "io.k8s.api.rbac.v1.ClusterRoleList"),
    ],
)
def test_the_schema_is_picked_from_api_version_and_kind(
    api_version: str, kind: str, schema: str
) -> None:
    assert schema_for(api_version, kind) == schema


def test_unknown_kinds_and_schema_names_are_refused_clearly() -> None:
    with pytest.raises(ContractError, match="apiVersion='apps/v1' kind='Deployment'"):
        validate({"apiVersion": "apps/v1", "kind": "Deployment"})
    with pytest.raises(ContractError, match="no apiVersion/kind"):
        validate({"metadata": {}})
    with pytest.raises(ContractError, match=r"did you mean io\.k8s\.api\.core\.v1\.Pod"):
        validate({}, "io.k8s.api.core.v1.Podd")


def test_the_specs_hold_no_rbac_schemas_so_they_are_built_from_the_proto() -> None:
    official = kc._read_json(kc.SPECS / kc.SPEC_FILES[0])
    assert not [n for n in official["components"]["schemas"] if ".rbac." in n]
    assert not [p for p in official["paths"] if "rbac" in p]
    if (kc.SPECS / kc.RBAC_SPEC_FILE).is_file():  # the upstream document, once someone adds it
        assert kc.rbac_schema_source() == kc.RBAC_SPEC_FILE
    else:
        assert kc.rbac_schema_source().endswith("(synthesised)")
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "v-token-gen-1", "namespace": "team-a", "creationTimestamp": T0},
        "subjects": [{"kind": "ServiceAccount", "name": "v-token-gen-1", "namespace": "team-a"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "v-1"},
    }
    validate(binding)
    del binding["roleRef"]["apiGroup"]  # OpenBao sends it empty: the server must default it
    binding["subjects"][0]["nmae"] = "x"
    assert errors_of(binding) == [
        "$.roleRef: 'apiGroup' is a required property",
        "$.subjects[0].nmae: unknown field (no such property in io.k8s.api.rbac.v1.Subject); "
        "did you mean 'name'?",
    ]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "r", "namespace": "team-a"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
    }
    validate(role)


def test_missing_specs_raise_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kc, "SPECS", tmp_path)
    kc._specs.cache_clear()
    try:
        with pytest.raises(
            FileNotFoundError, match=r"beside the repository clone: <parent>/shared/specs"
        ):
            kc._specs()
    finally:
        kc._specs.cache_clear()


# ---------------------------------------------------------------------------- speed, fast path
def test_five_thousand_pods_validate_well_under_a_second() -> None:
    pods = {
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": "9"},
        "items": [make_pod(i) for i in range(5000)],
    }
    validate(pods)  # warm: documents parsed, schemas compiled
    started = time.perf_counter()
    validate(pods)
    assert time.perf_counter() - started < 1.0


def test_a_bad_item_in_a_long_list_is_reported_at_its_index() -> None:
    items = [make_pod(i) for i in range(1000)]
    items[777]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    items[901]["status"]["phase"] = 3
    errors = errors_of({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
    assert errors[0].startswith("$.items[777].spec.containers[0].imagePullPolicyy: unknown field")
    assert errors[1] == "$.items[901].status.phase: 3 is not of type 'string'"


def mutations(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(path, replacement) pairs: wrong types, nulls, renamed keys, bad formats."""
    if isinstance(value, dict):
        for key, member in value.items():
            yield (*path, {"rename": key}), None
            yield from mutations(member, (*path, key))
    elif isinstance(value, list):
        for index, member in enumerate(value):
            yield from mutations(member, (*path, index))
    replacements: list[Any] = [None, [], {}, "1", 1, 1.5, True, "2026-11-28 14:00", "1 Gi"]
    for replacement in replacements:
        if type(replacement) is not type(value) or replacement != value:
            yield path, replacement


def mutated(obj: dict[str, Any], path: tuple[Any, ...], replacement: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    target: Any = out
    for step in path[:-1]:
        target = target[step]
    last = path[-1] if path else None
    if isinstance(last, dict):
        target[last["rename"] + "x"] = target.pop(last["rename"])
    elif path:
        target[last] = replacement
    return out


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(
    ("name", "document"),
    [
        (POD, make_pod()),
        ("io.k8s.api.authentication.v1.TokenRequest", token_request()),
        (STATUS, not_found()),
    ],
)
def test_the_fast_path_agrees_with_jsonschema(
    name: str, document: dict[str, Any], strict: bool
) -> None:
    fast = kc._fast(name, strict)
    reference = kc._validator(name, strict)
    checked = disagreements = 0
    for path, replacement in mutations(document):
        if not path:
            continue
        candidate = mutated(document, path, replacement)
        expected = not any(True for _ in reference.iter_errors(kc._without_nulls(candidate)))
        checked += 1
        if fast(candidate) != expected:
            disagreements += 1
            print("disagree:", path, repr(replacement), "jsonschema says valid:", expected)
    assert checked > 50
    assert disagreements == 0


# ---------------------------------------------------------------------------- path templates
@pytest.mark.parametrize(
    ("method", "path", "template", "operation_id", "schema"),
    [
        (
            "GET",
            "/api/v1/namespaces/team-a/pods?limit=500&labelSelector=app%3Dweb",
            "/api/v1/namespaces/{namespace}/pods",
            "listCoreV1NamespacedPod",
            "io.k8s.api.core.v1.PodList",
        ),
        (
            "GET",
            "/api/v1/pods",
            "/api/v1/pods",
            "listCoreV1PodForAllNamespaces",
            "io.k8s.api.core.v1.PodList",
        ),
        (
            "GET",
            "/api/v1/namespaces/team-a/pods/web-1",
            "/api/v1/namespaces/{namespace}/pods/{name}",
            "readCoreV1NamespacedPod",
            POD,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/team-a/pods/web-1/ephemeralcontainers",
            "/api/v1/namespaces/{namespace}/pods/{name}/ephemeralcontainers",
            "patchCoreV1NamespacedPodEphemeralcontainers",
            POD,
        ),
        (
            "POST",
            "/api/v1/namespaces/team-a/serviceaccounts/bastion/token",
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            "createCoreV1NamespacedServiceAccountToken",
            "io.k8s.api.authentication.v1.TokenRequest",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/team-a/serviceaccounts/bastion",
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
            "deleteCoreV1NamespacedServiceAccount",
            "io.k8s.api.core.v1.ServiceAccount",
        ),
        (
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            "createAuthorizationV1SelfSubjectAccessReview",
            "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
        ),
        (
            "GET",
            "/api/v1/namespaces/team-a",
            "/api/v1/namespaces/{name}",
            "readCoreV1Namespace",
            "io.k8s.api.core.v1.Namespace",
        ),
        (
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
            "createRbacAuthorizationV1NamespacedRole",
            "io.k8s.api.rbac.v1.Role",
        ),
        (
            "DELETE",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/v-1",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}",
            "deleteRbacAuthorizationV1ClusterRoleBinding",
            STATUS,
        ),
    ],
)
def test_request_paths_match_their_operation(
    method: str, path: str, template: str, operation_id: str, schema: str
) -> None:
    op = match_operation(method, path)
    assert op is not None
    assert (op.template, op.operation_id) == (template, operation_id)
    assert schema in op.responses.values()


def test_path_parameters_and_misses() -> None:
    op = match_operation("GET", "/api/v1/namespaces/team-a/pods/web-1/log?container=app")
    assert op is not None
    assert dict(op.params) == {"namespace": "team-a", "name": "web-1"}
    assert op.responses[200] is None  # a string, not an object
    assert match_operation("GET", "/api/v1/namespaces/team-a/widgets") is None
    assert match_operation("PUT", "/api/v1/namespaces/team-a/serviceaccounts/sa/token") is None


# ---------------------------------------------------------------------------- ResponseLog
def encode(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def watch_body(*events: dict[str, Any]) -> bytes:
    return b"".join(encode(e) + b"\n" for e in events)


def test_the_response_log_validates_what_kubesim_sent() -> None:
    log = ResponseLog()
    pod = make_pod()
    pods = {
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": "9"},
        "items": [
            {k: v for k, v in make_pod(i).items() if k not in ("apiVersion", "kind")}
            for i in range(3)
        ],
    }
    json_type = "application/json"
    log.record("GET", "/api/v1/namespaces/team-a/pods?limit=500", 200, json_type, encode(pods))
    log.record("GET", "/api/v1/namespaces/team-a/pods/web-1", 200, json_type, encode(pod))
    log.record(
        "PATCH",
        "/api/v1/namespaces/team-a/pods/web-1/ephemeralcontainers",
        200,
        json_type,
        encode(pod),
    )
    log.record("GET", "/api/v1/namespaces/team-a/pods/nope", 404, json_type, encode(not_found()))
    log.record(
        "POST",
        "/api/v1/namespaces/team-a/serviceaccounts/sa/token",
        201,
        json_type,
        encode(token_request()),
    )
    log.record("GET", "/api/v1/namespaces/team-a/pods/web-1/log", 200, "text/plain", b"hello\n")
    log.record("GET", "/version", 200, json_type, b'{"major": "1", "minor": "35"}')
    error = {"type": "ERROR", "object": {**not_found(), "code": 410, "reason": "Expired"}}
    log.record(
        "GET",
        "/api/v1/namespaces/team-a/pods?watch=true&resourceVersion=9",
        200,
        json_type,
        watch_body({"type": "ADDED", "object": pod}, error),
    )
    report = log.validate_all()
    assert report.validated == {
        "io.k8s.api.core.v1.PodList": 1,
        POD: 3,
        STATUS: 2,
        "io.k8s.api.authentication.v1.TokenRequest": 1,
        kc.WATCH_EVENT: 2,
    }
    assert report.skipped == {
        "non-JSON content type 'text/plain'": 1,
        "undocumented path /version": 1,
    }
    assert str(report).startswith("9 JSON documents validated")


def test_the_response_log_lists_every_broken_response() -> None:
    log = ResponseLog()
    json_type = "application/json"
    pod = make_pod()
    pod["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    log.record("GET", "/api/v1/namespaces/team-a/pods/web-1", 200, json_type, encode(pod))
    log.record(
        "GET",
        "/api/v1/namespaces/team-a/pods/x",
        404,
        json_type,
        encode({**not_found(), "code": 500}),
    )
    log.record("GET", "/api/v1/namespaces/team-a/widgets", 200, json_type, b"{}")
    log.record(
        "POST",
        "/api/v1/namespaces/team-a/pods/web-1/ephemeralcontainers",
        200,
        json_type,
        encode(make_pod()),
    )
    log.record(
        "GET",
        "/api/v1/namespaces/team-a/pods/web-1/ephemeralcontainers",
        201,
        json_type,
        encode(make_pod()),
    )
    log.record(
        "POST",
        "/api/v1/namespaces/team-a/serviceaccounts/sa/token",
        201,
        json_type,
        encode({**token_request(), "kind": "TokenReview"}),
    )
    log.record(
        "GET",
        "/api/v1/namespaces/team-a/pods?watch=1",
        200,
        json_type,
        watch_body(
            {"type": "CHANGED", "object": make_pod()},
            {
                "type": "ADDED",
                "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"nmae": "x"}},
            },
        ),
    )
    log.record("GET", "/api/v1/namespaces/team-a/pods/web-1", 200, json_type, b"{not json")
    log.record("DELETE", "/api/v1/namespaces/team-a/serviceaccounts/sa", 200, json_type, b"")
    log.record("GET", "/api/v1/namespaces/team-a/pods/x", 403, "text/plain", b"forbidden")
    with pytest.raises(ContractError) as caught:
        log.validate_all()
    problems = caught.value.errors
    expected = [
        "GET /api/v1/namespaces/team-a/pods/web-1 -> 200 application/json: "
        "$.spec.containers[0].imagePullPolicyy: unknown field",
        "GET /api/v1/namespaces/team-a/pods/x -> 404 application/json: "
        "$.code: Status code 500 differs from HTTP 404",
        "GET /api/v1/namespaces/team-a/widgets -> 200 application/json: "
        "no path in the OpenAPI documents matches",
        "POST /api/v1/namespaces/team-a/pods/web-1/ephemeralcontainers -> 200 application/json: "
        "method POST is not an operation of this path",
        "GET /api/v1/namespaces/team-a/pods/web-1/ephemeralcontainers -> 201 application/json: "
        "status 201 is not documented for readCoreV1NamespacedPodEphemeralcontainers (200, 401)",
        "POST /api/v1/namespaces/team-a/serviceaccounts/sa/token -> 201 application/json: "
        "$: apiVersion/kind 'authentication.k8s.io/v1'/'TokenReview', expected "
        "authentication.k8s.io/v1/TokenRequest",
        "GET /api/v1/namespaces/team-a/pods?watch=1 -> 200 application/json: "
        "$[\"event 0\"].type: 'CHANGED' is not one of",
        "GET /api/v1/namespaces/team-a/pods?watch=1 -> 200 application/json: "
        '$["event 1"].object.metadata.nmae: unknown field',
        "GET /api/v1/namespaces/team-a/pods/web-1 -> 200 application/json: body is not JSON",
        "DELETE /api/v1/namespaces/team-a/serviceaccounts/sa -> 200 application/json: "
        "empty body where a JSON io.k8s.api.core.v1.ServiceAccount was due",
        "GET /api/v1/namespaces/team-a/pods/x -> 403 text/plain: "
        "an error answered with 'text/plain', not a JSON Status",
    ]
    assert len(problems) == len(expected), "\n".join(problems)
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problem
    assert str(caught.value).startswith("11 kubesim responses break the Kubernetes API contract")


def test_response_recorder_attaches_once_to_a_server() -> None:
    class Server:
        def __init__(self) -> None:
            self.observers: list[Any] = []

    server, log = Server(), ResponseLog()
    assert response_recorder(server, log) is log
    assert response_recorder(server, log) is log
    assert server.observers == [log.record]
    server.observers[0]("GET", "/api/v1/namespaces", 200, "application/json", b"{}")
    assert len(log) == 1
    assert response_recorder() is kc.SESSION_LOG


async def test_watch_streams_are_recorded_from_an_aiohttp_app() -> None:
    log = ResponseLog()
    pod = make_pod()

    async def watch(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(encode({"type": "ADDED", "object": pod}) + b"\n")
        await response.write(encode({"type": "DELETED", "object": pod}) + b"\n")
        await response.write_eof()
        return response

    async def get(_request: web.Request) -> web.Response:
        return web.json_response(pod)

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{namespace}/pods", watch)
    app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}", get)
    app.on_response_prepare.append(record_watch_streams(log))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/api/v1/namespaces/team-a/pods"
            async with session.get(url, params={"watch": "true"}) as resp:
                assert (await resp.read()).count(b"\n") == 2
            async with session.get(f"{url}/web-1") as resp:  # a plain Response: not recorded
                await resp.read()
    finally:
        await runner.cleanup()
    await asyncio.sleep(0)
    assert [r.path for r in log.responses] == ["/api/v1/namespaces/team-a/pods?watch=true"]
    report = log.validate_all()
    assert report.validated == {kc.WATCH_EVENT: 2, POD: 2}
