"""Introspection scopes in the policy and the config: who may open which view, or a shell."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from bastion.config.models import Grant as ConfigGrant
from bastion.policy import DebugRequest, DebugTarget, Grant, Mode, Policy, Principal, Scope, decide

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TOOLBOX = "registry.example.com/toolbox@sha256:" + "a" * 64
ALICE = Principal("alice", frozenset({"oncall"}))
TARGET = DebugTarget("prod", "payments", "api-1", {}, "api")


def grant(name: str = "look", **overrides: Any) -> Grant:
    fields: dict[str, Any] = {
        "name": name,
        "groups": frozenset({"oncall"}),
        "clusters": ("prod",),
        "namespaces": ("payments",),
        "modes": frozenset({Mode.EPHEMERAL}),
        "images": frozenset({TOOLBOX}),
        "max_session": timedelta(minutes=30),
        "idle_timeout": timedelta(minutes=10),
        "vault_role": "debug",
    }
    fields.update(overrides)
    return Grant(**fields)


def ask(policy: Policy, scope: Scope) -> tuple[bool, str]:
    decision = decide(
        policy, ALICE, TARGET, DebugRequest(Mode.EPHEMERAL, TOOLBOX, scope=scope), NOW
    )
    return decision.allowed, decision.reason


def test_a_grant_without_scopes_keeps_todays_shell_and_nothing_else() -> None:
    policy = Policy([grant()])
    assert ask(policy, Scope.SHELL)[0]
    allowed, reason = ask(policy, Scope.PROCESSES)
    assert not allowed
    assert reason == "the processes view is not allowed for alice in prod/payments; allowed: shell"


def test_an_introspect_only_grant_refuses_the_shell_with_what_it_allows() -> None:
    policy = Policy([grant(scopes=frozenset({Scope.PROCESSES, Scope.ENV}))])
    assert ask(policy, Scope.PROCESSES)[0]
    assert ask(policy, Scope.ENV)[0]
    allowed, reason = ask(policy, Scope.SHELL)
    assert not allowed
    assert reason == (
        "the grants for alice in prod/payments allow only the read-only views (env, processes),"
        " not a debug shell: open one of those views instead, or ask an administrator"
    )
    assert not ask(policy, Scope.FILES)[0]


def test_path_prefixes_are_the_union_of_the_covering_grants() -> None:
    policy = Policy(
        [
            grant("a", scopes=frozenset({Scope.FILES}), path_prefixes=("/etc",)),
            grant("b", scopes=frozenset({Scope.FILES}), path_prefixes=("/app/config", "/etc")),
            grant(
                "c", namespaces=("other",), scopes=frozenset({Scope.FILES}), path_prefixes=("/",)
            ),
        ]
    )
    decision = decide(
        policy, ALICE, TARGET, DebugRequest(Mode.EPHEMERAL, TOOLBOX, scope=Scope.FILES), NOW
    )
    assert decision.limits is not None
    assert decision.limits.path_prefixes == ("/etc", "/app/config")


CONFIG = {
    "name": "look",
    "groups": ["oncall"],
    "clusters": ["prod"],
    "namespaces": ["payments"],
    "images": [TOOLBOX],
    "vault_role": "debug",
}


def test_config_default_is_shell() -> None:
    assert ConfigGrant.model_validate(CONFIG).scopes == [Scope.SHELL]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"scopes": ["files"]}, "scope 'files' needs 'path_prefixes'"),
        ({"path_prefixes": ["/etc"]}, "'path_prefixes' is only for scope 'files'"),
        ({"scopes": ["env", "env"]}, "'scopes' names a scope twice"),
        ({"scopes": []}, "at least 1 item"),
        ({"scopes": ["root"]}, "'shell', 'processes', 'env', 'files', 'sockets' or 'logs'"),
        ({"scopes": ["files"], "path_prefixes": ["etc"]}, "is not absolute"),
        ({"scopes": ["files"], "path_prefixes": ["/etc/../root"]}, "contains '..'"),
        ({"scopes": ["files"], "path_prefixes": ["/etc/"]}, "is not normalised"),
        ({"scopes": ["files"], "path_prefixes": ["/etc\n"]}, "control or invisible"),
    ],
)
def test_config_refuses_incoherent_scopes(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ConfigGrant.model_validate({**CONFIG, **extra})


def test_config_gives_the_policy_its_scopes_and_prefixes() -> None:
    g = ConfigGrant.model_validate(
        {**CONFIG, "scopes": ["files", "env"], "path_prefixes": ["/etc"]}
    )
    assert g.scopes == [Scope.FILES, Scope.ENV]
    assert g.path_prefixes == ["/etc"]
