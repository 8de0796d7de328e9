"""kubesim and the local stack for tests that drive them with synchronous clients."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client

from bastion.devstack.background import Background, kube_client
from bastion.devstack.kubesim.app import KubeSim
from bastion.devstack.stack import LocalStack, VaultRole
from bastion.devstack.toolbox import TOOLBOX_IMAGE

T = TypeVar("T")

TOOLBOX = TOOLBOX_IMAGE

FIXTURE: dict[str, Any] = {
    # The toolbox's `sh` keeps a history its prompt reports (busybox ash there, bash here).
    "images": {TOOLBOX: {"command": ["/bin/sh"], "shell": "bash"}},
    "namespaces": [
        {
            "name": "payments",
            "pods": [
                {"name": "api-1", "labels": {"app": "api", "tier": "web"}},
                {"name": "api-2", "labels": {"app": "api", "tier": "web"}, "phase": "Pending"},
                {"name": "db-0", "labels": {"app": "db"}},
                {
                    "name": "two",
                    "labels": {"app": "two"},
                    "containers": [{"name": "main"}, {"name": "sidecar"}],
                },
            ],
        },
        {"name": "big", "generate": {"count": 5000, "prefix": "load-", "labels": {"app": "load"}}},
    ],
}


class ThreadedKubeSim:
    """kubesim on its own loop, seeded with ``fixture`` (this module's FIXTURE by default)."""

    def __init__(self, workdir: Path, fixture: dict[str, Any] | None = None) -> None:
        self.background = Background()
        self.sim = KubeSim(workdir, fixture or FIXTURE)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.background.call(coro)

    def start(self) -> None:
        self.background.start(self.sim.start)

    def stop(self) -> None:
        self.background.stop(self.sim.stop)

    def api_client(self, token: str | None = None) -> client.ApiClient:
        return kube_client(self.sim.url, str(self.sim.ca_file), token or self.sim.admin_token)


class ThreadedStack:
    """The whole local stack (kubesim + OpenBao) on its own loop."""

    def __init__(self, state_dir: Path, fixture: dict[str, Any], roles: list[VaultRole]) -> None:
        self.background = Background()
        self.stack = LocalStack(state_dir, fixture, roles=roles)

    def start(self) -> dict[str, Any]:
        return self.background.start(self.stack.start)

    def stop(self) -> None:
        self.background.stop(self.stack.stop)


def stack_sections(info: dict[str, Any], *, browse: bool = False) -> dict[str, Any]:
    """The config's ``clusters`` (one, "local") and ``vault`` sections for a running stack, as
    `bastion demo` writes them; ``browse`` adds the console's browse role."""
    cluster = {
        "name": "local",
        "api_url": info["kube_api"],
        "ca_file": info["kube_ca"],
        "vault_mount": info["vault_kubernetes_mount"],
    }
    if browse:
        cluster["browse_vault_role"] = info["vault_browse_role"]
        cluster["browse_account_namespace"] = info["vault_browse_namespace"]
    return {
        "clusters": [cluster],
        "vault": {
            "address": info["vault_addr"],
            "ca_file": info["vault_ca"],
            "approle": {
                "role_id": info["approle_role_id"],
                "secret_id_file": info["approle_secret_id_file"],
            },
        },
    }
