"""Write terraform/modules/permissions/permissions.json from bastion.kube_permissions.

The Terraform modules take every Kubernetes rule they grant (the Vault roles' generated rules,
the secrets engine's own Roles) from that file and nowhere else, so the bastion's list of
needed permissions is the one source of truth. tests/provisioning/test_terraform.py fails when
the file is stale.

    .venv/bin/python terraform/generate_permissions.py           # rewrite the file
    .venv/bin/python terraform/generate_permissions.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bastion.debug_container import MANAGED_BY_LABEL
from bastion.kube_permissions import (
    BROWSE_RULES,
    ENGINE_ACCOUNT_RULES,
    ENGINE_CLUSTER_ROLE_RULES,
    ENGINE_ROLE_RULES,
    Rule,
    rules_for_modes,
    view_rules,
)
from bastion.policy import Mode, Scope

PERMISSIONS_JSON = Path(__file__).resolve().parent / "modules" / "permissions" / "permissions.json"


def modes_key(modes: Iterable[str]) -> str:
    """The key of a set of modes in ``session_rules``: sorted, comma-separated. Terraform
    builds the same key with ``join(",", sort(distinct(modes)))``."""
    return ",".join(sorted(set(modes)))


def _rules(rules: Iterable[Rule]) -> list[dict[str, list[str]]]:
    return [rule.as_kubernetes() for rule in rules]


def document() -> dict[str, Any]:
    """Everything the modules need, in the Kubernetes RBAC shape (apiGroups, resources,
    verbs) that both Vault's ``generated_role_rules`` and Kubernetes Roles take."""
    modes = sorted(mode.value for mode in Mode)
    combinations = [
        combination
        for size in range(1, len(modes) + 1)
        for combination in itertools.combinations(modes, size)
    ]
    return {
        "generated_by": (
            "terraform/generate_permissions.py from bastion/kube_permissions.py: do not edit; "
            "tests/provisioning/test_terraform.py fails when this file is stale"
        ),
        "modes": modes,
        # Every non-empty set of modes a grant may allow, so Terraform only looks rules up
        # and never decides which mode needs what.
        "session_rules": {
            modes_key(combination): _rules(rules_for_modes(Mode(m) for m in combination))
            for combination in combinations
        },
        # The scopes in the bastion's order, which is the order their rules are added in.
        "scopes": [scope.value for scope in Scope],
        # What each read-only view (docs/introspection.md) adds to a grant's session rules.
        "scope_rules": {scope.value: _rules(view_rules((scope,))) for scope in Scope},
        "browse_rules": _rules(BROWSE_RULES),
        "engine_account_rules": _rules(ENGINE_ACCOUNT_RULES),
        "engine_role_rules": _rules(ENGINE_ROLE_RULES),
        "engine_cluster_role_rules": _rules(ENGINE_CLUSTER_ROLE_RULES),
        "managed_by_labels": dict([MANAGED_BY_LABEL]),
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from what it would be"
    )
    args = parser.parse_args(argv)
    wanted = render()
    if args.check:
        current = PERMISSIONS_JSON.read_text() if PERMISSIONS_JSON.exists() else ""
        if current != wanted:
            sys.stderr.write(
                f"{PERMISSIONS_JSON} is stale: run .venv/bin/python terraform/"
                "generate_permissions.py and commit the result\n"
            )
            return 1
        return 0
    PERMISSIONS_JSON.parent.mkdir(parents=True, exist_ok=True)
    PERMISSIONS_JSON.write_text(wanted)
    sys.stdout.write(f"wrote {PERMISSIONS_JSON}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
