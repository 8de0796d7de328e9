"""PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge.

Strategic merge patch merges lists of objects by their merge key (``containers`` and
``ephemeralContainers`` by ``name``, ``ports`` by ``containerPort`` ...), as declared by
the ``patchStrategy``/``patchMergeKey`` tags of the Kubernetes types; the table below holds
the ones of the kinds kubesim serves. Directives: ``$patch: replace|delete|merge``,
``$retainKeys``, ``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>``
(accepted; kubesim keeps the existing order).
"""

from __future__ import annotations

import copy
from typing import Any

from bastion.devstack.kubesim.errors import ApiError

__all__ = ["JSON_MERGE", "JSON_PATCH", "STRATEGIC", "apply_patch"]

JSON_PATCH = "application/json-patch+json"
JSON_MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"

_CONTAINER_LISTS = {
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "resizePolicy": "resourceName",
}
# Path (field names, "[]" for a list element) → merge key of the list at that path.
_MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("metadata", "ownerReferences"): "uid",
    ("spec", "containers"): "name",
    ("spec", "initContainers"): "name",
    ("spec", "ephemeralContainers"): "name",
    ("spec", "volumes"): "name",
    ("spec", "imagePullSecrets"): "name",
    ("spec", "hostAliases"): "ip",
    ("spec", "resourceClaims"): "name",
    ("status", "conditions"): "type",
    ("secrets",): "name",
    **{
        ("spec", kind, "[]", field): key
        for kind in ("containers", "initContainers", "ephemeralContainers")
        for field, key in _CONTAINER_LISTS.items()
    },
}
_PRIMITIVE_MERGE = {("metadata", "finalizers")}


def apply_patch(original: dict[str, Any], content_type: str, patch: Any) -> dict[str, Any]:
    """Return a patched deep copy of ``original``; 400/415/422 ApiError on a bad patch."""
    base = copy.deepcopy(original)
    media = content_type.split(";", maxsplit=1)[0].strip()
    if media == JSON_PATCH:
        return _json_patch(base, patch)
    if not isinstance(patch, dict):
        raise ApiError(
            400,
            "the body of the request was in an unknown format - accepted media "
            "types include: application/json-patch+json, application/merge-patch+json, "
            "application/apply-patch+yaml",
        )
    if media == JSON_MERGE:
        result = _merge(base, patch)
    elif media == STRATEGIC:
        result = _strategic(base, patch, ())
    else:
        raise ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{JSON_PATCH}, {JSON_MERGE}, {STRATEGIC}",
        )
    if not isinstance(result, dict):
        raise ApiError(400, "the patch produced something that is not an object")
    return result


# ---------------------------------------------------------------------------- RFC 7386
def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


# ---------------------------------------------------------------------------- strategic
def _strategic(target: Any, patch: Any, path: tuple[str, ...]) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        child = (*path, key)
        current = result.get(key)
        if isinstance(value, list):
            result[key] = _strategic_list(current, value, child)
        elif isinstance(value, dict):
            merged = _strategic(current, value, child)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _strategic_list(current: Any, patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    existing = current if isinstance(current, list) else []
    key = _MERGE_KEYS.get(path)
    if path in _PRIMITIVE_MERGE:
        return existing + [v for v in patch if v not in existing]
    if key is None:
        return [copy.deepcopy(v) for v in patch if not _is_directive(v)]
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [
            copy.deepcopy(item)
            for item in patch
            if not (isinstance(item, dict) and item.get("$patch") == "replace")
        ]
    merged = [copy.deepcopy(item) for item in existing]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise ApiError(
                400,
                f"map: {item!r} does not contain declared merge key: {key}",
            )
        index = next(
            (
                i
                for i, old in enumerate(merged)
                if isinstance(old, dict) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
            continue
        if index is None:
            merged.append(_strategic({}, item, (*path, "[]")))
        else:
            merged[index] = _strategic(merged[index], item, (*path, "[]"))
    return merged


def _is_directive(value: Any) -> bool:
    return isinstance(value, dict) and "$patch" in value


# ---------------------------------------------------------------------------- RFC 6902
def _json_patch(document: Any, operations: Any) -> dict[str, Any]:
    if not isinstance(operations, list):
        raise ApiError(400, "json patch must be a list of operations")
    for number, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, f"json patch operation {number} needs 'op' and 'path'")
        kind = op["op"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise ApiError(400, f"json patch operation {number} ({kind}) needs 'value'")
        if kind == "add":
            document = _pointer_set(document, op["path"], op["value"], insert=True)
        elif kind == "replace":
            _pointer_get(document, op["path"])
            document = _pointer_set(document, op["path"], op["value"], insert=False)
        elif kind == "remove":
            document = _pointer_remove(document, op["path"])
        elif kind in ("move", "copy"):
            value = _pointer_get(document, op["from"])
            if kind == "move":
                document = _pointer_remove(document, op["from"])
            document = _pointer_set(document, op["path"], copy.deepcopy(value), insert=True)
        elif kind == "test":
            if _pointer_get(document, op["path"]) != op["value"]:
                raise ApiError(422, f"testing value {op['path']} failed", reason="Invalid")
        else:
            raise ApiError(400, f"unknown json patch operation {kind!r}")
    if not isinstance(document, dict):
        raise ApiError(400, "the patch produced something that is not an object")
    return document


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ApiError(400, f"json patch path {pointer!r} must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _walk(document: Any, tokens: list[str], pointer: str) -> Any:
    node = document
    for token in tokens:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise ApiError(422, f"json patch path {pointer!r} does not exist", reason="Invalid")
    return node


def _pointer_get(document: Any, pointer: str) -> Any:
    return _walk(document, _tokens(pointer), pointer)


def _pointer_set(document: Any, pointer: str, value: Any, *, insert: bool) -> Any:
    tokens = _tokens(pointer)
    if not tokens:
        return copy.deepcopy(value)
    parent = _walk(document, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-" and insert:
            parent.append(copy.deepcopy(value))
        elif last.isdigit() and int(last) <= len(parent) - (0 if insert else 1):
            if insert:
                parent.insert(int(last), copy.deepcopy(value))
            else:
                parent[int(last)] = copy.deepcopy(value)
        else:
            raise ApiError(
                422, f"json patch index {last!r} out of range at {pointer!r}", reason="Invalid"
            )
    else:
        raise ApiError(422, f"json patch path {pointer!r} does not exist", reason="Invalid")
    return document


def _pointer_remove(document: Any, pointer: str) -> Any:
    tokens = _tokens(pointer)
    if not tokens:
        raise ApiError(422, "json patch cannot remove the whole document", reason="Invalid")
    parent = _walk(document, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise ApiError(422, f"json patch path {pointer!r} does not exist", reason="Invalid")
    return document
