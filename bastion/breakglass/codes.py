"""Break-glass codes: how they are made, read back, and what is stored of them. Pure.

A code is 20 characters of Crockford's base32 in lower case (100 random bits), shown as
``xxxxx-xxxxx-xxxxx-xxxxx``: five groups, so it is never confused with a scratch code (four
groups of four). On input any case is accepted, dashes are optional, and ``i``/``l`` read
as ``1`` and ``o`` as ``0`` (the alphabet has none of them), so what an administrator copies
from a sealed envelope means what was printed.

Only a keyed digest is stored: HMAC-SHA256 under the bastion's own key (a file in
``state_dir``, not in the database), of the user name and the code. With 100 random bits a
digest could not be reversed anyway; the key means that a copy of the database alone cannot
even check a guess, and the user name means that equal codes of two users differ.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

__all__ = [
    "CODE_ALPHABET",
    "CODE_BITS",
    "MAX_BATCH",
    "code_digest",
    "new_batch_id",
    "new_codes",
    "normalize_code",
]

CODE_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_GROUPS = 4
_GROUP_LENGTH = 5
CODE_BITS = _GROUPS * _GROUP_LENGTH * 5  # 100
MAX_BATCH = 20
_READ_AS = str.maketrans({"i": "1", "l": "1", "o": "0"})
_SHAPE = re.compile(r"[a-z0-9]{5}(?:-?[a-z0-9]{5}){3}")


def _new_code() -> str:
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(_GROUPS * _GROUP_LENGTH))
    return "-".join(chars[i : i + _GROUP_LENGTH] for i in range(0, len(chars), _GROUP_LENGTH))


def new_codes(count: int) -> list[str]:
    """``count`` distinct codes (1 to MAX_BATCH), 100 random bits each."""
    if not 1 <= count <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} codes, not {count}")
    codes: list[str] = []
    while len(codes) < count:
        code = _new_code()
        if code not in codes:
            codes.append(code)
    return codes


def new_batch_id() -> str:
    """A batch's name in the store and the audit log: 48 random bits, hex."""
    return secrets.token_hex(6)


def normalize_code(text: str) -> str | None:
    """The canonical ``xxxxx-xxxxx-xxxxx-xxxxx`` form of ``text``, or None if it is not one.

    ASCII only (full-width and other look-alike characters are refused), surrounding spaces
    ignored, any case, dashes between the groups optional, ``i``/``l`` read as ``1`` and
    ``o`` as ``0``.
    """
    text = text.strip()
    if not text.isascii():
        return None
    lowered = text.lower()
    if not _SHAPE.fullmatch(lowered):
        return None
    chars = lowered.replace("-", "").translate(_READ_AS)
    if any(ch not in CODE_ALPHABET for ch in chars):
        return None  # 'u' is not in the alphabet
    return "-".join(chars[i : i + _GROUP_LENGTH] for i in range(0, len(chars), _GROUP_LENGTH))


def code_digest(key: bytes, user: str, normalized: str) -> str:
    """What is stored for a code: HMAC-SHA256 (hex) under ``key`` of ``user``, NUL, the code."""
    if normalize_code(normalized) != normalized:
        raise ValueError("code_digest expects a code from normalize_code")
    if len(key) < 32:
        raise ValueError("the break-glass code key must be at least 32 bytes")
    return hmac.new(key, f"{user}\0{normalized}".encode(), hashlib.sha256).hexdigest()
