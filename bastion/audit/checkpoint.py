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

from bastion.recording.keys import fingerprint, raw_public

__all__ = [
    "CHECKPOINT_EVENT",
    "CheckpointPolicy",
    "check_checkpoint",
    "checkpoint_fields",
    "is_checkpoint",
    "signed_bytes",
]

CHECKPOINT_EVENT = "audit.checkpoint"
CHECKPOINT_ACTOR = "bastion"
CHECKPOINT_OUTCOME = "signed"
_LABEL = b"bastion audit checkpoint v1\n"
_FIELDS = ("covers", "every", "interval", "key_id", "signature")


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


def check_checkpoint(event: Mapping[str, Any], public_key: Ed25519PublicKey) -> str | None:
    """What is wrong with a checkpoint line (already parsed, chain checked), or None.

    The line must cover the line just before it (``covers`` is its ``seq`` minus one, and
    the signed hash is its ``prev``), name the key given, and carry that key's signature.
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
            f"checkpoint signed by key {event['key_id']}, not by the key given ({key_id}): "
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
