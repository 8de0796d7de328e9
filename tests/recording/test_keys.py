"""Keys: keygen's files and modes, the auditors' key checks, the bastion's signing key."""

from __future__ import annotations

import io
import os
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.cli.main import main
from bastion.config import load_config
from bastion.errors import BastionError, ConfigError
from bastion.recording.errors import RecordingUnavailable
from bastion.recording.key_files import (
    generate_auditor_keys,
    load_auditor_private_key,
    load_or_create_signing_key,
    needs_passphrase,
    read_signing_public_key,
    signing_key_path,
    signing_public_key_path,
)
from bastion.recording.keys import (
    fingerprint,
    parse_auditor_public_key,
    private_key_pem,
    public_key_line,
    raw_public,
)

WriteConfig = Callable[..., Path]  # the write_config fixture of tests/conftest.py


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_the_config_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.umask(0o022)
    assert main(["recordings", "keygen", str(tmp_path / "audit-2026")]) == 0
    private, public = tmp_path / "audit-2026.key", tmp_path / "audit-2026.pub"
    assert mode(private) == 0o600
    assert mode(public) == 0o644
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    key = load_auditor_private_key(private)
    line = public_key_line(key.public_key())
    assert line in public.read_text()
    out = capsys.readouterr().out
    assert f'recording:\n  auditor_public_key: "{line}"' in out
    assert fingerprint(raw_public(key.public_key())) in out
    assert raw_public(parse_auditor_public_key(line)) == raw_public(key.public_key())


def test_keygen_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "k.pub").write_text("old")
    assert main(["recordings", "keygen", str(tmp_path / "k")]) == 1
    err = capsys.readouterr().err
    assert "k.pub already exists; keygen never overwrites a key" in err
    assert not (tmp_path / "k.key").exists()
    assert (tmp_path / "k.pub").read_text() == "old"


def test_keygen_with_a_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate_auditor_keys(tmp_path / "k.key", tmp_path / "k.pub", passphrase=b"correct horse b")
    assert needs_passphrase(tmp_path / "k.key")
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "k.key").read_bytes()
    with pytest.raises(BastionError, match="protected by a passphrase"):
        load_auditor_private_key(tmp_path / "k.key")
    with pytest.raises(BastionError, match="wrong passphrase"):
        load_auditor_private_key(tmp_path / "k.key", b"wrong")
    load_auditor_private_key(tmp_path / "k.key", b"correct horse b")
    # Without a terminal to ask on, keygen --passphrase says so instead of hanging.
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["recordings", "keygen", str(tmp_path / "other"), "--passphrase"]) == 1


@pytest.mark.parametrize(
    ("prepare", "says"),
    [
        (lambda p: p.chmod(0o644), "has mode 0644; expected 0600 (run: chmod 600"),
        (lambda p: p.chmod(0o640), "has mode 0640"),
        (lambda p: p.write_bytes(private_key_pem(Ed25519PrivateKey.generate())), "another kind"),
        (lambda p: p.write_bytes(b"not a key"), "not a PEM private key"),
    ],
)
def test_the_auditors_key_must_be_private_and_the_right_kind(
    tmp_path: Path, prepare: Any, says: str
) -> None:
    generate_auditor_keys(tmp_path / "k.key", tmp_path / "k.pub")
    prepare(tmp_path / "k.key")
    with pytest.raises(BastionError, match=re.escape(says)):
        load_auditor_private_key(tmp_path / "k.key")


def test_a_symlinked_key_is_refused(tmp_path: Path) -> None:
    generate_auditor_keys(tmp_path / "k.key", tmp_path / "k.pub")
    (tmp_path / "link.key").symlink_to(tmp_path / "k.key")
    with pytest.raises(BastionError, match="cannot be opened"):
        load_auditor_private_key(tmp_path / "link.key")


def test_the_signing_key_is_made_on_first_use_private_with_its_public_half(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    key = load_or_create_signing_key(state)
    assert mode(signing_key_path(state)) == 0o600
    assert mode(state) == 0o700
    assert signing_public_key_path(state).read_text() == public_key_line(key.public_key()) + "\n"
    again = load_or_create_signing_key(state)
    assert raw_public(again.public_key()) == raw_public(key.public_key())
    assert read_signing_public_key(state) == raw_public(key.public_key())
    assert read_signing_public_key(tmp_path / "elsewhere") is None


def test_workers_racing_to_make_the_signing_key_all_get_the_same_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    keys: list[bytes] = []
    start = threading.Barrier(8)

    def make() -> None:
        start.wait()
        keys.append(raw_public(load_or_create_signing_key(state).public_key()))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1
    assert sorted(p.name for p in state.iterdir()) == [
        "recording-signing.key",
        "recording-signing.pub",
    ]


@pytest.mark.parametrize(
    ("prepare", "says"),
    [
        (lambda p: p.chmod(0o644), "has mode 0644; expected 0600"),
        (lambda p: p.write_bytes(b"short"), "is not a 32-byte Ed25519 key"),
    ],
)
def test_an_unsafe_or_damaged_signing_key_stops_recording(
    tmp_path: Path, prepare: Any, says: str
) -> None:
    load_or_create_signing_key(tmp_path)
    prepare(signing_key_path(tmp_path))
    with pytest.raises(RecordingUnavailable, match=re.escape(says)):
        load_or_create_signing_key(tmp_path)


@pytest.mark.parametrize(
    ("recording", "says"),
    [
        ({"auditor_public_key": "ed25519:AAAA"}, "expected a x25519 public key"),
        ({"auditor_public_key": "x25519:!!!"}, "not valid base64"),
        ({"auditor_public_key": "x25519:AAAA"}, "a x25519 public key is 32 bytes, this one is 3"),
        ({"flush_interval": "1s"}, "auditor_public_key"),
        (
            {"auditor_public_key": "x25519:" + "A" * 43 + "=", "flush_interval": "5m"},
            "expected a duration from 1s to 60s",
        ),
        ({"auditor_public_key": "x25519:" + "A" * 43 + "=", "fsync": True}, "fsync"),
    ],
)
def test_the_recording_section_is_validated(
    write_config: WriteConfig, recording: dict[str, Any], says: str
) -> None:
    path = write_config(lambda data: data.update(recording=recording))
    with pytest.raises(ConfigError) as caught:
        load_config(path, check_files=False)
    assert "recording." in str(caught.value)
    assert says in str(caught.value)
