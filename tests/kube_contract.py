"""Contract checks: kubesim's JSON against the official Kubernetes OpenAPI v3 documents.

The documents are data in ``shared/specs`` (Kubernetes 1.35: core/v1, authentication.k8s.io/v1,
authorization.k8s.io/v1). They hold no rbac.authorization.k8s.io schemas, so the RBAC kinds
(Role, ClusterRole, RoleBinding, ClusterRoleBinding and their lists) are built here from the
official ``k8s-proto/k8s.io/api/rbac/v1/generated.proto`` in the same folder (field names and
types), with the ``required`` lists of the upstream RBAC OpenAPI document. If an upstream
``k8s-v1.35-apis__rbac.authorization.k8s.io__v1_openapi.json`` is ever added to the folder, it
is used instead.

What this module adds to plain JSON Schema validation of OpenAPI 3.0 schemas:

- ``$ref: "#/components/schemas/…"`` resolves across all documents (one combined ``referencing``
  registry), and the ``allOf: [{$ref}]`` + ``default`` wrappers become plain ``$ref``.
- OpenAPI-isms: ``nullable``; ``x-kubernetes-*`` extensions, ``description`` and ``default`` are
  dropped; formats ``int32``, ``int64``, ``byte``, ``date-time`` (RFC 3339) are checked;
  ``int-or-string`` is left to its ``oneOf``.
- ``strict=True`` (the default) is stricter than the official schemas in four ways: every object
  schema with ``properties`` and no ``additionalProperties`` gets ``additionalProperties: false``
  (a misspelled field is an error); ``metav1.Time`` must be rendered exactly as the API server
  does (``2006-01-02T15:04:05Z``: UTC, whole seconds) and ``metav1.MicroTime`` as
  ``2006-01-02T15:04:05.000000Z``; ``resource.Quantity`` must be a string in the Quantity
  grammar; and (for ``ResponseLog``) top-level objects must carry the ``apiVersion``/``kind`` of
  their schema and error ``Status`` objects must repeat the HTTP code.
- ``null`` members of objects are treated as absent: Go's encoding/json writes nil pointers and
  slices without ``omitempty`` as ``null`` (a real TokenRequest answer carries
  ``"boundObjectRef": null`` and ``"creationTimestamp": null``), the OpenAPI documents cannot say
  which fields do that, and clients read ``null`` as unset. A ``null`` *required* member
  therefore reports as missing.

Usage::

    from kube_contract import SESSION_LOG, response_recorder, validate

    validate(pod_json)                                    # schema picked from apiVersion/kind
    validate(body, "io.k8s.apimachinery.pkg.apis.meta.v1.Status")

    log = response_recorder(kubesim_api_server)           # appends to server.observers
    ...                                                    # drive kubesim with real clients
    log.validate_all()                                     # raises ContractError listing all

``ResponseLog.record`` has the signature of kubesim's ``ApiServer.observers`` callbacks
``(method, path_qs, status, content_type, body)``. Those observers see ``web.Response`` bodies
only; watch streams (``web.StreamResponse``) are captured by ``record_watch_streams(log)``, an
``on_response_prepare`` callback for the aiohttp application.

Speed: each document is parsed once per process (about 0.1 s for all three) and each schema is
compiled once. jsonschema alone needs about 7 s for a 5,000-pod ``PodList``; so every schema is
also compiled into a plain Python predicate (about 0.2 s for that list, every item checked), and
jsonschema runs only on what the predicate rejects (for lists: only the failing items), to word
the errors.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import functools
import itertools
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

__all__ = [
    "SESSION_LOG",
    "SPECS",
    "ContractError",
    "ContractReport",
    "Operation",
    "RecordedResponse",
    "ResponseLog",
    "match_operation",
    "record_watch_streams",
    "response_recorder",
    "schema_for",
    "schema_names",
    "validate",
]

SPECS: Path = Path(__file__).resolve().parents[2] / "shared" / "specs"

SPEC_FILES: tuple[str, ...] = (
    "k8s-v1.35-api__v1_openapi.json",
    "k8s-v1.35-apis__authentication.k8s.io__v1_openapi.json",
    "k8s-v1.35-apis__authorization.k8s.io__v1_openapi.json",
)
RBAC_SPEC_FILE = "k8s-v1.35-apis__rbac.authorization.k8s.io__v1_openapi.json"
RBAC_PROTO = Path("k8s-proto") / "k8s.io" / "api" / "rbac" / "v1" / "generated.proto"

STATUS = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
API_RESOURCE_LIST = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList"
WATCH_EVENT = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent"
_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
_MICRO_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_BASE_URI = "urn:kube-contract:openapi"
_REF_PREFIX = "#/components/schemas/"
_MAX_ERRORS = 25

# Paths the API server serves that are not described in the component documents above.
UNDOCUMENTED_PATHS: frozenset[str] = frozenset(
    {"/api", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi/v2", "/openapi/v3"}
)
_WATCH_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})


class ContractError(AssertionError):
    """A JSON document does not match its Kubernetes schema; ``errors`` holds one line each."""

    def __init__(self, summary: str, errors: Iterable[str] = ()) -> None:
        self.summary = summary
        self.errors = list(errors)
        lines = [summary, *(f"  - {e}" for e in self.errors)]
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------------------- loading the specs
@dataclass(frozen=True)
class Operation:
    """One OpenAPI operation, as matched from a request method and path."""

    method: str  # lower case, as in the document
    template: str  # e.g. /api/v1/namespaces/{namespace}/pods/{name}
    operation_id: str
    params: Mapping[str, str]  # path parameters taken from the concrete path
    responses: Mapping[int, str | None]  # status -> JSON schema name (None: not an object)
    gvk: tuple[str, str, str] | None  # the operation's group, version, kind
    action: str  # x-kubernetes-action: get, list, create, patch, delete, connect, watch…
    source: str  # the document file it came from


@dataclass(frozen=True)
class _Route:
    template: str
    regex: re.Pattern[str]
    literal_chars: int
    item: Mapping[str, Any]
    source: str


@dataclass(frozen=True)
class _Specs:
    schemas: Mapping[str, Mapping[str, Any]]
    routes: tuple[_Route, ...]
    by_gvk: Mapping[tuple[str, str, str], str]
    rbac_source: str


def _read_json(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        data: dict[str, Any] = json.load(f)
    return data


@functools.cache
def _specs() -> _Specs:
    missing = [name for name in SPEC_FILES if not (SPECS / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Kubernetes OpenAPI documents not found in {SPECS} (missing: {', '.join(missing)}). "
            "The contract tests read the shared specs folder that sits beside the repository "
            "clone: <parent>/shared/specs, with <parent>/main being this repository."
        )
    documents = [(name, _read_json(SPECS / name)) for name in SPEC_FILES]
    if (SPECS / RBAC_SPEC_FILE).is_file():
        documents.append((RBAC_SPEC_FILE, _read_json(SPECS / RBAC_SPEC_FILE)))
        rbac_source = RBAC_SPEC_FILE
    else:
        documents.append((str(RBAC_PROTO), _rbac_document(SPECS / RBAC_PROTO)))
        rbac_source = f"{RBAC_PROTO} (synthesised)"
    schemas: dict[str, Mapping[str, Any]] = {}
    routes: list[_Route] = []
    for source, doc in documents:
        for name, schema in doc["components"]["schemas"].items():
            if name in schemas and schemas[name] != schema:
                raise ValueError(f"schema {name} differs between the documents ({source})")
            schemas[name] = schema
        for template, item in doc["paths"].items():
            routes.append(_route(template, item, source))
    by_gvk: dict[tuple[str, str, str], str] = {}
    for name, schema in schemas.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            by_gvk[(gvk["group"], gvk["version"], gvk["kind"])] = name
    routes.sort(key=lambda r: -r.literal_chars)
    return _Specs(schemas, tuple(routes), by_gvk, rbac_source)


def _route(template: str, item: Mapping[str, Any], source: str) -> _Route:
    pattern = ""
    literal = 0
    for part in re.split(r"(\{[^}]+\})", template):
        if part.startswith("{"):
            name = part[1:-1]
            # {path} (proxy subpaths) spans slashes; every other parameter is one segment.
            pattern += f"(?P<{name}>.*)" if name == "path" else f"(?P<{name}>[^/]+)"
        else:
            pattern += re.escape(part)
            literal += len(part)
    return _Route(template, re.compile(pattern + r"\Z"), literal, item, source)


def schema_names() -> list[str]:
    """Every component schema name known (official documents plus the RBAC kinds)."""
    return sorted(_specs().schemas)


def rbac_schema_source() -> str:
    """Where the RBAC schemas came from: the upstream document or the synthesised ones."""
    return _specs().rbac_source


# ---------------------------------------------------------------------------- RBAC supplement
# rbac.authorization.k8s.io/v1 is not in shared/specs. Field names and types come from the
# official generated.proto (Kubernetes names proto fields after the JSON fields); the required
# lists are those of upstream api/openapi-spec/v3/apis__rbac.authorization.k8s.io__v1_openapi.json.
_RBAC_GROUP = "rbac.authorization.k8s.io"
_RBAC_PKG = "io.k8s.api.rbac.v1"
_RBAC_REQUIRED: dict[str, list[str]] = {
    "PolicyRule": ["verbs"],
    "RoleRef": ["apiGroup", "kind", "name"],
    "Subject": ["kind", "name"],
    "RoleBinding": ["roleRef"],
    "ClusterRoleBinding": ["roleRef"],
    "RoleList": ["items"],
    "ClusterRoleList": ["items"],
    "RoleBindingList": ["items"],
    "ClusterRoleBindingList": ["items"],
}
_PROTO_SCALARS = {"string": "string", "bool": "boolean", "int32": "integer", "int64": "integer"}
_RBAC_RESOURCES = {  # plural -> (kind, namespaced)
    "roles": ("Role", True),
    "rolebindings": ("RoleBinding", True),
    "clusterroles": ("ClusterRole", False),
    "clusterrolebindings": ("ClusterRoleBinding", False),
}


def _rbac_document(proto: Path) -> dict[str, Any]:
    if not proto.is_file():
        raise FileNotFoundError(f"{proto} not found: the RBAC schemas are built from it")
    text = proto.read_text(encoding="utf-8")
    schemas: dict[str, Any] = {}
    for match in re.finditer(r"^message (\w+) \{(.*?)^\}", text, re.MULTILINE | re.DOTALL):
        message, body = match.groups()
        properties: dict[str, Any] = {}
        for line in body.splitlines():
            field_match = re.match(r"\s*(optional|repeated) ([\w.]+) (\w+) = \d+;", line)
            if not field_match:
                continue
            label, proto_type, json_name = field_match.groups()
            if proto_type in _PROTO_SCALARS:
                item: dict[str, Any] = {"type": _PROTO_SCALARS[proto_type]}
            else:
                target = proto_type.lstrip(".").removeprefix("k8s.io.")
                if "." not in target:
                    target = f"api.rbac.v1.{target}"
                item = {"allOf": [{"$ref": f"{_REF_PREFIX}io.k8s.{target}"}]}
            properties[json_name] = (
                {"type": "array", "items": item} if label == "repeated" else item
            )
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if message in _RBAC_REQUIRED:
            schema["required"] = _RBAC_REQUIRED[message]
        if "metadata" in properties:  # a kind: it has TypeMeta too
            properties["apiVersion"] = {"type": "string"}
            properties["kind"] = {"type": "string"}
            schema["x-kubernetes-group-version-kind"] = [
                {"group": _RBAC_GROUP, "kind": message, "version": "v1"}
            ]
        schemas[f"{_RBAC_PKG}.{message}"] = schema
    return {"components": {"schemas": schemas}, "paths": _rbac_paths()}


def _json_content(schema_name: str, *, watch: bool = False) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": _REF_PREFIX + schema_name}}}
    if watch:
        content["application/json;stream=watch"] = content["application/json"]
    return content


def _rbac_operation(
    kind: str, namespaced: bool, verb: str, action: str, codes: Mapping[str, str]
) -> dict[str, Any]:
    scope = "Namespaced" if namespaced and verb != "list" else ""
    return {
        "operationId": f"{verb}RbacAuthorizationV1{scope}{kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": _RBAC_GROUP, "kind": kind, "version": "v1"},
        "responses": {
            code: {"content": _json_content(schema, watch=action == "list")}
            for code, schema in codes.items()
        },
    }


def _rbac_paths() -> dict[str, Any]:
    prefix = f"/apis/{_RBAC_GROUP}/v1"
    paths: dict[str, Any] = {
        f"{prefix}/": {
            "get": {
                "operationId": "getRbacAuthorizationV1APIResources",
                "responses": {"200": {"content": _json_content(API_RESOURCE_LIST)}},
            }
        }
    }
    for plural, (kind, namespaced) in _RBAC_RESOURCES.items():
        obj, lst = f"{_RBAC_PKG}.{kind}", f"{_RBAC_PKG}.{kind}List"
        op = functools.partial(_rbac_operation, kind, namespaced)
        base = f"{prefix}/namespaces/{{namespace}}/{plural}" if namespaced else f"{prefix}/{plural}"
        paths[base] = {
            "get": op("list", "list", {"200": lst}),
            "post": op("create", "post", {"200": obj, "201": obj, "202": obj}),
            "delete": op("deleteCollection", "deletecollection", {"200": STATUS}),
        }
        paths[f"{base}/{{name}}"] = {
            "get": op("read", "get", {"200": obj}),
            "put": op("replace", "put", {"200": obj, "201": obj}),
            "patch": op("patch", "patch", {"200": obj, "201": obj}),
            "delete": op("delete", "delete", {"200": STATUS, "202": STATUS}),
        }
        if namespaced:
            paths[f"{prefix}/{plural}"] = {"get": op("list", "list", {"200": lst})}
    return paths


# -------------------------------------------------------------------------- OpenAPI to JSON Schema
_KEEP = frozenset(
    {
        "type", "properties", "required", "items", "additionalProperties", "enum", "format",
        "pattern", "minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength",
        "oneOf", "anyOf", "allOf", "not", "$ref",
    }
)  # fmt: skip
_K8S_TIME = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"
_K8S_MICRO_TIME = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"
# resource.Quantity grammar (apimachinery pkg/api/resource/quantity.go).
_QUANTITY_GRAMMAR = r"^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$"


def _convert(node: Any, strict: bool) -> Any:
    if isinstance(node, list):
        return [_convert(item, strict) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, strict) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "oneOf", "anyOf", "allOf"):
            out[key] = _convert(value, strict)
        else:
            out[key] = value
    allof = out.get("allOf")
    if isinstance(allof, list) and len(allof) == 1 and set(allof[0]) == {"$ref"}:
        del out["allOf"]
        out["$ref"] = allof[0]["$ref"]
    if strict and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [{"type": "null"}, out]}
    return out


def _component(name: str, schema: Mapping[str, Any], strict: bool) -> dict[str, Any]:
    out: dict[str, Any] = _convert(dict(schema), strict)
    if strict and name == _TIME:
        out["pattern"] = _K8S_TIME
    elif strict and name == _MICRO_TIME:
        out["pattern"] = _K8S_MICRO_TIME
    elif strict and name == _QUANTITY:
        out = {"type": "string", "pattern": _QUANTITY_GRAMMAR}
    out["title"] = name  # an annotation: lets error messages name the schema
    return out


@functools.cache
def _components(strict: bool) -> dict[str, dict[str, Any]]:
    return {name: _component(name, schema, strict) for name, schema in _specs().schemas.items()}


@functools.cache
def _registry(strict: bool) -> Registry[Any]:
    document = {"components": {"schemas": _components(strict)}}
    registry: Registry[Any] = Registry().with_resource(
        _BASE_URI, DRAFT202012.create_resource(document)
    )
    return registry


# ---------------------------------------------------------------------------- formats
_RFC3339 = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$"
)
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    match = _RFC3339.match(value)
    if not match:
        return False
    fraction = (match.group(7) or "")[:7]  # Python parses at most microseconds
    zone = match.group(8).upper().replace("Z", "+00:00")
    text = "{}-{}-{}T{}:{}:{}".format(*match.groups()[:6]) + fraction + zone
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _in_range(bounds: tuple[int, int]) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return True
        return bounds[0] <= value <= bounds[1]

    return check


def _is_base64(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        return False
    return len(value) % 4 == 0


_FORMATS: dict[str, tuple[Callable[[object], bool], str]] = {
    "date-time": (_is_rfc3339, "an RFC 3339 date-time"),
    "int32": (_in_range(_INT32), "a 32-bit integer"),
    "int64": (_in_range(_INT64), "a 64-bit integer"),
    "byte": (_is_base64, "standard base64 with padding"),
    "int-or-string": (lambda _value: True, "an integer or a string"),
}
_PATTERN_MEANING = {
    _K8S_TIME: "a metav1.Time as Kubernetes renders it (2006-01-02T15:04:05Z: UTC, whole seconds)",
    _K8S_MICRO_TIME: "a metav1.MicroTime as Kubernetes renders it (2006-01-02T15:04:05.000000Z)",
    _QUANTITY_GRAMMAR: "a resource.Quantity string (e.g. 100m, 64Mi, 1.5)",
}


@functools.cache
def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    for name, (check, _meaning) in _FORMATS.items():
        checker.checks(name)(check)
    return checker


# ---------------------------------------------------------------------------- the fast path
# jsonschema needs about 7 s for a 5,000-pod PodList (some 20 us per node). The schemas above use
# a dozen keywords, so they are also compiled into plain Python predicates (about 0.2 s for the
# same list) that answer only "valid or not". jsonschema stays the reference: it runs whenever
# the predicate says no, to produce the messages; tests/test_kube_contract.py checks that both
# agree on valid and broken objects.
Check = Callable[[Any], bool]


def _is_integer(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


_TYPE_CHECKS: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": _is_integer,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _all_of(checks: list[Check]) -> Check:
    if not checks:
        return lambda _value: True
    if len(checks) == 1:
        return checks[0]
    frozen = tuple(checks)

    def check(value: object) -> bool:
        for c in frozen:  # noqa: SIM110 (hot path: a loop beats all() over a generator)
            if not c(value):
                return False
        return True

    return check


class _Compiler:
    """Compiles the converted component schemas into predicates (null members count as absent)."""

    def __init__(self, components: Mapping[str, Mapping[str, Any]]) -> None:
        self.components = components
        self.done: dict[str, Check | None] = {}

    def ref(self, name: str) -> Check:
        if name not in self.done:
            self.done[name] = None  # in progress: a cycle gets the lazy lookup below
            self.done[name] = self.compile(self.components[name])
        compiled = self.done[name]
        if compiled is None:  # a cycle: look the predicate up when it runs

            def deferred(value: object) -> bool:
                return self.done[name](value)  # type: ignore[misc]

            return deferred
        return compiled

    def compile(self, schema: Mapping[str, Any]) -> Check:
        unknown = set(schema) - {
            "$ref", "type", "properties", "additionalProperties", "required", "items",
            "oneOf", "anyOf", "allOf", "not", "enum", "format", "pattern", "title",
        }  # fmt: skip
        if unknown:
            # Fail loudly rather than pass a schema keyword the compiled checks ignore.
            raise RuntimeError(f"the compiled checker does not handle {sorted(unknown)}")
        checks: list[Check] = []
        if "$ref" in schema:
            checks.append(self.ref(schema["$ref"].removeprefix(_REF_PREFIX)))
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            one_of_types = tuple(_TYPE_CHECKS[t] for t in types)
            checks.append(
                one_of_types[0]
                if len(one_of_types) == 1
                else lambda v: any(t(v) for t in one_of_types)
            )
        if {"properties", "additionalProperties", "required"} & set(schema):
            checks.append(self._object(schema))
        if "items" in schema:
            checks.append(self._array(self.compile(schema["items"])))
        if "allOf" in schema:
            checks.append(_all_of([self.compile(s) for s in schema["allOf"]]))
        if "anyOf" in schema:
            branches = [self.compile(s) for s in schema["anyOf"]]
            checks.append(lambda v: any(b(v) for b in branches))
        if "oneOf" in schema:
            options = [self.compile(s) for s in schema["oneOf"]]
            checks.append(lambda v: sum(1 for b in options if b(v)) == 1)
        if "not" in schema:
            negated = self.compile(schema["not"])
            checks.append(lambda v: not negated(v))
        if "enum" in schema:
            allowed = [(type(e), e) for e in schema["enum"]]
            checks.append(lambda v: any(type(v) is t and v == e for t, e in allowed))
        if "format" in schema:
            checks.append(_FORMATS[schema["format"]][0])
        if "pattern" in schema:
            rx = re.compile(schema["pattern"])
            checks.append(lambda v: not isinstance(v, str) or rx.search(v) is not None)
        return _all_of(checks)

    @staticmethod
    def _array(item: Check) -> Check:
        def check(value: object) -> bool:
            if isinstance(value, list):
                for member in value:
                    if not item(member):
                        return False
            return True

        return check

    def _object(self, schema: Mapping[str, Any]) -> Check:
        props = {k: self.compile(v) for k, v in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties", True)
        others: Check | bool = extra if isinstance(extra, bool) else self.compile(extra)
        required = tuple(schema.get("required", ()))

        def check(value: object) -> bool:
            if not isinstance(value, dict):
                return True
            for key, member in value.items():
                if member is None:
                    continue
                sub = props.get(key)
                if sub is None:
                    if others is True:
                        continue
                    if others is False:
                        return False
                    sub = others
                if not sub(member):
                    return False
            for key in required:  # noqa: SIM110 (hot path, as above)
                if value.get(key) is None:
                    return False
            return True

        return check


@functools.cache
def _fast(schema_name: str, strict: bool) -> Check:
    return _Compiler(_components(strict)).ref(schema_name)


# ---------------------------------------------------------------------------- validation
@functools.cache
def _validator(schema_name: str, strict: bool) -> Draft202012Validator:
    specs = _specs()
    if schema_name not in specs.schemas:
        close = difflib.get_close_matches(schema_name, specs.schemas, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ContractError(f"unknown schema {schema_name!r}{hint}")
    return Draft202012Validator(
        {"$ref": f"{_BASE_URI}{_REF_PREFIX}{schema_name}"},
        registry=_registry(strict),
        format_checker=_format_checker(),
    )


def schema_for(api_version: str, kind: str) -> str:
    """The component schema named by ``x-kubernetes-group-version-kind`` for apiVersion/kind."""
    group, _, version = api_version.rpartition("/")
    try:
        return _specs().by_gvk[(group, version, kind)]
    except KeyError:
        raise ContractError(
            f"no schema in the OpenAPI documents for apiVersion={api_version!r} kind={kind!r}"
        ) from None


def _without_nulls(value: Any) -> Any:
    """Drop ``null`` object members (Go writes nil pointers/slices without omitempty as null)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _pointer(path: Iterable[str | int]) -> str:
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][\w$-]*", part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


