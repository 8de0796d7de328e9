"""Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``) as JSON dicts.

client-go (and so OpenBao's Kubernetes secrets engine) may send create and delete bodies as
protobuf instead of JSON. A body is the 4-byte magic ``k8s\\x00`` followed by one serialized
``runtime.Unknown``: ``typeMeta`` = 1 (``TypeMeta{apiVersion = 1, kind = 2}``), ``raw`` = 2
(the object's own protobuf bytes), ``contentEncoding`` = 3 and ``contentType`` = 4.

The object messages are decoded from a table of schemas transcribed from the upstream
``generated.proto`` files (Kubernetes 1.35, proto2): message name -> field number ->
``Field(json_name, type, repeated)``. A type is ``string``, ``bool``, ``int64``, ``int32``
(varints), ``bytes``, ``map`` (``map<string, string>``: entries with key = 1, value = 2) or
the name of another message in the table. The result is the dict the JSON body would be,
with the Kubernetes JSON names (camelCase):

* proto2 optional fields that are present on the wire appear even when empty (``""``,
  ``false``, ``0``): client-go writes every non-pointer field, so ``roleRef.apiGroup`` may
  arrive as ``""``. Fields absent from the wire are never invented.
* ``meta.v1.Time`` (``{seconds = 1, nanos = 2}``) becomes ``"2006-01-02T15:04:05Z"`` (UTC,
  seconds precision); the zero time (an empty message) becomes ``None``, as Go's JSON ``null``.
* ``meta.v1.FieldsV1`` (``{Raw = 1}``) becomes the JSON object held in ``Raw``.
* other ``bytes`` fields become base64 strings, as Go's ``[]byte`` in JSON.
* repeated scalars may be packed or not; unknown field numbers are skipped.

Anything malformed raises :class:`ProtobufError` (a ``ValueError``), never ``IndexError`` or
the like. :func:`encode_object` is the inverse, used by the tests.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

__all__ = [
    "ENVELOPE_MESSAGES",
    "KINDS",
    "MAGIC",
    "MESSAGES",
    "PROTOBUF",
    "Field",
    "ProtobufError",
    "decode_body",
    "encode_object",
]

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """The body is not a protobuf-encoded Kubernetes object this module understands."""


class Field(NamedTuple):
    """One field of a message: its JSON name, wire type name and whether it repeats."""

    json_name: str
    type: str
    repeated: bool = False


SCALAR_TYPES = frozenset({"string", "bool", "int64", "int32", "bytes"})
MAP_TYPE = "map"

_S = "string"
_B = "bool"
_I64 = "int64"
_I32 = "int32"

MESSAGES: dict[str, dict[int, Field]] = {
    # ---------------------------------------------- k8s.io/apimachinery/pkg/apis/meta/v1
    "ObjectMeta": {
        1: Field("name", _S),
        2: Field("generateName", _S),
        3: Field("namespace", _S),
        4: Field("selfLink", _S),
        5: Field("uid", _S),
        6: Field("resourceVersion", _S),
        7: Field("generation", _I64),
        8: Field("creationTimestamp", "Time"),
        9: Field("deletionTimestamp", "Time"),
        10: Field("deletionGracePeriodSeconds", _I64),
        11: Field("labels", MAP_TYPE),
        12: Field("annotations", MAP_TYPE),
        13: Field("ownerReferences", "OwnerReference", repeated=True),
        14: Field("finalizers", _S, repeated=True),
        17: Field("managedFields", "ManagedFieldsEntry", repeated=True),
    },
    "OwnerReference": {
        1: Field("kind", _S),
        3: Field("name", _S),
        4: Field("uid", _S),
        5: Field("apiVersion", _S),
        6: Field("controller", _B),
        7: Field("blockOwnerDeletion", _B),
    },
    "ManagedFieldsEntry": {
        1: Field("manager", _S),
        2: Field("operation", _S),
        3: Field("apiVersion", _S),
        4: Field("time", "Time"),
        6: Field("fieldsType", _S),
        7: Field("fieldsV1", "FieldsV1"),
        8: Field("subresource", _S),
    },
    "FieldsV1": {
        1: Field("Raw", "bytes"),
    },
    "Time": {
        1: Field("seconds", _I64),
        2: Field("nanos", _I32),
    },
    "LabelSelector": {
        1: Field("matchLabels", MAP_TYPE),
        2: Field("matchExpressions", "LabelSelectorRequirement", repeated=True),
    },
    "LabelSelectorRequirement": {
        1: Field("key", _S),
        2: Field("operator", _S),
        3: Field("values", _S, repeated=True),
    },
    "DeleteOptions": {
        1: Field("gracePeriodSeconds", _I64),
        2: Field("preconditions", "Preconditions"),
        3: Field("orphanDependents", _B),
        4: Field("propagationPolicy", _S),
        5: Field("dryRun", _S, repeated=True),
        6: Field("ignoreStoreReadErrorWithClusterBreakingPotential", _B),
    },
    "Preconditions": {
        1: Field("uid", _S),
        2: Field("resourceVersion", _S),
    },
    # ---------------------------------------------------------------- k8s.io/api/core/v1
    "Namespace": {
        1: Field("metadata", "ObjectMeta"),
        2: Field("spec", "NamespaceSpec"),
        3: Field("status", "NamespaceStatus"),
    },
    "NamespaceSpec": {
        1: Field("finalizers", _S, repeated=True),
    },
    "NamespaceStatus": {
        1: Field("phase", _S),
        2: Field("conditions", "NamespaceCondition", repeated=True),
    },
    "NamespaceCondition": {
        1: Field("type", _S),
        2: Field("status", _S),
        4: Field("lastTransitionTime", "Time"),
        5: Field("reason", _S),
        6: Field("message", _S),
    },
    "ServiceAccount": {
        1: Field("metadata", "ObjectMeta"),
        2: Field("secrets", "ObjectReference", repeated=True),
        3: Field("imagePullSecrets", "LocalObjectReference", repeated=True),
        4: Field("automountServiceAccountToken", _B),
    },
    "ObjectReference": {
        1: Field("kind", _S),
        2: Field("namespace", _S),
        3: Field("name", _S),
        4: Field("uid", _S),
        5: Field("apiVersion", _S),
        6: Field("resourceVersion", _S),
        7: Field("fieldPath", _S),
    },
    "LocalObjectReference": {
        1: Field("name", _S),
    },
    # ---------------------------------------------------------------- k8s.io/api/rbac/v1
    "Role": {
        1: Field("metadata", "ObjectMeta"),
        2: Field("rules", "PolicyRule", repeated=True),
    },
    "ClusterRole": {
        1: Field("metadata", "ObjectMeta"),
        2: Field("rules", "PolicyRule", repeated=True),
        3: Field("aggregationRule", "AggregationRule"),
    },
    "RoleBinding": {
        1: Field("metadata", "ObjectMeta"),
        2: Field("subjects", "Subject", repeated=True),
        3: Field("roleRef", "RoleRef"),
    },
    "ClusterRoleBinding": {
        1: Field("metadata", "ObjectMeta"),
        2: Field("subjects", "Subject", repeated=True),
        3: Field("roleRef", "RoleRef"),
    },
    "PolicyRule": {
        1: Field("verbs", _S, repeated=True),
        2: Field("apiGroups", _S, repeated=True),
        3: Field("resources", _S, repeated=True),
        4: Field("resourceNames", _S, repeated=True),
        5: Field("nonResourceURLs", _S, repeated=True),
    },
    "AggregationRule": {
        1: Field("clusterRoleSelectors", "LabelSelector", repeated=True),
    },
    "RoleRef": {
        1: Field("apiGroup", _S),
        2: Field("kind", _S),
        3: Field("name", _S),
    },
    "Subject": {
        1: Field("kind", _S),
        2: Field("apiGroup", _S),
        3: Field("name", _S),
        4: Field("namespace", _S),
    },
    # ------------------------------------------------------ k8s.io/api/authentication/v1
    "TokenRequest": {
        1: Field("metadata", "ObjectMeta"),
        2: Field("spec", "TokenRequestSpec"),
        3: Field("status", "TokenRequestStatus"),
    },
    "TokenRequestSpec": {
        1: Field("audiences", _S, repeated=True),
        3: Field("boundObjectRef", "BoundObjectReference"),
        4: Field("expirationSeconds", _I64),
    },
    "TokenRequestStatus": {
        1: Field("token", _S),
        2: Field("expirationTimestamp", "Time"),
    },
    "BoundObjectReference": {
        1: Field("kind", _S),
        2: Field("apiVersion", _S),
        3: Field("name", _S),
        # The .proto names it ``uID``; Go's JSON tag is ``uid``.
        4: Field("uid", _S),
    },
}

# k8s.io/apimachinery/pkg/runtime: the envelope. Kept apart from MESSAGES because
# runtime.TypeMeta numbers its fields the other way round from meta.v1.TypeMeta.
ENVELOPE_MESSAGES: dict[str, dict[int, Field]] = {
    "Unknown": {
        1: Field("typeMeta", "TypeMeta"),
        2: Field("raw", "bytes"),
        3: Field("contentEncoding", _S),
        4: Field("contentType", _S),
    },
    "TypeMeta": {
        1: Field("apiVersion", _S),
        2: Field("kind", _S),
    },
}

_RBAC = ("rbac.authorization.k8s.io/v1",)

# kind -> (accepted apiVersions, or None for any; message name)
KINDS: dict[str, tuple[tuple[str, ...] | None, str]] = {
    "Namespace": (("v1",), "Namespace"),
    "ServiceAccount": (("v1",), "ServiceAccount"),
    "Role": (_RBAC, "Role"),
    "ClusterRole": (_RBAC, "ClusterRole"),
    "RoleBinding": (_RBAC, "RoleBinding"),
    "ClusterRoleBinding": (_RBAC, "ClusterRoleBinding"),
    "TokenRequest": (("authentication.k8s.io/v1",), "TokenRequest"),
    # DeleteOptions is registered in every group version; client-go stamps the one of the
    # client that sends it (``v1``, ``rbac.authorization.k8s.io/v1``, ``meta.k8s.io/v1``, ...).
    "DeleteOptions": (None, "DeleteOptions"),
}

# ----------------------------------------------------------------------------- wire level

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_VARINT_TYPES = frozenset({"bool", "int64", "int32"})
_MASK64 = (1 << 64) - 1


def _read_varint(data: bytes, pos: int, path: str) -> tuple[int, int]:
    result = 0
    for i in range(10):
        if pos >= len(data):
            raise ProtobufError(f"{path}: truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return result & _MASK64, pos
    raise ProtobufError(f"{path}: varint longer than 10 bytes")


def _iter_fields(data: bytes, path: str) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field number, wire type, value)``; a varint's value is an int, else bytes."""
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _read_varint(data, pos, path)
        number, wire_type = key >> 3, key & 7
        if number == 0 or number > 0x1FFFFFFF:
            raise ProtobufError(f"{path}: invalid field number {number}")
        value: int | bytes
        if wire_type == _VARINT:
            value, pos = _read_varint(data, pos, path)
        elif wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            if pos + size > end:
                raise ProtobufError(f"{path}: truncated fixed-size field {number}")
            value = data[pos : pos + size]
            pos += size
        elif wire_type == _LEN:
            size, pos = _read_varint(data, pos, path)
            if size > end - pos:
                raise ProtobufError(f"{path}: field {number} runs past the end of its message")
            value = data[pos : pos + size]
            pos += size
        else:
            raise ProtobufError(f"{path}: unsupported wire type {wire_type} (field {number})")
        yield number, wire_type, value


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _scalar(type_: str, value: int, path: str) -> Any:
    if type_ == "bool":
        return value != 0
    if type_ == "int32":
        return _signed(value, 32)
    if type_ == "int64":
        return _signed(value, 64)
    raise ProtobufError(f"{path}: {type_} field sent as a varint")  # pragma: no cover


