"""bastion.vault logging in with a TLS client certificate (Vault's ``cert`` auth method)
against the real OpenBao of the shared local stack.

The stack's ``cert`` role ``bastion`` trusts a throwaway CA (``LocalStack.client_ca``) and
carries the AppRole's policy, so everything after the login is what test_vault.py shows for
AppRole. OpenBao's dev-TLS listener requests a client certificate in every handshake (it does
not require one), as a production listener does unless ``tls_disable_client_certs`` is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pydantic import ValidationError

from bastion.config.models import AppRole, TlsClient, Vault
from bastion.devstack.stack import APPROLE, CERT_ROLE, ClientCA
from bastion.errors import BackendUnavailable
from bastion.vault import VaultClient
from devstack.kubesim_harness import ThreadedStack
from devstack.test_vault import MIN, one_sentence, pods, root, service_account_exists, wait_for


def cert_config(
    info: dict[str, Any],
    *,
    cert: Path | str | None = None,
    key: Path | str | None = None,
    role: str | None = None,
    address: str | None = None,
) -> Vault:
    """The bastion's vault section for certificate login, with the stack's files by default."""
    return Vault.model_validate(
        {
            "address": address or info["vault_addr"],
            "ca_file": info["vault_ca"],
            "tls_client": {
                "cert_file": cert or info["vault_client_cert"],
                "key_file": key or info["vault_client_key"],
                "role": role or info["vault_cert_role"],
            },
        }
    )


def token_metadata(info: dict[str, Any], token: str) -> dict[str, Any]:
    """What Vault recorded about a token: the login path and the certificate's metadata."""
    data: dict[str, Any] = root(info).auth.token.lookup(token)["data"]
    return data


def serial(certificate_file: Path | str) -> str:
    certificate = x509.load_pem_x509_certificate(Path(certificate_file).read_bytes())
    return str(certificate.serial_number)


def key_body(path: Path | str) -> list[str]:
    """The base64 lines of a PEM key: what must never appear in a log or a message."""
    lines = Path(path).read_text().splitlines()
    return [line for line in lines if line and not line.startswith("-----")]


@pytest.fixture
def info(local_stack: ThreadedStack) -> dict[str, Any]:
    return local_stack.stack.info


@pytest.fixture
def client_ca(local_stack: ThreadedStack) -> ClientCA:
    ca = local_stack.stack.client_ca
    assert ca is not None
    return ca