Finding = tuple[list[str | int], str]  # JSON path, message


def _describe(
    error: ValidationError,
    base: Iterable[str | int],
    remap: Callable[[list[str | int]], list[str | int]],
) -> Iterator[Finding]:
    path = [*base, *remap(list(error.absolute_path))]
    if error.validator in ("oneOf", "anyOf") and error.context:
        # Report the branch that got furthest (for nullable wrappers: the non-null branch).
        inner = best_match(
            [e for e in error.context if e.validator_value != "null" or e.validator != "type"]
            or error.context
        )
        if inner is not None:
            yield from _describe(inner, base, remap)
            return
    if error.validator == "additionalProperties" and error.validator_value is False:
        owner = error.schema.get("title") if isinstance(error.schema, dict) else None
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        suffix = f" (no such property in {owner})" if owner else ""
        for extra in sorted(set(error.instance) - set(known)):
            near = difflib.get_close_matches(extra, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            yield [*path, extra], f"unknown field{suffix}{hint}"
        return
    if error.validator == "format":
        meaning = _FORMATS.get(str(error.validator_value), (None, str(error.validator_value)))[1]
        yield path, f"{error.instance!r} is not {meaning}"
        return
    if error.validator == "pattern" and error.validator_value in _PATTERN_MEANING:
        yield path, f"{error.instance!r} is not {_PATTERN_MEANING[error.validator_value]}"
        return
    yield path, error.message


def _path_order(finding: Finding) -> list[tuple[int, int, str]]:
    return [(0, p, "") if isinstance(p, int) else (1, 0, p) for p in finding[0]]


def _same_path(path: list[str | int]) -> list[str | int]:
    return path


def _errors(
    obj: Any, schema_name: str, strict: bool, base: tuple[str | int, ...] = ()
) -> list[str]:
    validator = _validator(schema_name, strict)  # also rejects unknown names
    if _fast(schema_name, strict)(obj):
        return []
    # Keep jsonschema's work small on long lists: only the failing items go to it.
    remap = _same_path
    items = obj.get("items") if isinstance(obj, dict) else None
    item_ref = _components(strict)[schema_name].get("properties", {}).get("items", {})
    item_schema = item_ref.get("items", {}).get("$ref", "").removeprefix(_REF_PREFIX)
    if isinstance(items, list) and len(items) > 20 and item_schema:
        item_ok = _fast(item_schema, strict)
        failing = [i for i, item in enumerate(items) if not item_ok(item)][:_MAX_ERRORS]
        obj = {**obj, "items": [items[i] for i in failing]}

        def remap(path: list[str | int]) -> list[str | int]:
            if len(path) >= 2 and path[0] == "items" and isinstance(path[1], int):
                return ["items", failing[path[1]], *path[2:]]
            return path

    errors = itertools.islice(validator.iter_errors(_without_nulls(obj)), _MAX_ERRORS)
    findings = sorted(
        (f for error in errors for f in _describe(error, base, remap)), key=_path_order
    )
    if not findings:  # the two validators disagree: a bug here, not in kubesim
        return [f"{_pointer(base)}: rejected by the fast path only (kube_contract bug)"]
    return [f"{_pointer(path)}: {message}" for path, message in findings]


def validate(
    obj: Mapping[str, Any], schema_name: str | None = None, *, strict: bool = True
) -> None:
    """Validate a decoded JSON object; raise ``ContractError`` naming each failing JSON path.

    With ``schema_name=None`` the schema is chosen from the object's ``apiVersion`` and ``kind``.
    """
    if schema_name is None:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            raise ContractError(
                "cannot pick a schema: the object has no apiVersion/kind; pass schema_name"
            )
        schema_name = schema_for(api_version, kind)
    errors = _errors(obj, schema_name, strict)
    if errors:
        raise ContractError(f"does not match {schema_name}", errors)


# ---------------------------------------------------------------------------- path matching
@functools.cache
def _match(path: str) -> tuple[_Route, dict[str, str]] | None:
    for route in _specs().routes:
        match = route.regex.match(path)
        if match:
            return route, match.groupdict()
    return None


def _schema_of(content: Mapping[str, Any], media: str) -> str | None:
    entry = content.get(media)
    if not entry:
        return None
    ref = entry.get("schema", {}).get("$ref", "")
    return ref.removeprefix(_REF_PREFIX) if ref.startswith(_REF_PREFIX) else None


def match_operation(method: str, path: str) -> Operation | None:
    """The OpenAPI operation serving ``method path`` (query string ignored), or None."""
    path = urlsplit(path).path
    found = _match(path)
    if found is None:
        return None
    route, params = found
    op = route.item.get(method.lower())
    if op is None:
        return None
    responses: dict[int, str | None] = {}
    for code, response in op.get("responses", {}).items():
        if code.isdigit():
            responses[int(code)] = _schema_of(response.get("content", {}), "application/json")
    raw_gvk = op.get("x-kubernetes-group-version-kind")
    gvk = (raw_gvk["group"], raw_gvk["version"], raw_gvk["kind"]) if raw_gvk else None
    return Operation(
        method=method.lower(),
        template=route.template,
        operation_id=op.get("operationId", ""),
        params=params,
        responses=responses,
        gvk=gvk,
        action=op.get("x-kubernetes-action", ""),
        source=route.source,
    )


# ---------------------------------------------------------------------------- the response log
@dataclass(frozen=True)
class RecordedResponse:
    method: str
    path: str  # with the query string, as sent
    status: int
    content_type: str
    body: bytes

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status} {self.content_type}"


