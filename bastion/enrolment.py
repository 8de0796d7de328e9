"""Enrolment of the second factor: TOTP secrets, otpauth:// URIs and scratch codes.

Pure: no I/O. The command line (``bastion user enroll``) writes what this module makes; the
login service checks codes with :func:`normalize_scratch_code` and
:func:`scratch_code_digest`.

Scratch codes are the way in when the phone is lost: ten per enrolment, each usable once,
stored only as digests. Each is 16 characters from a 32-letter alphabet (80 bits), shown as
``xxxx-xxxx-xxxx-xxxx``. The alphabet is Crockford's base32 in lower case: no ``i``, ``l``,
``o`` or ``u``, and on input ``i``/``l`` are read as ``1`` and ``o`` as ``0``, so what an
operator copies by hand from paper means what was printed.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

from bastion.totp import DIGITS, STEP_SECONDS, decode_secret

__all__ = [
    "SCRATCH_ALPHABET",
    "SCRATCH_CODE_COUNT",
    "new_scratch_codes",
    "new_totp_secret",
    "normalize_scratch_code",
    "otpauth_uri",
    "scratch_code_digest",
]

SECRET_BYTES = 20  # 160 bits, as RFC 4226 recommends
SCRATCH_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
SCRATCH_CODE_COUNT = 10
_GROUPS = 4
_GROUP_LENGTH = 4  # 4 x 4 characters x 5 bits = 80 bits
_READ_AS = str.maketrans({"i": "1", "l": "1", "o": "0"})
_SHAPE = re.compile(r"[a-z0-9]{4}(?:-?[a-z0-9]{4}){3}")
# RFC 3986 unreserved characters: everything else in a label or a value is percent-encoded.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def new_totp_secret() -> str:
    """A fresh TOTP secret: 160 random bits, base32 without padding (32 characters)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _percent_encode(text: str) -> str:
    return "".join(
        ch if ch in _UNRESERVED else "".join(f"%{byte:02X}" for byte in ch.encode("utf-8"))
        for ch in text
    )


def otpauth_uri(user: str, secret: str, issuer: str) -> str:
    """The ``otpauth://totp/ISSUER:USER?...`` URI authenticator apps scan (Key Uri Format).

    Label and parameters are percent-encoded as RFC 3986 requires (a ``:`` or a space in the
    issuer cannot be confused with the separator). Raises ValueError for an empty user or
    issuer, or a secret that is not base32 of at least 160 bits.
    """
    if not user:
        raise ValueError("the user name of an otpauth URI cannot be empty")
    if not issuer:
        raise ValueError("the issuer of an otpauth URI cannot be empty")
    decode_secret(secret)  # refuses what no authenticator should be given
    compact = secret.replace(" ", "").upper().rstrip("=")
    label = f"{_percent_encode(issuer)}:{_percent_encode(user)}"
    return (
        f"otpauth://totp/{label}?secret={compact}&issuer={_percent_encode(issuer)}"
        f"&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}"
    )


def _new_scratch_code() -> str:
    chars = "".join(secrets.choice(SCRATCH_ALPHABET) for _ in range(_GROUPS * _GROUP_LENGTH))
    return "-".join(chars[i : i + _GROUP_LENGTH] for i in range(0, len(chars), _GROUP_LENGTH))


def new_scratch_codes(n: int = SCRATCH_CODE_COUNT) -> list[str]:
    """``n`` distinct scratch codes, 80 random bits each, as ``xxxx-xxxx-xxxx-xxxx``."""
    if n < 1:
        raise ValueError(f"expected at least one scratch code, got n={n}")
    codes: list[str] = []
    while len(codes) < n:
        code = _new_scratch_code()
        if code not in codes:
            codes.append(code)
    return codes


def normalize_scratch_code(text: str) -> str | None:
    """The canonical ``xxxx-xxxx-xxxx-xxxx`` form of ``text``, or None if it is not one.

    ASCII only (full-width and other look-alike characters are refused), any case, dashes
    between the groups optional, ``i``/``l`` read as ``1`` and ``o`` as ``0``. Six digits
    (a TOTP code) are never a scratch code.
    """
    if not text.isascii():
        return None
    lowered = text.lower()
    if not _SHAPE.fullmatch(lowered):
        return None
    chars = lowered.replace("-", "").translate(_READ_AS)
    if any(ch not in SCRATCH_ALPHABET for ch in chars):
        return None  # 'u' is not in the alphabet
    return "-".join(chars[i : i + _GROUP_LENGTH] for i in range(0, len(chars), _GROUP_LENGTH))


def scratch_code_digest(user: str, normalized: str) -> str:
    """What is stored for a scratch code: SHA-256 (hex) of ``user``, NUL, the code.

    A fast hash is enough here, unlike for passwords: a code has 80 random bits, so even
    with the database in hand, finding a code from its digest takes about 2**79 SHA-256
    computations per code, far beyond any attacker; a slow hash would only slow down logins.
    The user name in the input keeps equal codes of two users from having equal digests.
    """
    if normalize_scratch_code(normalized) != normalized:
        raise ValueError("scratch_code_digest expects a code from normalize_scratch_code")
    return hashlib.sha256(f"{user}\0{normalized}".encode()).hexdigest()
