"""The configuration file: every problem is named by file, line, key path and expectation."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKE_PEM, WriteConfig, secret_file

from bastion.config import load_config
from bastion.errors import ConfigError, SecretFileError
from bastion.policy import Mode


def problems(path: Path) -> list[str]:
    """The problem lines of the ConfigError raised for ``path``, file prefix removed."""
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = caught.value.message.splitlines()
    assert lines[0].startswith(f"{path} is not valid (")
    return [line.strip().removeprefix(f"{path}:") for line in lines[1:]]


def test_valid_config_loads_with_resolved_paths(write_config: WriteConfig) -> None:
    path = write_config()
    config = load_config(path)
    assert config.users[0].totp_secret_file == path.parent / "totp" / "alice"
    assert config.grants[0].max_session == timedelta(minutes=30)
    assert config.grants[0].modes == [Mode.EPHEMERAL]
    assert config.grants[1].idle_timeout == timedelta(minutes=15)  # default
    assert config.limits.login_timeout == timedelta(seconds=30)
    assert str(config.grants[0].pod_selector) == "app in (api,worker)"


def test_bundled_example_is_valid() -> None:
    example = Path(__file__).parent.parent / "bastion" / "examples" / "bastion.yaml"
    config = load_config(example, check_files=False)
    assert [u.name for u in config.users] == ["alice", "bob", "emergency"]


def test_missing_key(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        del data["vault"]["approle"]["role_id"]

    assert problems(write_config(edit)) == ["60: vault.approle.role_id: required key is missing"]


def test_missing_top_level_section(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        del data["paths"]

    assert problems(write_config(edit)) == ["1: paths: required key is missing"]


def test_wrong_type(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["listener"]["port"] = "twenty-two"

    assert problems(write_config(edit)) == [
        "3: listener.port: expected a whole number, got 'twenty-two'"
    ]


def test_unknown_key_lists_the_allowed_ones(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["grants"][1]["namespace"] = ["default"]

    assert problems(write_config(edit)) == [
        "57: grants[1].namespace: unknown key 'namespace'; allowed keys here: name, users, "
        "groups, clusters, namespaces, pod_selector, modes, images, max_session, "
        "idle_timeout, reason_required, record_input, vault_role, not_before, not_after, "
        "approval, scopes, path_prefixes"
    ]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("prod-[", "'prod-[': '[' at position 5 is never closed by ']'"),
        (
            "Prod",
            "'Prod': character 'P' cannot appear in a Kubernetes name; use lower-case letters, "
            "digits, '-', '.', and the wildcards * ? [...]",
        ),
        ("", "expected a name pattern, got an empty string"),
        (
            "a[A-Z]",
            "'a[A-Z]': character class [A-Z] must list lower-case letters, digits, '.', '-' "
            "or ranges such as a-f, optionally negated with '!'",
        ),
    ],
)
def test_bad_glob(write_config: WriteConfig, pattern: str, expected: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["grants"][0]["namespaces"] = ["payments", pattern]

    assert problems(write_config(edit)) == [f"33: grants[0].namespaces[1]: {expected}"]


def test_several_problems_reported_at_once(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["grants"][0]["max_session"] = "forever"
        data["grants"][1]["images"] = ["registry.example.com/toolbox:latest"]
        data["clusters"][0]["api_url"] = "http://prod-eu.example.com"

    assert problems(write_config(edit)) == [
        "22: clusters[0].api_url: 'http://prod-eu.example.com' must be an https:// URL: the "
        "bastion refuses plain HTTP to its backends",
        "39: grants[0].max_session: expected a duration such as 90s, 10m, 1h30m or 7d, got "
        "'forever'",
        "55: grants[1].images[0]: image 'registry.example.com/toolbox:latest' is not pinned by "
        "digest; a tag can be moved to other content, so use registry/name@sha256:<64 hex "
        "digits> (docker buildx imagetools inspect shows it)",
    ]


def test_loose_secret_file_mode_refused(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config()
    (tmp_path / "totp" / "bob").chmod(0o644)
    with pytest.raises(SecretFileError) as caught:
        load_config(path)
    secret = tmp_path / "totp" / "bob"
    assert caught.value.message.splitlines()[1].strip() == (
        f"{path}:19: users[1].totp_secret_file: secret file {secret} has mode 0644; "
        f"expected 0600 (run: chmod 600 {secret})"
    )


def test_secret_file_owned_by_someone_else_refused(write_config: WriteConfig) -> None:
    nobody = pwd.getpwnam("nobody")

    def edit(data: dict[str, Any]) -> None:
        data["service_user"] = "nobody"

    path = write_config(edit)
    me = pwd.getpwuid(os.geteuid())
    found = problems(path)
    assert len(found) == 3  # two TOTP files and the AppRole secret-id
    secret = path.parent / "approle-secret-id"
    assert found[2] == (
        f"62: vault.approle.secret_id_file: secret file {secret} is owned by "
        f"{me.pw_name} (uid {me.pw_uid}); expected the service user nobody "
        f"(run: chown nobody {secret})"
    )
    assert nobody.pw_uid != os.geteuid()


def test_service_user_must_exist(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["service_user"] = "no-such-user"

    assert problems(write_config(edit)) == ["67: service_user: no user 'no-such-user' on this host"]


def test_secret_file_symlink_and_missing_refused(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config()
    alice = tmp_path / "totp" / "alice"
    alice.unlink()
    alice.symlink_to(tmp_path / "totp" / "bob")
    (tmp_path / "approle-secret-id").unlink()
    assert problems(path) == [
        f"12: users[0].totp_secret_file: secret file {alice} is a symbolic link; secret "
        "files must be regular files",
        f"62: vault.approle.secret_id_file: secret file {tmp_path / 'approle-secret-id'} "
        "does not exist",
    ]


def test_existing_host_key_must_be_private(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config()
    host_key = tmp_path / "host_ed25519"
    host_key.write_text("key")
    host_key.chmod(0o640)
    assert problems(path) == [
        f"4: listener.host_key: secret file {host_key} has mode 0640; expected 0600 "
        f"(run: chmod 600 {host_key})"
    ]


def test_file_checks_can_be_skipped_for_offline_validation(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    path = write_config()
    (tmp_path / "totp" / "bob").chmod(0o644)
    assert load_config(path, check_files=False).users[1].name == "bob"


def test_ca_file_must_hold_a_certificate(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config()
    (tmp_path / "ca" / "vault.pem").write_text("not a certificate")
    assert problems(path) == [
        f"59: vault.ca_file: CA file {tmp_path / 'ca' / 'vault.pem'} holds no PEM certificate"
    ]


def test_duplicate_yaml_key_is_an_error(write_config: WriteConfig) -> None:
    text = "listener:\n  port: 22\n  port: 2222\n"
    path = write_config(text=text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message == (
        f"{path}:3:3: not valid YAML: duplicate key 'port' (first at line 2)"
    )


def test_yaml_syntax_error_points_at_the_line(write_config: WriteConfig) -> None:
    path = write_config(text="listener:\n  port: [2222\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message.startswith(f"{path}:3:1: not valid YAML: ")


def test_top_level_must_be_a_mapping(write_config: WriteConfig) -> None:
    path = write_config(text="- just\n- a list\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message == (
        f"{path}: expected a mapping of keys (listener, users, ...) at the top"
    )


def test_cross_references_are_checked(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["users"][1]["name"] = "alice"
        data["grants"][1]["users"] = ["carol"]
        data["grants"][1]["clusters"] = ["staging-*"]

    assert problems(write_config(edit)) == [
        "13: users[1].name: duplicate name 'alice'",
        "58: grants[1].users[0]: no user named 'carol' in users",
        "47: grants[1].clusters[0]: 'staging-*' matches no cluster; configured: prod-eu",
    ]


def test_grant_must_name_someone_and_be_coherent(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        del data["grants"][1]["groups"]
        data["grants"][0]["idle_timeout"] = "2h"

    assert problems(write_config(edit)) == [
        "26: grants[0]: idle_timeout cannot be longer than max_session",
        "43: grants[1]: a grant must name at least one of 'users' or 'groups'",
    ]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
            "key type 'ssh-dss' is not accepted; use one of ssh-ed25519, "
            "sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com, ssh-rsa (RSA "
            "with at least 3072 bits)",
        ),
        ("ssh-ed25519 !!!", "the key's base64 data is invalid (Only base64 data is allowed)"),
        ("ssh-ed25519", "expected an OpenSSH public key line: '<type> <base64> [comment]'"),
    ],
)
def test_bad_public_keys(write_config: WriteConfig, key: str, expected: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["users"][0]["public_keys"] = [key]

    assert problems(write_config(edit)) == [f"10: users[0].public_keys[0]: {expected}"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_config_cli_ok(write_config: WriteConfig) -> None:
    path = write_config()
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    ok, guard = result.stdout.splitlines()
    assert ok == f"ok: {path}: 2 users, 1 clusters, 2 grants, listening on 127.0.0.1:2222"
    assert guard.startswith("guard: sensitive_paths: ")  # the guard's rules, one line each


def test_check_config_cli_invalid_exits_2_without_traceback(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["grants"][0]["namespaces"] = ["prod-["]

    path = write_config(edit)
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[:2] == [
        f"bastion: {path} is not valid (1 problem):",
        f"  {path}:32: grants[0].namespaces[0]: 'prod-[': '[' at position 5 is never closed by ']'",
    ]
    assert "docs/configuration.md" in result.stderr


def test_check_config_cli_missing_file(tmp_path: Path) -> None:
    result = run_cli("check-config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"bastion: {tmp_path / 'nope.yaml'}: no such file")


# ---------------------------------------------------------------------- vault login methods
def tls_client_login(root: Path) -> dict[str, Any]:
    """The vault section's certificate login, with its files under ``root``."""
    (root / "vault-client.crt").write_bytes(FAKE_PEM)
    secret_file(root / "vault-client.key", b"-----BEGIN PRIVATE KEY-----\n...\n")
    return {"cert_file": "vault-client.crt", "key_file": "vault-client.key", "role": "bastion"}