@dataclass
class ContractReport:
    """What ``ResponseLog.check_all`` did: per-schema counts, skips and problems."""

    validated: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{sum(self.validated.values())} JSON documents validated"]
        lines += [f"  {n:5d} {name}" for name, n in sorted(self.validated.items())]
        if self.skipped:
            lines.append(f"{sum(self.skipped.values())} responses not validated:")
            lines += [f"  {n:5d} {why}" for why, n in sorted(self.skipped.items())]
        return "\n".join(lines)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _is_watch(rec: RecordedResponse, op: Operation | None) -> bool:
    query = parse_qs(urlsplit(rec.path).query)
    flag = query.get("watch", [""])[-1].lower() in ("true", "1")
    return flag or "stream=watch" in rec.content_type or (op is not None and "watch" in op.action)


def _json_stream(body: bytes) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    text = body.decode("utf-8")
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return
        value, index = decoder.raw_decode(text, index)
        yield value


def _api_version(gvk: tuple[str, str, str]) -> str:
    group, version, _kind = gvk
    return f"{group}/{version}" if group else version


class ResponseLog:
    """Collects kubesim's responses; ``validate_all()`` checks every one against the specs.

    ``record`` matches kubesim's ``ApiServer.observers`` signature and is thread-safe.
    Mapping: error statuses (>= 400) must be a ``Status``; a success must be the JSON schema the
    matched OpenAPI operation lists for that status code; a watch (``?watch=true`` or a
    ``/watch/`` path) must be a stream of ``WatchEvent`` whose ``object`` is the operation's kind
    (a ``Status`` for ``ERROR`` events). Non-JSON bodies (logs, upgrades) are skipped and counted.
    """

    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict
        self._lock = threading.Lock()
        self._responses: list[RecordedResponse] = []

    def record(self, method: str, path: str, status: int, content_type: str, body: bytes) -> None:
        with self._lock:
            self._responses.append(
                RecordedResponse(method.upper(), path, int(status), content_type, bytes(body))
            )

    @property
    def responses(self) -> list[RecordedResponse]:
        with self._lock:
            return list(self._responses)

    def clear(self) -> None:
        with self._lock:
            self._responses.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._responses)

    def check_all(self) -> ContractReport:
        """Validate everything recorded; problems are collected in the report, not raised."""
        report = ContractReport()
        for rec in self.responses:
            for problem in self._check(rec, report):
                report.problems.append(f"{rec}: {problem}")
        return report

    def validate_all(self) -> ContractReport:
        """Validate everything recorded; raise ``ContractError`` listing every problem."""
        report = self.check_all()
        if report.problems:
            raise ContractError(
                f"{len(report.problems)} kubesim responses break the Kubernetes API contract "
                f"(of {len(self)} recorded)",
                report.problems,
            )
        return report

    # ------------------------------------------------------------------ one response
    def _check(self, rec: RecordedResponse, report: ContractReport) -> Iterator[str]:
        if rec.status in (101, 204, 304) or rec.method == "HEAD":
            report.skipped[f"status {rec.status} or HEAD: no body expected"] += 1
            return
        media = rec.content_type.split(";", maxsplit=1)[0].strip()
        if rec.status >= 400:
            if _is_json(media):
                yield from self._check_document(rec.body, STATUS, report, rec.status)
            else:  # the API server words every error as a Status
                yield f"an error answered with {media or 'no content type'!r}, not a JSON Status"
            return
        if not _is_json(media):
            report.skipped[f"non-JSON content type {media!r}"] += 1  # logs, for instance
            return
        op = match_operation(rec.method, rec.path)
        path_only = urlsplit(rec.path).path
        if op is None:
            if path_only.rstrip("/") in UNDOCUMENTED_PATHS or path_only in UNDOCUMENTED_PATHS:
                report.skipped[f"undocumented path {path_only}"] += 1
            elif _match(path_only) is None:
                yield "no path in the OpenAPI documents matches"
            else:
                yield f"method {rec.method} is not an operation of this path"
            return
        if _is_watch(rec, op):
            yield from self._check_watch(rec.body, op, report)
            return
        if rec.status not in op.responses:
            documented = ", ".join(str(c) for c in sorted(op.responses))
            yield f"status {rec.status} is not documented for {op.operation_id} ({documented})"
            return
        schema = op.responses[rec.status]
        if schema is None:
            report.skipped[f"{op.operation_id}: no JSON object schema"] += 1
            return
        yield from self._check_document(rec.body, schema, report, None)

    def _check_document(
        self, body: bytes, schema: str, report: ContractReport, http_status: int | None
    ) -> Iterator[str]:
        if not body.strip():
            yield f"empty body where a JSON {schema} was due"
            return
        try:
            obj = json.loads(body)
        except ValueError as exc:
            yield f"body is not JSON: {exc}"
            return
        if not isinstance(obj, dict):
            yield f"body is a JSON {type(obj).__name__}, expected an object ({schema})"
            return
        yield from self._check_object(obj, schema, report, (), top_level=True)
        if http_status is not None and self.strict:
            if obj.get("code") != http_status:
                yield f"$.code: Status code {obj.get('code')!r} differs from HTTP {http_status}"
            if obj.get("status") != "Failure":
                yield f"$.status: {obj.get('status')!r}, expected 'Failure' for HTTP {http_status}"

    def _check_object(
        self,
        obj: dict[str, Any],
        schema: str,
        report: ContractReport,
        base: tuple[str | int, ...],
        *,
        top_level: bool,
    ) -> Iterator[str]:
        if top_level and self.strict:
            yield from self._check_type_meta(obj, schema, base)
        report.validated[schema] += 1
        for line in _errors(obj, schema, self.strict, base):
            yield f"{line} [{schema}]"

    def _check_type_meta(
        self, obj: Mapping[str, Any], schema: str, base: tuple[str | int, ...]
    ) -> Iterator[str]:
        raw = _specs().schemas[schema].get("x-kubernetes-group-version-kind", ())
        allowed = {(_api_version((g["group"], g["version"], g["kind"])), g["kind"]) for g in raw}
        if not allowed:
            return
        got = (obj.get("apiVersion"), obj.get("kind"))
        if got not in allowed:
            want = " or ".join(f"{v}/{k}" for v, k in sorted(allowed)[:3])
            yield f"{_pointer(base)}: apiVersion/kind {got[0]!r}/{got[1]!r}, expected {want}"

    def _check_watch(self, body: bytes, op: Operation, report: ContractReport) -> Iterator[str]:
        kind_schema = _specs().by_gvk.get(op.gvk) if op.gvk else None
        try:
            events = list(_json_stream(body))
        except (ValueError, UnicodeDecodeError) as exc:
            yield f"watch stream is not a sequence of JSON objects: {exc}"
            return
        for n, event in enumerate(events):
            where: tuple[str | int, ...] = (f"event {n}",)
            if not isinstance(event, dict):
                yield f"{_pointer(where)}: not a JSON object"
                continue
            report.validated[WATCH_EVENT] += 1
            for line in _errors(event, WATCH_EVENT, self.strict, where):
                yield f"{line} [{WATCH_EVENT}]"
            kind, embedded = event.get("type"), event.get("object")
            if kind not in _WATCH_TYPES:
                yield f"{_pointer((*where, 'type'))}: {kind!r} is not one of {sorted(_WATCH_TYPES)}"
            if not isinstance(embedded, dict):
                continue
            target = STATUS if kind == "ERROR" else kind_schema
            if target is None:
                report.skipped[f"{op.operation_id}: watch object of unknown kind"] += 1
                continue
            yield from self._check_object(
                embedded, target, report, (*where, "object"), top_level=True
            )


