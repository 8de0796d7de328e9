"""Users in paths.users_dir: merged with the config, hot-reloaded, and added by the CLI."""

from __future__ import annotations

import base64
import logging
import os
import pwd
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import WriteConfig, ed25519_line

from bastion.audit.chain import verify
from bastion.audit.log import head_path, read_head
from bastion.cli.main import main
from bastion.config import Config, load_config
from bastion.config.users import UserDirectory
from bastion.errors import ConfigError, SecretFileError
from bastion.state.logins import LoginGuard


def with_users_dir(data: dict[str, Any]) -> None:
    data["paths"]["users_dir"] = "users.d"


@pytest.fixture
def config_path(write_config: WriteConfig, tmp_path: Path) -> Path:
    (tmp_path / "users.d").mkdir()
    return write_config(with_users_dir)


def user_file(directory: Path, name: str, body: dict[str, Any] | None = None) -> Path:
    """Write ``directory/name.yaml`` and give it a fresh mtime (coarse clocks)."""
    data = body if body is not None else {"name": name, "public_keys": [ed25519_line(name)]}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    bump(path)
    return path


def bump(path: Path) -> None:
    later = time.time_ns() + secrets.randbelow(10**9) + 10**9
    os.utime(path, ns=(later, later))
    os.utime(path.parent, ns=(later, later))


def problems(path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, **kwargs)
    return [line.strip() for line in caught.value.message.splitlines()[1:]]


# ---------------------------------------------------------------------------- loading
def test_users_dir_is_merged_with_the_config(config_path: Path, tmp_path: Path) -> None:
    carol = user_file(tmp_path / "users.d", "carol", {
        "name": "carol",
        "groups": ["oncall"],
        "public_keys": [ed25519_line("carol")],
        "totp_secret_file": "../totp/carol-seed",
    })  # fmt: skip
    user_file(tmp_path / "users.d", "dave")
    (tmp_path / "users.d" / ".editor-backup.yaml").write_text("not: a user\n")
    (tmp_path / "users.d" / "README").write_text("ignored\n")
    config = load_config(config_path, check_files=False)
    assert [u.name for u in config.users] == ["alice", "bob", "carol", "dave"]
    assert config.user_file("alice") is None
    assert config.user_file("carol") == carol
    assert config.source == config_path
    # Relative paths in a user file are resolved against users_dir.
    assert config.users[2].totp_secret_file == tmp_path / "users.d" / ".." / "totp" / "carol-seed"
    assert config.totp_secret_path(config.users[3]) == tmp_path / "state" / "totp" / "dave"
    assert config.principal("carol") is not None
    assert config.login_db_path() == tmp_path / "state" / "logins.db"


def test_defaulted_secret_missing_means_not_enrolled(config_path: Path, tmp_path: Path) -> None:
    user_file(tmp_path / "users.d", "dave")
    assert [u.name for u in load_config(config_path).users][-1] == "dave"


def test_defaulted_secret_that_exists_is_checked(config_path: Path, tmp_path: Path) -> None:
    dave = user_file(tmp_path / "users.d", "dave")
    seed = tmp_path / "state" / "totp" / "dave"
    seed.parent.mkdir(parents=True)
    seed.write_text("SEED\n")
    seed.chmod(0o640)
    with pytest.raises(SecretFileError) as caught:
        load_config(config_path)
    assert caught.value.message.splitlines()[1].strip() == (
        f"{dave}:1: totp_secret_file: secret file {seed} has mode 0640; expected 0600 "
        f"(run: chmod 600 {seed})"
    )


