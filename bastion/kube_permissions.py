"""The Kubernetes permissions the bastion's sessions need: the one list every provisioning
path (Vault roles in ``terraform/``, the local stack, the docs) is generated from or tested
against.

Pure data: for a debug the bastion asks Vault for a credential with exactly
:func:`rules_for_modes` in the target namespace; for the console's lists, a read-only
cluster-wide credential with exactly :data:`BROWSE_RULES`, and nothing more.

Vault's Kubernetes secrets engine needs rights of its own to make those credentials: the
``ENGINE_*`` rules. ``terraform/modules/permissions/permissions.json`` is generated from this
module (``terraform/generate_permissions.py``) and the local stack grants the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bastion.policy import Mode, Scope

__all__ = [
    "BROWSE_RULES",
    "ENGINE_ACCOUNT_RULES",
    "ENGINE_CLUSTER_ROLE_RULES",
    "ENGINE_ROLE_RULES",
    "Rule",
    "rules_for_modes",
    "rules_for_scopes",
    "view_rules",
]


@dataclass(frozen=True)
class Rule:
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ("",)

    def as_kubernetes(self) -> dict[str, list[str]]:
        return {
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }


# What the console shows, read-only and cluster-wide (a ClusterRole bound by a
# ClusterRoleBinding): the broker filters by policy before anything reaches the console, so
# the credential must see every namespace to say which ones are hidden. No secrets, no
# configmaps' contents, no logs: details show only what the pod object itself says.
BROWSE_RULES = (Rule(("namespaces", "pods", "events"), ("get", "list", "watch")),)

# Find the pod, follow it, add the debug container, attach the terminal to it.
_EVERY_SESSION = (
    Rule(("pods",), ("get", "list", "watch")),
    Rule(("pods/ephemeralcontainers",), ("patch",)),
    # A websocket attach is a GET that starts a stream: the API server checks both verbs.
    Rule(("pods/attach",), ("get", "create")),
)
# Copy and toolbox modes create a pod of their own and must delete it at the end.
_OWN_PODS = (Rule(("pods",), ("create", "delete")),)


def rules_for_modes(modes: Iterable[Mode]) -> list[Rule]:
    """The rules for a grant allowing ``modes``: creating pods only when a mode needs it."""
    wanted = set(modes)
    rules = list(_EVERY_SESSION)
    if wanted & {Mode.COPY, Mode.POD}:
        rules.extend(_OWN_PODS)
    return rules


# The read-only views (docs/introspection.md) run fixed commands in the debug container:
_EXEC = (Rule(("pods/exec",), ("get", "create")),)
# The logs view reads the target container's log through the API.
_LOGS = (Rule(("pods/log",), ("get",)),)
_EXEC_SCOPES = frozenset({Scope.PROCESSES, Scope.FILES, Scope.SOCKETS})


def view_rules(scopes: Iterable[Scope]) -> list[Rule]:
    """What ``scopes`` add to a session's rules: exec for the views that run a command, log
    reads for the logs view, nothing for the shell or the env view (the pod read has it)."""
    wanted = set(scopes)
    rules: list[Rule] = []
    if wanted & _EXEC_SCOPES:
        rules.extend(_EXEC)
    if Scope.LOGS in wanted:
        rules.extend(_LOGS)
    return rules


def rules_for_scopes(modes: Iterable[Mode], scopes: Iterable[Scope]) -> list[Rule]:
    """The rules for a grant allowing ``modes`` and ``scopes``."""
    return [*rules_for_modes(modes), *view_rules(scopes)]


# What Vault's Kubernetes secrets engine itself does to issue and revoke one credential
# (docs/research/openbao-kubernetes-engine.md): it creates a Role (or ClusterRole), its
# binding, a service account and a token for it, and deletes them at revocation. It never
# reads, lists or updates them, and needs neither ``bind`` nor ``escalate``: it holds every rule
# it hands out, which is what Kubernetes' escalation check asks of whoever creates a Role or a
# binding. In each namespace where it makes service accounts:
ENGINE_ACCOUNT_RULES = (
    Rule(("serviceaccounts",), ("create", "delete")),
    Rule(("serviceaccounts/token",), ("create",)),
)
# In each namespace a debug role allows (a Role with the session's rules, bound there):
ENGINE_ROLE_RULES = (
    Rule(("roles", "rolebindings"), ("create", "delete"), ("rbac.authorization.k8s.io",)),
)
# Cluster-wide, only for the console's browse role (a ClusterRole bound cluster-wide):
ENGINE_CLUSTER_ROLE_RULES = (
    Rule(
        ("clusterroles", "clusterrolebindings"),
        ("create", "delete"),
        ("rbac.authorization.k8s.io",),
    ),
)
