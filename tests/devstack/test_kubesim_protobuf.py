"""kubesim's decoder for ``application/vnd.kubernetes.protobuf`` request bodies.

The schema table is checked field by field against the upstream ``generated.proto`` files
(``shared/specs/k8s-proto``); bodies are assembled by hand here, independently of the
module's encoder; and hypothesis feeds random bytes and random objects through both ways.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.devstack.kubesim import protobuf
from bastion.devstack.kubesim.protobuf import (
    ENVELOPE_MESSAGES,
    KINDS,
    MAGIC,
    MESSAGES,
    PROTOBUF,
    Field,
    ProtobufError,
    decode_body,
    encode_object,
)

# --------------------------------------------------------------------- the .proto contract

SPECS = Path(__file__).resolve().parents[3] / "shared" / "specs"
PROTO_ROOT = SPECS / "k8s-proto" / "k8s.io"

_META = "apimachinery/pkg/apis/meta/v1/generated.proto"
_CORE = "api/core/v1/generated.proto"
_RBAC = "api/rbac/v1/generated.proto"
_AUTHN = "api/authentication/v1/generated.proto"
_RUNTIME = "apimachinery/pkg/runtime/generated.proto"

# Where each message of the table is defined upstream.
MESSAGE_FILES = {
    **dict.fromkeys(
        [
            "ObjectMeta",
            "OwnerReference",
            "ManagedFieldsEntry",
            "FieldsV1",
            "Time",
            "LabelSelector",
            "LabelSelectorRequirement",
            "DeleteOptions",
            "Preconditions",
        ],
        _META,
    ),
    **dict.fromkeys(
        [
            "Namespace",
            "NamespaceSpec",
            "NamespaceStatus",
            "NamespaceCondition",
            "ServiceAccount",
            "ObjectReference",
            "LocalObjectReference",
        ],
        _CORE,
    ),
    **dict.fromkeys(
        [
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
            "PolicyRule",
            "AggregationRule",
            "RoleRef",
            "Subject",
        ],
        _RBAC,
    ),
    **dict.fromkeys(
        ["TokenRequest", "TokenRequestSpec", "TokenRequestStatus", "BoundObjectReference"],
        _AUTHN,
    ),
}

# Proto field names whose Go JSON tag differs.
JSON_NAME_EXCEPTIONS = {("BoundObjectReference", "uID"): "uid"}

_FIELD_RE = re.compile(
    r"^(?:(?P<label>optional|repeated)\s+(?P<type>[\w.]+)|map<(?P<key>\w+),\s*(?P<value>[\w.]+)>)"
    r"\s+(?P<name>\w+)\s*=\s*(?P<number>\d+)\s*;$"
)


class ProtoField:
    def __init__(self, name: str, type_: str, repeated: bool, package: str) -> None:
        self.name = name
        self.type = type_
        self.repeated = repeated
        self.package = package  # of a message type, resolved; "" for scalars and maps


def parse_proto(path: Path) -> tuple[str, dict[str, dict[int, ProtoField]]]:
    """A small parser for the generated k8s protos: package, and message -> fields."""
    text = path.read_text()
    package_match = re.search(r"^package ([\w.]+);", text, re.M)
    assert package_match, f"{path}: no package statement"
    package = package_match.group(1)
    messages: dict[str, dict[int, ProtoField]] = {}
    for match in re.finditer(r"^message (\w+) \{\n(.*?)^\}", text, re.S | re.M):
        fields: dict[int, ProtoField] = {}
        for raw_line in match.group(2).splitlines():
            line = raw_line.strip()
            if not line or line.startswith("//"):
                continue
            field = _FIELD_RE.match(line)
            assert field, f"{path}: message {match.group(1)}: cannot parse {line!r}"
            number = int(field["number"])
            assert number not in fields, f"{match.group(1)}: field number {number} twice"
            if field["key"]:
                # The table's "map" is map<string, string>; other maps keep their spelling.
                kv = (field["key"], field["value"])
                map_type = "map" if kv == ("string", "string") else f"map<{kv[0]}, {kv[1]}>"
                fields[number] = ProtoField(field["name"], map_type, False, "")
                continue
            type_ = field["type"]
            type_package = ""
            if type_ not in {"string", "bool", "int64", "int32", "bytes"}:
                if type_.startswith("."):
                    type_package, _, type_ = type_[1:].rpartition(".")
                else:
                    assert "." not in type_, line
                    type_package = package
            fields[number] = ProtoField(
                field["name"], type_, field["label"] == "repeated", type_package
            )
        messages[match.group(1)] = fields
    return package, messages


def load_protos() -> dict[str, tuple[str, dict[str, dict[int, ProtoField]]]]:
    if not PROTO_ROOT.is_dir():
        pytest.fail(
            f"the Kubernetes .proto files are missing: expected them under {PROTO_ROOT} "
            "(see shared/specs/README.md, section 'Kubernetes protobuf definitions')"
        )
    protos = {}
    for relative in {*MESSAGE_FILES.values(), _RUNTIME}:
        path = PROTO_ROOT / relative
        if not path.is_file():
            pytest.fail(f"missing .proto file: {path}")
        protos[relative] = parse_proto(path)
    return protos


def assert_matches_proto(
    name: str,
    table: dict[int, Field],
    proto: dict[int, ProtoField],
    type_files: dict[str, str],
    protos: dict[str, tuple[str, dict[str, dict[int, ProtoField]]]],
) -> None:
    assert sorted(table) == sorted(proto), (
        f"{name}: field numbers differ: table {sorted(table)}, .proto {sorted(proto)}"
    )
    for number, upstream in proto.items():
        ours = table[number]
        expected_json = JSON_NAME_EXCEPTIONS.get((name, upstream.name), upstream.name)
        assert ours.json_name == expected_json, f"{name}.{number}: {ours} vs {upstream.name}"
        assert ours.type == upstream.type, f"{name}.{upstream.name}: type {ours.type}"
        assert ours.repeated == upstream.repeated, f"{name}.{upstream.name}: repeatedness"
        if upstream.package:
            # The referenced message is the one from the right package, not a namesake.
            assert protos[type_files[ours.type]][0] == upstream.package, (
                f"{name}.{upstream.name}: {ours.type} should come from {upstream.package}"
            )


def test_schema_table_matches_the_upstream_protos() -> None:
    protos = load_protos()
    assert set(MESSAGE_FILES) == set(MESSAGES), "every table message needs its .proto file"
    for name, table in MESSAGES.items():
        _, upstream = protos[MESSAGE_FILES[name]]
        assert name in upstream, f"{name} is not defined in {MESSAGE_FILES[name]}"
        assert_matches_proto(name, table, upstream[name], MESSAGE_FILES, protos)


def test_envelope_table_matches_runtime_proto() -> None:
    protos = load_protos()
    _, upstream = protos[_RUNTIME]
    files = dict.fromkeys(ENVELOPE_MESSAGES, _RUNTIME)
    for name, table in ENVELOPE_MESSAGES.items():
        assert_matches_proto(name, table, upstream[name], files, protos)


def test_every_referenced_message_and_kind_is_in_the_table() -> None:
    for name, table in MESSAGES.items():
        for field in table.values():
            assert field.type in {*protobuf.SCALAR_TYPES, "map"} | set(MESSAGES), (name, field)
    for kind, (_, message) in KINDS.items():
        assert message in MESSAGES, kind


def test_namespace_golden_bytes() -> None:
    body = bytes.fromhex("6b3873000a0f0a02763112094e616d65737061636512080a060a0464656d6f")
    expected = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}
    assert decode_body(body) == expected
    assert encode_object(expected) == body
    assert PROTOBUF == "application/vnd.kubernetes.protobuf"


# -------------------------------------------------------------- hand-assembled wire bytes


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def vf(number: int, value: int) -> bytes:
    """A varint field."""
    return varint(number << 3) + varint(value)


def ld(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field."""
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def entry(number: int, key: str, value: str) -> bytes:
    return ld(number, ld(1, key) + ld(2, value))


