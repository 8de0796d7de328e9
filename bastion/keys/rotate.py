"""Each key rotation, one step at a time, audited before it acts.

Every rotation holds the keys lock from its first check to its last write, writes its audit
event before it changes anything a client or verifier can see, and leaves either the old key
set or the new one (new key files are written under hidden names and linked or renamed into
place; the registry is replaced whole). The same functions serve ``bastion keys rotate`` and
the workers (which retire a host key when its overlap has passed): the audit is a callable,
so a worker hands in one that goes through its own log.

* host: :func:`start_host_rotation` offers a new key alongside the active one until
  ``retire_at``; :func:`finish_host_rotation` makes it the active key and drops the old one
  (by the operator, or by a worker once the overlap has passed); :func:`replace_host_key`
  does both at once (a compromised key is never offered again).
* checkpoint: :func:`rotate_checkpoint_key` writes the rotation line, signed by the old
  key and naming the new one, then installs the new key (see :mod:`bastion.audit.log`).
* recording-signing: :func:`rotate_recording_signing_key`; recordings signed with the old
  key still verify against it (the registry keeps it, with the time it was retired).
* recording-recipient: :func:`rotate_recipient`; new recordings go to the new key, old ones
  keep theirs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bastion.audit.log import AUDIT_SIGNING_KEY, AuditLog, key_id
from bastion.config import Config
from bastion.durable import fsync_dir
from bastion.errors import BastionError
from bastion.keys.host import (
    ALGORITHM,
    HostKeyFile,
    new_host_key,
    next_path,
    read_host_key,
    write_host_key,
)
from bastion.keys.model import KeyKind, KeyRecord, KeyState, Registry
from bastion.keys.recipients import current_recipient, recipient_fingerprint
from bastion.keys.registry import KeyStore
from bastion.recording.key_files import (
    RECORDING_SIGNING_KEY,
    SigningKeyFile,
    discard_staged_signing_key,
    install_staged_signing_key,
    read_signing_key,
    signing_key_path,
    stage_signing_key,
)
from bastion.recording.keys import public_key_line

__all__ = [
    "Audit",
    "KeyContext",
    "Rotated",
    "adopt_keys",
    "finish_host_rotation",
    "host_retirement_due",
    "replace_host_key",
    "rotate_checkpoint_key",
    "rotate_recipient",
    "rotate_recording_signing_key",
    "start_host_rotation",
]

# ``audit(event, outcome, **fields)``: writes one audit event, durably, or raises
# AuditUnavailable (then the rotation does not happen).
Audit = Callable[..., object]


@dataclass
class KeyContext:
    """What every rotation needs: the config, the registry, the audit, who asked."""

    config: Config
    audit: Audit
    actor: str
    actor_fields: dict[str, Any] = field(default_factory=dict)
    clock: Callable[[], float] = time.time

    @property
    def state_dir(self) -> Path:
        return self.config.paths.state_dir

    @functools.cached_property
    def store(self) -> KeyStore:
        # One store per context: it knows whether this rotation holds the keys lock.
        return KeyStore(self.state_dir)

    def record(self, event: str, outcome: str, **fields: Any) -> None:
        self.audit(event, outcome=outcome, actor=self.actor, **self.actor_fields, **fields)


@dataclass(frozen=True)
class Rotated:
    """What a rotation did, for the operator: one sentence per line."""

    kind: KeyKind
    new: str
    old: str | None
    lines: tuple[str, ...]


def _rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------- host
def _host_path(ctx: KeyContext) -> Path:
    return ctx.config.listener.host_key


def _host_record(key: HostKeyFile, registry: Registry) -> KeyRecord:
    """The registry's record of a host key file, or a new one dated by the file."""
    known = registry.find(KeyKind.HOST, key.fingerprint)
    if known is not None:
        return known
    return KeyRecord(KeyKind.HOST, key.fingerprint, key.public, key.algorithm, key.modified)


