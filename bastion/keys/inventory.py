"""Every key of the bastion, its state and its age: ``bastion keys list`` and the key
warnings of ``check-config``.

The key files say which keys are in use (they are what the bastion actually loads); the
registry adds when each was made or first used and the keys that were retired. A key the
registry does not know yet is dated by its file; the auditors' key of the config, which has
no file, by the first worker that used it (unknown before that).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bastion.audit.log import AUDIT_SIGNING_KEY, key_id
from bastion.config import Config
from bastion.errors import BastionError
from bastion.keys.host import HostKeyFile, next_path, read_host_key
from bastion.keys.lockdown import read_lockdown
from bastion.keys.model import KeyKind, KeyRecord, KeyState, Registry, format_age
from bastion.keys.recipients import current_recipient, recipient_fingerprint
from bastion.keys.registry import KeyStore
from bastion.recording.key_files import (
    RECORDING_SIGNING_KEY,
    SigningKeyFile,
    read_signing_key,
    signing_key_path,
)

__all__ = ["KeyRow", "inventory", "key_warnings"]


@dataclass(frozen=True)
class KeyRow:
    kind: KeyKind
    algorithm: str
    fingerprint: str
    state: KeyState
    since: float | None  # made or first used; None: unknown
    retire_at: float | None = None
    retired_at: float | None = None
    compromised: bool = False
    note: str = ""

    def age(self, now: float) -> float | None:
        return None if self.since is None else now - self.since

    def to_json(self, now: float) -> dict[str, Any]:
        age = self.age(now)
        return {
            "kind": str(self.kind),
            "algorithm": self.algorithm,
            "fingerprint": self.fingerprint,
            "state": str(self.state),
            "created": _iso(self.since),
            "age_seconds": None if age is None else int(age),
            "retire_at": _iso(self.retire_at),
            "retired_at": _iso(self.retired_at),
            "compromised": self.compromised,
            "note": self.note,
        }


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _when(moment: float | None) -> str:
    return (_iso(moment) or "?").replace("T", " ")


def inventory(config: Config) -> list[KeyRow]:
    """Every key: in use first (active, next, retiring), then the retired ones, per kind.
    Raises BastionError when a key file or the registry cannot be read."""
    state_dir = config.paths.state_dir
    registry = KeyStore(state_dir).read()
    rows = _host_rows(config.listener.host_key, registry)
    rows += _signing_rows(KeyKind.CHECKPOINT, AUDIT_SIGNING_KEY, state_dir, registry)
    rows += _signing_rows(KeyKind.RECORDING_SIGNING, RECORDING_SIGNING_KEY, state_dir, registry)
    rows += _recipient_rows(config, registry)
    return rows


def _retired(registry: Registry, kind: KeyKind, in_use: set[str]) -> list[KeyRow]:
    rows = []
    for record in registry.of(kind):
        if record.fingerprint in in_use or record.state != KeyState.RETIRED:
            continue
        note = f"replaced by {record.replaced_by}" if record.replaced_by else ""
        if record.compromised:
            note = "retired as compromised" + (f"; {note}" if note else "")
        rows.append(
            KeyRow(
                kind,
                record.algorithm,
                record.fingerprint,
                KeyState.RETIRED,
                record.created,
                retired_at=record.retired_at,
                compromised=record.compromised,
                note=note,
            )
        )
    return rows


def _since(record: KeyRecord | None, fallback: float | None) -> float | None:
    return record.created if record is not None else fallback


def _host_rows(path: Path, registry: Registry) -> list[KeyRow]:
    active = read_host_key(path)
    pending = read_host_key(next_path(path))
    rows: list[KeyRow] = []
    if active is None:
        return [*_retired(registry, KeyKind.HOST, set())]
    known = registry.find(KeyKind.HOST, active.fingerprint)
    if pending is None:
        rows.append(_host_row(active, known, KeyState.ACTIVE, None, "used by every connection"))
    else:
        retire_at = known.retire_at if known is not None else None
        until = f"until {_when(retire_at)}" if retire_at else "until the rotation is finished"
        rows.append(_host_row(active, known, KeyState.RETIRING, retire_at, f"still used {until}"))
        rows.append(
            _host_row(
                pending,
                registry.find(KeyKind.HOST, pending.fingerprint),
                KeyState.NEXT,
                None,
                "offered alongside for clients to learn (UpdateHostKeys)",
            )
        )
    in_use = {active.fingerprint} | ({pending.fingerprint} if pending else set())
    return rows + _retired(registry, KeyKind.HOST, in_use)


def _host_row(
    key: HostKeyFile,
    known: KeyRecord | None,
    state: KeyState,
    retire_at: float | None,
    note: str,
) -> KeyRow:
    return KeyRow(
        KeyKind.HOST,
        key.algorithm,
        key.fingerprint,
        state,
        _since(known, key.modified),
        retire_at=retire_at,
        note=note,
    )


def _signing_rows(
    kind: KeyKind, key_file: SigningKeyFile, state_dir: Path, registry: Registry
) -> list[KeyRow]:
    path = signing_key_path(state_dir, key_file)
    if not path.exists():
        return _retired(registry, kind, set())
    key = read_signing_key(state_dir, key_file)
    fingerprint = key_id(key)
    known = registry.find(kind, fingerprint)
    what = "signs the audit log's checkpoints" if kind == KeyKind.CHECKPOINT else "signs recordings"
    since = _since(known, path.stat().st_mtime)
    row = KeyRow(kind, "ed25519", fingerprint, KeyState.ACTIVE, since, note=what)
    return [row, *_retired(registry, kind, {fingerprint})]


def _recipient_rows(config: Config, registry: Registry) -> list[KeyRow]:
    if config.recording is None:
        return _retired(registry, KeyKind.RECORDING_RECIPIENT, set())
    configured = config.recording.auditor_public_key
    current = current_recipient(config.paths.state_dir, configured)
    fingerprint = recipient_fingerprint(current)
    known = registry.find(KeyKind.RECORDING_RECIPIENT, fingerprint)
    note = "new recordings are encrypted to it"
    if current != configured:
        note += (
            f"; the config still names {recipient_fingerprint(configured)}, retired: update "
            "recording.auditor_public_key"
        )
    row = KeyRow(
        KeyKind.RECORDING_RECIPIENT,
        "x25519",
        fingerprint,
        KeyState.ACTIVE,
        _since(known, None),
        note=note if known is not None else note + "; age unknown until a worker has used it",
    )
    return [row, *_retired(registry, KeyKind.RECORDING_RECIPIENT, {fingerprint})]


def key_warnings(config: Config, now: float | None = None) -> list[str]:
    """What ``check-config`` warns about: keys in use older than ``keys.max_age``, a
    recipient rotated away from the configured one, a rotation overdue, a lockdown."""
    moment = time.time() if now is None else now
    try:
        rows = inventory(config)
    except BastionError as exc:
        return [f"the keys could not be checked: {exc.message}"]
    warnings = []
    limit = config.keys.max_age
    for row in rows:
        if row.state == KeyState.RETIRED:
            continue
        age = row.age(moment)
        if age is not None and age > limit.total_seconds():
            warnings.append(
                f"the {row.kind} key {row.fingerprint} is {format_age(age)} old, older than "
                f"keys.max_age ({_duration(limit)}): rotate it with 'bastion keys rotate "
                f"--kind {row.kind}'"
            )
        if row.state == KeyState.RETIRING and row.retire_at is not None and row.retire_at < moment:
            warnings.append(
                f"the host key {row.fingerprint} should have retired at {_when(row.retire_at)}; "
                "a running bastion retires it within seconds (or: bastion keys rotate --kind "
                "host --finish)"
            )
    if config.recording is not None:
        configured = config.recording.auditor_public_key
        try:
            current = current_recipient(config.paths.state_dir, configured)
        except BastionError as exc:
            return [*warnings, f"the recording recipient could not be checked: {exc.message}"]
        if current != configured:
            warnings.append(
                f"recording.auditor_public_key names {recipient_fingerprint(configured)}, which "
                f"was retired; new recordings go to {recipient_fingerprint(current)}: put "
                f'auditor_public_key: "{current}" in the config'
            )
    held = read_lockdown(config.paths.state_dir)
    if held is not None:
        warnings.append(
            f"logins are refused: a compromise rotation by {held.actor} started at "
            f"{_when(held.since)} has not finished; run 'bastion keys rotate --all "
            "--compromised' again to finish it"
        )
    return warnings


def _duration(value: timedelta) -> str:
    return format_age(value.total_seconds())
