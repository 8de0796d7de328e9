"""Signed checkpoints of the audit log: what is signed, and how a checkpoint is checked. Pure.

A checkpoint is a line of the log itself (event ``audit.checkpoint``, chained like every
other line) that carries an Ed25519 signature over the chain head before it: the ``seq``
and ``hash`` of the previous line, and the checkpoint's own ``time``. Because every hash
covers the one before, one valid checkpoint vouches for every line up to it; whoever lacks
the bastion's signing key cannot change any of those lines, or write a checkpoint for a
chain of their own.

The signed bytes are a label and the canonical JSON (sorted keys, compact) of::

    {"v": 1, "covers": SEQ, "hash": HASH, "time": TIME, "key_id": KEY_ID,
     "every": EVENTS, "interval": SECONDS}

``every`` and ``interval`` are the policy the writer followed (a checkpoint after at most
that many events, and at least that often while the bastion runs), signed so that a
verifier can tell how long an unsigned tail may honestly be.

**Key rotation.** The signing key is replaced by a line of its own (event
``audit.key_rotation``): a checkpoint by the *old* key over the chain head before it that
also names the new public key, countersigned by the new key (proof that whoever rotated
holds it). From that line on, checkpoints are signed by the new key, and a verifier that
started with the old key follows the chain across the rotation; a rotation record that the
key in force did not sign is a forgery. The signed bytes are a label of their own and the
canonical JSON of::

    {"v": 1, "covers": SEQ, "hash": HASH, "time": TIME, "actor": ACTOR, "key_id": OLD_ID,
     "new_key": "ed25519:<base64>", "every": EVENTS, "interval": SECONDS,
     "compromised": BOOL}

Pure: no I/O. :mod:`bastion.audit.log` writes checkpoints, :mod:`bastion.audit.chain`
checks them while it verifies the chain.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.recording.keys import (
    fingerprint,
    parse_signer_public_key,
    public_key_line,
    raw_public,
)

__all__ = [
    "CHECKPOINT_EVENT",
    "ROTATION_EVENT",
    "CheckpointPolicy",
    "check_checkpoint",
    "check_rotation",
    "checkpoint_fields",
    "is_checkpoint",
    "is_rotation",
    "is_signed",
    "rotation_fields",
    "signed_bytes",
]

CHECKPOINT_EVENT = "audit.checkpoint"
CHECKPOINT_ACTOR = "bastion"
CHECKPOINT_OUTCOME = "signed"
ROTATION_EVENT = "audit.key_rotation"
_LABEL = b"bastion audit checkpoint v1\n"
_ROTATION_LABEL = b"bastion audit key rotation v1\n"
_FIELDS = ("covers", "every", "interval", "key_id", "signature")
_ROTATION_FIELDS = (*_FIELDS, "new_key", "new_key_id", "new_key_signature", "compromised")


@dataclass(frozen=True)
class CheckpointPolicy:
    """When the writer signs: after ``every`` events, and every ``interval`` seconds."""

    every: int
    interval: float

    def due(self, *, seq: int, checkpoint_seq: int, now: float, checkpoint_at: float) -> bool:
        return seq - checkpoint_seq >= self.every or now - checkpoint_at >= self.interval


def signed_bytes(
    *, covers: int, hash: str, time: str, key_id: str, every: int, interval: float
) -> bytes:
    body = {
        "v": 1,
        "covers": covers,
        "hash": hash,
        "time": time,
        "key_id": key_id,
        "every": every,
        "interval": interval,
    }
    return _LABEL + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def checkpoint_fields(
    key: Ed25519PrivateKey, policy: CheckpointPolicy, *, covers: int, hash: str, time: str
) -> dict[str, Any]:
    """The fields of a checkpoint line that follows the line ``covers`` (whose hash is
    ``hash``), written at ``time`` (the line's own time)."""
    key_id = fingerprint(raw_public(key.public_key()))
    message = signed_bytes(
        covers=covers,
        hash=hash,
        time=time,
        key_id=key_id,
        every=policy.every,
        interval=policy.interval,
    )
    return {
        "covers": covers,
        "every": policy.every,
        "interval": policy.interval,
        "key_id": key_id,
        "signature": base64.b64encode(key.sign(message)).decode(),
    }


def is_checkpoint(event: Mapping[str, Any]) -> bool:
    return event.get("event") == CHECKPOINT_EVENT


def is_rotation(event: Mapping[str, Any]) -> bool:
    return event.get("event") == ROTATION_EVENT


def is_signed(event: Mapping[str, Any]) -> bool:
    """A line that carries a signature over the chain: a checkpoint or a key rotation."""
    return is_checkpoint(event) or is_rotation(event)


def check_checkpoint(
    event: Mapping[str, Any],
    public_key: Ed25519PublicKey,
    *,
    key_name: str = "the key given",
) -> str | None:
    """What is wrong with a checkpoint line (already parsed, chain checked), or None.

    The line must cover the line just before it (``covers`` is its ``seq`` minus one, and
    the signed hash is its ``prev``), name the key given, and carry that key's signature.
    ``key_name`` says in messages which key that is (after a rotation: the key in force).
    """
    missing = [name for name in _FIELDS if name not in event]
    if missing:
        return f"checkpoint without {', '.join(missing)}"
    seq, covers = event.get("seq"), event["covers"]
    if not isinstance(seq, int) or covers != seq - 1:
        return f"checkpoint covers {covers!r}, not the line before it"
    key_id = fingerprint(raw_public(public_key))
    if event["key_id"] != key_id:
        return (
            f"checkpoint signed by key {event['key_id']}, not by {key_name} ({key_id}): "
            "another bastion's log, or a forged checkpoint"
        )
    every, interval = event["every"], event["interval"]
    if not isinstance(every, int) or not isinstance(interval, int | float):
        return "checkpoint with a malformed policy"
    try:
        signature = base64.b64decode(str(event["signature"]), validate=True)
        public_key.verify(
            signature,
            signed_bytes(
                covers=covers,
                hash=str(event["prev"]),
                time=str(event["time"]),
                key_id=key_id,
                every=every,
                interval=interval,
            ),
        )
    except (binascii.Error, ValueError, InvalidSignature):
        return "checkpoint signature does not verify (forged, or the lines it covers changed)"
    return None


def _rotation_bytes(
    *,
    covers: int,
    hash: str,
    time: str,
    actor: str,
    key_id: str,
    new_key: str,
    every: int,
    interval: float,
    compromised: bool,
) -> bytes:
    body = {
        "v": 1,
        "covers": covers,
        "hash": hash,
        "time": time,
        "actor": actor,
        "key_id": key_id,
        "new_key": new_key,
        "every": every,
        "interval": interval,
        "compromised": compromised,
    }
    return _ROTATION_LABEL + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def rotation_fields(
    old_key: Ed25519PrivateKey,
    new_key: Ed25519PrivateKey,
    policy: CheckpointPolicy,
    *,
    covers: int,
    hash: str,
    time: str,
    actor: str,
    compromised: bool,
) -> dict[str, Any]:
    """The fields of the rotation line that follows the line ``covers`` (hash ``hash``),
    written at ``time`` by ``actor``: signed by ``old_key``, countersigned by ``new_key``."""
    new_line = public_key_line(new_key.public_key())
    key_id = fingerprint(raw_public(old_key.public_key()))
    message = _rotation_bytes(
        covers=covers,
        hash=hash,
        time=time,
        actor=actor,
        key_id=key_id,
        new_key=new_line,
        every=policy.every,
        interval=policy.interval,
        compromised=compromised,
    )
    return {
        "covers": covers,
        "every": policy.every,
        "interval": policy.interval,
        "key_id": key_id,
        "new_key": new_line,
        "new_key_id": fingerprint(raw_public(new_key.public_key())),
        "compromised": compromised,
        "signature": base64.b64encode(old_key.sign(message)).decode(),
        "new_key_signature": base64.b64encode(new_key.sign(message)).decode(),
    }


def check_rotation(
    event: Mapping[str, Any], current: Ed25519PublicKey
) -> tuple[str | None, Ed25519PublicKey | None]:
    """Check a rotation line against the key in force; (problem, None) or (None, new key).

    The line must cover the line before it, be signed by ``current`` (only the key in force
    may hand over), name a new key different from it, and carry the new key's signature of
    the same bytes.
    """
    missing = [name for name in _ROTATION_FIELDS if name not in event]
    if missing:
        return f"key rotation record without {', '.join(missing)}", None
    seq, covers = event.get("seq"), event["covers"]
    if not isinstance(seq, int) or covers != seq - 1:
        return f"key rotation record covers {covers!r}, not the line before it", None
    key_id = fingerprint(raw_public(current))
    if event["key_id"] != key_id:
        return (
            f"key rotation record claims to be signed by key {event['key_id']}, but the key "
            f"in force is {key_id}: only the key in force can hand over to a new one"
        ), None
    every, interval, compromised = event["every"], event["interval"], event["compromised"]
    if (
        not isinstance(every, int)
        or not isinstance(interval, int | float)
        or not isinstance(compromised, bool)
        or not isinstance(event.get("actor"), str)
    ):
        return "key rotation record with a malformed policy, actor or compromised flag", None
    try:
        new_key = parse_signer_public_key(str(event["new_key"]))
    except ValueError as exc:
        return f"key rotation record names no usable new key: {exc}", None
    new_id = fingerprint(raw_public(new_key))
    if event["new_key_id"] != new_id:
        return f"key rotation record names key {event['new_key_id']} but carries {new_id}", None
    if new_id == key_id:
        return "key rotation record hands the key over to itself", None
    message = _rotation_bytes(
        covers=covers,
        hash=str(event["prev"]),
        time=str(event["time"]),
        actor=str(event["actor"]),
        key_id=key_id,
        new_key=str(event["new_key"]),
        every=every,
        interval=interval,
        compromised=compromised,
    )
    if not _verifies(current, event["signature"], message):
        return (
            f"key rotation record's signature by the key in force ({key_id}) does not verify: "
            "a forged rotation, or the lines it covers changed"
        ), None
    if not _verifies(new_key, event["new_key_signature"], message):
        return (
            f"key rotation record's countersignature by the new key ({new_id}) does not verify"
        ), None
    return None, new_key


def _verifies(key: Ed25519PublicKey, signature: object, message: bytes) -> bool:
    try:
        key.verify(base64.b64decode(str(signature), validate=True), message)
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True