def _active_host_key(ctx: KeyContext) -> HostKeyFile:
    active = read_host_key(_host_path(ctx))
    if active is None:
        raise BastionError(
            f"there is no host key at {_host_path(ctx)} yet",
            hint="start the bastion once (it creates its host key), then rotate",
        )
    return active


def start_host_rotation(ctx: KeyContext, overlap: timedelta) -> Rotated:
    """Offer a new host key alongside the active one; the active one retires after
    ``overlap`` (a worker finishes the rotation then, or ``--finish`` does sooner)."""
    path = _host_path(ctx)
    store = ctx.store
    with store.locked():
        active = _active_host_key(ctx)
        pending = read_host_key(next_path(path))
        if pending is not None:
            registry = store.read()
            record = registry.find(KeyKind.HOST, active.fingerprint)
            until = f" at {_rfc3339(record.retire_at)}" if record and record.retire_at else ""
            raise BastionError(
                f"a host key rotation is already under way: {pending.fingerprint} is offered "
                f"alongside {active.fingerprint}, which retires{until}",
                hint="finish it first: bastion keys rotate --kind host --finish",
            )
        now = ctx.clock()
        retire_at = now + overlap.total_seconds()
        new = new_host_key()
        temp = write_host_key(new, path.parent)
        try:
            ctx.record(
                "keys.rotation_started",
                "ok",
                kind=str(KeyKind.HOST),
                key=new.fingerprint,
                replaces=active.fingerprint,
                retire_at=_rfc3339(retire_at),
                overlap_seconds=int(overlap.total_seconds()),
            )
            registry = store.read()
            old = _host_record(active, registry)
            registry = registry.put(replace(old, state=KeyState.RETIRING, retire_at=retire_at))
            registry = registry.put(
                KeyRecord(
                    KeyKind.HOST,
                    new.fingerprint,
                    new.public,
                    ALGORITHM,
                    now,
                    KeyState.NEXT,
                )
            )
            _write_registry(ctx, KeyKind.HOST, registry)
            try:
                os.link(temp, next_path(path))
                fsync_dir(path.parent)
            except OSError as exc:
                _failed(ctx, KeyKind.HOST, f"cannot write {next_path(path)}: {exc.strerror}")
                raise BastionError(
                    f"cannot write the new host key {next_path(path)}: {exc.strerror}",
                    hint="fix the directory's permissions or space, then rotate again",
                ) from None
        finally:
            temp.unlink(missing_ok=True)
    return Rotated(
        KeyKind.HOST,
        new.fingerprint,
        active.fingerprint,
        (
            f"new host key {new.fingerprint} is offered alongside {active.fingerprint}",
            "clients with UpdateHostKeys (OpenSSH's default for known_hosts files it owns) "
            "learn it at their next login",
            f"{active.fingerprint} retires at {_rfc3339(retire_at)}, or sooner with: "
            "bastion keys rotate --kind host --finish",
        ),
    )


def finish_host_rotation(ctx: KeyContext, *, automatic: bool = False) -> Rotated | None:
    """Make the next host key the active one; the old one is no longer offered. None when
    ``automatic`` and there is nothing to finish (another worker did it)."""
    path = _host_path(ctx)
    store = ctx.store
    with store.locked():
        pending = read_host_key(next_path(path))
        if pending is None:
            if automatic:
                return None
            raise BastionError(
                "no host key rotation is under way",
                hint="start one with: bastion keys rotate --kind host",
            )
        active = _active_host_key(ctx)
        now = ctx.clock()
        ctx.record(
            "keys.rotated",
            "ok",
            kind=str(KeyKind.HOST),
            key=pending.fingerprint,
            retired=active.fingerprint,
            how="overlap ended" if automatic else "finished by an operator",
        )
        try:
            next_path(path).replace(path)
            fsync_dir(path.parent)
        except OSError as exc:
            _failed(ctx, KeyKind.HOST, f"cannot install {next_path(path)}: {exc.strerror}")
            raise BastionError(
                f"cannot make {next_path(path)} the host key: {exc.strerror}",
                hint="fix the directory's permissions, then run the finish again",
            ) from None
        registry = store.read()
        registry = registry.put(_host_record(active, registry))
        registry = registry.retire(
            KeyKind.HOST, active.fingerprint, at=now, replaced_by=pending.fingerprint
        )
        record = _host_record(pending, registry)
        registry = registry.put(replace(record, state=KeyState.ACTIVE, retire_at=None))
        _write_registry(ctx, KeyKind.HOST, registry)
    return Rotated(
        KeyKind.HOST,
        pending.fingerprint,
        active.fingerprint,
        (
            f"host key {pending.fingerprint} is now the active key",
            f"{active.fingerprint} is retired and no longer offered; its private key is gone",
        ),
    )


