"""Enrolment: secrets, otpauth URIs and scratch codes; ``bastion user enroll`` end to end.

The RFC 6238 vectors themselves are checked in tests/test_totp.py (test_rfc6238_vectors);
here a secret made by the real command is cross-checked with Debian's oathtool and pyotp.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
import yaml
from conftest import WriteConfig, base_config
from hypothesis import given
from hypothesis import strategies as st

from bastion import totp
from bastion.config import Config, load_config
from bastion.config.users import UserDirectory
from bastion.enrolment import (
    SCRATCH_ALPHABET,
    new_scratch_codes,
    new_totp_secret,
    normalize_scratch_code,
    otpauth_uri,
    scratch_code_digest,
)
from bastion.state.logins import LoginGuard

ROOT = Path(__file__).parent.parent
CODE_SHAPE = re.compile(r"[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}")


# ---------------------------------------------------------------------------- pure parts
def test_new_secret_is_160_random_bits_of_base32() -> None:
    secret = new_totp_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert len(totp.decode_secret(secret)) == 20
    assert new_totp_secret() != secret
    pyotp.TOTP(secret).now()  # pyotp refuses secrets under 112 bits


def test_otpauth_uri_is_percent_encoded_and_complete() -> None:
    secret = new_totp_secret()
    uri = otpauth_uri("alice", secret, "ACME Corp: prod/eu")
    assert uri.startswith("otpauth://totp/ACME%20Corp%3A%20prod%2Feu:alice?")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    issuer, _, account = parts.path.removeprefix("/").partition(":")
    assert (unquote(issuer), unquote(account)) == ("ACME Corp: prod/eu", "alice")
    assert parse_qs(parts.query, strict_parsing=True) == {
        "secret": [secret],
        "issuer": ["ACME Corp: prod/eu"],
        "algorithm": ["SHA1"],
        "digits": ["6"],
        "period": ["30"],
    }
    parsed = pyotp.parse_uri(uri)
    assert parsed.issuer == "ACME Corp: prod/eu"
    assert parsed.name == "alice"
    assert parsed.now() == totp.code_at(totp.decode_secret(secret), time.time())
    assert "%C3%A9" in otpauth_uri("alice", secret, "caf\u00e9")  # UTF-8, then percent


@pytest.mark.parametrize(
    ("user", "secret", "issuer", "message"),
    [
        ("", "A" * 32, "x", "user name of an otpauth URI cannot be empty"),
        ("a", "A" * 32, "", "issuer of an otpauth URI cannot be empty"),
        ("a", "JBSWY3DPEHPK3PXP", "x", "has 80 bits; at least 160 are required"),
        ("a", "not base32!", "x", "not valid base32"),
    ],
)
def test_otpauth_uri_refusals(user: str, secret: str, issuer: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        otpauth_uri(user, secret, issuer)


def test_scratch_codes_have_80_bits_from_an_unambiguous_alphabet() -> None:
    assert len(SCRATCH_ALPHABET) == len(set(SCRATCH_ALPHABET)) == 32  # 5 bits a character
    assert not set(SCRATCH_ALPHABET) & set("ilou")
    assert SCRATCH_ALPHABET.islower()
    codes = new_scratch_codes()
    assert len(codes) == len(set(codes)) == 10
    for code in codes:
        assert CODE_SHAPE.fullmatch(code)
        assert len(code.replace("-", "")) * 5 == 80
        assert set(code.replace("-", "")) <= set(SCRATCH_ALPHABET)
        assert normalize_scratch_code(code) == code
    assert len(new_scratch_codes(3)) == 3
    with pytest.raises(ValueError, match="at least one scratch code"):
        new_scratch_codes(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abcd-efgh-jkmn-pqrs", "abcd-efgh-jkmn-pqrs"),
        ("ABCD-EFGH-JKMN-PQRS", "abcd-efgh-jkmn-pqrs"),
        ("abcdefghjkmnpqrs", "abcd-efgh-jkmn-pqrs"),
        ("abcd-efghjkmn-pqrs", "abcd-efgh-jkmn-pqrs"),
        ("0o1i-lL00-2345-6789", "0011-1100-2345-6789"),  # read as printed
        ("123456", None),  # a TOTP code
        ("1234567890123456", "1234-5678-9012-3456"),
        ("abcd-efgh-jkmn-pqru", None),  # 'u' is not in the alphabet
        ("abcd-efgh-jkmn-pqr", None),
        ("abcd-efgh-jkmn-pqrs-tvwx", None),
        ("abcd--efgh-jkmn-pqrs", None),
        ("-abcd-efgh-jkmn-pqrs", None),
        (" abcd-efgh-jkmn-pqrs", None),
        ("abcd efgh jkmn pqrs", None),
        ("abcd-efgh-jkmn-pqrs\n", None),
        ("\uff41bcd-efgh-jkmn-pqrs", None),  # full-width 'a'
        ("abcd\u2010efgh-jkmn-pqrs", None),  # Unicode hyphen
        ("", None),
    ],
)
def test_normalize_scratch_code(text: str, expected: str | None) -> None:
    assert normalize_scratch_code(text) == expected


@given(st.integers(min_value=0, max_value=999_999))
def test_a_totp_code_is_never_a_scratch_code(number: int) -> None:
    assert normalize_scratch_code(f"{number:06d}") is None


@given(st.text(max_size=40))
def test_normalized_codes_are_canonical(text: str) -> None:
    normalized = normalize_scratch_code(text)
    if normalized is not None:
        assert CODE_SHAPE.fullmatch(normalized)
        assert normalize_scratch_code(normalized) == normalized
        assert text.isascii()


def test_scratch_code_digest() -> None:
    code = "abcd-efgh-jkmn-pqrs"
    assert scratch_code_digest("alice", code) == (
        hashlib.sha256(b"alice\0abcd-efgh-jkmn-pqrs").hexdigest()
    )
    assert scratch_code_digest("bob", code) != scratch_code_digest("alice", code)
    with pytest.raises(ValueError, match="expects a code from normalize_scratch_code"):
        scratch_code_digest("alice", "ABCDEFGHJKMNPQRS")


# ---------------------------------------------------------------------------- the command
def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


@pytest.fixture
def config_path(write_config: WriteConfig) -> Path:
    def edit(data: dict[str, Any]) -> None:
        del data["users"][1]["totp_secret_file"]  # bob's seed goes to the default place

    return write_config(edit)


def enrolment_output(stdout: str) -> tuple[str, list[str]]:
    """The otpauth URI and the scratch codes that ``bastion user enroll`` printed."""
    uris = [word for word in stdout.split() if word.startswith("otpauth://")]
    assert len(uris) == 1, stdout
    codes = [line.strip() for line in stdout.splitlines() if CODE_SHAPE.fullmatch(line.strip())]
    return uris[0], codes


def audit_lines(config: Config) -> list[dict[str, Any]]:
    return [json.loads(line) for line in config.paths.audit_log.read_text().splitlines()]


@pytest.mark.skipif(shutil.which("oathtool") is None, reason="Debian's oathtool is not installed")
def test_enroll_gives_a_secret_oathtool_and_pyotp_agree_with(
    config_path: Path, tmp_path: Path
) -> None:
    result = bastion("user", "enroll", "bob", "--config", str(config_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    uri, codes = enrolment_output(out)
    parts = urlsplit(uri)
    assert unquote(parts.path) == "/k8s-debug-bastion:bob"
    query = parse_qs(parts.query, strict_parsing=True)
    secret = query["secret"][0]
    assert query["issuer"] == ["k8s-debug-bastion"]
    assert (query["algorithm"], query["digits"], query["period"]) == (["SHA1"], ["6"], ["30"])
    # The QR code is drawn: rows of half blocks, one row per two modules.
    qr_rows = [line for line in out.splitlines() if line and set(line) <= set("█▀▄ ")]
    assert len(qr_rows) >= 20
    assert f"(base32, SHA1, 6 digits, 30 s): {secret}\n" in out
    assert len(codes) == len(set(codes)) == 10
    assert "will not be shown again" in out

    # Debian's oathtool, pyotp and the bastion agree on the codes of this secret.
    for moment in (int(time.time()), 1_000_000_000, 2_000_000_000):
        printed = subprocess.run(
            ["oathtool", "--totp", "-b", "-N", f"@{moment}", secret],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert printed == pyotp.TOTP(secret).at(moment)
        assert printed == totp.code_at(totp.decode_secret(secret), moment)

    # Stored where the server reads it, 0600 in a 0700 directory, and readable by it.
    config = load_config(config_path)
    seed = tmp_path / "state" / "totp" / "bob"
    assert seed.read_text() == secret + "\n"
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    assert stat.S_IMODE(seed.parent.stat().st_mode) == 0o700
    assert not [p for p in seed.parent.iterdir() if p.name.startswith(".")]
    users = UserDirectory(config)
    bob = users.get("bob")
    assert bob is not None
    assert users.totp_secret(bob) == totp.decode_secret(secret)

    # The codes are stored hashed, never in the clear; each one works once.
    raw = config.login_db_path().read_bytes()
    assert not any(code.encode() in raw for code in codes)
    guard = LoginGuard(config.login_db_path())
    assert guard.scratch_codes_left("bob") == 10
    first = normalize_scratch_code(codes[0].upper().replace("-", ""))
    assert first is not None
    assert guard.use_scratch_code("bob", scratch_code_digest("bob", first), time.time())
    assert not guard.use_scratch_code("bob", scratch_code_digest("bob", first), time.time())
    assert not guard.use_scratch_code("alice", scratch_code_digest("alice", first), time.time())
    assert guard.scratch_codes_left("bob") == 9
    guard.close()

    # The audit event says who enrolled whom, and holds neither the secret nor a code.
    text = config.paths.audit_log.read_text()
    assert secret not in text
    assert not any(code in text for code in codes)
    event = audit_lines(config)[-1]
    assert (event["event"], event["user"], event["scratch_codes"]) == ("user.enrolled", "bob", 10)
    assert event["actor"] == pwd.getpwuid(os.getuid()).pw_name


def test_enroll_again_replaces_secret_and_codes_not_the_replay_guard(
    config_path: Path,
) -> None:
    config = load_config(config_path, check_files=False)
    guard = LoginGuard(config.login_db_path())
    assert guard.accept_step("bob", 12345)
    guard.close()
    first = bastion("user", "enroll", "bob", "--config", str(config_path), "--issuer", "ACME")
    second = bastion("user", "enroll", "bob", "--config", str(config_path))
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    old_uri, old_codes = enrolment_output(first.stdout)
    new_uri, new_codes = enrolment_output(second.stdout)
    assert urlsplit(old_uri).path == "/ACME:bob"
    assert (
        parse_qs(urlsplit(old_uri).query)["secret"] != parse_qs(urlsplit(new_uri).query)["secret"]
    )
    seed = config.totp_secret_path(next(u for u in config.users if u.name == "bob"))
    assert seed.read_text().strip() == parse_qs(urlsplit(new_uri).query)["secret"][0]
    guard = LoginGuard(config.login_db_path())
    assert guard.scratch_codes_left("bob") == 10
    for old in old_codes:
        assert not guard.use_scratch_code("bob", scratch_code_digest("bob", old), 1.0)
    assert guard.use_scratch_code("bob", scratch_code_digest("bob", new_codes[-1]), 1.0)
    assert guard.last_step("bob") == 12345
    guard.close()


def test_enroll_refuses_an_unknown_user_and_a_bad_issuer(config_path: Path) -> None:
    result = bastion("user", "enroll", "zed", "--config", str(config_path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"bastion: no user named 'zed' in {config_path}\n"
        "  → add it first: bastion user add zed --key FILE.pub (bastion user list shows the "
        "users)\n"
    )
    result = bastion("user", "enroll", "bob", "--issuer", "", "--config", str(config_path))
    assert result.returncode == 1
    assert result.stderr.startswith(
        "bastion: issuer '' is not usable: expected 1 to 64 printable characters"
    )
    assert not (config_path.parent / "state" / "totp" / "bob").exists()


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A directory the unprivileged service user can reach (pytest's tmp dirs are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="bastion-enrol-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as the service user needs root")
def test_enroll_as_root_leaves_files_the_service_user_owns(shared_root: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    data = base_config(shared_root)
    data["service_user"] = "nobody"
    del data["users"][1]["totp_secret_file"]
    state = shared_root / "state"
    state.mkdir(mode=0o700)
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    path = shared_root / "bastion.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = bastion("user", "enroll", "bob", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert bastion("user", "unlock", "bob", "--config", str(path)).returncode == 0
    seed = state / "totp" / "bob"
    for owned in (seed, seed.parent, state / "logins.db", state / "audit.jsonl",
                  state / "audit.jsonl.head", state / "audit-hmac.key"):  # fmt: skip
        assert (owned.stat().st_uid, owned.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid), owned
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    config = load_config(path, check_files=False)
    bob = UserDirectory(config).get("bob")
    assert bob is not None
    secret = parse_qs(urlsplit(enrolment_output(result.stdout)[0]).query)["secret"][0]
    assert UserDirectory(config).totp_secret(bob) == base64.b32decode(secret)
    assert [e["event"] for e in audit_lines(config)] == ["user.enrolled", "user.unlocked"]


def test_scratch_codes_are_not_in_the_database_in_clear(tmp_path: Path) -> None:
    guard = LoginGuard(tmp_path / "logins.db")
    codes = new_scratch_codes()
    guard.replace_scratch_codes("alice", [scratch_code_digest("alice", c) for c in codes])
    guard.close()
    with sqlite3.connect(tmp_path / "logins.db") as db:
        stored = {row[0] for row in db.execute("SELECT digest FROM scratch_codes")}
    assert stored == {hashlib.sha256(f"alice\0{c}".encode()).hexdigest() for c in codes}
