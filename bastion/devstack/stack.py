"""The local stack: kubesim plus a real OpenBao wired to it, as production Vault would be.

``LocalStack.start()``:

1. starts kubesim (HTTPS, own CA) seeded from a fixture;
2. gives OpenBao's Kubernetes secrets engine an identity in kubesim: the service account
   ``kube-system/openbao`` bound to a ClusterRole that lets it manage service accounts,
   tokens, roles and role bindings, and holds the pod permissions it hands out (so it needs
   no ``escalate``/``bind``: kubesim enforces RBAC escalation prevention like Kubernetes);
3. starts OpenBao (``-dev -dev-tls``) and configures it: AppRole ``bastion`` with a policy
   limited to the bastion's paths, the ``cert`` auth method with a role ``bastion`` (same
   policy) trusting a throwaway CA that issued the bastion's client certificate, the
   Kubernetes secrets engine pointed at kubesim with its CA pinned, and one role per grant
   (or one ``debug`` role) whose generated rules are
   :func:`bastion.kube_permissions.rules_for_scopes`, and the console's read-only ``browse``
   role (type ClusterRole, rules :data:`bastion.kube_permissions.BROWSE_RULES`, service
   accounts in ``default``);
4. writes ``devstack.json`` with everything a client needs.

The dev-TLS listener requests (without requiring) a client certificate in every handshake, as
a production listener does unless ``tls_disable_client_certs`` is set, so certificate login
works against it as it is.

``stop()`` stops both and removes the stack's temporary files.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import hvac
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.devstack.kubesim.app import KubeSim
from bastion.devstack.kubesim.store import RESOURCES
from bastion.devstack.openbao import OpenBao
from bastion.kube_permissions import (
    BROWSE_RULES,
    ENGINE_ACCOUNT_RULES,
    ENGINE_CLUSTER_ROLE_RULES,
    ENGINE_ROLE_RULES,
    Rule,
    rules_for_scopes,
)
from bastion.policy import Mode, Scope

__all__ = ["BROWSE_ROLE", "DEFAULT_FIXTURE", "ClientCA", "LocalStack", "VaultRole"]

DEFAULT_FIXTURE = "demo.yaml"
OPENBAO_SA = ("kube-system", "openbao")
APPROLE = "bastion"
CERT_ROLE = "bastion"  # the cert auth role (auth/cert/certs/bastion), same policy as the AppRole
CLIENT_CERT, CLIENT_KEY = "vault-client.crt", "vault-client.key"  # in the state dir
BROWSE_ROLE = "browse"
BROWSE_ACCOUNT_NAMESPACE = "default"
# What the engine itself does in the cluster (its own needs, not the sessions'): the rules
# terraform/modules/kubernetes grants it, here all cluster-wide.
_ENGINE_RULES = (*ENGINE_ACCOUNT_RULES, *ENGINE_ROLE_RULES, *ENGINE_CLUSTER_ROLE_RULES)


@dataclass(frozen=True)
class VaultRole:
    """A Kubernetes secrets engine role: who may get which rules in which namespaces."""

    name: str
    namespaces: tuple[str, ...]
    modes: tuple[Mode, ...] = (Mode.EPHEMERAL, Mode.COPY, Mode.POD)
    max_ttl_seconds: int = 3600
    # "ClusterRole" with explicit ``rules``: the console's browse role (BROWSE_RULES).
    role_type: str = "Role"
    rules: tuple[Rule, ...] | None = None  # None: rules_for_scopes(modes, scopes)
    # The grants' scopes this role serves: the views add exec and log reads to its rules.
    scopes: tuple[Scope, ...] = (Scope.SHELL,)

    @classmethod
    def browse(
        cls, name: str = BROWSE_ROLE, namespace: str = BROWSE_ACCOUNT_NAMESPACE
    ) -> VaultRole:
        """The console's read-only role: service accounts in ``namespace``, bound
        cluster-wide to BROWSE_RULES when the credential asks for a ClusterRoleBinding."""
        return cls(name, (namespace,), (), 12 * 3600, "ClusterRole", BROWSE_RULES)

    def kubernetes_rules(self) -> list[Rule]:
        if self.rules is not None:
            return list(self.rules)
        return rules_for_scopes(self.modes, self.scopes)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class ClientCA:
    """A throwaway CA for the bastion's Vault client certificate (the ``cert`` auth method)."""

    def __init__(self, name: str = "devstack-vault-client-ca", *, days: int = 30) -> None:
        now = datetime.now(UTC) - timedelta(minutes=5)  # tolerate small clock skew
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), False)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self,
        cert_file: Path,
        key_file: Path,
        *,
        common_name: str = "bastion",
        not_after: datetime | None = None,
    ) -> x509.Certificate:
        """A new key (written 0600) and a client certificate for it, signed by this CA, valid
        as long as the CA unless ``not_after`` says otherwise."""
        now = datetime.now(UTC) - timedelta(minutes=5)
        until = not_after or self.certificate.not_valid_after_utc
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(now, until - timedelta(minutes=1)))
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
            .sign(self._key, hashes.SHA256())
        )
        pem_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(key_file, pem_key.decode())
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return certificate