def replace_host_key(ctx: KeyContext, *, compromised: bool) -> Rotated:
    """A new active host key at once, no overlap: the old key (and a next key, if a
    rotation was under way) is never offered again. Clients must be told the new
    fingerprint some other way."""
    path = _host_path(ctx)
    store = ctx.store
    with store.locked():
        active = read_host_key(path)
        pending = read_host_key(next_path(path))
        now = ctx.clock()
        new = new_host_key()
        temp = write_host_key(new, path.parent)
        try:
            ctx.record(
                "keys.rotated",
                "alert" if compromised else "ok",
                kind=str(KeyKind.HOST),
                key=new.fingerprint,
                retired=active.fingerprint if active else None,
                discarded_next=pending.fingerprint if pending else None,
                compromised=compromised,
                how="immediately, without overlap",
            )
            try:
                temp.replace(path)
                next_path(path).unlink(missing_ok=True)
                fsync_dir(path.parent)
            except OSError as exc:
                _failed(ctx, KeyKind.HOST, f"cannot replace {path}: {exc.strerror}")
                raise BastionError(
                    f"cannot replace the host key {path}: {exc.strerror}",
                    hint="fix the directory's permissions, then rotate again",
                ) from None
        finally:
            temp.unlink(missing_ok=True)
        registry = store.read()
        for old in (active, pending):
            if old is not None:
                registry = registry.put(_host_record(old, registry))
                registry = registry.retire(
                    KeyKind.HOST,
                    old.fingerprint,
                    at=now,
                    replaced_by=new.fingerprint,
                    compromised=compromised,
                )
        registry = registry.put(
            KeyRecord(KeyKind.HOST, new.fingerprint, new.public, ALGORITHM, now)
        )
        _write_registry(ctx, KeyKind.HOST, registry)
    retired = ", ".join(k.fingerprint for k in (active, pending) if k is not None) or "none"
    return Rotated(
        KeyKind.HOST,
        new.fingerprint,
        active.fingerprint if active else None,
        (
            f"host key {new.fingerprint} is the active key now, without overlap "
            f"(retired: {retired})",
            "clients will refuse the changed key until told the new fingerprint: give it "
            "to operators, or publish the new known_hosts line",
        ),
    )


def host_retirement_due(state_dir: Path, host_key: Path, now: float) -> bool:
    """Whether a host key rotation is under way and its overlap has passed."""
    if not next_path(host_key).exists():
        return False
    registry = KeyStore(state_dir).read()
    return any(
        record.retire_at is not None and record.retire_at <= now
        for record in registry.of(KeyKind.HOST, KeyState.RETIRING)
    )


# ---------------------------------------------------------------------------- signing keys
def _signing_record(
    kind: KeyKind, key_file: SigningKeyFile, state_dir: Path, registry: Registry
) -> KeyRecord | None:
    """The registry's record of the signing key in use, or a new one dated by its file."""
    try:
        key = read_signing_key(state_dir, key_file)
    except BastionError:
        return None
    fingerprint = key_id(key)
    known = registry.find(kind, fingerprint)
    if known is not None:
        return known
    path = signing_key_path(state_dir, key_file)
    return KeyRecord(
        kind,
        fingerprint,
        public_key_line(key.public_key()),
        "ed25519",
        path.stat().st_mtime,
    )


