"""OpenBao's Kubernetes secrets engine (client-go, protobuf bodies) against kubesim, for real.

AppRole login as the bastion does, a credential for one namespace, the token's exact rights,
and the lease revocation that deletes the service account and so kills the token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from hvac.exceptions import InvalidRequest
from kubernetes import client
from kubernetes.client.rest import ApiException

from bastion.devstack.kubesim.store import RESOURCES
from bastion.devstack.stack import LocalStack, VaultRole
from bastion.policy import Mode

FIXTURE: dict[str, Any] = {
    "namespaces": [
        {"name": "payments", "pods": [{"name": "api-1", "labels": {"app": "api"}}]},
        {"name": "checkout", "pods": [{"name": "web-1"}]},
    ]
}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[LocalStack]:
    local = LocalStack(
        tmp_path / "stack",
        FIXTURE,
        roles=[VaultRole("debug", ("payments",), modes=(Mode.EPHEMERAL,))],
    )
    await local.start()
    yield local
    await local.stop()


def bastion_vault(info: dict[str, Any]) -> hvac.Client:
    """Log in exactly as the bastion will: AppRole, secret-id from its 0600 file."""
    vault = hvac.Client(url=info["vault_addr"], verify=info["vault_ca"])
    secret_id = Path(info["approle_secret_id_file"]).read_text().strip()
    vault.auth.approle.login(role_id=info["approle_role_id"], secret_id=secret_id)
    return vault


def kube(info: dict[str, Any], token: str) -> client.ApiClient:
    config = client.Configuration()
    config.host = info["kube_api"]
    config.ssl_ca_cert = info["kube_ca"]
    config.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(config)


def can(api: client.ApiClient, namespace: str, verb: str, resource: str, sub: str = "") -> bool:
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        {
            "spec": {
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": verb,
                    "resource": resource,
                    "subresource": sub,
                }
            }
        }
    )
    return bool(review.status.allowed)


async def test_credentials_rights_and_revocation(stack: LocalStack) -> None:
    info = stack.info
    assert json.loads((stack.state_dir / "devstack.json").read_bytes()) == info
    assert Path(info["approle_secret_id_file"]).stat().st_mode & 0o777 == 0o600  # noqa: ASYNC240
    vault = await asyncio.to_thread(bastion_vault, info)
    creds = await asyncio.to_thread(
        vault.write_data,
        "kubernetes/creds/debug",
        data={"kubernetes_namespace": "payments", "ttl": "10m"},
    )
    token = creds["data"]["service_account_token"]
    account = creds["data"]["service_account_name"]
    store = stack.kubesim.store
    for plural, group in (
        ("serviceaccounts", ""),
        ("roles", "rbac.authorization.k8s.io"),
        ("rolebindings", "rbac.authorization.k8s.io"),
    ):
        assert store.exists(RESOURCES[(group, plural)], "payments", account), plural
    role = store.get(RESOURCES[("rbac.authorization.k8s.io", "roles")], "payments", account)
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["get", "create"]},
    ]

    def rights() -> dict[str, bool]:
        with kube(info, token) as api:
            pods = client.CoreV1Api(api).list_namespaced_pod("payments")
            assert [p.metadata.name for p in pods.items] == ["api-1"]
            return {
                "patch ephemeral": can(api, "payments", "patch", "pods", "ephemeralcontainers"),
                "attach": can(api, "payments", "create", "pods", "attach"),
                "delete pods": can(api, "payments", "delete", "pods"),
                "exec": can(api, "payments", "create", "pods", "exec"),
                "other namespace": can(api, "checkout", "list", "pods"),
            }

    assert await asyncio.to_thread(rights) == {
        "patch ephemeral": True,
        "attach": True,
        "delete pods": False,
        "exec": False,
        "other namespace": False,
    }

    def forbidden_elsewhere() -> int:
        with kube(info, token) as api, pytest.raises(ApiException) as caught:
            client.CoreV1Api(api).list_namespaced_pod("checkout")
        return int(caught.value.status)

    assert await asyncio.to_thread(forbidden_elsewhere) == 403

    with pytest.raises(InvalidRequest, match="checkout"):
        await asyncio.to_thread(
            vault.write_data,
            "kubernetes/creds/debug",
            data={"kubernetes_namespace": "checkout", "ttl": "10m"},
        )

    await asyncio.to_thread(
        vault.sys.revoke_lease, creds["lease_id"]
    )  # hvac's revoke is synchronous (sync=true is the API default)
    for plural, group in (
        ("serviceaccounts", ""),
        ("roles", "rbac.authorization.k8s.io"),
        ("rolebindings", "rbac.authorization.k8s.io"),
    ):
        assert not store.exists(RESOURCES[(group, plural)], "payments", account), plural

    def dead_token() -> int:
        with kube(info, token) as api, pytest.raises(ApiException) as caught:
            client.CoreV1Api(api).list_namespaced_pod("payments")
        return int(caught.value.status)

    assert await asyncio.to_thread(dead_token) == 401
