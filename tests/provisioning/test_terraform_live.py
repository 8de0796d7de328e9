"""What terraform/ provisions, applied to a real OpenBao and kubesim, used by the bastion's own
Vault client.

No provider can run here, so this test does what the providers would: the permissions module
is applied with terraform 1.0.3 (every rule, TTL and the policy), and the attributes of the
vault module's resources are read from its HCL and written to OpenBao's API under the same
names (the provider maps them one to one); the kubernetes module's Roles for the secrets
engine are made in kubesim from the same outputs, in place of the local stack's cluster-wide
grant. Then ``bastion.vault.VaultClient`` issues, uses and revokes credentials through them,
and everything the policy must refuse is tried with the bastion's own token.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests
from devstack.kubesim_harness import ThreadedStack
from devstack.test_vault import pods, root, service_account_exists, vault_config
from kubernetes import client

from bastion.devstack.background import kube_client
from bastion.devstack.openbao import find_bao
from bastion.devstack.stack import APPROLE, OPENBAO_SA
from bastion.errors import BackendUnavailable
from bastion.vault import VaultClient
from provisioning.test_terraform import TERRAFORM, Module, Permissions, grant, parse

pytestmark = pytest.mark.slow

CLUSTER = "kubernetes"  # with mount_prefix "": the local stack's own mount, "kubernetes"
FIXTURE: dict[str, Any] = {
    "namespaces": [
        {"name": "payments", "pods": [{"name": "api-1"}]},
        {"name": "checkout", "pods": [{"name": "web-1"}]},
        {"name": "elsewhere", "pods": [{"name": "db-1"}]},
        {"name": "bastion-browse"},
    ]
}
GRANTS = {
    "debug-payments": grant([CLUSTER], ["payments"], ["ephemeral"]),
    "debug-checkout": grant([CLUSTER], ["checkout"], ["copy", "pod"]),
}
VARIABLES = {"bastion_cidrs": ["127.0.0.1/32"]}
ENGINE = "vault-kubernetes-engine"


def evaluate(
    value: Any, *, each: Mapping[str, Any], module: Module, outputs: Mapping[str, Any]
) -> Any:
    """A vault module attribute's value: literals as they are, and the few reference forms
    the module uses. Anything else fails, so an attribute this test cannot evaluate is never
    silently left out."""
    if isinstance(value, list):
        return [evaluate(v, each=each, module=module, outputs=outputs) for v in value]
    if isinstance(value, dict):
        return {k: evaluate(v, each=each, module=module, outputs=outputs) for k, v in value.items()}
    if not isinstance(value, str) or "${" not in value:
        return value
    if match := re.fullmatch(r"\$\{each\.value\.(\w+)\}", value):
        return each[match[1]]
    if match := re.fullmatch(r"\$\{module\.permissions\.(\w+)\}", value):
        return outputs[match[1]]
    if match := re.fullmatch(r"\$\{var\.(\w+)\}", value):
        name = match[1]
        return VARIABLES[name] if name in VARIABLES else module.variables[name]["default"]
    if value == "${vault_policy.bastion.name}":
        return module.variables["policy_name"]["default"]
    pytest.fail(f"the test cannot evaluate {value!r}: teach evaluate() this form")


def attributes(
    module: Module,
    resource: tuple[str, str],
    skip: set[str],
    *,
    each: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any],
) -> dict[str, Any]:
    body = module.resources[resource]
    return {
        key: evaluate(value, each=each or {}, module=module, outputs=outputs)
        for key, value in body.items()
        if key not in skip
    }


def provision_vault(bao: hvac.Client, outputs: Mapping[str, Any]) -> None:
    """What the vault module's resources do, through OpenBao's API."""
    module = Module.load(TERRAFORM / "modules" / "vault")
    mount = outputs["mounts"][CLUSTER]
    bao.sys.tune_mount_configuration(
        mount,
        default_lease_ttl=f"{outputs['vault_roles'][f'{CLUSTER}/debug-payments']['token_default_ttl']}s",
        max_lease_ttl=f"{outputs['mount_max_lease_ttls'][CLUSTER]}s",
    )
    for role in outputs["vault_roles"].values():
        fields = attributes(
            module,
            ("vault_kubernetes_secret_backend_role", "role"),
            {"for_each", "backend", "name"},
            each=role,
            outputs=outputs,
        )
        bao.write(f"{role['mount']}/roles/{role['name']}", **fields)
    policy = attributes(module, ("vault_policy", "bastion"), set(), outputs=outputs)
    bao.sys.create_or_update_policy(name=policy["name"], policy=policy["policy"])
    approle = attributes(
        module,
        ("vault_approle_auth_backend_role", "bastion"),
        {"backend", "role_name"},
        outputs=outputs,
    )
    bao.write(f"auth/approle/role/{APPROLE}", **approle)
    # The audit device: OpenBao refuses it through the API (test_openbao_accepts_...).


def provision_engine(info: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
    """What the kubernetes module's Roles and bindings do, for the stack's engine account,
    in place of the cluster-wide grant the local stack gives it."""
    namespace, name = OPENBAO_SA
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]

    def ref(kind: str, role: str) -> dict[str, str]:
        return {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}

    with kube_client(info["kube_api"], info["kube_ca"], info["kube_admin_token"]) as api:
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.delete_cluster_role_binding("openbao-secrets-engine")
        rules_by_namespace = dict(outputs["engine_namespace_rules"][CLUSTER])
        browse = outputs["engine_browse_rules"][CLUSTER]
        rules_by_namespace[browse["namespace"]] = browse["namespace_rules"]
        for where, rules in rules_by_namespace.items():
            rbac.create_namespaced_role(where, {"metadata": {"name": ENGINE}, "rules": rules})
            rbac.create_namespaced_role_binding(
                where,
                {"metadata": {"name": ENGINE}, "roleRef": ref("Role", ENGINE), "subjects": subject},
            )
        cluster_role = f"{ENGINE}-browse"
        rbac.create_cluster_role(
            {"metadata": {"name": cluster_role}, "rules": browse["cluster_rules"]}
        )
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": cluster_role},
                "roleRef": ref("ClusterRole", cluster_role),
                "subjects": subject,
            }
        )


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("terraform-live")
    outputs = Permissions(workdir / "terraform").apply(
        {CLUSTER: {"browse_namespace": "bastion-browse"}},
        GRANTS,
        mount_prefix="",
        token_max_ttls={"debug-payments": 1200},
    )
    stack = ThreadedStack(workdir / "stack", FIXTURE, roles=[])
    info = stack.start()
    try:
        bao = root(info)
        provision_vault(bao, outputs)
        provision_engine(info, outputs)
        # A secret-id of the AppRole as now configured, where the bastion's config says.
        secret_id = bao.auth.approle.generate_secret_id(role_name=APPROLE)["data"]["secret_id"]
        Path(info["approle_secret_id_file"]).write_text(secret_id + "\n")
        yield {"info": info, "outputs": outputs}
    finally:
        stack.stop()


def bastion_token(info: Mapping[str, Any]) -> hvac.Client:
    """A client with the bastion's own token (an AppRole login as the bastion does it)."""
    bao = hvac.Client(url=info["vault_addr"], verify=info["vault_ca"])
    secret_id = Path(info["approle_secret_id_file"]).read_text().strip()
    bao.auth.approle.login(role_id=info["approle_role_id"], secret_id=secret_id)
    return bao