@pytest.fixture
def silent_port() -> Iterator[socket.socket]:
    """A listening socket nobody answers on: a test checks that nothing ever connected."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        yield server


def never_connected(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except BlockingIOError:
        return True
    connection.close()
    return False


# ---------------------------------------------------------------------- the local stack
def test_the_stack_issues_a_client_certificate_and_a_cert_role(info: dict[str, Any]) -> None:
    assert info["vault_cert_role"] == CERT_ROLE
    assert Path(info["vault_client_key"]).stat().st_mode & 0o777 == 0o600
    assert Path(info["vault_client_cert"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    role = root(info).read(f"auth/cert/certs/{CERT_ROLE}")["data"]
    assert role["token_policies"] == [APPROLE]  # the AppRole's policy, nothing more
    assert role["allowed_common_names"] == ["bastion"]
    written = json.loads((Path(info["vault_client_key"]).parent / "devstack.json").read_text())
    assert {"vault_client_cert", "vault_client_key", "vault_cert_role"} <= set(written)


# ---------------------------------------------------------------------- login and credentials
async def test_certificate_login_issues_and_revokes_a_credential(
    info: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "requests", "hvac", "bastion"):
        caplog.set_level(logging.DEBUG, logger=name)
    mount = info["vault_kubernetes_mount"]
    started = time.perf_counter()
    async with VaultClient(cert_config(info)) as vault:
        login_ms = (time.perf_counter() - started) * 1000
        assert vault._token is not None
        seen = await asyncio.to_thread(token_metadata, info, vault._token)
        assert seen["path"] == "auth/cert/login"
        assert seen["meta"]["common_name"] == "bastion"
        assert seen["meta"]["serial_number"] == serial(info["vault_client_cert"])
        assert APPROLE in seen["policies"]

        started = time.perf_counter()
        credential = await vault.issue_kube_credential(mount, "debug", "payments", MIN)
        issue_ms = (time.perf_counter() - started) * 1000
        token = credential.token.reveal()
        assert pods(info, token, "payments") == ["api-1"]
        assert pods(info, token, "checkout") == 403

        started = time.perf_counter()
        await vault.revoke_lease(credential.lease_id)
        revoke_ms = (time.perf_counter() - started) * 1000
        assert pods(info, token, "payments") == 401
        assert not service_account_exists(info, "payments", credential.service_account)
        assert await vault.healthy()
    assert "with TLS client certificate (start-up)" in caplog.text
    everything = caplog.text + "".join(str(r.args) for r in caplog.records)
    for line in key_body(info["vault_client_key"]):
        assert line not in everything
    print(
        f"\ncertificate login {login_ms:.0f} ms (client start), issue {issue_ms:.0f} ms, "
        f"revoke {revoke_ms:.0f} ms"
    )


async def test_renewal_presents_the_certificate_and_a_rotated_one_brings_a_new_login(
    info: dict[str, Any], client_ca: ClientCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # OpenBao's cert auth checks the client certificate again when the token is renewed:
    # renew-self without one is refused ("no client certificate found"), and with another
    # certificate than the login's too (HTTP 500 "client identity during renewal not
    # matching"). So a renewal that succeeds shows the certificate goes with the renewal, and
    # after a rotation the next renewal turns into a login with the new certificate.
    caplog.set_level(logging.INFO, logger="bastion.vault")
    root(info).write(
        "auth/cert/certs/short-cert",
        certificate=client_ca.pem,
        token_policies=[APPROLE],
        token_ttl="2s",
        token_max_ttl="1h",
    )
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    client_ca.issue(cert, key)
    async with VaultClient(cert_config(info, cert=cert, key=key, role="short-cert")) as vault:
        renewed = "renewed the bastion's Vault token; valid for 2 s"
        await wait_for(lambda: renewed in caplog.text, 3, "a renewal")
        assert "Vault refused to renew" not in caplog.text
        client_ca.issue(cert, key)  # rotation: a new key and certificate, same CA
        rotated = serial(cert)
        await wait_for(
            lambda: "which was replaced since; logging in again" in caplog.text, 3, "a new login"
        )
        await wait_for(lambda: "(the client certificate was replaced)" in caplog.text, 1, "login")
        assert vault._token is not None
        seen = await asyncio.to_thread(token_metadata, info, vault._token)
        assert seen["meta"]["serial_number"] == rotated
        credential = await vault.issue_kube_credential(
            info["vault_kubernetes_mount"], "debug", "payments", MIN
        )
        await vault.revoke_lease(credential.lease_id)
    assert "could not be kept alive" not in caplog.text


async def test_a_rotated_certificate_is_used_from_the_next_login_on(
    info: dict[str, Any], client_ca: ClientCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bastion.vault")
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    client_ca.issue(cert, key)
    first = serial(cert)
    async with VaultClient(cert_config(info, cert=cert, key=key)) as vault:
        assert "expires at" not in caplog.text
        assert vault._token is not None
        old_token = vault._token
        seen = await asyncio.to_thread(token_metadata, info, old_token)
        assert seen["meta"]["serial_number"] == first
        # Rotation: a new key and certificate from the same CA replace the files in place
        # (this one expires soon: each login warns).
        client_ca.issue(cert, key, not_after=datetime.now(UTC) + timedelta(days=2))
        second = serial(cert)
        assert second != first
        # The old token dies (here: revoked); the next request logs in again, and that
        # login presents the new certificate although the old connection was still open.
        await asyncio.to_thread(root(info).auth.token.revoke, old_token)
        credential = await vault.issue_kube_credential(
            info["vault_kubernetes_mount"], "debug", "payments", MIN
        )
        await vault.revoke_lease(credential.lease_id)
        assert "Vault no longer accepted the token" in caplog.text
        assert vault._token is not None
        assert vault._token != old_token
        seen = await asyncio.to_thread(token_metadata, info, vault._token)
        assert seen["meta"]["serial_number"] == second
        assert await vault.healthy()
    assert f"the bastion's TLS client certificate {cert} expires at " in caplog.text


# ---------------------------------------------------------------------- refusals
async def test_a_certificate_from_another_ca_is_refused_in_one_sentence(
    info: dict[str, Any], tmp_path: Path
) -> None:
    cert, key = tmp_path / "other.crt", tmp_path / "other.key"
    ClientCA("some-other-ca").issue(cert, key, common_name="bastion")
    for config in (cert_config(info, cert=cert, key=key), cert_config(info, role="nope")):
        assert config.tls_client is not None
        vault = VaultClient(config)
        try:
            with pytest.raises(BackendUnavailable) as caught:
                await vault.start()
            assert one_sentence(caught.value) == (
                "Vault refused the bastion's TLS client certificate login: its cert role "
                f"{config.tls_client.role!r} does not exist or does not trust the certificate "
                f"{config.tls_client.cert_file}."
            )
            hint = caught.value.hint or ""
            assert f"auth/cert/certs/{config.tls_client.role}" in hint
            assert "client certificate" in hint
            for line in key_body(config.tls_client.key_file):
                assert line not in str(caught.value) + hint
            assert not await vault.healthy()
        finally:
            await vault.close()


async def test_the_key_and_certificate_are_checked_before_any_request(
    info: dict[str, Any], client_ca: ClientCA, tmp_path: Path, silent_port: socket.socket
) -> None:
    address = f"https://127.0.0.1:{silent_port.getsockname()[1]}"
    cert, key = info["vault_client_cert"], info["vault_client_key"]
    loose = tmp_path / "loose.key"
    shutil.copyfile(key, loose)
    loose.chmod(0o644)
    link = tmp_path / "link.key"
    link.symlink_to(key)
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    not_a_key.chmod(0o600)
    other_cert, other_key = tmp_path / "other.crt", tmp_path / "other.key"
    client_ca.issue(other_cert, other_key)
    expired_cert, expired_key = tmp_path / "expired.crt", tmp_path / "expired.key"
    client_ca.issue(expired_cert, expired_key, not_after=datetime.now(UTC) - timedelta(hours=1))
    not_pem = tmp_path / "not-pem.crt"
    not_pem.write_text("not a certificate\n")
    cases: list[tuple[Path | str, Path | str, str]] = [
        (cert, loose, f"The TLS client key file {loose} has mode 0644; expected 0600"),
        (cert, tmp_path / "absent.key", "does not exist"),
        (cert, link, f"The TLS client key file {link} is a symbolic link"),
        (cert, not_a_key, "does not hold a PEM private key"),
        (cert, other_key, f"does not hold the private key of the certificate {cert}"),
        (expired_cert, expired_key, f"The TLS client certificate {expired_cert} expired at "),
        (not_pem, key, f"The TLS client certificate file {not_pem} holds no PEM certificate"),
        (tmp_path / "absent.crt", key, "does not exist"),
    ]
    for cert_file, key_file, expected in cases:
        vault = VaultClient(cert_config(info, cert=cert_file, key=key_file, address=address))
        try:
            async with asyncio.timeout(5):
                with pytest.raises(BackendUnavailable) as caught:
                    await vault.start()
        finally:
            await vault.close()
        message = one_sentence(caught.value)
        assert expected in message, (key_file, message)
        assert message.endswith(" log in to Vault."), message
        for line in key_body(key):
            assert line not in str(caught.value) + (caught.value.hint or "")
    assert never_connected(silent_port)


# ---------------------------------------------------------------------- configuration
def test_exactly_one_login_method_is_configured(info: dict[str, Any], tmp_path: Path) -> None:
    approle = {"role_id": "r", "secret_id_file": str(tmp_path / "secret-id")}
    tls = {"cert_file": "client.crt", "key_file": "client.key", "role": "bastion"}
    base = {"address": info["vault_addr"], "ca_file": info["vault_ca"]}
    with pytest.raises(ValidationError, match="both 'approle' and 'tls_client' are set"):
        Vault.model_validate({**base, "approle": approle, "tls_client": tls})
    with pytest.raises(ValidationError, match="no login method: set 'approle'"):
        Vault.model_validate(base)
    with pytest.raises(ValidationError, match="role"):
        Vault.model_validate({**base, "tls_client": {**tls, "role": "no/slash"}})
    assert Vault.model_validate({**base, "tls_client": tls}).approle is None
    # A section built without validation is refused by the client too.
    for approle_part, tls_part in (
        (None, None),
        (
            AppRole.model_construct(role_id="r", secret_id_file=tmp_path / "s"),
            TlsClient.model_construct(cert_file=tmp_path / "c", key_file=tmp_path / "k", role="b"),
        ),
    ):
        unchecked = Vault.model_construct(
            address=info["vault_addr"],
            ca_file=Path(info["vault_ca"]),
            approle=approle_part,
            tls_client=tls_part,
            timeout=timedelta(seconds=1),
        )
        with pytest.raises(BackendUnavailable, match="exactly one login method"):
            VaultClient(unchecked)
