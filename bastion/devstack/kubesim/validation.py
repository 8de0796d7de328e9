"""Object validation with the API server's field paths, reasons and wording (422 causes)."""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "Cause",
    "validate_ephemeral_update",
    "validate_object",
]

Cause = tuple[str, str, str]  # field, reason, message
Obj = dict[str, Any]

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)

# EphemeralContainerCommon fields that may be set; the API server uses an allow-list so that
# new container fields are refused until considered for debug containers.
_EPHEMERAL_ALLOWED = {
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "envFrom",
    "env",
    "volumeMounts",
    "volumeDevices",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
    "targetContainerName",
}


def _required(field: str) -> Cause:
    return (field, "FieldValueRequired", "Required value")


def _invalid(field: str, value: Any, why: str) -> Cause:
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    return (field, "FieldValueInvalid", f"Invalid value: {shown}: {why}")


def check_label(field: str, value: Any) -> list[Cause]:
    if not isinstance(value, str) or not value:
        return [_required(field)]
    if len(value) > 63:
        return [_invalid(field, value, "must be no more than 63 characters")]
    if not _LABEL.fullmatch(value):
        return [_invalid(field, value, _LABEL_MSG)]
    return []


def check_subdomain(field: str, value: Any) -> list[Cause]:
    if not isinstance(value, str) or not value:
        return [_required(field)]
    if len(value) > 253:
        return [_invalid(field, value, "must be no more than 253 characters")]
    if not _SUBDOMAIN.fullmatch(value):
        return [_invalid(field, value, _SUBDOMAIN_MSG)]
    return []


def _meta(obj: Obj, *, name_rule: str = "subdomain") -> list[Cause]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [_required("metadata")]
    if not meta.get("name") and not meta.get("generateName"):
        return [
            (
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            )
        ]
    if not meta.get("name"):
        return []
    check = check_label if name_rule == "label" else check_subdomain
    return check("metadata.name", meta["name"])