async def test_the_bastion_works_with_exactly_what_terraform_provisions(
    provisioned: dict[str, Any],
) -> None:
    info = provisioned["info"]
    ten, twenty = timedelta(minutes=10), timedelta(minutes=20)
    async with VaultClient(vault_config(info)) as vault:
        debug = await vault.issue_kube_credential(CLUSTER, "debug-payments", "payments", twenty)
        assert debug.lease_duration == twenty  # its token_max_ttl (1200 s) allows it
        assert pods(info, debug.token.reveal(), "payments") == ["api-1"]
        assert pods(info, debug.token.reveal(), "elsewhere") == 403

        copy = await vault.issue_kube_credential(CLUSTER, "debug-checkout", "checkout", twenty)
        assert copy.lease_duration == ten  # capped at the default token_max_ttl
        assert pods(info, copy.token.reveal(), "checkout") == ["web-1"]

        browse = await vault.issue_kube_credential(
            CLUSTER, "bastion-browse", "bastion-browse", ten, cluster_role_binding=True
        )
        assert pods(info, browse.token.reveal(), "elsewhere") == ["db-1"]

        # The engine's leases are not renewable; the policy lets the bastion ask anyway.
        assert await vault.renew_lease(debug.lease_id, ten) is None

        with pytest.raises(BackendUnavailable, match="does not allow namespace 'checkout'"):
            await vault.issue_kube_credential(CLUSTER, "debug-payments", "checkout", ten)
        # The local stack's own role exists in Vault, but not in the bastion's policy.
        with pytest.raises(BackendUnavailable, match="policy for the bastion does not allow"):
            await vault.issue_kube_credential(CLUSTER, "debug", "payments", ten)

        for credential in (debug, copy, browse):
            await vault.revoke_lease(credential.lease_id)
            assert pods(info, credential.token.reveal(), credential.namespace) == 401
            assert not service_account_exists(
                info, credential.namespace, credential.service_account
            )


def forbidden(call: Any) -> bool:
    try:
        call()
    except hvac.exceptions.Forbidden:
        return True
    return False


