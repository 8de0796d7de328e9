"""The console's browse credential against the real OpenBao and kubesim: a ClusterRole-type
Vault role bound cluster-wide (``cluster_role_binding``) with exactly BROWSE_RULES, so it
reads namespaces, pods and events everywhere and changes nothing; revoking the lease deletes
the service account, the ClusterRole and its binding."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from bastion.devstack.background import kube_client
from bastion.kube_permissions import BROWSE_RULES
from bastion.vault import VaultClient
from devstack.kubesim_harness import ThreadedStack
from devstack.test_vault import pods, service_account_exists, vault_config

MIN = timedelta(minutes=10)


@pytest.fixture
def info(local_stack: ThreadedStack) -> dict[str, Any]:
    return local_stack.stack.info


@pytest.fixture
async def vault(info: dict[str, Any]) -> AsyncIterator[VaultClient]:
    async with VaultClient(vault_config(info)) as started:
        yield started


def status_of(call: Any) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def cluster_rbac(info: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ClusterRoles and ClusterRoleBindings Vault made (its ``v-`` names), as JSON."""
    with kube_client(info["kube_api"], info["kube_ca"], info["kube_admin_token"]) as api:
        rbac = client.RbacAuthorizationV1Api(api)
        roles = json.loads(rbac.list_cluster_role(_preload_content=False).data)["items"]
        bindings = json.loads(rbac.list_cluster_role_binding(_preload_content=False).data)["items"]
    return (
        [r for r in roles if r["metadata"]["name"].startswith("v-")],
        [b for b in bindings if b["metadata"]["name"].startswith("v-")],
    )


async def test_browse_credential_reads_everywhere_changes_nothing_and_dies_on_revoke(
    vault: VaultClient, info: dict[str, Any]
) -> None:
    mount, role = info["vault_kubernetes_mount"], info["vault_browse_role"]
    home = info["vault_browse_namespace"]
    credential = await vault.issue_kube_credential(
        mount, role, home, MIN, cluster_role_binding=True
    )
    token = credential.token.reveal()
    assert credential.namespace == home
    assert service_account_exists(info, home, credential.service_account)
    roles, bindings = cluster_rbac(info)
    (made,) = [r for r in roles if r["metadata"]["name"] == bindings[0]["roleRef"]["name"]]
    assert made["rules"] == [
        {k: v for k, v in rule.as_kubernetes().items() if v} for rule in BROWSE_RULES
    ]
    (binding,) = bindings
    assert binding["subjects"][0]["name"] == credential.service_account

    # Read-only, in every namespace: not only the one the service account lives in.
    assert pods(info, token, "payments") == ["api-1"]
    assert pods(info, token, "checkout") == ["web-1"]
    with kube_client(info["kube_api"], info["kube_ca"], token) as api:
        core = client.CoreV1Api(api)
        names = {n.metadata.name for n in core.list_namespace().items}
        assert {"payments", "checkout"} <= names
        assert status_of(lambda: core.list_namespaced_event("payments")) == 200
        assert status_of(lambda: core.delete_namespaced_pod("api-1", "payments")) == 403
        assert status_of(lambda: core.create_namespace({"metadata": {"name": "x"}})) == 403
        assert status_of(lambda: core.list_namespaced_service_account("payments")) == 403
        patch = {"spec": {"ephemeralContainers": [{"name": "x", "image": "busybox"}]}}
        assert (
            status_of(
                lambda: core.patch_namespaced_pod_ephemeralcontainers("api-1", "payments", patch)
            )
            == 403
        )

    await vault.revoke_lease(credential.lease_id)
    assert pods(info, token, "payments") == 401
    assert not service_account_exists(info, home, credential.service_account)
    assert cluster_rbac(info) == ([], [])


async def test_without_the_cluster_binding_the_browse_role_reads_only_its_own_namespace(
    vault: VaultClient, info: dict[str, Any]
) -> None:
    mount, role = info["vault_kubernetes_mount"], info["vault_browse_role"]
    home = info["vault_browse_namespace"]
    credential = await vault.issue_kube_credential(mount, role, home, MIN)
    try:
        assert pods(info, credential.token.reveal(), "payments") == 403
    finally:
        await vault.revoke_lease(credential.lease_id)