def envelope(api_version: str, kind: str, raw: bytes, *extra: bytes) -> bytes:
    return MAGIC + ld(1, ld(1, api_version) + ld(2, kind)) + ld(2, raw) + b"".join(extra)


def meta(name: str = "", namespace: str = "", *extra: bytes) -> bytes:
    """ObjectMeta the way gogo-generated Go writes it: every non-pointer field present."""
    return (
        ld(1, name)
        + ld(2, "")
        + ld(3, namespace)
        + ld(4, "")
        + ld(5, "")
        + ld(6, "")
        + vf(7, 0)
        + ld(8, b"")  # zero creationTimestamp: an empty Time
        + b"".join(extra)
    )


META_DECODED = {
    "generateName": "",
    "selfLink": "",
    "uid": "",
    "resourceVersion": "",
    "generation": 0,
    "creationTimestamp": None,
}


def test_role_binding_with_two_subjects() -> None:
    raw = (
        ld(1, meta("vault-rb", "demo"))
        + ld(2, ld(1, "ServiceAccount") + ld(2, "") + ld(3, "vault-sa") + ld(4, "demo"))
        + ld(2, ld(1, "User") + ld(2, "rbac.authorization.k8s.io") + ld(3, "alice") + ld(4, ""))
        + ld(3, ld(1, "") + ld(2, "Role") + ld(3, "pod-reader"))
    )
    got = decode_body(envelope("rbac.authorization.k8s.io/v1", "RoleBinding", raw))
    assert got == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "vault-rb", "namespace": "demo", **META_DECODED},
        "subjects": [
            {"kind": "ServiceAccount", "apiGroup": "", "name": "vault-sa", "namespace": "demo"},
            {
                "kind": "User",
                "apiGroup": "rbac.authorization.k8s.io",
                "name": "alice",
                "namespace": "",
            },
        ],
        "roleRef": {"apiGroup": "", "kind": "Role", "name": "pod-reader"},
    }
    assert decode_body(encode_object(got)) == got