def _text(raw: bytes, path: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtobufError(f"{path}: string is not valid UTF-8") from exc


def _packed_varints(raw: bytes, path: str) -> Iterator[int]:
    pos = 0
    while pos < len(raw):
        value, pos = _read_varint(raw, pos, path)
        yield value


def _varint_items(field: Field, wire_type: int, value: int | bytes, path: str) -> list[Any]:
    """The values of one occurrence of a varint field: one, or several when packed."""
    if wire_type == _VARINT and isinstance(value, int):
        return [_scalar(field.type, value, path)]
    if wire_type == _LEN and field.repeated and isinstance(value, bytes):
        return [_scalar(field.type, v, path) for v in _packed_varints(value, path)]
    raise ProtobufError(f"{path}: {field.type} field has wire type {wire_type}")


def _decode_map(raw: bytes, path: str) -> tuple[str, str]:
    key, value = "", ""
    for number, wire_type, item in _iter_fields(raw, path):
        if number not in (1, 2):
            continue
        if wire_type != _LEN or isinstance(item, int):
            raise ProtobufError(f"{path}: map entry field {number} has wire type {wire_type}")
        if number == 1:
            key = _text(item, path)
        else:
            value = _text(item, path)
    return key, value


def _decode_fields(
    data: bytes, schema: dict[int, Field], path: str, messages: dict[str, dict[int, Field]]
) -> dict[str, Any]:
    """Decode one message to a dict keyed by JSON name; ``bytes`` fields stay ``bytes``."""
    out: dict[str, Any] = {}
    embedded: dict[int, bytearray] = {}  # non-repeated messages: occurrences merge
    for number, wire_type, value in _iter_fields(data, path):
        field = schema.get(number)
        if field is None:
            continue
        where = f"{path}.{field.json_name}"
        type_ = field.type
        if type_ in _VARINT_TYPES:
            items = _varint_items(field, wire_type, value, where)
            if field.repeated:
                out.setdefault(field.json_name, []).extend(items)
            else:
                out[field.json_name] = items[-1]
            continue
        if wire_type != _LEN or not isinstance(value, bytes):
            raise ProtobufError(f"{where}: {type_} field has wire type {wire_type}")
        item: Any
        if type_ == MAP_TYPE:
            key, text = _decode_map(value, where)
            out.setdefault(field.json_name, {})[key] = text
            continue
        if type_ == "string":
            item = _text(value, where)
        elif type_ == "bytes":
            item = bytes(value)
        elif not field.repeated:
            embedded.setdefault(number, bytearray()).extend(value)
            continue
        else:
            item = _decode_message(value, type_, where, messages)
        if field.repeated:
            out.setdefault(field.json_name, []).append(item)
        else:
            out[field.json_name] = item
    for number, raw in embedded.items():
        field = schema[number]
        where = f"{path}.{field.json_name}"
        out[field.json_name] = _decode_message(bytes(raw), field.type, where, messages)
    return out


# Go's zero time.Time: 0001-01-01T00:00:00Z, marshalled by metav1.Time as JSON null.
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ZERO_TIME_SECONDS = -62135596800
_MAX_TIME_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
_TIME_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z")


def _time_from_wire(fields: dict[str, Any], path: str) -> str | None:
    seconds: int = fields.get("seconds", 0)
    nanos: int = fields.get("nanos", 0)
    seconds += nanos // 1_000_000_000  # as Go's time.Unix normalises nanoseconds
    nanos %= 1_000_000_000
    if not fields or (seconds == _ZERO_TIME_SECONDS and nanos == 0):
        return None
    if not _ZERO_TIME_SECONDS <= seconds <= _MAX_TIME_SECONDS:
        raise ProtobufError(f"{path}: timestamp {seconds}s is outside years 1-9999")
    moment = _EPOCH + dt.timedelta(seconds=seconds)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z"
    )