SESSION_LOG = ResponseLog()
"""One log for the whole test session: attach it to every kubesim, validate it at the end."""


class _Observed(Protocol):
    observers: list[Callable[[str, str, int, str, bytes], None]]


def response_recorder(
    server: _Observed | None = None, log: ResponseLog | None = None
) -> ResponseLog:
    """Attach ``log`` (default: ``SESSION_LOG``) to a kubesim ``ApiServer``'s observers.

    Returns the log, so ``log = response_recorder(api)`` reads well in a fixture.
    """
    log = SESSION_LOG if log is None else log
    if server is not None and log.record not in server.observers:
        server.observers.append(log.record)
    return log


def record_watch_streams(log: ResponseLog | None = None) -> Callable[[Any, Any], Any]:
    """An aiohttp ``on_response_prepare`` callback that records streamed (watch) bodies.

    ``app.on_response_prepare.append(record_watch_streams(log))`` before the app starts. Plain
    ``web.Response`` objects are left to the observers; for a ``StreamResponse`` every
    ``write`` is buffered and the whole stream is recorded at ``write_eof``.
    """
    target = SESSION_LOG if log is None else log

    async def on_prepare(request: Any, response: Any) -> None:
        from aiohttp import web  # noqa: PLC0415  (only needed when wired into a server)

        if isinstance(response, web.Response):
            return
        chunks: list[bytes] = []
        recorded = False
        write, write_eof = response.write, response.write_eof

        async def buffered_write(data: bytes | bytearray | memoryview) -> None:
            chunks.append(bytes(data))
            await write(data)

        async def recorded_eof(data: bytes = b"") -> None:
            nonlocal recorded
            if recorded:  # aiohttp calls write_eof again after the handler returns
                await write_eof(data)
                return
            recorded = True
            chunks.append(bytes(data))
            target.record(
                request.method,
                request.path_qs,
                response.status,
                response.headers.get("Content-Type", ""),
                b"".join(chunks),
            )
            await write_eof(data)

        response.write = buffered_write
        response.write_eof = recorded_eof

    return on_prepare