def test_token_request_expiration_and_audiences() -> None:
    raw = (
        ld(1, meta())
        + ld(2, ld(1, "https://kubernetes.default.svc") + ld(1, "vault") + vf(4, 600))
        + ld(3, ld(1, "") + ld(2, b""))
    )
    got = decode_body(envelope("authentication.k8s.io/v1", "TokenRequest", raw))
    assert got == {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": "", "namespace": "", **META_DECODED},
        "spec": {
            "audiences": ["https://kubernetes.default.svc", "vault"],
            "expirationSeconds": 600,
        },
        "status": {"token": "", "expirationTimestamp": None},
    }


def test_service_account_labels_and_automount_false() -> None:
    raw = ld(
        1,
        meta(
            "vault-sa",
            "demo",
            entry(11, "app", "vault"),
            entry(11, "team", "platform"),
            entry(12, "note", ""),
        ),
    ) + vf(4, 0)
    got = decode_body(envelope("v1", "ServiceAccount", raw))
    assert got == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "vault-sa",
            "namespace": "demo",
            **META_DECODED,
            "labels": {"app": "vault", "team": "platform"},
            "annotations": {"note": ""},
        },
        "automountServiceAccountToken": False,
    }
    assert "secrets" not in got
    assert "imagePullSecrets" not in got


@pytest.mark.parametrize("api_version", ["v1", "meta.k8s.io/v1", "rbac.authorization.k8s.io/v1"])
def test_delete_options_background_zero_grace(api_version: str) -> None:
    raw = vf(1, 0) + ld(4, "Background")
    assert decode_body(envelope(api_version, "DeleteOptions", raw)) == {
        "apiVersion": api_version,
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "propagationPolicy": "Background",
    }