def rotate_checkpoint_key(ctx: KeyContext, audit: AuditLog, *, compromised: bool) -> Rotated:
    """Hand checkpoint signing to a new key, recorded in the chain (``audit`` is the log,
    opened with the bastion's signing key files)."""
    store = ctx.store
    state_dir = ctx.state_dir
    with store.locked():
        settled = audit.settle_signing_key_now()
        old = read_signing_key(state_dir, AUDIT_SIGNING_KEY)
        registry = store.read()
        old_record = _signing_record(KeyKind.CHECKPOINT, AUDIT_SIGNING_KEY, state_dir, registry)
        new = stage_signing_key(state_dir, AUDIT_SIGNING_KEY)
        try:
            line = audit.rotate_signing_key_now(
                new,
                actor=ctx.actor,
                compromised=compromised,
                install=lambda: install_staged_signing_key(state_dir, AUDIT_SIGNING_KEY),
            )
        except BaseException:
            discard_staged_signing_key(state_dir, AUDIT_SIGNING_KEY)
            raise
        now = ctx.clock()
        if old_record is not None:
            registry = registry.put(old_record)
        registry = registry.retire(
            KeyKind.CHECKPOINT,
            key_id(old),
            at=now,
            replaced_by=key_id(new),
            compromised=compromised,
        )
        registry = registry.put(
            KeyRecord(
                KeyKind.CHECKPOINT, key_id(new), public_key_line(new.public_key()), "ed25519", now
            )
        )
        _write_registry(ctx, KeyKind.CHECKPOINT, registry)
    lines = [
        f"checkpoints are signed by {key_id(new)} after the rotation line (line "
        f"{line['seq']} of the audit log)",
        f"the rotation line is signed by the old key {key_id(old)}: 'bastion audit verify "
        "--pubkey OLD.pub' follows it; give auditors the new audit-signing.pub too",
    ]
    if settled:
        lines.insert(0, settled)
    return Rotated(KeyKind.CHECKPOINT, key_id(new), key_id(old), tuple(lines))


def rotate_recording_signing_key(ctx: KeyContext, *, compromised: bool) -> Rotated:
    """A new key signs new recordings; recordings signed by the old one still verify
    against it (playback trusts a retired key for recordings made before it retired)."""
    store = ctx.store
    state_dir = ctx.state_dir
    kind = RECORDING_SIGNING_KEY
    with store.locked():
        registry = store.read()
        old_record = _signing_record(KeyKind.RECORDING_SIGNING, kind, state_dir, registry)
        discard_staged_signing_key(state_dir, kind)
        new = stage_signing_key(state_dir, kind)
        try:
            ctx.record(
                "keys.rotated",
                "alert" if compromised else "ok",
                kind=str(KeyKind.RECORDING_SIGNING),
                key=key_id(new),
                retired=old_record.fingerprint if old_record else None,
                compromised=compromised,
            )
            install_staged_signing_key(state_dir, kind)
        except BaseException:
            discard_staged_signing_key(state_dir, kind)
            raise
        now = ctx.clock()
        if old_record is not None:
            registry = registry.put(old_record).retire(
                KeyKind.RECORDING_SIGNING,
                old_record.fingerprint,
                at=now,
                replaced_by=key_id(new),
                compromised=compromised,
            )
        registry = registry.put(
            KeyRecord(
                KeyKind.RECORDING_SIGNING,
                key_id(new),
                public_key_line(new.public_key()),
                "ed25519",
                now,
            )
        )
        _write_registry(ctx, KeyKind.RECORDING_SIGNING, registry)
    return Rotated(
        KeyKind.RECORDING_SIGNING,
        key_id(new),
        old_record.fingerprint if old_record else None,
        (
            f"new recordings are signed by {key_id(new)}; give auditors the new "
            "recording-signing.pub",
            "recordings made before now still verify against the old key on this bastion",
        ),
    )


