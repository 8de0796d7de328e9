"""The SSH algorithms the bastion offers: only what a 2026 audit passes.

Post-quantum hybrid key exchange first; curve25519 stays because OpenSSH 9.2 (Debian 12)
has no ML-KEM. Strict key exchange (the Terrapin fix) is negotiated by asyncssh itself.
No compression: it adds attack surface and nothing a terminal needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncssh.encryption import get_encryption_algs
from asyncssh.kex import get_kex_algs
from asyncssh.mac import get_mac_algs

__all__ = ["Algorithms", "algorithms"]

_KEX = (
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512@openssh.com",
    "sntrup761x25519-sha512",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
)
_CIPHERS = ("aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "aes256-ctr", "aes128-ctr")
_CHACHA = "chacha20-poly1305@openssh.com"
_MACS = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
)


@dataclass(frozen=True)
class Algorithms:
    kex: tuple[str, ...]
    ciphers: tuple[str, ...]
    macs: tuple[str, ...]
    compression: tuple[str, ...] = ("none",)


def _available(wanted: tuple[str, ...], offered: list[bytes]) -> tuple[str, ...]:
    names = {alg.decode() for alg in offered}
    return tuple(alg for alg in wanted if alg in names)


def algorithms(*, allow_chacha20: bool = False) -> Algorithms:
    """The lists passed to ``asyncssh.listen``, limited to what this asyncssh supports."""
    ciphers = (_CHACHA, *_CIPHERS) if allow_chacha20 else _CIPHERS
    return Algorithms(
        kex=_available(_KEX, get_kex_algs()),
        ciphers=_available(ciphers, get_encryption_algs()),
        macs=_available(_MACS, get_mac_algs()),
    )