def _containers(spec: Obj, key: str, seen: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    for i, container in enumerate(spec.get(key) or []):
        path = f"spec.{key}[{i}]"
        if not isinstance(container, dict):
            causes.append(_invalid(path, container, "must be an object"))
            continue
        causes += _unique_name(path, container.get("name"), seen)
        if not container.get("image"):
            causes.append(_required(f"{path}.image"))
    return causes


def _unique_name(path: str, name: Any, seen: set[str]) -> list[Cause]:
    """Container names are labels, unique across containers of every kind in the pod."""
    found = check_label(f"{path}.name", name)
    if not found and name in seen:
        found = [(f"{path}.name", "FieldValueDuplicate", f'Duplicate value: "{name}"')]
    seen.add(str(name))
    return found


def validate_pod(pod: Obj) -> list[Cause]:
    causes = _meta(pod)
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return [*causes, _required("spec")]
    if not spec.get("containers"):
        causes.append(_required("spec.containers"))
    seen: set[str] = set()
    for key in ("initContainers", "containers", "ephemeralContainers"):
        causes += _containers(spec, key, seen)
    if spec.get("ephemeralContainers"):
        causes.append(
            (
                "spec.ephemeralContainers",
                "FieldValueForbidden",
                "Forbidden: cannot be set on create",
            )
        )
    return causes


def _rules(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    for i, rule in enumerate(obj.get("rules") or []):
        if not isinstance(rule, dict):
            causes.append(_invalid(f"rules[{i}]", rule, "must be an object"))
            continue
        if not rule.get("verbs"):
            causes.append(_required(f"rules[{i}].verbs"))
        if rule.get("nonResourceURLs") and rule.get("resources"):
            causes.append(
                _invalid(
                    f"rules[{i}].nonResourceURLs",
                    rule["nonResourceURLs"],
                    "rules cannot apply to both regular resources and non-resource URLs",
                )
            )
        if not rule.get("nonResourceURLs") and not rule.get("resources"):
            causes.append(_required(f"rules[{i}].resources"))
    return causes


def _binding(obj: Obj, *, cluster: bool) -> list[Cause]:
    causes: list[Cause] = []
    ref = obj.get("roleRef")
    if not isinstance(ref, dict):
        return [_required("roleRef")]
    allowed = ("ClusterRole",) if cluster else ("Role", "ClusterRole")
    if ref.get("apiGroup") != "rbac.authorization.k8s.io":
        causes.append(
            (
                "roleRef.apiGroup",
                "FieldValueNotSupported",
                f'Unsupported value: "{ref.get("apiGroup", "")}": supported values: '
                '"rbac.authorization.k8s.io"',
            )
        )
    if ref.get("kind") not in allowed:
        supported = ", ".join(f'"{k}"' for k in allowed)
        causes.append(
            (
                "roleRef.kind",
                "FieldValueNotSupported",
                f'Unsupported value: "{ref.get("kind", "")}": supported values: {supported}',
            )
        )
    if not ref.get("name"):
        causes.append(_required("roleRef.name"))
    for i, subject in enumerate(obj.get("subjects") or []):
        kind = subject.get("kind") if isinstance(subject, dict) else None
        if kind not in ("User", "Group", "ServiceAccount"):
            causes.append(
                (
                    f"subjects[{i}].kind",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{kind}": supported values: "ServiceAccount", "User", '
                    '"Group"',
                )
            )
        elif not subject.get("name"):
            causes.append(_required(f"subjects[{i}].name"))
        elif kind == "ServiceAccount" and cluster and not subject.get("namespace"):
            causes.append(_required(f"subjects[{i}].namespace"))
    return causes


def validate_object(kind: str, obj: Obj) -> list[Cause]:
    """Causes for a create (or the new object of an update); empty when valid."""
    if kind == "Pod":
        return validate_pod(obj)
    if kind == "Namespace":
        return _meta(obj, name_rule="label")
    if kind in ("Role", "ClusterRole"):
        return _meta(obj) + _rules(obj)
    if kind in ("RoleBinding", "ClusterRoleBinding"):
        return _meta(obj) + _binding(obj, cluster=kind == "ClusterRoleBinding")
    return _meta(obj)


def validate_ephemeral_update(old: Obj, new: Obj) -> list[Cause]:
    """The ``pods/ephemeralcontainers`` rules: existing ones immutable, new ones restricted."""
    causes: list[Cause] = []
    old_list = old["spec"].get("ephemeralContainers") or []
    new_list = new["spec"].get("ephemeralContainers") or []
    new_by_name = {c.get("name"): c for c in new_list if isinstance(c, dict)}
    for existing in old_list:
        name = existing["name"]
        if name not in new_by_name:
            causes.append(
                (
                    "spec.ephemeralContainers",
                    "FieldValueForbidden",
                    f'Forbidden: existing ephemeral containers "{name}" may not be removed',
                )
            )
        elif new_by_name[name] != existing:
            index = new_list.index(new_by_name[name])
            causes.append(
                (
                    f"spec.ephemeralContainers[{index}]",
                    "FieldValueForbidden",
                    f'Forbidden: existing ephemeral containers "{name}" may not be changed',
                )
            )
    seen = {
        c["name"] for key in ("initContainers", "containers") for c in new["spec"].get(key) or []
    }
    regular = {c["name"] for c in new["spec"].get("containers") or []} | {
        c["name"] for c in new["spec"].get("initContainers") or []
    }
    old_names = {c["name"] for c in old_list}
    for i, container in enumerate(new_list):
        path = f"spec.ephemeralContainers[{i}]"
        if not isinstance(container, dict):
            causes.append(_invalid(path, container, "must be an object"))
            continue
        name = container.get("name")
        causes += _unique_name(path, name, seen)
        if name in old_names:
            continue
        if not container.get("image"):
            causes.append(_required(f"{path}.image"))
        for field in sorted(set(container) - _EPHEMERAL_ALLOWED):
            causes.append(
                (
                    f"{path}.{field}",
                    "FieldValueForbidden",
                    "Forbidden: cannot be set for an Ephemeral Container",
                )
            )
        target = container.get("targetContainerName")
        if target and target not in regular:
            causes.append(
                (f"{path}.targetContainerName", "FieldValueNotFound", f'Not found: "{target}"')
            )
    return causes
