"""Rotating the audit log's signing key: the rotation line, signed by the old key and naming
the new one; `bastion audit verify --pubkey OLD` following it; forged rotations; every writer
(in any process) switching keys at the rotation line; interrupted rotations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit.chain import render, seal
from bastion.audit.checkpoint import CheckpointPolicy, checkpoint_fields, rotation_fields
from bastion.audit.log import (
    AUDIT_SIGNING_KEY,
    AuditLog,
    Checkpointer,
    SigningKeyFiles,
    head_path,
    key_id,
)
from bastion.errors import AuditUnavailable
from bastion.recording.key_files import (
    install_staged_signing_key,
    load_or_create_signing_key,
    signing_key_path,
    signing_public_key_path,
    stage_signing_key,
    staged_signing_key_path,
)
from bastion.recording.keys import public_key_line

KEY = b"k" * 32
POLICY = CheckpointPolicy(5, 3600)


def pub(tmp_path: Path, key: Ed25519PrivateKey, name: str) -> Path:
    path = tmp_path / f"{name}.pub"
    path.write_text(public_key_line(key.public_key()) + "\n")
    return path


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def cli_verify(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "audit", "verify", str(path), *extra],
        capture_output=True,
        text=True,
        check=False,
    )


def writer(path: Path, key: Ed25519PrivateKey, state: Path | None = None) -> AuditLog:
    files = SigningKeyFiles(state) if state is not None else None
    log = AuditLog(path, hmac_key=KEY, fsync="event", checkpoints=Checkpointer(key, POLICY, files))
    log.open()
    return log


def append(path: Path, fields: dict[str, Any], *, event: str, actor: str = "bastion") -> None:
    """Append a line that continues the chain, and move the head to it: what someone with
    write access but without the signing key can do."""
    last = events_of(path)[-1]
    line = seal(
        seq=last["seq"] + 1,
        time=last["time"],
        event=event,
        session=None,
        actor=actor,
        outcome="signed",
        fields=fields,
        prev=last["hash"],
    )
    with path.open("ab") as f:
        f.write(render(line) + b"\n")
    head_path(path).write_bytes(json.dumps({"seq": line["seq"], "hash": line["hash"]}).encode())


def test_verify_with_the_first_key_follows_the_rotation(tmp_path: Path) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    path = tmp_path / "audit.jsonl"
    log = writer(path, old)
    try:
        for i in range(7):
            log.record_now("session.state", actor="alice", outcome="ok", n=i)
        line = log.rotate_signing_key_now(new, actor="root")
        for i in range(7):
            log.record_now("session.state", actor="alice", outcome="ok", n=i)
    finally:
        log.close()
    events = events_of(path)
    rotation = events[line["seq"] - 1]
    assert rotation == line
    assert (rotation["event"], rotation["actor"], rotation["outcome"]) == (
        "audit.key_rotation",
        "root",
        "signed",
    )
    assert (rotation["key_id"], rotation["new_key_id"]) == (key_id(old), key_id(new))
    assert rotation["new_key"] == public_key_line(new.public_key())
    assert rotation["compromised"] is False
    after = [e for e in events if e["event"] == "audit.checkpoint" and e["seq"] > line["seq"]]
    assert after
    assert {e["key_id"] for e in after} == {key_id(new)}
    result = cli_verify(path, "--pubkey", str(pub(tmp_path, old, "old")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(
        f"1 key rotation followed: line {line['seq']} to {key_id(new)}"
    )
    # The new key alone does not vouch for the lines before the rotation.
    alone = cli_verify(path, "--pubkey", str(pub(tmp_path, new, "new")))
    assert alone.returncode == 3
    assert alone.stderr.startswith(f"FORGED: {path}: line 2: checkpoint signed by key ")


def test_a_rotation_the_key_in_force_did_not_sign_is_a_forged_rotation(tmp_path: Path) -> None:
    real, attacker = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    path = tmp_path / "audit.jsonl"
    log = writer(path, real)
    try:
        for i in range(3):
            log.record_now("session.state", actor="alice", outcome="ok", n=i)
    finally:
        log.close()
    original = path.read_bytes()
    first = pub(tmp_path, real, "real")

    # 1. A handover signed by the attacker's own key.
    last = events_of(path)[-1]
    own = rotation_fields(
        attacker,
        Ed25519PrivateKey.generate(),
        POLICY,
        covers=last["seq"],
        hash=last["hash"],
        time=last["time"],
        actor="root",
        compromised=False,
    )
    append(path, own, event="audit.key_rotation", actor="root")
    result = cli_verify(path, "--pubkey", str(first))
    assert result.returncode == 7
    seq = last["seq"] + 1
    assert result.stderr == (
        f"FORGED ROTATION: {path}: line {seq}: key rotation record claims to be signed by key "
        f"{key_id(attacker)}, but the key in force is {key_id(real)}: only the key in force "
        "can hand over to a new one\n"
    )

    # 2. The same, claiming the real key's id: the signature gives it away.
    path.write_bytes(original)
    append(path, {**own, "key_id": key_id(real)}, event="audit.key_rotation", actor="root")
    result = cli_verify(path, "--pubkey", str(first))
    assert result.returncode == 7
    assert f"line {seq}: key rotation record's signature by the key in force" in result.stderr
    assert "a forged rotation" in result.stderr


def test_a_checkpoint_by_the_retired_key_after_the_rotation_is_forged(tmp_path: Path) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    path = tmp_path / "audit.jsonl"
    log = writer(path, old)
    try:
        log.record_now("session.state", actor="alice", outcome="ok")
        rotation = log.rotate_signing_key_now(new, actor="root", compromised=True)
        log.record_now("session.state", actor="alice", outcome="ok")
    finally:
        log.close()
    # Whoever stole the old key signs a checkpoint after the rotation with it.
    last = events_of(path)[-1]
    fields = checkpoint_fields(
        old, POLICY, covers=last["seq"], hash=last["hash"], time=last["time"]
    )
    append(path, fields, event="audit.checkpoint")
    result = cli_verify(path, "--pubkey", str(pub(tmp_path, old, "old")))
    assert result.returncode == 3
    assert (
        f"checkpoint signed by key {key_id(old)}, which was retired at line {rotation['seq']}"
        in result.stderr
    )


def test_every_writer_signs_with_the_new_key_after_a_rotation_by_another(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    old = load_or_create_signing_key(state, AUDIT_SIGNING_KEY)
    old_pub = tmp_path / "old.pub"
    old_pub.write_bytes(signing_public_key_path(state, AUDIT_SIGNING_KEY).read_bytes())
    path = tmp_path / "audit.jsonl"
    worker, tool = writer(path, old, state), writer(path, old, state)
    try:
        for i in range(6):
            worker.record_now("session.state", actor="alice", outcome="ok", n=i)
        assert tool.settle_signing_key_now() is None
        new = stage_signing_key(state, AUDIT_SIGNING_KEY)
        line = tool.rotate_signing_key_now(
            new,
            actor="root",
            install=lambda: install_staged_signing_key(state, AUDIT_SIGNING_KEY),
        )
        for i in range(6):
            worker.record_now("session.state", actor="alice", outcome="ok", n=i)
    finally:
        worker.close()
        tool.close()
    # The worker (which loaded the old key at its start) signed with the new one.
    after = [e for e in events_of(path) if e["event"] == "audit.checkpoint"]
    assert [e["key_id"] for e in after if e["seq"] > line["seq"]] == [key_id(new)]
    assert not staged_signing_key_path(state, AUDIT_SIGNING_KEY).exists()
    assert signing_public_key_path(state, AUDIT_SIGNING_KEY).read_text().strip() == (
        public_key_line(new.public_key())
    )
    result = cli_verify(path, "--pubkey", str(old_pub))
    assert result.returncode == 0, result.stderr


def test_a_rotation_whose_install_failed_is_completed_by_the_next_checkpoint(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    old = load_or_create_signing_key(state, AUDIT_SIGNING_KEY)
    path = tmp_path / "audit.jsonl"
    log = writer(path, old, state)

    def crash() -> None:
        raise OSError("the rotation process died here")

    try:
        log.record_now("session.state", actor="alice", outcome="ok")
        new = stage_signing_key(state, AUDIT_SIGNING_KEY)
        log.rotate_signing_key_now(new, actor="root", install=crash)
        assert staged_signing_key_path(state, AUDIT_SIGNING_KEY).exists()
        for i in range(6):
            log.record_now("session.state", actor="alice", outcome="ok", n=i)
    finally:
        log.close()
    assert not staged_signing_key_path(state, AUDIT_SIGNING_KEY).exists()
    installed = signing_key_path(state, AUDIT_SIGNING_KEY).read_bytes()
    assert installed == new.private_bytes_raw()
    assert cli_verify(path, "--pubkey", str(pub(tmp_path, old, "old"))).returncode == 0


def test_a_key_replaced_outside_a_rotation_is_not_used_to_sign(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = load_or_create_signing_key(state, AUDIT_SIGNING_KEY)
    path = tmp_path / "audit.jsonl"
    log = writer(path, old, state)
    try:
        log.record_now("session.state", actor="alice", outcome="ok")  # signed by the old key
        key_file = signing_key_path(state, AUDIT_SIGNING_KEY)
        key_file.write_bytes(Ed25519PrivateKey.generate().private_bytes_raw())
        for _ in range(4):  # lines 3-6: no checkpoint due yet (one every 5)
            log.record_now("session.state", actor="alice", outcome="ok")
        size = path.stat().st_size
        with pytest.raises(AuditUnavailable, match="replaced outside 'bastion keys rotate'"):
            log.record_now("session.state", actor="alice", outcome="ok")  # a checkpoint is due
        assert path.stat().st_size == size  # refused whole: nothing half-written
    finally:
        log.close()


def test_shipped_rotations_hand_over_to_the_keys_of_later_shipped_checkpoints(
    tmp_path: Path,
) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    path = tmp_path / "audit.jsonl"
    log = writer(path, old)
    try:
        for i in range(4):
            log.record_now("session.state", actor="alice", outcome="ok", n=i)
        rotation = log.rotate_signing_key_now(new, actor="root")
        for i in range(9):
            log.record_now("session.state", actor="alice", outcome="ok", n=i)
    finally:
        log.close()
    lines = path.read_bytes().splitlines(keepends=True)
    shipped = tmp_path / "received.log"
    shipped.write_bytes(
        b"".join(
            line
            for line in lines
            if b'"event":"audit.checkpoint"' in line or b'"event":"audit.key_rotation"' in line
        )
    )
    first = pub(tmp_path, old, "old")
    result = cli_verify(path, "--pubkey", str(first), "--checkpoints", str(shipped))
    assert result.returncode == 0, result.stderr
    # Cut back to before the rotation (head too): only the shipped lines show it.
    keep = lines[: rotation["seq"] - 1]
    path.write_bytes(b"".join(keep))
    last = json.loads(keep[-1])
    head_path(path).write_bytes(json.dumps({"seq": last["seq"], "hash": last["hash"]}).encode())
    assert cli_verify(path, "--pubkey", str(first)).returncode == 0
    cut = cli_verify(path, "--pubkey", str(first), "--checkpoints", str(shipped))
    assert cut.returncode == 4, cut.stderr
    assert cut.stderr.startswith(f"TRUNCATED: {path}: line {last['seq'] + 1}: missing")