def test_the_bastions_token_can_do_nothing_else(provisioned: dict[str, Any]) -> None:
    info = provisioned["info"]
    bao = bastion_token(info)
    me = bao.lookup_token()["data"]
    assert me["policies"] == ["bastion"]  # not even Vault's default policy
    assert (
        me["period"]
        == Module.load(TERRAFORM / "modules" / "vault").variables["token_period"]["default"]
    )
    assert me["bound_cidrs"] == ["127.0.0.1"]

    creds = f"{CLUSTER}/creds/debug-payments"
    # A token for another relying party (audiences) is refused by allowed_parameters.
    assert forbidden(
        lambda: bao.write(creds, kubernetes_namespace="payments", audiences="sts.example.com")
    )
    # Only its own mounts' leases, and no lease look-ups.
    assert forbidden(lambda: bao.write("sys/leases/revoke", lease_id="database/creds/app/x"))
    assert forbidden(lambda: bao.write("sys/leases/lookup", lease_id=f"{creds}/x"))
    assert forbidden(lambda: bao.read("sys/mounts"))
    assert forbidden(lambda: bao.write(f"{CLUSTER}/roles/debug-payments", token_max_ttl=86400))
    # What it may do still works: its own lease revocation path answers (an unknown lease).
    bao.write("sys/leases/revoke", lease_id=f"{creds}/unknown", sync=True)


def test_secret_ids_are_bound_to_the_bastion_hosts(provisioned: dict[str, Any]) -> None:
    info = provisioned["info"]
    bao = root(info)
    role = bao.read(f"auth/approle/role/{APPROLE}")["data"]
    vault = Module.load(TERRAFORM / "modules" / "vault").variables
    assert role["secret_id_num_uses"] == vault["secret_id_num_uses"]["default"] > 0
    assert role["secret_id_ttl"] == vault["secret_id_ttl"]["default"] <= 86400
    assert role["secret_id_bound_cidrs"] == ["127.0.0.1/32"]
    assert role["token_bound_cidrs"] == ["127.0.0.1"]
    # From anywhere else, the same secret-id logs in nowhere.
    bao.write(f"auth/approle/role/{APPROLE}", secret_id_bound_cidrs=["192.0.2.10/32"])
    try:
        with pytest.raises(hvac.exceptions.InvalidRequest):
            bastion_token(info)
    finally:
        bao.write(f"auth/approle/role/{APPROLE}", secret_id_bound_cidrs=["127.0.0.1/32"])


def test_the_kubernetes_module_gives_the_engine_no_cluster_wide_pod_rights(
    provisioned: dict[str, Any],
) -> None:
    """The engine holds pod rights only in the grants' namespaces: a credential for a
    namespace no grant names cannot even be made there."""
    info = provisioned["info"]
    bao = root(info)
    bao.write(
        f"{CLUSTER}/roles/anywhere",
        allowed_kubernetes_namespaces=["elsewhere"],
        generated_role_rules=json.dumps(
            {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}
        ),
    )
    with pytest.raises(hvac.exceptions.InternalServerError):
        bao.write(f"{CLUSTER}/creds/anywhere", kubernetes_namespace="elsewhere", ttl="10m")


# ---------------------------------------------------------------------- the audit device
def free_port_pair() -> int:
    """A port P with P+1 free too (OpenBao's dev server also listens on P+1)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return int(port)
    pytest.fail("no two consecutive free ports on 127.0.0.1")


def test_openbao_accepts_the_declarative_audit_device(tmp_path: Path) -> None:
    """OpenBao refuses audit devices through the API, so terraform/openbao/audit.hcl carries
    the vault module's vault_audit settings as server configuration: the same options, and
    OpenBao 2.7 starts with it and HMACs secrets in the log."""
    module = Module.load(TERRAFORM / "modules" / "vault")
    audit = attributes(module, ("vault_audit", "file"), {"count"}, outputs={})
    stanza_file = TERRAFORM / "openbao" / "audit.hcl"
    stanza = parse(stanza_file)["audit"][0]["file"]
    ((path, settings),) = stanza.items()
    assert (path, settings["description"]) == (audit["path"], audit["description"])
    assert settings["options"] == [audit["options"]]
    assert audit["options"]["log_raw"] == "false"

    log = tmp_path / "audit.log"
    config = tmp_path / "audit.hcl"
    config.write_text(stanza_file.read_text().replace(audit["options"]["file_path"], str(log)))
    port = free_port_pair()
    server = subprocess.Popen(
        [
            find_bao(),
            "server",
            "-dev",
            "-dev-tls",
            f"-dev-tls-cert-dir={tmp_path}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-root-token-id=root",
            "-dev-no-store-token",
            f"-config={config}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        bao = hvac.Client(
            url=f"https://127.0.0.1:{port}", token="root", verify=str(tmp_path / "vault-ca.pem")
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if bao.sys.is_initialized():
                    break
            except (requests.exceptions.RequestException, OSError):
                pass
            assert time.monotonic() < deadline, "OpenBao did not start with the audit stanza"
            time.sleep(0.1)
        devices = bao.sys.list_enabled_audit_devices()["data"]
        assert devices[f"{audit['path']}/"]["options"] == audit["options"] | {"file_path": str(log)}
        secret = "s3cret-" + os.urandom(8).hex()
        bao.secrets.kv.v2.create_or_update_secret("bastion-check", {"value": secret})
        bao.secrets.kv.v2.read_secret_version("bastion-check", raise_on_deleted_version=True)
        written = log.read_text()
        assert "secret/data/bastion-check" in written
        assert secret not in written, "log_raw is off: secrets are HMAC'd"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    finally:
        server.terminate()
        server.wait(timeout=30)
