"""Rotating the recordings' keys: a new auditors' key receives new recordings without any
old one being re-encrypted (each stays readable with its own private key), and a new
signing key leaves older recordings verifiable on the bastion."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion.cli import recordings
from bastion.cli.main import main
from bastion.errors import BastionError
from bastion.keys.recipients import current_recipient, recipient_fingerprint
from bastion.recording.errors import RecordingInvalid, WrongRecordingKey
from bastion.recording.key_files import generate_auditor_keys
from bastion.recording.recorder import start_recording
from bastion.recording.sealed import SealedReader

from .conftest import Setup

OUTPUT = b"$ echo rotated\r\nrotated\r\n"


def record(setup: Setup, session: str, now: datetime | None = None) -> str:
    recorder = start_recording(
        setup.config(), session_id=session, title="t", width=80, height=24, now=now
    )
    recorder.append(OUTPUT)
    recorder.close()
    return recorder.recording_id


def keys(setup: Setup, *args: str) -> int:
    return main(["keys", *args, "--config", str(setup.config_path)])


def play(setup: Setup, rid: str, key: Path) -> tuple[bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    assert recordings.play(setup.config_path, rid, key, speed=100, out=out, err=err) == 0
    return out.getvalue(), err.getvalue()


def audit_events(setup: Setup, name: str) -> list[dict[str, Any]]:
    lines = setup.audit_log.read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def auditor_key_of(setup: Setup, rid: str) -> str:
    with (setup.recordings / f"{rid}.rec").open("rb") as f:
        return SealedReader(f, rid).header.auditor_key_id


def test_a_new_recipient_gets_new_recordings_and_old_ones_keep_their_key(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_key = setup.key_file
    before = record(setup, "0000000000000001")
    new_line = generate_auditor_keys(tmp_path / "audit-2027.key", tmp_path / "audit-2027.pub")
    assert keys(setup, "rotate", "--kind", "recording-recipient", "--recipient",
                str(tmp_path / "audit-2027.pub")) == 0  # fmt: skip
    out = capsys.readouterr().out
    new_id, old_id = recipient_fingerprint(new_line), recipient_fingerprint(setup.public_line)
    assert f"recordings started from now on are encrypted to {new_id}" in out
    assert f'auditor_public_key: "{new_line}"' in out
    after = record(setup, "0000000000000002")

    # Each recording names the key it was sealed to, and only that key opens it.
    assert (auditor_key_of(setup, before), auditor_key_of(setup, after)) == (old_id, new_id)
    assert play(setup, before, old_key)[0].startswith(OUTPUT)
    assert play(setup, after, tmp_path / "audit-2027.key")[0].startswith(OUTPUT)
    with pytest.raises(WrongRecordingKey, match=re.escape(f"is encrypted to auditor key {new_id}")):
        play(setup, after, old_key)
    with pytest.raises(WrongRecordingKey, match=re.escape(f"is encrypted to auditor key {old_id}")):
        play(setup, before, tmp_path / "audit-2027.key")

    [event] = audit_events(setup, "keys.rotated")
    assert (event["kind"], event["key"], event["retired"]) == (
        "recording-recipient",
        new_id,
        old_id,
    )
    # The config still names the old key: it is followed to the new one, never used again.
    state = setup.root / "state"
    assert current_recipient(state, setup.public_line) == new_line
    with pytest.raises(BastionError, match="a retired key is not used again"):
        recordings_rotate_back(setup)
    assert main(["check-config", str(setup.config_path)]) == 0
    assert f"recording.auditor_public_key names {old_id}, which was retired" in (
        capsys.readouterr().out
    )


def recordings_rotate_back(setup: Setup) -> None:
    from bastion.cli import keys as keys_cli  # noqa: PLC0415

    keys_cli.rotate(
        setup.config_path,
        kind=keys_cli.KeyKind.RECORDING_RECIPIENT,
        recipient=setup.public_line,
    )


def test_a_rotated_signing_key_still_vouches_for_older_recordings_only(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = setup.root / "state"
    before = record(setup, "0000000000000001")
    old_seed = (state / "recording-signing.key").read_bytes()
    old_pub = tmp_path / "old-signing.pub"
    old_pub.write_bytes((state / "recording-signing.pub").read_bytes())
    assert keys(setup, "rotate", "--kind", "recording-signing") == 0
    assert (state / "recording-signing.key").read_bytes() != old_seed
    after = record(setup, "0000000000000002")

    _, err = play(setup, before, setup.key_file)
    assert "this bastion's recording signing key until" in err
    _, err = play(setup, after, setup.key_file)
    assert "recording signing key until" not in err
    # The auditors' pinned copy of the old key checks the old recording as before.
    with pytest.raises(RecordingInvalid, match="not the bastion signing key given"):
        recordings.export(
            setup.config_path, after, setup.key_file, tmp_path / "a.cast", signer=old_pub
        )
    assert (
        recordings.export(
            setup.config_path, before, setup.key_file, tmp_path / "b.cast", signer=old_pub
        )
        == 0
    )

    # A recording signed with the retired key but made after its retirement is refused.
    new_seed = (state / "recording-signing.key").read_bytes()
    (state / "recording-signing.key").write_bytes(old_seed)
    forged = record(setup, "0000000000000003", now=datetime.now(UTC) + timedelta(seconds=5))
    (state / "recording-signing.key").write_bytes(new_seed)
    with pytest.raises(RecordingInvalid, match="but says it was made after that"):
        play(setup, forged, setup.key_file)
    capsys.readouterr()