def _time_to_wire(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    match = _TIME_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ProtobufError(f"{path}: expected a time like 2006-01-02T15:04:05Z or None")
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError as exc:
        raise ProtobufError(f"{path}: {exc}") from exc
    return {"seconds": (moment - _EPOCH) // dt.timedelta(seconds=1), "nanos": 0}


def _fields_v1_from_wire(fields: dict[str, Any], path: str) -> Any:
    raw: bytes = fields.get("Raw", b"")
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtobufError(f"{path}: Raw is not valid JSON") from exc
    if not isinstance(value, dict):
        raise ProtobufError(f"{path}: Raw is not a JSON object")
    return value


def _fields_v1_to_wire(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtobufError(f"{path}: expected a JSON object or None")
    try:
        raw = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ProtobufError(f"{path}: {exc}") from exc
    return {"Raw": base64.b64encode(raw).decode("ascii")}


_FROM_WIRE: dict[str, Callable[[dict[str, Any], str], Any]] = {
    "Time": _time_from_wire,
    "FieldsV1": _fields_v1_from_wire,
}
_TO_WIRE: dict[str, Callable[[Any, str], dict[str, Any]]] = {
    "Time": _time_to_wire,
    "FieldsV1": _fields_v1_to_wire,
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _decode_message(
    data: bytes, name: str, path: str, messages: dict[str, dict[int, Field]] = MESSAGES
) -> Any:
    fields = _decode_fields(data, messages[name], path, messages)
    special = _FROM_WIRE.get(name)
    if special is not None:
        return special(fields, path)
    return {key: _jsonable(value) for key, value in fields.items()}


# ------------------------------------------------------------------------------- decoding


def _supported() -> str:
    return ", ".join(
        f"{kind} ({'/'.join(versions) if versions else 'any apiVersion'})"
        for kind, (versions, _) in KINDS.items()
    )


def decode_body(body: bytes) -> dict[str, Any]:
    """Decode a protobuf request body to the dict its JSON form would be.

    The result carries ``apiVersion`` and ``kind`` from the envelope's ``typeMeta``.
    Raises :class:`ProtobufError` for a missing magic, an unsupported kind or bad bytes.
    """
    data = bytes(body)
    if not data.startswith(MAGIC):
        raise ProtobufError(
            f"not a Kubernetes protobuf body: expected the prefix {MAGIC!r}, got {data[:4]!r}"
        )
    envelope = _decode_fields(
        data[len(MAGIC) :], ENVELOPE_MESSAGES["Unknown"], "Unknown", ENVELOPE_MESSAGES
    )
    type_meta: dict[str, Any] = envelope.get("typeMeta", {})
    if envelope.get("contentEncoding"):
        raise ProtobufError(
            f"unsupported contentEncoding {envelope['contentEncoding']!r} in the envelope"
        )
    if envelope.get("contentType", "") not in ("", PROTOBUF):
        raise ProtobufError(f"unsupported contentType {envelope['contentType']!r} in the envelope")
    api_version: str = type_meta.get("apiVersion", "")
    kind: str = type_meta.get("kind", "")
    if not api_version or not kind:
        raise ProtobufError("the envelope's typeMeta lacks apiVersion or kind")
    entry = KINDS.get(kind)
    if entry is None:
        raise ProtobufError(f"unsupported kind {kind!r}; supported: {_supported()}")
    versions, message = entry
    if versions is not None and api_version not in versions:
        raise ProtobufError(
            f"unsupported apiVersion {api_version!r} for kind {kind!r}; supported: {_supported()}"
        )
    obj = _decode_message(envelope.get("raw", b""), message, kind)
    return {"apiVersion": api_version, "kind": kind, **obj}


# ------------------------------------------------------------------------------- encoding


def _varint(value: int) -> bytes:
    value &= _MASK64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number, _LEN) + _varint(len(payload)) + payload


def _encode_scalar(number: int, type_: str, value: Any, path: str) -> bytes:
    if type_ == "string":
        if not isinstance(value, str):
            raise ProtobufError(f"{path}: expected a string")
        return _length_delimited(number, value.encode("utf-8"))
    if type_ == "bytes":
        if isinstance(value, bytes):
            return _length_delimited(number, value)
        if not isinstance(value, str):
            raise ProtobufError(f"{path}: expected base64 text")
        try:
            return _length_delimited(number, base64.b64decode(value, validate=True))
        except binascii.Error as exc:
            raise ProtobufError(f"{path}: expected base64 text") from exc
    if type_ == "bool":
        if not isinstance(value, bool):
            raise ProtobufError(f"{path}: expected a bool")
        return _key(number, _VARINT) + _varint(int(value))
    bits = 32 if type_ == "int32" else 64
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not -(1 << (bits - 1)) <= value < 1 << (bits - 1)
    ):
        raise ProtobufError(f"{path}: expected an {type_}")
    return _key(number, _VARINT) + _varint(value)


def _encode_message(value: Any, name: str, path: str) -> bytes:
    special = _TO_WIRE.get(name)
    if special is not None:
        value = special(value, path)
    if not isinstance(value, dict):
        raise ProtobufError(f"{path}: expected an object for {name}")
    schema = MESSAGES[name]
    by_name = {field.json_name: (number, field) for number, field in schema.items()}
    unknown = sorted(set(value) - set(by_name))
    if unknown:
        raise ProtobufError(f"{path}: unknown field(s) {', '.join(unknown)} for {name}")
    out = bytearray()
    for number, field in sorted(schema.items()):
        if field.json_name not in value:
            continue
        where = f"{path}.{field.json_name}"
        item = value[field.json_name]
        if field.type == MAP_TYPE:
            if not isinstance(item, dict):
                raise ProtobufError(f"{where}: expected an object of strings")
            for key in sorted(item):
                entry = _encode_scalar(1, "string", key, where) + _encode_scalar(
                    2, "string", item[key], where
                )
                out += _length_delimited(number, entry)
            continue
        items = item if field.repeated else [item]
        if field.repeated and not isinstance(item, list):
            raise ProtobufError(f"{where}: expected a list")
        for one in items:
            if field.type in SCALAR_TYPES:
                out += _encode_scalar(number, field.type, one, where)
            else:
                out += _length_delimited(number, _encode_message(one, field.type, where))
    return bytes(out)


def encode_object(obj: dict[str, Any]) -> bytes:
    """Encode a JSON-form object as client-go would send it (the inverse of decode_body)."""
    if not isinstance(obj, dict):
        raise ProtobufError("expected an object")
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or kind not in KINDS:
        raise ProtobufError(
            f"cannot encode kind {kind!r} (apiVersion {api_version!r}); supported: {_supported()}"
        )
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    raw = _encode_message(body, KINDS[kind][1], kind)
    type_meta = _encode_scalar(1, "string", api_version, "apiVersion") + _encode_scalar(
        2, "string", kind, "kind"
    )
    return MAGIC + _length_delimited(1, type_meta) + _length_delimited(2, raw)