def bastion_policy(mount: str) -> str:
    """The bastion's Vault policy: its own token, its mount's creds, its own leases."""
    return "\n".join(
        [
            f'path "{mount}/creds/*" {{ capabilities = ["update"] }}',
            'path "sys/leases/renew" { capabilities = ["update"] }',
            'path "sys/leases/revoke" { capabilities = ["update"] }',
            'path "sys/leases/lookup" { capabilities = ["update"] }',
            'path "auth/token/renew-self" { capabilities = ["update"] }',
            'path "auth/token/lookup-self" { capabilities = ["read"] }',
        ]
    )


@dataclass
class LocalStack:
    state_dir: Path
    fixture: Path | dict[str, Any] | None = None
    roles: list[VaultRole] = field(default_factory=list)
    mount: str = "kubernetes"
    # The console's browse role, made besides ``roles``; None: none.
    browse_role: VaultRole | None = field(default_factory=VaultRole.browse)
    kubesim: KubeSim = field(init=False)
    openbao: OpenBao = field(init=False)
    client_ca: ClientCA | None = field(init=False, default=None)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fixture is None:
            with resources.as_file(
                resources.files("bastion.devstack") / "fixtures" / DEFAULT_FIXTURE
            ) as path:
                self.fixture = yaml.safe_load(path.read_text())
        self.kubesim = KubeSim(self.state_dir / "kubesim", self.fixture)
        self.openbao = OpenBao(self.state_dir / "openbao")

    async def start(self) -> dict[str, Any]:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            await self.kubesim.start()
            engine_token = self._engine_identity()
            await self.openbao.start()
            await asyncio.to_thread(self._configure_openbao, engine_token)
        except BaseException:
            await self.stop()
            raise
        (self.state_dir / "devstack.json").write_text(json.dumps(self.info, indent=2) + "\n")
        return self.info

    async def stop(self) -> None:
        await self.openbao.stop()
        await self.kubesim.stop()
        for leftover in ("kubesim", "openbao"):
            shutil.rmtree(self.state_dir / leftover, ignore_errors=True)
        for secret in ("approle-secret-id", CLIENT_KEY, CLIENT_CERT):
            (self.state_dir / secret).unlink(missing_ok=True)

    # ------------------------------------------------------------------ kubesim side
    def _engine_identity(self) -> str:
        store = self.kubesim.store
        namespace, name = OPENBAO_SA
        account = store.create(
            RESOURCES[("", "serviceaccounts")], namespace, {"metadata": {"name": name}}
        )
        # The engine can only hand out what it holds (escalation prevention).
        rules = [*_ENGINE_RULES, *rules_for_scopes(Mode, Scope), *BROWSE_RULES]
        store.create(
            RESOURCES[("rbac.authorization.k8s.io", "clusterroles")],
            "",
            {
                "metadata": {"name": "openbao-secrets-engine"},
                "rules": [rule.as_kubernetes() for rule in rules],
            },
        )
        store.create(
            RESOURCES[("rbac.authorization.k8s.io", "clusterrolebindings")],
            "",
            {
                "metadata": {"name": "openbao-secrets-engine"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "openbao-secrets-engine",
                },
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        )
        token, _ = self.kubesim.signer.issue(
            namespace=namespace,
            name=name,
            uid=account["metadata"]["uid"],
            expiration_seconds=7 * 86400,
        )
        return token

    def _default_roles(self) -> list[VaultRole]:
        namespaces = sorted(
            ns["metadata"]["name"]
            for ns in self.kubesim.store.items(RESOURCES[("", "namespaces")])
            if ns["metadata"]["name"] not in ("kube-system", "default")
        )
        return [VaultRole("debug", tuple(namespaces))]

    # ------------------------------------------------------------------ OpenBao side
    def _configure_openbao(self, engine_token: str) -> None:
        bao = hvac.Client(
            url=self.openbao.addr, token=self.openbao.root_token, verify=str(self.openbao.ca_file)
        )
        bao.sys.enable_secrets_engine("kubernetes", path=self.mount)
        bao.adapter.post(
            f"/v1/{self.mount}/config",
            json={
                "kubernetes_host": self.kubesim.url,
                "kubernetes_ca_cert": self.kubesim.ca_file.read_text(),
                "service_account_jwt": engine_token,
                "disable_local_ca_jwt": True,
            },
        )
        roles = self.roles or self._default_roles()
        browse = [self.browse_role] if self.browse_role is not None else []
        for role in [*roles, *browse]:
            rules = {"rules": [r.as_kubernetes() for r in role.kubernetes_rules()]}
            bao.adapter.post(
                f"/v1/{self.mount}/roles/{role.name}",
                json={
                    "allowed_kubernetes_namespaces": list(role.namespaces),
                    "generated_role_rules": json.dumps(rules),
                    "kubernetes_role_type": role.role_type,
                    "token_default_ttl": "10m",
                    "token_max_ttl": f"{max(role.max_ttl_seconds, 600)}s",
                    "extra_labels": {"app.kubernetes.io/managed-by": "k8s-debug-bastion"},
                },
            )
        bao.sys.enable_auth_method("approle")
        bao.sys.create_or_update_policy(name=APPROLE, policy=bastion_policy(self.mount))
        bao.auth.approle.create_or_update_approle(
            role_name=APPROLE,
            token_policies=[APPROLE],
            # Periodic: renewed forever, never re-issued at a max TTL. A session credential's
            # lease dies with the token that asked for it, so the token must outlive sessions.
            token_period="1h",
            secret_id_ttl="24h",
        )
        role_id = bao.auth.approle.read_role_id(role_name=APPROLE)["data"]["role_id"]
        secret_id = bao.auth.approle.generate_secret_id(role_name=APPROLE)["data"]["secret_id"]
        secret_file = self.state_dir / "approle-secret-id"
        _write_private(secret_file, secret_id + "\n")
        # The same policy for a TLS client certificate login (auth/cert).
        self.client_ca = ClientCA()
        cert_file, key_file = self.state_dir / CLIENT_CERT, self.state_dir / CLIENT_KEY
        self.client_ca.issue(cert_file, key_file, common_name="bastion")
        bao.sys.enable_auth_method("cert")
        bao.adapter.post(
            f"/v1/auth/cert/certs/{CERT_ROLE}",
            json={
                "certificate": self.client_ca.pem,
                "allowed_common_names": ["bastion"],
                "token_policies": [APPROLE],
                "token_period": "1h",
            },
        )
        self.info = {
            "kube_api": self.kubesim.url,
            "kube_ca": str(self.kubesim.ca_file),
            "kube_admin_token": self.kubesim.admin_token,
            "vault_addr": self.openbao.addr,
            "vault_ca": str(self.openbao.ca_file),
            "vault_root_token": self.openbao.root_token,
            "approle_role_id": role_id,
            "approle_secret_id_file": str(secret_file),
            "vault_client_cert": str(cert_file),
            "vault_client_key": str(key_file),
            "vault_cert_role": CERT_ROLE,
            "vault_kubernetes_mount": self.mount,
            "vault_roles": [role.name for role in roles],
            "vault_browse_role": self.browse_role.name if self.browse_role else None,
            "vault_browse_namespace": self.browse_role.namespaces[0] if self.browse_role else None,
            "kubesim_pid": os.getpid(),
            "openbao_pid": self.openbao.pid,
        }