def test_vault_login_by_tls_client_certificate(write_config: WriteConfig, tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        del data["vault"]["approle"]
        data["vault"]["tls_client"] = tls_client_login(tmp_path)

    config = load_config(write_config(edit))
    assert config.vault.approle is None
    assert config.vault.tls_client is not None
    assert config.vault.tls_client.cert_file == tmp_path / "vault-client.crt"
    assert config.vault.tls_client.key_file == tmp_path / "vault-client.key"
    assert config.vault.tls_client.role == "bastion"


def test_vault_needs_exactly_one_login_method(write_config: WriteConfig, tmp_path: Path) -> None:
    def both(data: dict[str, Any]) -> None:
        data["vault"]["tls_client"] = tls_client_login(tmp_path)

    def neither(data: dict[str, Any]) -> None:
        del data["vault"]["approle"]

    assert problems(write_config(both)) == [
        "57: vault: both 'approle' and 'tls_client' are set; the bastion logs in to Vault one "
        "way: keep exactly one of them"
    ]
    assert problems(write_config(neither)) == [
        "57: vault: no login method: set 'approle' (role_id, secret_id_file) or 'tls_client' "
        "(cert_file, key_file, role) to say how the bastion logs in to Vault"
    ]


def test_tls_client_keys_are_checked(write_config: WriteConfig, tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        del data["vault"]["approle"]
        data["vault"]["tls_client"] = tls_client_login(tmp_path)
        del data["vault"]["tls_client"]["role"]
        data["vault"]["tls_client"]["cert"] = "vault-client.crt"

    assert problems(write_config(edit)) == [
        "60: vault.tls_client.role: required key is missing",
        "63: vault.tls_client.cert: unknown key 'cert'; allowed keys here: cert_file, key_file, "
        "role",
    ]


def test_tls_client_key_is_a_secret_file_and_cert_a_certificate(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    def edit(data: dict[str, Any]) -> None:
        del data["vault"]["approle"]
        data["vault"]["tls_client"] = tls_client_login(tmp_path)

    path = write_config(edit)
    key, cert = tmp_path / "vault-client.key", tmp_path / "vault-client.crt"
    key.chmod(0o644)
    with pytest.raises(SecretFileError) as caught:
        load_config(path)
    assert caught.value.message.splitlines()[1].strip() == (
        f"{path}:62: vault.tls_client.key_file: secret file {key} has mode 0644; expected 0600 "
        f"(run: chmod 600 {key})"
    )
    key.chmod(0o600)
    cert.write_text("not a certificate")
    assert problems(path) == [
        f"61: vault.tls_client.cert_file: certificate file {cert} holds no PEM certificate"
    ]
    key.unlink()
    cert.unlink()
    assert problems(path) == [
        f"62: vault.tls_client.key_file: secret file {key} does not exist",
        f"61: vault.tls_client.cert_file: certificate file {cert} does not exist",
    ]
