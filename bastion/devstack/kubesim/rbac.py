"""Authentication subjects and RBAC authorization, evaluated from the stored objects.

The rules are the API server's (``k8s.io/kubernetes/pkg/apis/rbac/v1`` helpers and the
RBAC authorizer): a request is allowed when any ClusterRoleBinding, or any RoleBinding in the
request's namespace, binds the user (by name, group or service account) to a role with a rule
matching the verb, API group, resource (``pods/attach`` style for subresources, ``*`` and
``*/sub`` wildcards) and resource name. ``system:masters`` may do anything. Discovery paths
and self-reviews are open to every authenticated user, as the default bootstrap roles make
them.

Creating a role, or a binding to one, is refused when it would grant permissions its creator
does not hold (escalation prevention), unless the creator has the ``escalate`` or ``bind``
verb, exactly as Kubernetes does. This matters: it is what makes a minimal RBAC for Vault's
service account honest.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bastion.devstack.kubesim.store import RESOURCES, Store

__all__ = ["Attributes", "Authorizer", "UserInfo"]

RBAC_GROUP = "rbac.authorization.k8s.io"
_PUBLIC_PATHS = ("/api", "/apis", "/version", "/healthz", "/readyz", "/livez", "/openapi")
_SELF_REVIEWS = {
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
}


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...]
    uid: str = ""

    @classmethod
    def service_account(cls, namespace: str, name: str, uid: str) -> UserInfo:
        return cls(
            f"system:serviceaccount:{namespace}:{name}",
            (
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ),
            uid,
        )


@dataclass(frozen=True)
class Attributes:
    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def is_resource_request(self) -> bool:
        return bool(self.resource)

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _rule_matches(rule: dict[str, Any], attrs: Attributes) -> bool:
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if not attrs.is_resource_request:
        return any(
            url in ("*", attrs.path) or (url.endswith("*") and attrs.path.startswith(url[:-1]))
            for url in rule.get("nonResourceURLs") or []
        )
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs.group not in groups:
        return False
    if not _resource_matches(rule.get("resources") or [], attrs):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _resource_matches(resources: list[str], attrs: Attributes) -> bool:
    for resource in resources:
        if resource in ("*", attrs.combined_resource):
            return True
        if attrs.subresource and resource == f"*/{attrs.subresource}":
            return True
    return False


class Authorizer:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------------ decisions
    def allowed(self, user: UserInfo, attrs: Attributes) -> bool:
        if "system:masters" in user.groups:
            return True
        authenticated = "system:authenticated" in user.groups
        public = any(attrs.path == p or attrs.path.startswith(p + "/") for p in _PUBLIC_PATHS)
        if authenticated and not attrs.is_resource_request and public:
            return True
        if authenticated and (attrs.group, attrs.resource) in _SELF_REVIEWS:
            return attrs.verb == "create"
        return any(_rule_matches(rule, attrs) for rule in self.rules(user, attrs.namespace))

    def rules(self, user: UserInfo, namespace: str) -> Iterator[dict[str, Any]]:
        """Every rule that applies to ``user`` in ``namespace`` (cluster-wide ones too)."""
        crb = RESOURCES[(RBAC_GROUP, "clusterrolebindings")]
        rb = RESOURCES[(RBAC_GROUP, "rolebindings")]
        for binding in self.store.items(crb):
            if self._binds(binding, user, None):
                yield from self._role_rules(binding["roleRef"], None)
        if namespace:
            for binding in self.store.items(rb, namespace):
                if self._binds(binding, user, namespace):
                    yield from self._role_rules(binding["roleRef"], namespace)

    def _binds(self, binding: dict[str, Any], user: UserInfo, namespace: str | None) -> bool:
        for subject in binding.get("subjects") or []:
            kind = subject.get("kind")
            name = subject.get("name")
            if kind == "User" and name == user.name:
                return True
            if kind == "Group" and name in user.groups:
                return True
            if kind == "ServiceAccount":
                sa_ns = subject.get("namespace") or namespace
                if user.name == f"system:serviceaccount:{sa_ns}:{name}":
                    return True
        return False

    def _role_rules(self, ref: dict[str, Any], namespace: str | None) -> list[dict[str, Any]]:
        kind = ref.get("kind")
        if kind == "ClusterRole":
            rt, ns = RESOURCES[(RBAC_GROUP, "clusterroles")], ""
        elif kind == "Role" and namespace:
            rt, ns = RESOURCES[(RBAC_GROUP, "roles")], namespace
        else:
            return []
        if not self.store.exists(rt, ns, ref.get("name", "")):
            return []
        rules: list[dict[str, Any]] = self.store.get(rt, ns, ref["name"]).get("rules") or []
        return rules

    def forbidden_message(self, user: UserInfo, attrs: Attributes) -> str:
        """The API server's 403 wording."""
        if not attrs.is_resource_request:
            return f'forbidden: User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
        qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
        if attrs.subresource:
            qualified = (
                f"{qualified}/{attrs.subresource}"
                if not attrs.group
                else (f"{attrs.resource}.{attrs.group}/{attrs.subresource}")
            )
        subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
        scope = (
            f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
        )
        return (
            f'{subject} is forbidden: User "{user.name}" cannot {attrs.verb} resource '
            f'"{attrs.combined_resource}" in API group "{attrs.group}" {scope}'
        )

    # ------------------------------------------------------------------ escalation
    def missing_permissions(
        self, user: UserInfo, namespace: str, rules: Iterable[dict[str, Any]]
    ) -> list[str]:
        """The rules (rendered) that ``user`` would grant without holding them."""
        missing: list[str] = []
        for rule in rules:
            for attrs in _expand(rule, namespace):
                if not self.allowed(user, attrs):
                    missing.append(_render_rule(rule))
                    break
        return missing

    def role_rules(self, ref: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
        return self._role_rules(ref, namespace or None)


def _expand(rule: dict[str, Any], namespace: str) -> Iterator[Attributes]:
    verbs = rule.get("verbs") or []
    if rule.get("nonResourceURLs"):
        for url in rule["nonResourceURLs"]:
            for verb in verbs:
                yield Attributes(verb=verb, path=url)
        return
    names = rule.get("resourceNames") or [""]
    for group in rule.get("apiGroups") or []:
        for combined in rule.get("resources") or []:
            resource, _, sub = combined.partition("/")
            for verb in verbs:
                for name in names:
                    yield Attributes(verb, group, resource, sub, namespace, name)


def _render_rule(rule: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("apiGroups", "APIGroups"),
        ("resources", "Resources"),
        ("resourceNames", "ResourceNames"),
        ("nonResourceURLs", "NonResourceURLs"),
        ("verbs", "Verbs"),
    ):
        if rule.get(key):
            parts.append(
                f"{label}:[{' '.join(repr(v).replace(chr(39), chr(34)) for v in rule[key])}]"
            )
    return "{" + ", ".join(parts) + "}"
