"""OpenBao's Kubernetes secrets engine (client-go, protobuf bodies) against kubesim, for real.

AppRole login as the bastion does, a credential for one namespace, the token's exact rights,
and the lease revocation that deletes the service account and so kills the token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hvac
import pytest
from hvac.exceptions import InvalidRequest
from kubernetes import client
from kubernetes.client.rest import ApiException

from bastion.devstack.background import kube_client
from bastion.devstack.kubesim.store import RESOURCES
from devstack.kubesim_harness import ThreadedStack

RBAC = "rbac.authorization.k8s.io"


def bastion_vault(info: dict[str, Any]) -> hvac.Client:
    """Log in exactly as the bastion will: AppRole, secret-id from its 0600 file."""
    vault = hvac.Client(url=info["vault_addr"], verify=info["vault_ca"])
    secret_id = Path(info["approle_secret_id_file"]).read_text().strip()
    vault.auth.approle.login(role_id=info["approle_role_id"], secret_id=secret_id)
    return vault


def kube(info: dict[str, Any], token: str) -> client.ApiClient:
    return kube_client(info["kube_api"], info["kube_ca"], token)


def can(api: client.ApiClient, namespace: str, verb: str, resource: str, sub: str = "") -> bool:
    attributes = {"namespace": namespace, "verb": verb, "resource": resource, "subresource": sub}
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        {"spec": {"resourceAttributes": attributes}}
    )
    return bool(review.status.allowed)


def test_credentials_rights_and_revocation(local_stack: ThreadedStack) -> None:
    stack = local_stack.stack
    info = stack.info
    assert json.loads((stack.state_dir / "devstack.json").read_bytes()) == info
    assert Path(info["approle_secret_id_file"]).stat().st_mode & 0o777 == 0o600
    vault = bastion_vault(info)
    creds = vault.write_data(
        "kubernetes/creds/debug", data={"kubernetes_namespace": "payments", "ttl": "10m"}
    )
    token = creds["data"]["service_account_token"]
    account = creds["data"]["service_account_name"]
    # kubesim's store is read from this thread while its loop idles between requests.
    store = stack.kubesim.store
    created = [
        (RESOURCES[("", "serviceaccounts")], "serviceaccounts"),
        (RESOURCES[(RBAC, "roles")], "roles"),
        (RESOURCES[(RBAC, "rolebindings")], "rolebindings"),
    ]
    for kind, plural in created:
        assert store.exists(kind, "payments", account), plural
    role = store.get(RESOURCES[(RBAC, "roles")], "payments", account)
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["get", "create"]},
    ]

    with kube(info, token) as api:
        pods = client.CoreV1Api(api).list_namespaced_pod("payments")
        assert [p.metadata.name for p in pods.items] == ["api-1"]
        assert {
            "patch ephemeral": can(api, "payments", "patch", "pods", "ephemeralcontainers"),
            "attach": can(api, "payments", "create", "pods", "attach"),
            "delete pods": can(api, "payments", "delete", "pods"),
            "exec": can(api, "payments", "create", "pods", "exec"),
            "other namespace": can(api, "checkout", "list", "pods"),
        } == {
            "patch ephemeral": True,
            "attach": True,
            "delete pods": False,
            "exec": False,
            "other namespace": False,
        }
        with pytest.raises(ApiException) as caught:
            client.CoreV1Api(api).list_namespaced_pod("checkout")
        assert caught.value.status == 403

    with pytest.raises(InvalidRequest, match="checkout"):
        vault.write_data(
            "kubernetes/creds/debug", data={"kubernetes_namespace": "checkout", "ttl": "10m"}
        )

    vault.sys.revoke_lease(creds["lease_id"])  # synchronous: sync=true is the API default
    for kind, plural in created:
        assert not store.exists(kind, "payments", account), plural
    with kube(info, token) as api, pytest.raises(ApiException) as caught:
        client.CoreV1Api(api).list_namespaced_pod("payments")
    assert caught.value.status == 401
