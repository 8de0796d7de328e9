"""TOTP second factor (RFC 6238 over RFC 4226): codes, verification, replay guard, back-off.

Pure: no I/O and no clock. The caller passes the time, the user's last accepted time step
and failure history, and persists what :func:`verify` returns *before* it reports success
(the atomic, cross-process part belongs to the state store).

Rules a bastion needs beyond the RFC:

* a code is exactly six ASCII digits: full-width digits, spaces and other lengths are
  refused as malformed without touching the replay guard;
* ±1 time step of clock skew;
* each time step is accepted at most once per user: a code for a step at or before the
  last accepted one is a replay, even if it is otherwise correct;
* after ``lockout_after`` failures, exponential back-off; after ``hard_lock_after``, a hard
  lock that only an administrator lifts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DIGITS",
    "STEP_SECONDS",
    "Lockout",
    "Outcome",
    "Verification",
    "code_at",
    "decode_secret",
    "hotp",
    "lockout",
    "time_step",
    "verify",
]

STEP_SECONDS = 30
DIGITS = 6
WINDOW = 1
MIN_SECRET_BYTES = 20  # 160 bits, as RFC 4226 recommends

_ALGORITHMS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}


def decode_secret(text: str) -> bytes:
    """A base32 secret as authenticator apps show it (case and spaces ignored)."""
    compact = text.replace(" ", "").upper()
    try:
        secret = base64.b32decode(compact + "=" * (-len(compact) % 8))
    except (binascii.Error, ValueError):
        raise ValueError("the TOTP secret is not valid base32") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the TOTP secret has {len(secret) * 8} bits; at least {MIN_SECRET_BYTES * 8} "
            "are required (re-enrol the user)"
        )
    return secret


def hotp(secret: bytes, counter: int, *, digits: int = DIGITS, algorithm: str = "SHA1") -> str:
    """RFC 4226: HMAC of the 8-byte big-endian counter, dynamic truncation, ``digits`` long."""
    digest = hmac.new(secret, struct.pack(">Q", counter), _ALGORITHMS[algorithm]).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def time_step(now: float) -> int:
    return int(now // STEP_SECONDS)


def code_at(secret: bytes, now: float, *, digits: int = DIGITS, algorithm: str = "SHA1") -> str:
    return hotp(secret, time_step(now), digits=digits, algorithm=algorithm)


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    MALFORMED = "malformed"  # not six ASCII digits: no attempt is consumed
    WRONG = "wrong"
    REPLAYED = "replayed"  # right code, but its time step was already used


@dataclass(frozen=True)
class Verification:
    outcome: Outcome
    step: int | None = None  # the accepted step, to be recorded before success is reported

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED

    @property
    def counts_as_failure(self) -> bool:
        return self.outcome in (Outcome.WRONG, Outcome.REPLAYED)


def _well_formed(code: str) -> bool:
    # str.isdigit() accepts full-width and other Unicode digits; only ASCII 0-9 will do.
    return len(code) == DIGITS and all("0" <= ch <= "9" for ch in code)


def verify(secret: bytes, code: str, now: float, last_step: int | None) -> Verification:
    """Check ``code`` at ``now`` against ``secret``, refusing steps up to ``last_step``."""
    if not _well_formed(code):
        return Verification(Outcome.MALFORMED)
    current = time_step(now)
    matched: int | None = None
    # Compare every candidate step, so timing does not reveal which one matched.
    for step in range(max(current - WINDOW, 0), current + WINDOW + 1):
        if hmac.compare_digest(hotp(secret, step), code) and matched is None:
            matched = step
    if matched is None:
        return Verification(Outcome.WRONG)
    if last_step is not None and matched <= last_step:
        return Verification(Outcome.REPLAYED, matched)
    return Verification(Outcome.ACCEPTED, matched)


@dataclass(frozen=True)
class Lockout:
    locked: bool
    seconds_left: float = 0.0
    hard: bool = False

    def message(self) -> str:
        if self.hard:
            return "account locked after too many failed logins: ask an administrator"
        return f"too many failed logins: try again in {int(self.seconds_left) + 1} s"


def lockout(
    failures: int,
    last_failure: float | None,
    now: float,
    *,
    lockout_after: int = 5,
    hard_lock_after: int = 20,
    base_seconds: float = 30.0,
    max_seconds: float = 3600.0,
) -> Lockout:
    """Whether an account may try again: exponential back-off, then a hard lock."""
    if failures >= hard_lock_after:
        return Lockout(locked=True, hard=True)
    if failures < lockout_after or last_failure is None:
        return Lockout(locked=False)
    delay = min(base_seconds * 2 ** (failures - lockout_after), max_seconds)
    left = last_failure + delay - now
    return Lockout(locked=left > 0, seconds_left=max(left, 0.0))
