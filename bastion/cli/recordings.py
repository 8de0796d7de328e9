"""``bastion play`` and ``bastion recordings keygen|list|export|prune``.

* ``keygen NAME`` runs on an auditor's machine: it writes the auditors' key pair and prints
  the line for the bastion's config. Nothing else here needs a key.
* ``list`` shows the recordings (ids, sessions, sizes, whether each is complete and its
  signatures hold), from their headers: no content is read.
* ``export`` and ``play`` verify, decrypt and write or play one recording. The auditors'
  private key is read as the invoking user, before anything else, so it can stay in the
  auditor's own file; the recording and the audit log are opened as the service user.
* ``prune --older-than 90d`` removes old recordings.

Every access (export, play, prune) is written to the audit log *before* it happens, and a
log that cannot be written refuses it; a recording that fails verification is an
alert-level ``recording.rejected`` event.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bastion.audit.log import AuditLog
from bastion.cli.user import as_service_user, invoking_actor, open_audit, service_identity
from bastion.config import load_config
from bastion.durations import parse_duration
from bastion.errors import BastionError
from bastion.keys.signers import check_retired_signer, retired_recording_signers
from bastion.recording.asciicast import events, parse_header
from bastion.recording.errors import RecordingInvalid
from bastion.recording.key_files import (
    generate_auditor_keys,
    load_auditor_private_key,
    needs_passphrase,
    read_signer_public_key,
    read_signing_public_key,
)
from bastion.recording.keys import fingerprint, raw_public
from bastion.recording.playback import play as play_events
from bastion.recording.playback import split_lines, terminal_keys
from bastion.recording.sealed import SealedReader
from bastion.recording.store import list_recordings, plan_prune, resolve
from bastion.terminal_text import printable

__all__ = ["export", "keygen", "list_command", "play", "prune"]


# ------------------------------------------------------------------------------ keygen
def keygen(name: Path, *, passphrase: bool = False, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    private, public = name.with_name(name.name + ".key"), name.with_name(name.name + ".pub")
    secret: bytes | None = None
    if passphrase:
        secret = _new_passphrase()
    line = generate_auditor_keys(private, public, passphrase=secret)
    key_id = fingerprint(raw_public(load_auditor_private_key(private, secret).public_key()))
    print(f"wrote {private}: the auditors' private key ({key_id}), mode 0600", file=out)
    print("  keep it off the bastion; it is what 'bastion play --key' reads", file=out)
    print(f"wrote {public}: the public key", file=out)
    print("put this in the bastion's config:\n", file=out)
    print(f'recording:\n  auditor_public_key: "{line}"', file=out)
    return 0


def _new_passphrase() -> bytes:
    if not sys.stdin.isatty():
        raise BastionError(
            "--passphrase needs a terminal to ask for the passphrase",
            hint="run keygen in a terminal",
        )
    first = getpass.getpass("Passphrase for the new key: ")
    if len(first) < 12:
        raise BastionError("the passphrase is shorter than 12 characters")
    if getpass.getpass("Same passphrase again: ") != first:
        raise BastionError("the two passphrases differ")
    return first.encode()


def read_auditor_key(path: Path) -> X25519PrivateKey:
    secret: bytes | None = None
    if needs_passphrase(path):
        if not sys.stdin.isatty():
            raise BastionError(
                f"key file {path} is protected by a passphrase and there is no terminal to "
                "ask for it",
                hint="run the command in a terminal",
            )
        secret = getpass.getpass(f"Passphrase for {path}: ").encode()
    return load_auditor_private_key(path, secret)


# ------------------------------------------------------------------------------ list
def list_command(config_path: Path, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = load_config(config_path, check_files=False)
    with as_service_user(service_identity(config)):
        entries = list_recordings(config.paths.recordings_dir)
    rows = [("ID", "CREATED", "SESSION", "SIZE", "STATE")]
    for e in entries:
        created = e.age_from.strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            (
                e.recording_id or e.path.name,
                created,
                e.session_id or "-",
                _size(e.size),
                e.state if e.problem is None else f"invalid: {e.problem}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    if not entries:
        print(f"(no recordings in {config.paths.recordings_dir})", file=out)
    return 0


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


# ------------------------------------------------------------------------------ access
@dataclass
class _Access:
    reader: SealedReader
    key: X25519PrivateKey
    path: Path
    pinned: bool
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _opened(
    config_path: Path, ref: str, key_file: Path, signer: Path | None, event: str
) -> Iterator[_Access]:
    """The recording, verified up to its header, with the access recorded in the audit log."""
    config = load_config(config_path, check_files=False)
    # As the invoking user: the key is theirs, and the service user need not read it.
    key = read_auditor_key(key_file)
    pinned = read_signer_public_key(signer) if signer is not None else None
    service = service_identity(config)
    actor, extra = invoking_actor()
    with as_service_user(service):
        path = resolve(config.paths.recordings_dir, ref)
        try:
            stream: BinaryIO = path.open("rb")
        except OSError as exc:
            raise BastionError(f"cannot open the recording {path}: {exc.strerror}") from None
        try:
            audit = open_audit(config)
            retired_signers = retired_recording_signers(config.paths.state_dir)
            if pinned is None:
                pinned = read_signing_public_key(config.paths.state_dir)
        except BaseException:
            stream.close()
            raise
    fields: dict[str, Any] = {"path": str(path), **extra}
    notes: list[str] = []
    try:
        reader = SealedReader(stream, str(path))
        header = reader.header
        fields |= {"recording": header.recording_id, "key_id": header.auditor_key_id}
        if pinned is not None:
            # On the bastion itself, a key retired by 'bastion keys rotate' still vouches
            # for the recordings made before it was retired.
            retired = retired_signers if signer is None else {}
            reader.check_signer({pinned, *retired})
            if header.signer_key in retired:
                notes.append(check_retired_signer(header, retired[header.signer_key], str(path)))
        audit.record_now(event, actor=actor, outcome="allowed", session=header.session_id, **fields)
        access = _Access(reader, key, path, pinned is not None, notes)
        if pinned is None:
            access.notes.append(
                f"signed by {header.signer_key_id}, not checked against a known bastion key "
                "(pass --signer FILE with the bastion's recording-signing.pub)"
            )
        yield access
    except RecordingInvalid as exc:
        _record(audit, "recording.rejected", actor, "alert", error=exc.message, **fields)
        raise
    finally:
        stream.close()
        audit.close()


def _record(audit: AuditLog, event: str, actor: str, outcome: str, **fields: Any) -> None:
    audit.record_now(event, actor=actor, outcome=outcome, **fields)


def _report(access: _Access, err: TextIO) -> None:
    verdict = access.reader.verdict
    if verdict is not None:
        print(f"{access.path}: verified, {verdict.summary}", file=err)
    for note in access.notes:
        print(f"{access.path}: {note}", file=err)


# ------------------------------------------------------------------------------ export
def export(
    config_path: Path,
    ref: str,
    key_file: Path,
    output: Path,
    *,
    signer: Path | None = None,
    err: TextIO | None = None,
) -> int:
    err = err or sys.stderr
    if output.exists() or output.is_symlink():
        raise BastionError(f"{output} already exists", hint="give a new file name with -o")
    with _opened(config_path, ref, key_file, signer, "recording.exported") as access:
        partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(partial, flags, 0o600)
        except OSError as exc:
            raise BastionError(f"cannot create {output}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                cut = _write_lines(access.reader.plaintext(access.key), f)
                os.fsync(f.fileno())
            # Plain text of a session: as private as the key that opened it (0600), and never
            # over an existing file.
            os.link(partial, output)
        except OSError as exc:
            raise BastionError(f"cannot write {output}: {exc.strerror}") from None
        finally:
            partial.unlink(missing_ok=True)
        _report(access, err)
        if cut:
            print(f"{output}: the last {cut} bytes (a line cut short) were left out", file=err)
    print(f"wrote {output}", file=err)
    return 0


def _write_lines(segments: Iterator[bytes], out: BinaryIO) -> int:
    """Write whole lines only; returns the size of a trailing partial line left out (an
    incomplete recording can end inside one)."""
    rest = b""
    for segment in segments:
        data = rest + segment
        end = data.rfind(b"\n") + 1
        out.write(data[:end])
        rest = data[end:]
    return len(rest)


# ------------------------------------------------------------------------------ play
def play(
    config_path: Path,
    ref: str,
    key_file: Path,
    *,
    speed: float = 1.0,
    idle_limit: float | None = None,
    signer: Path | None = None,
    out: BinaryIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out or sys.stdout.buffer
    err = err or sys.stderr
    if speed <= 0:
        raise BastionError("--speed must be more than 0")
    if idle_limit is not None and idle_limit < 0:
        raise BastionError("--idle-limit cannot be negative")
    with _opened(config_path, ref, key_file, signer, "recording.played") as access:
        lines = split_lines(access.reader.plaintext(access.key))
        try:
            header = parse_header(next(lines, b""))
        except ValueError as exc:
            raise RecordingInvalid(f"{access.path} does not hold a recording: {exc}") from None
        # The title names pods and users: cluster text, made printable.
        print(
            f"{printable(header.title)} ({header.width}x{header.height}, started "
            f"{datetime.fromtimestamp(header.timestamp, UTC):%Y-%m-%d %H:%M:%S} UTC); "
            "space pauses, q stops",
            file=err,
        )
        try:
            with terminal_keys() as keys:
                finished = play_events(
                    events(lines), out, speed=speed, idle_limit=idle_limit, keys=keys
                )
        except ValueError as exc:
            raise RecordingInvalid(f"{access.path}: {exc}") from None
        finally:
            out.write(b"\x1b[0m\x1b[?25h\r\n")  # the recording may end mid-colour or cursorless
            out.flush()
        if finished:
            _report(access, err)
        else:
            print("stopped", file=err)
    return 0


# ------------------------------------------------------------------------------ prune
def prune(
    config_path: Path, older_than: str, *, dry_run: bool = False, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise BastionError(f"--older-than: {exc}", hint="for example --older-than 90d") from None
    config = load_config(config_path, check_files=False)
    service = service_identity(config)
    actor, extra = invoking_actor()
    failed: list[str] = []
    with as_service_user(service):
        plan = plan_prune(
            config.paths.recordings_dir,
            older_than=age,
            now=datetime.now(UTC),
            live_for=config.limits.session_hard_limit,
        )
        for entry in plan.kept_live:
            print(f"kept {entry.path}: incomplete and written to recently", file=out)
        for entry in plan.kept_invalid:
            print(f"kept {entry.path}: not a valid recording ({entry.problem})", file=out)
        if dry_run or not plan.remove:
            verb = "would remove" if dry_run else "removed"
            for entry in plan.remove:
                print(f"{verb} {entry.path}", file=out)
            print(f"{verb} {len(plan.remove)} recordings older than {older_than}", file=out)
            return 0
        audit = open_audit(config)
        try:
            audit.record_now(
                "recording.pruned",
                actor=actor,
                outcome="requested",
                older_than=older_than,
                recordings=[e.recording_id or e.path.name for e in plan.remove],
                **extra,
            )
        finally:
            audit.close()
        for entry in plan.remove:
            try:
                entry.path.unlink()
            except OSError as exc:
                failed.append(f"{entry.path}: {exc.strerror}")
            else:
                print(f"removed {entry.path}", file=out)
    print(f"removed {len(plan.remove) - len(failed)} recordings older than {older_than}", file=out)
    if failed:
        raise BastionError(
            "could not remove " + "; ".join(failed),
            hint="the recordings directory must be writable by the service user",
        )
    return 0