def test_delete_options_all_fields() -> None:
    raw = (
        vf(1, 30)
        + ld(2, ld(1, "uid-1") + ld(2, "42"))
        + vf(3, 1)
        + ld(4, "Foreground")
        + ld(5, "All")
        + vf(6, 1)
    )
    assert decode_body(envelope("v1", "DeleteOptions", raw)) == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 30,
        "preconditions": {"uid": "uid-1", "resourceVersion": "42"},
        "orphanDependents": True,
        "propagationPolicy": "Foreground",
        "dryRun": ["All"],
        "ignoreStoreReadErrorWithClusterBreakingPotential": True,
    }


def test_cluster_role_with_rules_aggregation_and_managed_fields() -> None:
    selector = entry(1, "rbac.example.com/aggregate", "true") + ld(
        2, ld(1, "tier") + ld(2, "In") + ld(3, "a") + ld(3, "b")
    )
    managed = (
        ld(1, "kubectl")
        + ld(2, "Apply")
        + ld(3, "rbac.authorization.k8s.io/v1")
        + ld(4, vf(1, 1136214245) + vf(2, 999_999_999))
        + ld(6, "FieldsV1")
        + ld(7, ld(1, b'{"f:rules":{}}'))
        + ld(8, "")
    )
    owner = ld(5, "v1") + ld(1, "Namespace") + ld(3, "demo") + ld(4, "u-1") + vf(6, 1)
    raw = (
        ld(1, ld(1, "agg") + ld(9, vf(1, 1136214245)) + vf(10, 30) + ld(13, owner))
        + ld(1, ld(14, "f1") + ld(14, "f2") + ld(17, managed))  # a second occurrence merges
        + ld(2, ld(1, "get") + ld(1, "list") + ld(2, "") + ld(3, "pods") + ld(4, "p"))
        + ld(2, ld(5, "/healthz") + ld(1, "get"))
        + ld(3, ld(1, selector))
    )
    got = decode_body(envelope("rbac.authorization.k8s.io/v1", "ClusterRole", raw))
    assert got == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": "agg",
            "deletionTimestamp": "2006-01-02T15:04:05Z",
            "deletionGracePeriodSeconds": 30,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "name": "demo",
                    "uid": "u-1",
                    "controller": True,
                }
            ],
            "finalizers": ["f1", "f2"],
            "managedFields": [
                {
                    "manager": "kubectl",
                    "operation": "Apply",
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "time": "2006-01-02T15:04:05Z",  # seconds precision: nanos dropped
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:rules": {}},
                    "subresource": "",
                }
            ],
        },
        "rules": [
            {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"],
             "resourceNames": ["p"]},
            {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
        ],
        "aggregationRule": {
            "clusterRoleSelectors": [
                {
                    "matchLabels": {"rbac.example.com/aggregate": "true"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
                }
            ]
        },
    }  # fmt: skip
    assert decode_body(encode_object(got)) == got


def test_namespace_spec_and_status() -> None:
    condition = ld(1, "NamespaceDeletionContentFailure") + ld(2, "False") + ld(4, b"")
    raw = (
        ld(1, meta("demo")) + ld(2, ld(1, "kubernetes")) + ld(3, ld(1, "Active") + ld(2, condition))
    )
    got = decode_body(envelope("v1", "Namespace", raw))
    assert got["spec"] == {"finalizers": ["kubernetes"]}
    assert got["status"] == {
        "phase": "Active",
        "conditions": [
            {
                "type": "NamespaceDeletionContentFailure",
                "status": "False",
                "lastTransitionTime": None,
            }
        ],
    }


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    unknown = (
        vf(99, 7)
        + varint(98 << 3 | 1)
        + b"\x01" * 8
        + ld(97, b"\xff\xfe anything")
        + varint(96 << 3 | 5)
        + b"\x02" * 4
    )
    raw = unknown + ld(3, ld(2, "Role") + unknown + ld(3, "r"))
    got = decode_body(envelope("rbac.authorization.k8s.io/v1", "RoleBinding", raw, unknown))
    assert got == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "roleRef": {"kind": "Role", "name": "r"},
    }


