"""List and watch filters: ``labelSelector`` and ``fieldSelector`` as the API server reads them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bastion.devstack.kubesim.errors import ApiError
from bastion.labels import SelectorError, parse_selector

__all__ = ["build_predicate"]

Obj = dict[str, Any]

_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": (
        *_COMMON_FIELDS,
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "namespaces": ("metadata.name", "status.phase"),
    # The API server's event field labels (pkg/registry/core/event/strategy.go).
    "events": (
        *_COMMON_FIELDS,
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
}


# Field labels that name something else than their path.
_ALIASES = {"source": "source.component"}


def _field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in _ALIASES.get(path, path).split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def _parse_fields(resource: str, text: str) -> list[tuple[str, bool, str]]:
    """(field, equal?, value) triples; ``=``, ``==`` and ``!=`` as in Kubernetes."""
    supported = _FIELDS.get(resource, _COMMON_FIELDS)
    terms: list[tuple[str, bool, str]] = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in raw:
            field, value = raw.split("!=", 1)
            equal = False
        elif "==" in raw:
            field, value = raw.split("==", 1)
            equal = True
        elif "=" in raw:
            field, value = raw.split("=", 1)
            equal = True
        else:
            raise ApiError(400, f'invalid field selector: "{raw}": no operator found')
        field = field.strip()
        if field not in supported:
            raise ApiError(400, f"field label not supported: {field}")
        terms.append((field, equal, value.strip()))
    return terms


def build_predicate(
    resource: str, label_selector: str | None, field_selector: str | None
) -> Callable[[Obj], bool] | None:
    """A filter for the list/watch parameters, or None when there is nothing to filter."""
    labels = None
    if label_selector:
        try:
            labels = parse_selector(label_selector)
        except SelectorError as exc:
            raise ApiError(400, f"unable to parse requirement: {exc}") from None
    fields = _parse_fields(resource, field_selector) if field_selector else []
    if labels is None and not fields:
        return None

    def predicate(obj: Obj) -> bool:
        if labels is not None and not labels.matches(obj.get("metadata", {}).get("labels") or {}):
            return False
        return all((_field_value(obj, f) == v) == equal for f, equal, v in fields)

    return predicate