def test_named_secret_must_exist(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config()
    (tmp_path / "totp" / "bob").unlink()
    assert problems(path) == [
        f"{path}:19: users[1].totp_secret_file: secret file {tmp_path / 'totp' / 'bob'} "
        "does not exist"
    ]


def test_config_users_may_omit_the_secret_file(write_config: WriteConfig, tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        del data["users"][1]["totp_secret_file"]

    config = load_config(write_config(edit))
    assert config.users[1].totp_secret_file is None
    assert config.totp_secret_path(config.users[1]) == tmp_path / "state" / "totp" / "bob"


def test_bad_user_file_is_reported_by_file_line_and_key(config_path: Path, tmp_path: Path) -> None:
    carol = tmp_path / "users.d" / "carol.yaml"
    carol.write_text(
        "name: carol\n"
        "groups: [oncall]\n"
        "public_keys:\n"
        "  - ssh-dss AAAAB3NzaC1kc3MAAACBAP\n"
        "shell: /bin/bash\n"
    )
    assert problems(config_path, check_files=False) == [
        f"{carol}:4: public_keys[0]: key type 'ssh-dss' is not accepted; use one of "
        "ssh-ed25519, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com, ssh-rsa "
        "(RSA with at least 3072 bits)",
        f"{carol}:5: shell: unknown key 'shell'; allowed keys here: name, public_keys, groups, "
        "totp_secret_file, break_glass",
    ]


def test_user_file_syntax_and_shape_errors(config_path: Path, tmp_path: Path) -> None:
    carol = tmp_path / "users.d" / "carol.yaml"
    carol.write_text("name: carol\nname: dave\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config_path)
    assert caught.value.message == (
        f"{carol}:2:1: not valid YAML: duplicate key 'name' (first at line 1)"
    )
    carol.write_text("- carol\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config_path)
    assert caught.value.message == (
        f"{carol}: expected a mapping of keys (name, public_keys, ...) at the top"
    )


def test_user_file_must_be_named_after_its_user(config_path: Path, tmp_path: Path) -> None:
    wrong = user_file(tmp_path / "users.d", "carol", {
        "name": "dave", "public_keys": [ed25519_line()],
    })  # fmt: skip
    assert problems(config_path) == [
        f"{wrong}:1: name: the file is named carol.yaml but holds user 'dave': a user file "
        "must be named after its user (rename it to dave.yaml)"
    ]


def test_duplicate_name_names_both_files(config_path: Path, tmp_path: Path) -> None:
    again = user_file(tmp_path / "users.d", "bob")
    assert problems(config_path) == [
        f"{again}:1: name: duplicate name 'bob': also defined in {config_path} (users[1])"
    ]


def test_grants_may_name_users_of_the_directory(write_config: WriteConfig, tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        with_users_dir(data)
        data["grants"][1]["users"] = ["carol", "erin"]

    (tmp_path / "users.d").mkdir()
    user_file(tmp_path / "users.d", "carol")
    path = write_config(edit)
    assert problems(path) == [
        f"{path}:59: grants[1].users[1]: no user named 'erin' in users or in paths.users_dir"
    ]


def test_users_dir_must_exist_and_be_safe(config_path: Path, tmp_path: Path) -> None:
    directory = tmp_path / "users.d"
    carol = user_file(directory, "carol")
    carol.chmod(0o666)
    assert problems(config_path) == [
        f"{carol}: user file {carol} is writable by group or others (mode 0666), so anyone "
        f"able to write it could add a user (run: chmod 644 {carol})"
    ]
    carol.chmod(0o644)
    directory.chmod(0o777)
    assert problems(config_path) == [
        f"{config_path}:67: paths.users_dir: directory {directory} is writable by group or "
        f"others (mode 0777), so anyone able to write it could add a user (run: chmod go-w "
        f"{directory})"
    ]
    directory.chmod(0o755)
    carol.unlink()
    carol.symlink_to(tmp_path / "bastion.yaml")
    assert problems(config_path) == [
        f"{carol}: user file {carol} is a symbolic link; user files must be regular files"
    ]
    carol.unlink()
    directory.rmdir()
    assert problems(config_path) == [
        f"{config_path}:67: paths.users_dir: directory {directory} does not exist (create "
        f"it: install -d -m 0755 {directory})"
    ]
    # Offline validation: nothing has been added yet.
    assert len(load_config(config_path, check_files=False).users) == 2


# ---------------------------------------------------------------------------- hot reload
def test_directory_changes_take_effect_without_restart(
    config_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "users.d"
    users = UserDirectory(load_config(config_path))
    assert users.get("carol") is None
    assert users.get("alice") is not None
    carol = user_file(directory, "carol")
    found = users.get("carol")
    assert found is not None
    assert users.source("carol") == carol
    assert users.reload_error is None
    # Edited: the new groups apply.
    user_file(directory, "carol", {
        "name": "carol", "groups": ["platform"], "public_keys": [ed25519_line()],
    })  # fmt: skip
    assert users.principal("carol") is not None
    assert users.principal("carol").groups == frozenset({"platform"})  # type: ignore[union-attr]
    # Broken: the last good set stays, and the reason is kept for the server to log.
    carol.write_text("name: carol\npublic_keys: []\n")
    bump(carol)
    with caplog.at_level(logging.ERROR, logger="bastion.config.users"):
        kept = users.get("carol")
    assert kept is not None
    assert kept.groups == ["platform"]
    assert users.reload_error is not None
    assert f"{carol}:2: public_keys: expected at least 1 item(s)" in users.reload_error
    assert "stay in force" in users.reload_error
    assert any("users directory not reloaded" in r.message for r in caplog.records)
    # A duplicate of a config user is refused the same way.
    carol.unlink()
    user_file(directory, "bob")
    users.get("alice")
    assert users.reload_error is not None
    assert f"duplicate name 'bob': also defined in {config_path} (users[1])" in (users.reload_error)
    # Fixed: removed users are gone, the error is cleared.
    (directory / "bob.yaml").unlink()
    bump(directory)
    assert users.get("carol") is None
    assert users.reload_error is None
    assert [u.name for u in users.users()] == ["alice", "bob"]


def test_directory_is_reread_only_when_it_changed(
    config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bastion.config.users as module  # noqa: PLC0415

    carol = user_file(tmp_path / "users.d", "carol")
    users = UserDirectory(load_config(config_path))
    reads: list[int] = []
    real = module.read_users_dir

    def counting(config: Config) -> Any:
        reads.append(1)
        return real(config)

    monkeypatch.setattr(module, "read_users_dir", counting)
    first = users.get("carol")
    for _ in range(3):
        assert users.get("carol") is first
    assert reads == []
    bump(carol)
    assert users.get("carol") is not first
    assert reads == [1]


# ---------------------------------------------------------------------------- TOTP seeds
def seed() -> str:
    return base64.b32encode(secrets.token_bytes(20)).decode()


def enrolled(config: Config, name: str, text: str, mode: int = 0o600) -> Path:
    user = next(u for u in config.users if u.name == name)
    path = config.totp_secret_path(user)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_totp_secret_read_with_start_up_checks(config_path: Path, tmp_path: Path) -> None:
    user_file(tmp_path / "users.d", "carol")
    config = load_config(config_path)
    users = UserDirectory(config)
    carol = users.get("carol")
    assert carol is not None
    assert users.totp_secret(carol) is None  # not enrolled yet
    text = seed()
    path = enrolled(config, "carol", text + "\n")
    assert users.totp_secret(carol) == base64.b32decode(text)
    path.chmod(0o644)
    with pytest.raises(SecretFileError) as caught:
        users.totp_secret(carol)
    assert caught.value.message == (
        f"secret file {path} of carol has mode 0644; expected 0600 (run: chmod 600 {path})"
    )
    path.unlink()
    path.symlink_to(tmp_path / "totp" / "alice")
    with pytest.raises(SecretFileError, match="is a symbolic link; secret files must be regular"):
        users.totp_secret(carol)
    path.unlink()
    enrolled(config, "carol", "JBSWY3DPEHPK3PXP\n")
    with pytest.raises(SecretFileError) as caught:
        users.totp_secret(carol)
    assert caught.value.message == (
        f"secret file {path} of carol holds no usable TOTP secret: the TOTP secret has 80 "
        "bits; at least 160 are required (re-enrol the user)"
    )
    assert "bastion user enroll carol" in str(caught.value)


def test_totp_secret_named_but_missing_is_an_error(config_path: Path, tmp_path: Path) -> None:
    users = UserDirectory(load_config(config_path))
    alice = users.get("alice")
    assert alice is not None
    (tmp_path / "totp" / "alice").unlink()
    with pytest.raises(SecretFileError, match="does not exist"):
        users.totp_secret(alice)


def test_totp_secret_owned_by_another_user_is_refused(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    config = load_config(write_config(), check_files=False)
    nobody = pwd.getpwnam("nobody")
    as_nobody = config.model_copy(update={"service_user": "nobody"})
    users = UserDirectory(as_nobody)
    alice = users.get("alice")
    assert alice is not None
    path = enrolled(config, "alice", seed())
    assert nobody.pw_uid != os.geteuid()
    with pytest.raises(SecretFileError) as caught:
        users.totp_secret(alice)
    assert caught.value.message.endswith(
        "expected the service user nobody (run: chown nobody " + f"{path})"
    )


# ---------------------------------------------------------------------------- bastion user add
def keygen(tmp_path: Path, kind: str, bits: int | None = None) -> Path:
    key = tmp_path / f"id_{kind}_{bits}"
    args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"{kind}@test", "-f", str(key)]
    if bits:
        args += ["-b", str(bits)]
    subprocess.run(args, check=True)
    return key.with_suffix(".pub")


def audit_events(config: Config) -> list[dict[str, Any]]:
    import json  # noqa: PLC0415

    log = config.paths.audit_log
    lines = log.read_bytes().splitlines(keepends=True)
    assert verify(lines, read_head(head_path(log))).ok
    return [json.loads(line) for line in lines]


def test_user_add_writes_a_file_the_server_reads(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = UserDirectory(load_config(config_path))
    key = keygen(tmp_path, "ed25519")
    code = main([
        "user", "add", "carol", "--key", str(key), "--group", "oncall", "--group", "payments",
        "--config", str(config_path),
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    target = tmp_path / "users.d" / "carol.yaml"
    assert out.startswith(f"added user carol to {target}\n")
    assert "bastion user enroll carol" in out
    assert target.stat().st_mode & 0o777 == 0o644
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp left
    carol = users.get("carol")  # the running server's view, without a restart
    assert carol is not None
    assert carol.groups == ["oncall", "payments"]
    assert carol.public_keys[0].openssh() == key.read_text().strip()
    config = load_config(config_path)
    assert config.user_file("carol") == target
    event = audit_events(config)[-1]
    assert event["event"] == "user.added"
    assert event["user"] == "carol"
    assert event["actor"] == pwd.getpwuid(os.getuid()).pw_name
    assert event["keys"] == [carol.public_keys[0].fingerprint]


def test_user_add_refuses_a_weak_key(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = keygen(tmp_path, "rsa", 2048)
    code = main(["user", "add", "carol", "--key", str(weak), "--config", str(config_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"bastion: key file {weak}:1: RSA key has 2048 bits; at least 3072 are required; "
        "the key was not added\n"
    )
    assert "ssh-keygen -t ed25519" in err
    assert not (tmp_path / "users.d" / "carol.yaml").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bob"], "bastion: user 'bob' already exists (in {config} (config))"),
        (["Carol"], "bastion: 'Carol' is not a valid user name: lower-case letters"),
        (["carol", "--group", "on call"], "  {dir}/carol.yaml:4: groups[0]: 'on call' is not"),
    ],
)
def test_user_add_refusals(
    config_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    key = keygen(tmp_path, "ed25519")
    code = main(["user", "add", *args, "--key", str(key), "--config", str(config_path)])
    assert code in (1, 2)
    err = capsys.readouterr().err
    assert message.format(config=config_path, dir=tmp_path / "users.d") in err
    assert sorted(p.name for p in (tmp_path / "users.d").iterdir()) == []


def test_user_add_needs_users_dir_and_a_public_key(
    write_config: WriteConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config()
    key = keygen(tmp_path, "ed25519")
    assert main(["user", "add", "carol", "--key", str(key), "--config", str(path)]) == 1
    assert capsys.readouterr().err.startswith(
        f"bastion: {path}: paths.users_dir is not set, so there is nowhere to add a user\n"
    )
    (tmp_path / "users.d").mkdir()
    path = write_config(with_users_dir)
    private = key.with_suffix("")
    assert main(["user", "add", "carol", "--key", str(private), "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"bastion: key file {private} holds a private key")
    assert "BEGIN" not in err


# ---------------------------------------------------------------------------- unlock and list
def test_unlock_clears_failures_and_list_shows_state(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user_file(tmp_path / "users.d", "carol")
    config = load_config(config_path)
    guard = LoginGuard(config.login_db_path())
    for _ in range(21):
        guard.record_failure("alice", time.time())
    guard.replace_scratch_codes("bob", ["a" * 64, "b" * 64])
    guard.close()
    assert main(["user", "list", "--config", str(config_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME", "GROUPS", "SOURCE", "ENROLLED", "SCRATCH", "FAILURES", "LOCK",
    ]  # fmt: skip
    assert lines[1].split() == ["alice", "oncall", str(config_path), "(config)", "yes", "0",
                                "21", "hard", "lock"]  # fmt: skip
    assert lines[2].split()[-4:] == ["yes", "2", "0", "-"]
    assert lines[3].split() == ["carol", "-", str(tmp_path / "users.d" / "carol.yaml"), "no",
                                "0", "0", "-"]  # fmt: skip

    assert main(["user", "unlock", "alice", "--config", str(config_path)]) == 0
    assert capsys.readouterr().out == (
        "unlocked alice: previous failure count 21 cleared (lock before: hard lock)\n"
    )
    guard = LoginGuard(config.login_db_path())
    assert guard.failures("alice").failures == 0
    guard.close()
    event = audit_events(config)[-1]
    assert (event["event"], event["user"], event["previous_failures"]) == (
        "user.unlocked", "alice", 21,
    )  # fmt: skip
    assert main(["user", "unlock", "zed", "--config", str(config_path)]) == 1
    assert capsys.readouterr().err.startswith(
        f"bastion: no user named 'zed' in {config_path} or {tmp_path / 'users.d'}\n"
    )