def test_integers_times_and_last_value_wins() -> None:
    raw = vf(1, -5) + vf(1, 7) + ld(4, "Orphan")
    got = decode_body(envelope("v1", "DeleteOptions", raw))
    assert got["gracePeriodSeconds"] == 7
    assert decode_body(envelope("v1", "DeleteOptions", vf(1, -5)))["gracePeriodSeconds"] == -5
    # Go's time.Unix normalises out-of-range nanos into seconds.
    meta_raw = ld(9, vf(1, 0) + vf(2, 1_500_000_000)) + ld(8, vf(2, 0))
    got = decode_body(envelope("v1", "Namespace", ld(1, meta_raw)))
    assert got["metadata"] == {
        "deletionTimestamp": "1970-01-01T00:00:01Z",
        "creationTimestamp": "1970-01-01T00:00:00Z",
    }
    zero = ld(8, vf(1, -62135596800) + vf(2, 0))
    got = decode_body(envelope("v1", "Namespace", ld(1, zero)))
    assert got["metadata"] == {"creationTimestamp": None}


def test_packed_and_unpacked_repeated_varints(monkeypatch: pytest.MonkeyPatch) -> None:
    # No supported kind has a repeated integer; give DeleteOptions one to exercise both forms.
    schema = {**MESSAGES["DeleteOptions"], 7: Field("numbers", "int64", repeated=True)}
    monkeypatch.setitem(MESSAGES, "DeleteOptions", schema)
    packed = ld(7, varint(1) + varint(300) + varint(-2))
    raw = vf(7, 5) + packed + vf(7, 6)
    got = decode_body(envelope("v1", "DeleteOptions", raw))
    assert got["numbers"] == [5, 1, 300, -2, 6]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "prefix"),
        (b'{"kind":"Namespace"}', "prefix"),
        (b"k8s\x01" + ld(2, b""), "prefix"),
        (MAGIC, "lacks apiVersion or kind"),
        (envelope("v1", "Pod", b""), "unsupported kind 'Pod'; supported: Namespace"),
        (envelope("v1", "Role", b""), "unsupported apiVersion 'v1' for kind 'Role'"),
        (envelope("v1", "Namespace", b"", ld(3, "gzip")), "contentEncoding"),
        (envelope("v1", "Namespace", b"", ld(4, "application/json")), "contentType"),
        (envelope("v1", "Namespace", b"\x0a\x05abc"), "past the end"),
        (envelope("v1", "Namespace", b"\x0a"), "truncated varint"),
        (envelope("v1", "Namespace", b"\x08" + b"\xff" * 11), "longer than 10 bytes"),
        (envelope("v1", "Namespace", b"\x0b"), "wire type 3"),
        (envelope("v1", "Namespace", b"\x00\x00"), "field number 0"),
        (envelope("v1", "Namespace", b"\x0d\x00\x00"), "truncated fixed-size"),
        (envelope("v1", "Namespace", vf(1, 3)), "Namespace.metadata: ObjectMeta"),
        (envelope("v1", "Namespace", ld(1, vf(1, 1))), "Namespace.metadata.name: string"),
        (envelope("v1", "Namespace", ld(1, ld(1, b"\xff"))), "UTF-8"),
        (envelope("v1", "Namespace", ld(1, ld(7, b""))), "generation: int64"),
        (envelope("v1", "Namespace", ld(1, ld(11, vf(1, 1)))), "map entry"),
        (envelope("v1", "Namespace", ld(1, ld(8, vf(1, 1 << 40)))), "outside years"),
        (
            envelope("v1", "Namespace", ld(1, ld(17, ld(7, ld(1, b"{nope"))))),
            "Raw is not valid JSON",
        ),
        (envelope("v1", "Namespace", ld(1, ld(17, ld(7, ld(1, b"[1]"))))), "not a JSON object"),
    ],
)
def test_malformed_bodies_raise_protobuf_error(body: bytes, message: str) -> None:
    with pytest.raises(ProtobufError) as caught:
        decode_body(body)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_unknown_kind_error_lists_every_supported_kind() -> None:
    with pytest.raises(ProtobufError) as caught:
        decode_body(envelope("v1", "Secret", b""))
    for kind in KINDS:
        assert kind in str(caught.value)