# ---------------------------------------------------------------------------- recipients
def rotate_recipient(ctx: KeyContext, new_line: str, *, compromised: bool) -> Rotated:
    """New recordings are encrypted to ``new_line`` from now on, in every worker."""
    settings = ctx.config.recording
    if settings is None:
        raise BastionError(
            "the config has no recording section, so there is no recipient to rotate",
            hint="add recording.auditor_public_key to the config instead",
        )
    store = ctx.store
    new_fp = recipient_fingerprint(new_line)
    with store.locked():
        current = current_recipient(ctx.state_dir, settings.auditor_public_key)
        current_fp = recipient_fingerprint(current)
        if new_fp == current_fp:
            raise BastionError(f"{new_fp} is already the recipient of new recordings")
        registry = store.read()
        known = registry.find(KeyKind.RECORDING_RECIPIENT, new_fp)
        if known is not None and known.state == KeyState.RETIRED:
            raise BastionError(
                f"{new_fp} was retired as a recipient; a retired key is not used again",
                hint="make a new key pair with 'bastion recordings keygen' on an auditor's machine",
            )
        now = ctx.clock()
        ctx.record(
            "keys.rotated",
            "alert" if compromised else "ok",
            kind=str(KeyKind.RECORDING_RECIPIENT),
            key=new_fp,
            retired=current_fp,
            compromised=compromised,
        )
        registry = registry.adopt(
            KeyRecord(KeyKind.RECORDING_RECIPIENT, current_fp, current, "x25519", now)
        )
        registry = registry.retire(
            KeyKind.RECORDING_RECIPIENT,
            current_fp,
            at=now,
            replaced_by=new_fp,
            compromised=compromised,
        )
        registry = registry.put(
            KeyRecord(KeyKind.RECORDING_RECIPIENT, new_fp, new_line, "x25519", now)
        )
        _write_registry(ctx, KeyKind.RECORDING_RECIPIENT, registry)
    return Rotated(
        KeyKind.RECORDING_RECIPIENT,
        new_fp,
        current_fp,
        (
            f"recordings started from now on are encrypted to {new_fp}",
            f"recordings made before stay readable with the private key of {current_fp} "
            "only; nothing was re-encrypted",
            f'update the config at your convenience: recording.auditor_public_key: "{new_line}"',
        ),
    )


# ---------------------------------------------------------------------------- adoption
def adopt_keys(config: Config, now: float) -> None:
    """Record, once, the keys a starting worker uses that the registry does not know, so
    that their age can be told later (host and signing keys dated by their files, the
    configured recipient from now). Writes nothing when every key is known."""
    state_dir = config.paths.state_dir
    store = KeyStore(state_dir)
    with store.locked():
        registry = store.read()
        records: list[KeyRecord] = []
        active = read_host_key(config.listener.host_key)
        if active is not None:
            records.append(_host_record(active, registry))
        for kind, key_file in (
            (KeyKind.CHECKPOINT, AUDIT_SIGNING_KEY),
            (KeyKind.RECORDING_SIGNING, RECORDING_SIGNING_KEY),
        ):
            record = _signing_record(kind, key_file, state_dir, registry)
            if record is not None:
                records.append(record)
        if config.recording is not None:
            line = current_recipient(state_dir, config.recording.auditor_public_key)
            records.append(
                KeyRecord(
                    KeyKind.RECORDING_RECIPIENT, recipient_fingerprint(line), line, "x25519", now
                )
            )
        adopted = registry
        for record in records:
            adopted = adopted.adopt(record)
        if adopted != registry:
            store.write(adopted)


def _write_registry(ctx: KeyContext, kind: KeyKind, registry: Registry) -> None:
    """Write the registry after a rotation's audit event: a failure is recorded too (the
    keys themselves are in their files; the registry dates them)."""
    try:
        ctx.store.write(registry)
    except BastionError as exc:
        _failed(ctx, kind, exc.message)
        raise


def _failed(ctx: KeyContext, kind: KeyKind, error: str) -> None:
    """A step after the audit event failed: say so in the log, if the log can take it."""
    with contextlib.suppress(BastionError):
        ctx.record("keys.rotation_failed", "alert", kind=str(kind), error=error)
