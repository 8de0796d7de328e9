"""OpenSSH public keys as they appear in the config: parse, check the key policy, fingerprint.

Accepted key types are the ones a bastion should still trust in 2026: Ed25519, the FIDO
security-key variants (``sk-ssh-ed25519@openssh.com``, ``sk-ecdsa-sha2-nistp256@openssh.com``)
and RSA of at least 3072 bits (signatures with rsa-sha2 only: enforced at login).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

__all__ = ["ALLOWED_KEY_TYPES", "MIN_RSA_BITS", "PublicKey", "parse_public_key"]

MIN_RSA_BITS = 3072
ALLOWED_KEY_TYPES = (
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
)


@dataclass(frozen=True)
class PublicKey:
    key_type: str
    blob: bytes
    comment: str
    bits: int

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` exactly as ``ssh-keygen -lf`` prints it."""
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def openssh(self) -> str:
        line = f"{self.key_type} {base64.b64encode(self.blob).decode()}"
        return f"{line} {self.comment}" if self.comment else line


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def string(self) -> bytes:
        if self.pos + 4 > len(self.data):
            raise ValueError("the key data is truncated")
        (length,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        if self.pos + length > len(self.data):
            raise ValueError("the key data is truncated")
        value = self.data[self.pos : self.pos + length]
        self.pos += length
        return value

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ValueError("the key data has trailing bytes")


def parse_public_key(line: str) -> PublicKey:
    """Parse one ``authorized_keys``-style line (no options) and apply the key policy.

    Raises ValueError saying what is wrong and what is accepted.
    """
    fields = line.strip().split(None, 2)
    if len(fields) < 2:
        raise ValueError("expected an OpenSSH public key line: '<type> <base64> [comment]'")
    key_type, b64 = fields[0], fields[1]
    comment = fields[2] if len(fields) > 2 else ""
    if key_type not in ALLOWED_KEY_TYPES:
        raise ValueError(
            f"key type {key_type!r} is not accepted; use one of {', '.join(ALLOWED_KEY_TYPES)}"
            f" (RSA with at least {MIN_RSA_BITS} bits)"
        )
    try:
        blob = base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the key's base64 data is invalid ({exc})") from None
    reader = _Reader(blob)
    embedded = reader.string().decode("ascii", "replace")
    if embedded != key_type:
        raise ValueError(f"the key says {key_type!r} but its data is a {embedded!r} key")
    bits = _check_body(key_type, reader)
    reader.done()
    return PublicKey(key_type, blob, comment, bits)


def _check_body(key_type: str, reader: _Reader) -> int:
    if key_type in {"ssh-ed25519", "sk-ssh-ed25519@openssh.com"}:
        if len(reader.string()) != 32:
            raise ValueError("an Ed25519 public key must be 32 bytes")
        if key_type.startswith("sk-"):
            reader.string()  # the FIDO application, usually "ssh:"
        return 256
    if key_type == "sk-ecdsa-sha2-nistp256@openssh.com":
        if reader.string() != b"nistp256":
            raise ValueError("an sk-ecdsa key must be on the nistp256 curve")
        if len(reader.string()) != 65:
            raise ValueError("an uncompressed P-256 point must be 65 bytes")
        reader.string()
        return 256
    # ssh-rsa: mpint e, mpint n
    reader.string()
    modulus = int.from_bytes(reader.string(), "big")
    bits = modulus.bit_length()
    if bits < MIN_RSA_BITS:
        raise ValueError(f"RSA key has {bits} bits; at least {MIN_RSA_BITS} are required")
    return bits