@pytest.mark.parametrize(
    "obj",
    [
        {"kind": "Namespace"},
        {"apiVersion": "v1", "kind": "Pod"},
        {"apiVersion": "v1", "kind": "Namespace", "spec": {"bogus": 1}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": 3}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"generation": True}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"finalizers": "x"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"creationTimestamp": "today"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"labels": {"a": 1}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": 1},
        {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 1 << 63},
    ],
)
def test_encode_rejects_what_it_cannot_represent(obj: dict[str, Any]) -> None:
    with pytest.raises(ProtobufError):
        encode_object(obj)


# ------------------------------------------------------------------------------ hypothesis

_KIND_NAMES = sorted(KINDS)


@given(st.binary(max_size=200))
def test_random_bytes_after_magic_never_crash(tail: bytes) -> None:
    try:
        result = decode_body(MAGIC + tail)
    except ProtobufError:
        return
    assert isinstance(result, dict)


@given(st.sampled_from(_KIND_NAMES), st.binary(max_size=300))
def test_random_object_bytes_never_crash(kind: str, raw: bytes) -> None:
    versions = KINDS[kind][0] or ("v1",)
    try:
        result = decode_body(envelope(versions[0], kind, raw))
    except ProtobufError:
        return
    assert result["kind"] == kind


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_EARLIEST = dt.datetime(1, 1, 1, 0, 0, 1)  # noqa: DTZ001 - hypothesis takes naive bounds
_LATEST = dt.datetime(9999, 12, 31, 23, 59, 59)  # noqa: DTZ001
# Go's zero time (0001-01-01T00:00:00Z) is JSON null, so it is left out of the strings.
_TIMES = st.datetimes(min_value=_EARLIEST, max_value=_LATEST).map(
    lambda t: f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}Z"
)
_SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=10),
    "bool": st.booleans(),
    "int64": st.integers(-(1 << 63), (1 << 63) - 1),
    "int32": st.integers(-(1 << 31), (1 << 31) - 1),
    "map": st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=1, max_size=3),
}


@functools.cache
def message_strategy(name: str) -> st.SearchStrategy[Any]:
    if name == "Time":
        return st.none() | _TIMES
    if name == "FieldsV1":
        return st.none() | st.dictionaries(st.text(max_size=8), _JSON, max_size=3)
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in MESSAGES[name].values():
        one = _SCALARS[field.type] if field.type in _SCALARS else message_strategy(field.type)
        # An empty list or map has no wire form: it comes back absent, so never draw one.
        optional[field.json_name] = st.lists(one, min_size=1, max_size=2) if field.repeated else one
    return st.fixed_dictionaries({}, optional=optional)


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(_KIND_NAMES))
    versions, message = KINDS[kind]
    api_version = draw(st.sampled_from(versions or ("v1", "meta.k8s.io/v1")))
    body: dict[str, Any] = draw(message_strategy(message))
    return {"apiVersion": api_version, "kind": kind, **body}


# Building the nested strategies of the biggest kinds takes over a second the first time.
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(objects())
def test_round_trip(obj: dict[str, Any]) -> None:
    assert decode_body(encode_object(obj)) == obj
