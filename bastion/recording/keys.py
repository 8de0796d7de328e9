"""The recording keys as text: public key lines, fingerprints, private key files. Pure.

* The **auditors' key** is X25519. Its public half goes in the bastion's config as one line,
  ``recording.auditor_public_key: "x25519:<base64>"``; its private half (PKCS#8 PEM) stays on
  the auditors' machines and is what ``bastion play --key`` reads.
* The **bastion's signing key** is Ed25519, made in the state directory on first use. Its
  public half, ``ed25519:<base64>``, lets anyone check that a recording came from this
  bastion unaltered (``--signer``).

A key's id is its fingerprint, ``SHA256:<base64 of SHA-256 of the raw 32-byte key>`` (the
form ``ssh-keygen -l`` uses); recordings name the keys they were made with by these ids.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

__all__ = [
    "fingerprint",
    "parse_auditor_public_key",
    "parse_signer_public_key",
    "private_key_pem",
    "public_key_line",
    "raw_public",
    "read_auditor_private_key",
]

KeyType = Literal["x25519", "ed25519"]


def raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(raw: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def public_key_line(key: X25519PublicKey | Ed25519PublicKey) -> str:
    kind = "x25519" if isinstance(key, X25519PublicKey) else "ed25519"
    return f"{kind}:{base64.b64encode(raw_public(key)).decode()}"


def _raw_from_line(text: str, kind: KeyType) -> bytes:
    prefix = f"{kind}:"
    value = text.strip()
    if not value.startswith(prefix):
        raise ValueError(
            f"expected a {kind} public key such as '{prefix}<base64>' "
            "(bastion recordings keygen prints one)"
        )
    try:
        raw = base64.b64decode(value[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {kind} public key is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"a {kind} public key is 32 bytes, this one is {len(raw)}")
    return raw


def parse_auditor_public_key(text: str) -> X25519PublicKey:
    """``x25519:<base64>``; ValueError with what was expected."""
    return X25519PublicKey.from_public_bytes(_raw_from_line(text, "x25519"))


def parse_signer_public_key(text: str) -> Ed25519PublicKey:
    """``ed25519:<base64>``; ValueError with what was expected."""
    return Ed25519PublicKey.from_public_bytes(_raw_from_line(text, "ed25519"))


def private_key_pem(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def read_auditor_private_key(data: bytes, password: bytes | None = None) -> X25519PrivateKey:
    """The auditors' private key from a PEM file's bytes; ValueError saying what is wrong."""
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError:
        raise ValueError(
            "the key file is protected by a passphrase; enter it when asked"
            if password is None
            else "the key file is not protected by a passphrase"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(
            "not a PEM private key, or a wrong passphrase (bastion recordings keygen writes "
            "the auditors' key)"
        ) from None
    if isinstance(key, X25519PrivateKey):
        return key
    raise ValueError("holds another kind of key, not the auditors' X25519 key")
