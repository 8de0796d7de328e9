"""``bastion play`` and ``bastion recordings``: verified, decrypted, audited; Debian's
asciinema plays what export writes."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion.audit.chain import verify
from bastion.audit.log import head_path, read_head
from bastion.cli import recordings
from bastion.cli.main import main
from bastion.errors import BastionError
from bastion.recording.asciicast import Event
from bastion.recording.errors import RecordingInvalid, WrongRecordingKey
from bastion.recording.key_files import generate_auditor_keys, load_or_create_signing_key
from bastion.recording.keys import public_key_line
from bastion.recording.playback import play
from bastion.recording.recorder import start_recording

from .conftest import Setup

SESSION = "0123456789abcdef"
OUTPUT = b"$ env | grep DB\r\nDB_PASSWORD=hunter2\r\n\x1b[32mok\x1b[0m caf\xc3\xa9\r\n$ exit\r\n"


def record(setup: Setup, *, now: datetime | None = None, close: bool = True) -> str:
    recorder = start_recording(
        setup.config(),
        session_id=SESSION,
        title="bastion session x: alice on prod-eu/payments/api-1 (app)",
        width=100,
        height=30,
        now=now,
    )
    recorder.append(OUTPUT[:40])
    recorder.resize(120, 40)
    recorder.append(OUTPUT[40:])
    if close:
        recorder.close()
    else:
        recorder.flush()
    return recorder.recording_id


def audit_events(setup: Setup) -> list[dict[str, Any]]:
    with setup.audit_log.open("rb") as log:
        assert verify(log, read_head(head_path(setup.audit_log))).ok
    return [json.loads(line) for line in setup.audit_log.read_text().splitlines()]


def export(setup: Setup, ref: str, out: Path, *extra: str) -> int:
    return main(
        [
            "recordings", "export", ref, "--key", str(setup.key_file), "-o", str(out),
            "--config", str(setup.config_path), *extra,
        ]
    )  # fmt: skip


def test_export_writes_plain_asciicast_only_its_owner_reads(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rid = record(setup)
    out = tmp_path / "session.cast"
    assert export(setup, rid, out) == 0
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["width"] == 100
    text = "".join(json.loads(line)[2] for line in lines[1:] if json.loads(line)[1] == "o")
    assert text == OUTPUT.decode().replace("hunter2", "[REDACTED:assignment]")
    err = capsys.readouterr().err
    assert "verified, complete: " in err
    assert f"wrote {out}" in err
    [event] = audit_events(setup)
    assert event["event"] == "recording.exported"
    assert event["outcome"] == "allowed"
    assert event["recording"] == rid
    assert event["session"] == SESSION


@pytest.mark.slow
def test_debians_asciinema_plays_an_export(setup: Setup, tmp_path: Path) -> None:
    if shutil.which("asciinema") is None:
        pytest.skip("asciinema is not installed (bash .ci/bootstrap installs it)")
    version = subprocess.run(
        ["asciinema", "--version"], capture_output=True, text=True, check=True, timeout=30
    )
    assert version.stdout.startswith("asciinema 2.")
    out = tmp_path / "session.cast"
    assert export(setup, record(setup), out) == 0
    played = subprocess.run(
        ["asciinema", "play", "-i", "0.01", str(out)],
        capture_output=True,
        timeout=60,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    assert b"DB_PASSWORD=[REDACTED:assignment]" in played.stdout
    assert "café".encode() in played.stdout
    assert b"hunter2" not in played.stdout


def test_export_refuses_to_overwrite_and_accepts_a_path(setup: Setup, tmp_path: Path) -> None:
    rid = record(setup)
    out = tmp_path / "x.cast"
    out.write_text("keep me")
    with pytest.raises(BastionError, match="already exists"):
        recordings.export(setup.config_path, rid, setup.key_file, out)
    assert out.read_text() == "keep me"
    path = setup.recordings / f"{rid}.rec"
    assert export(setup, str(path), tmp_path / "y.cast") == 0


def test_a_tampered_recording_is_rejected_and_the_audit_log_says_so(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rid = record(setup)
    path = setup.recordings / f"{rid}.rec"
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x20
    path.write_bytes(bytes(data))
    assert export(setup, rid, tmp_path / "t.cast") == 1
    assert "failed verification at byte" in capsys.readouterr().err
    assert not (tmp_path / "t.cast").exists()
    assert not list(tmp_path.glob(".t.cast.partial*"))
    allowed, rejected = audit_events(setup)
    assert allowed["event"] == "recording.exported"
    assert rejected["event"] == "recording.rejected"
    assert rejected["outcome"] == "alert"
    assert "does not match the bastion's signature" in rejected["error"]


def test_the_wrong_key_is_a_clear_error(setup: Setup, tmp_path: Path) -> None:
    rid = record(setup)
    generate_auditor_keys(tmp_path / "other.key", tmp_path / "other.pub")
    with pytest.raises(WrongRecordingKey, match="is encrypted to auditor key SHA256:"):
        recordings.export(setup.config_path, rid, tmp_path / "other.key", tmp_path / "o.cast")
    assert not (tmp_path / "o.cast").exists()


def test_a_recording_signed_by_another_bastion_is_refused_when_pinned(
    setup: Setup, tmp_path: Path
) -> None:
    rid = record(setup)
    other = tmp_path / "other"
    load_or_create_signing_key(other)
    with pytest.raises(RecordingInvalid, match="not the bastion signing key given"):
        recordings.export(
            setup.config_path,
            rid,
            setup.key_file,
            tmp_path / "o.cast",
            signer=other / "recording-signing.pub",
        )
    # By default the bastion's own key is the one pinned.
    (setup.root / "state" / "recording-signing.key").unlink()
    load_or_create_signing_key(setup.root / "state")
    with pytest.raises(RecordingInvalid, match="not the bastion signing key given"):
        recordings.export(setup.config_path, rid, setup.key_file, tmp_path / "p.cast")


def test_an_incomplete_recording_exports_what_is_verified(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rid = record(setup, close=False)
    out = tmp_path / "i.cast"
    assert export(setup, rid, out) == 0
    assert "incomplete: the bastion stopped before closing it" in capsys.readouterr().err
    assert b"[REDACTED:assignment]" in out.read_bytes()


def test_play_writes_the_terminal_output_in_time(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    rid = record(setup)
    out = io.BytesIO()
    err = io.StringIO()
    code = recordings.play(
        setup.config_path, rid, setup.key_file, speed=50, idle_limit=0.1, out=out, err=err
    )
    assert code == 0
    assert out.getvalue() == (
        OUTPUT.replace(b"hunter2", b"[REDACTED:assignment]") + b"\x1b[0m\x1b[?25h\r\n"
    )
    assert err.getvalue().startswith(
        "bastion session x: alice on prod-eu/payments/api-1 (app) (100x30, started "
    )
    assert "verified, complete" in err.getvalue()
    assert [e["event"] for e in audit_events(setup)] == ["recording.played"]


def test_play_neutralises_the_title_it_prints(setup: Setup) -> None:
    recorder = start_recording(
        setup.config(), session_id=SESSION, title="pod \x1b]0;owned\x07", width=80, height=24
    )
    recorder.close()
    err = io.StringIO()
    recordings.play(
        setup.config_path, recorder.recording_id, setup.key_file, out=io.BytesIO(), err=err
    )
    assert "\x1b" not in err.getvalue()
    assert err.getvalue().startswith("pod ?]0;owned? (80x24")


class Keys:
    """Key presses at given moments of a fake clock."""

    def __init__(self, presses: list[tuple[float, bytes]]) -> None:
        self.now = 0.0
        self.presses = presses

    def clock(self) -> float:
        return self.now

    def wait(self, timeout: float | None) -> bytes:
        if self.presses and (timeout is None or self.presses[0][0] <= self.now + timeout):
            at, key = self.presses.pop(0)
            self.now = max(self.now, at)
            return key
        assert timeout is not None, "waiting for a key that never comes"
        self.now += timeout
        return b""


EVENTS = [
    Event(1.0, "o", "a"),
    Event(1.5, "r", "90x20"),
    Event(11.0, "o", "b"),
    Event(12.0, "o", "c"),
]


def test_playback_speed_idle_limit_and_pause() -> None:
    keys = Keys([(1.2, b" "), (5.0, b" ")])
    out = io.BytesIO()
    times: list[float] = []

    class Out(io.BytesIO):
        def write(self, data: Any) -> int:
            times.append(keys.now)
            return super().write(data)

    out = Out()
    assert play(EVENTS, out, speed=2.0, idle_limit=3.0, keys=keys, clock=keys.clock)
    assert out.getvalue() == b"abc"
    # a at 0.5; paused from 1.2 to 5.0; b 3 s (idle limit) / 2 after a: 0.5 + 1.5 + 3.8;
    # c 1 s / 2 later.
    assert times == pytest.approx([0.5, 5.8, 6.3])


def test_playback_stops_on_q() -> None:
    keys = Keys([(0.3, b"q")])
    out = io.BytesIO()
    assert not play(EVENTS, out, keys=keys, clock=keys.clock)
    assert out.getvalue() == b""


def test_list_shows_every_recording_and_its_state(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    done = record(setup)
    open_one = record(setup, close=False)
    (setup.recordings / "junk.rec").write_bytes(b"not a recording")
    assert main(["recordings", "list", "--config", str(setup.config_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "CREATED", "SESSION", "SIZE", "STATE"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert rows[done].endswith("complete")
    assert rows[open_one].endswith("incomplete")
    assert "invalid" in rows["junk.rec"]
    assert not setup.audit_log.exists()  # listing reads headers only: not an access


def test_prune_removes_old_recordings_audited_and_keeps_live_and_invalid_ones(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    old = record(setup, now=now - timedelta(days=100))
    recent = record(setup, now=now - timedelta(days=10))
    old_open = record(setup, now=now - timedelta(days=95), close=False)  # written just now
    dead = record(setup, now=now - timedelta(days=120), close=False)
    stamp = (now - timedelta(days=120)).timestamp()
    os.utime(setup.recordings / f"{dead}.rec", (stamp, stamp))
    junk = setup.recordings / "junk.rec"
    junk.write_bytes(b"x")
    os.utime(junk, (stamp, stamp))
    config = str(setup.config_path)

    prune = ["recordings", "prune", "--older-than", "90d", "--config", config]
    assert main([*prune, "--dry-run"]) == 0
    assert "would remove 2 recordings older than 90d" in capsys.readouterr().out
    assert (setup.recordings / f"{old}.rec").exists()
    assert not setup.audit_log.exists()

    assert main(prune) == 0
    out = capsys.readouterr().out
    assert "removed 2 recordings older than 90d" in out
    assert f"kept {setup.recordings / f'{old_open}.rec'}: incomplete and written to recently" in out
    assert "junk.rec: not a valid recording" in out
    left = sorted(p.name for p in setup.recordings.iterdir())
    assert left == sorted([f"{recent}.rec", f"{old_open}.rec", "junk.rec"])
    [event] = audit_events(setup)
    assert event["event"] == "recording.pruned"
    assert sorted(event["recordings"]) == sorted([old, dead])
    assert event["older_than"] == "90d"


def test_prune_needs_an_age_it_understands(setup: Setup) -> None:
    with pytest.raises(BastionError, match="--older-than"):
        recordings.prune(setup.config_path, "ninety days")


def test_an_audit_log_that_cannot_be_written_refuses_the_access(
    setup: Setup, tmp_path: Path
) -> None:
    rid = record(setup)
    setup.audit_log.parent.mkdir(parents=True, exist_ok=True)
    setup.audit_log.mkdir()  # a directory where the log should be: it cannot be opened
    with pytest.raises(BastionError, match="audit log"):
        recordings.export(setup.config_path, rid, setup.key_file, tmp_path / "a.cast")
    assert not (tmp_path / "a.cast").exists()


def test_unknown_ids_and_paths_are_sentences(setup: Setup) -> None:
    with pytest.raises(BastionError, match="there is no recording 0000000000000000"):
        recordings.export(setup.config_path, "0" * 16, setup.key_file, Path("x.cast"))
    with pytest.raises(BastionError, match="neither a recording id"):
        recordings.export(setup.config_path, "../etc/passwd.rec", setup.key_file, Path("x"))


def test_the_public_key_line_round_trips_through_the_config(setup: Setup) -> None:
    config = setup.config()
    assert config.recording is not None
    assert config.recording.auditor_public_key == setup.public_line
    assert setup.public_line.startswith("x25519:")
    key = load_or_create_signing_key(setup.root / "state")
    assert public_key_line(key.public_key()).startswith("ed25519:")
