"""The sealed recording file: encrypted to the auditors, signed by the bastion. Pure.

A recording is written while the session runs, as numbered segments, so that a bastion that
dies loses at most the output it had not written yet, and whatever was written can still be
read and verified. The layout (integers big-endian)::

    magic    12 bytes  \\x89BASTREC\\r\\n\\x1a\\n  (a text-mode copy visibly breaks it)
    header   u32 length, the header (JSON, sorted keys), Ed25519 signature (64 bytes)
    segment  u64 number, u8 flags (1 = the final one), u32 ciphertext length,
             4-byte check of those 13 bytes, ciphertext, Ed25519 signature (64 bytes)
    ...      segments numbered 0, 1, 2, ...; the last one has the final flag

The header (in clear) names the recording and session, the time it was made, the cipher,
the fingerprints of the auditors' key and of the bastion's signing key, the signing public
key itself and the recording's ephemeral X25519 public key. It holds no names of users or
pods: a stolen disk shows that recordings exist, not whose.

**Encryption.** Each recording has its own ephemeral X25519 key; its agreement with the
auditors' public key, through HKDF-SHA256 (salt: both public keys; info: a label and the
header's SHA-256), gives an AES-256-GCM key. The ephemeral private key is dropped at once,
so only the auditors' private key can derive it again: the bastion cannot read what it
wrote. Segment *n* uses nonce *n* (96 bits) and, as associated data, the header record's
SHA-256, *n* and the flags: a segment moved elsewhere, renumbered, or marked final does not
decrypt.

**Signatures.** A running hash chains the header record and every segment's bytes
(``c0 = SHA-256(header record)``, ``cn+1 = SHA-256(cn || segment bytes)``); each segment
carries the bastion's Ed25519 signature of the chain up to and including itself. The final
segment's signature therefore covers the header and the hash of all segments, and a
recording whose writer died is still verified up to its last whole segment. An AEAD alone
would not do: the auditors' key can decrypt, so it could also forge.

Reading reports one of: complete and verified; **incomplete** (no final segment: the bastion
stopped before closing it, or the file was cut short; what is there is verified and shown);
or :class:`~bastion.recording.errors.RecordingInvalid` naming the segment and byte offset of
the first thing that does not verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

import orjson
import zstandard
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bastion.recording.errors import RecordingInvalid, WrongRecordingKey
from bastion.recording.keys import fingerprint, raw_public

__all__ = [
    "MAGIC",
    "SEGMENT_MAX",
    "SealedHeader",
    "SealedReader",
    "Sealer",
    "Verdict",
]

MAGIC: Final = b"\x89BASTREC\r\n\x1a\n"
FORMAT: Final = "bastion-recording"
VERSION: Final = 1
CIPHER: Final = "aes-256-gcm"
KDF: Final = "x25519-hkdf-sha256"
SEGMENT_MAX: Final = 1 << 20  # plaintext bytes in one segment
FINAL: Final = 0x01
# Plaintext is compressed before it is encrypted: one Zstandard frame (RFC 8878) per recording,
# level 1, its blocks flushed at the end of every segment, so a recording whose writer died
# still decompresses up to its last whole segment. Recordings written before this (no
# "compression" in the header) are read as they are.
ZSTD: Final = "zstd"
_ZSTD_LEVEL: Final = 1
# What zstd may add to a segment of SEGMENT_MAX bytes that does not compress (ZSTD_compressBound:
# n + n/256 + a frame header: about 4 KiB for 1 MiB), with room.
_ZSTD_SLACK: Final = 8 * 1024
# A decoder's window, at most: what the encoder at level 1 uses is far less.
_ZSTD_WINDOW_MAX: Final = 8 << 20

_HEADER_MAX: Final = 4096
_LENGTH = struct.Struct(">I")
_SEGMENT_HEAD = struct.Struct(">QBI")
_CHECK: Final = 4
_HEAD_SIZE: Final = _SEGMENT_HEAD.size + _CHECK
_TAG: Final = 16
_SIGNATURE: Final = 64
_DOMAIN_HEADER: Final = b"bastion-recording-v1 header\x00"
_DOMAIN_SEGMENT: Final = b"bastion-recording-v1 segment\x00"
_DOMAIN_KEY: Final = b"bastion-recording-v1 key\x00"


@dataclass(frozen=True)
class SealedHeader:
    recording_id: str
    session_id: str
    created: str  # RFC 3339, UTC
    auditor_key_id: str
    signer_key: bytes  # raw Ed25519 public key
    ephemeral_key: bytes  # raw X25519 public key
    cipher: str = CIPHER
    compression: str | None = ZSTD  # None: written before recordings were compressed

    @property
    def signer_key_id(self) -> str:
        return fingerprint(self.signer_key)

    def encode(self) -> bytes:
        compression = {} if self.compression is None else {"compression": self.compression}
        return orjson.dumps(
            {
                **compression,
                "format": FORMAT,
                "version": VERSION,
                "recording_id": self.recording_id,
                "session_id": self.session_id,
                "created": self.created,
                "cipher": self.cipher,
                "kdf": KDF,
                "auditor_key_id": self.auditor_key_id,
                "signer_key_id": self.signer_key_id,
                "signer_key": base64.b64encode(self.signer_key).decode(),
                "ephemeral_key": base64.b64encode(self.ephemeral_key).decode(),
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def decode(cls, data: bytes) -> SealedHeader:
        """ValueError saying what is wrong."""
        try:
            fields: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ValueError("its header is not JSON") from None
        if not isinstance(fields, dict) or fields.get("format") != FORMAT:
            raise ValueError("its header does not describe a bastion recording")
        if fields.get("version") != VERSION:
            raise ValueError(
                f"it is format version {fields.get('version')!r}; this bastion reads version "
                f"{VERSION} (use the bastion release that wrote it)"
            )
        if fields.get("cipher") != CIPHER or fields.get("kdf") != KDF:
            raise ValueError(f"it uses cipher {fields.get('cipher')!r}, not {CIPHER}")
        compression = fields.get("compression")
        if compression not in (None, ZSTD):
            raise ValueError(f"it uses compression {compression!r}, not {ZSTD}")
        try:
            header = cls(
                recording_id=_text(fields, "recording_id"),
                session_id=_text(fields, "session_id"),
                created=_text(fields, "created"),
                auditor_key_id=_text(fields, "auditor_key_id"),
                signer_key=base64.b64decode(_text(fields, "signer_key"), validate=True),
                ephemeral_key=base64.b64decode(_text(fields, "ephemeral_key"), validate=True),
                compression=compression,
            )
        except binascii.Error:
            raise ValueError("a key in its header is not valid base64") from None
        if len(header.signer_key) != 32 or len(header.ephemeral_key) != 32:
            raise ValueError("a key in its header is not 32 bytes long")
        if fields.get("signer_key_id") != header.signer_key_id:
            raise ValueError("its header's signing key does not match its fingerprint")
        return header


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"its header has no {name}")
    return value


def _derive_key(
    shared: bytes, header: SealedHeader, auditor_raw: bytes, header_json: bytes
) -> bytes:
    return HKDF(
        algorithm=SHA256(),
        length=32,
        salt=header.ephemeral_key + auditor_raw,
        info=_DOMAIN_KEY + hashlib.sha256(header_json).digest(),
    ).derive(shared)


def _nonce(number: int) -> bytes:
    return number.to_bytes(12, "big")


def _check(head: bytes) -> bytes:
    return hashlib.sha256(head).digest()[:_CHECK]


# ------------------------------------------------------------------------------ writing
class Sealer:
    """Turns one recording's plaintext, segment by segment, into the bytes of its file."""

    def __init__(
        self,
        *,
        recording_id: str,
        session_id: str,
        created: str,
        auditor_key: X25519PublicKey,
        signing_key: Ed25519PrivateKey,
        ephemeral_key: X25519PrivateKey | None = None,
        compress: bool = True,
    ) -> None:
        ephemeral = ephemeral_key or X25519PrivateKey.generate()
        auditor_raw = raw_public(auditor_key)
        self.header = SealedHeader(
            recording_id=recording_id,
            session_id=session_id,
            created=created,
            auditor_key_id=fingerprint(auditor_raw),
            signer_key=raw_public(signing_key.public_key()),
            ephemeral_key=raw_public(ephemeral.public_key()),
            compression=ZSTD if compress else None,
        )
        self._zstd = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compressobj() if compress else None
        header_json = self.header.encode()
        self._signing_key = signing_key
        self.header_record = (
            MAGIC
            + _LENGTH.pack(len(header_json))
            + header_json
            + signing_key.sign(_DOMAIN_HEADER + header_json)
        )
        key = _derive_key(ephemeral.exchange(auditor_key), self.header, auditor_raw, header_json)
        self._aead = AESGCM(key)
        self._anchor = hashlib.sha256(self.header_record).digest()
        self._chain = self._anchor
        self._number = 0
        self._closed = False

    @property
    def segments(self) -> int:
        return self._number

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def digest(self) -> str:
        """The chain hash so far; after the final segment, what its signature covers."""
        return f"sha256:{self._chain.hex()}"

    def seal(self, plaintext: bytes, *, final: bool = False) -> bytes:
        """The bytes of the next segment. After ``final=True`` nothing more can be sealed."""
        if self._closed:
            raise ValueError("the recording has been closed")
        if len(plaintext) > SEGMENT_MAX:
            raise ValueError(f"a segment holds at most {SEGMENT_MAX} bytes")
        number, flags = self._number, FINAL if final else 0
        aad = self._anchor + number.to_bytes(8, "big") + bytes([flags])
        if self._zstd is not None:
            end = zstandard.COMPRESSOBJ_FLUSH_FINISH if final else zstandard.COMPRESSOBJ_FLUSH_BLOCK
            plaintext = self._zstd.compress(plaintext) + self._zstd.flush(end)
        ciphertext = self._aead.encrypt(_nonce(number), plaintext, aad)
        head = _SEGMENT_HEAD.pack(number, flags, len(ciphertext))
        head += _check(head)
        # Hashed piece by piece: no copy of the ciphertext just to hash it.
        chain = hashlib.sha256(self._chain)
        chain.update(head)
        chain.update(ciphertext)
        self._chain = chain.digest()
        self._number += 1
        self._closed = final
        signature = self._signing_key.sign(_DOMAIN_SEGMENT + self._chain)
        return b"".join((head, ciphertext, signature))


# ------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class Verdict:
    complete: bool
    segments: int
    digest: str
    detail: str  # one sentence: what was verified, or what is missing

    @property
    def summary(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"{state}: {self.detail}"


class SealedReader:
    """Reads and verifies one sealed recording from a binary stream, front to back.

    The header is read and its signature checked on construction. :meth:`plaintext` yields
    the decrypted segments, each verified before it is yielded; :meth:`scan` verifies the
    signatures without decrypting (no key needed). Either sets :attr:`verdict` at the end.
    """

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self._stream = stream
        self.name = name
        self.verdict: Verdict | None = None
        magic = stream.read(len(MAGIC))
        if magic != MAGIC:
            raise RecordingInvalid(
                f"{name} is not a bastion recording (its first bytes are not the format's)",
                hint="give the path of a .rec file from the recordings directory",
            )
        length_bytes = stream.read(_LENGTH.size)
        (length,) = _LENGTH.unpack(length_bytes) if len(length_bytes) == _LENGTH.size else (-1,)
        if not 0 < length <= _HEADER_MAX:
            raise self._invalid("its header length is damaged", 0)
        header_json = stream.read(length)
        signature = stream.read(_SIGNATURE)
        if len(header_json) != length or len(signature) != _SIGNATURE:
            raise self._invalid("it ends inside its header", 0)
        try:
            self.header = SealedHeader.decode(header_json)
        except ValueError as exc:
            raise self._invalid(str(exc), len(MAGIC)) from None
        try:
            Ed25519PublicKey.from_public_bytes(self.header.signer_key).verify(
                signature, _DOMAIN_HEADER + header_json
            )
        except InvalidSignature:
            raise self._invalid("its header does not match its signature", len(MAGIC)) from None
        self._header_json = header_json
        self._record = MAGIC + length_bytes + header_json + signature
        self._offset = len(self._record)

    def _invalid(self, what: str, offset: int) -> RecordingInvalid:
        return RecordingInvalid(
            f"{self.name} failed verification at byte {offset}: {what}",
            hint="the file was damaged or altered after the bastion wrote it; do not trust "
            "its content, and keep it as evidence",
        )

    def check_signer(self, trusted: Collection[bytes]) -> None:
        """Refuse a recording not signed by one of ``trusted`` (raw Ed25519 public keys)."""
        if self.header.signer_key not in trusted:
            raise RecordingInvalid(
                f"{self.name} is signed by key {self.header.signer_key_id}, which is not the "
                "bastion signing key given",
                hint="pass the bastion's recording-signing.pub with --signer, or treat the "
                "recording as forged",
            )

    def plaintext(self, key: X25519PrivateKey) -> Iterator[bytes]:
        """Decrypted segments, each verified (signature, then AEAD) before it is yielded."""
        auditor_raw = raw_public(key.public_key())
        if fingerprint(auditor_raw) != self.header.auditor_key_id:
            raise WrongRecordingKey(
                f"{self.name} is encrypted to auditor key {self.header.auditor_key_id}, and "
                f"the key given is {fingerprint(auditor_raw)}",
                hint="use the auditors' private key that was configured when the recording "
                "was made (the fingerprint says which)",
            )
        try:
            shared = key.exchange(X25519PublicKey.from_public_bytes(self.header.ephemeral_key))
        except ValueError:
            raise self._invalid("its ephemeral key is not a usable X25519 key", 0) from None
        aead = AESGCM(_derive_key(shared, self.header, auditor_raw, self._header_json))
        anchor = hashlib.sha256(self._record).digest()
        unzstd = (
            zstandard.ZstdDecompressor(max_window_size=_ZSTD_WINDOW_MAX).decompressobj()
            if self.header.compression == ZSTD
            else None
        )
        for number, flags, ciphertext, offset in self._segments():
            aad = anchor + number.to_bytes(8, "big") + bytes([flags])
            try:
                plaintext = aead.decrypt(_nonce(number), ciphertext, aad)
            except InvalidTag:
                raise self._invalid(
                    f"segment {number} does not decrypt (altered, or sealed with another key)",
                    offset,
                ) from None
            if unzstd is not None:
                try:
                    plaintext = unzstd.decompress(plaintext)
                except zstandard.ZstdError:
                    # Signed and authenticated, yet not zstd: written by something else.
                    raise self._invalid(f"segment {number} does not decompress", offset) from None
                if len(plaintext) > SEGMENT_MAX:
                    raise self._invalid(f"segment {number} decompresses past 1 MiB", offset)
            yield plaintext

    def scan(self) -> Verdict:
        """Verify every signature and the structure, without decrypting."""
        for _ in self._segments():
            pass
        verdict = self.verdict
        if verdict is None:  # _segments always sets it before it ends
            raise RuntimeError("the recording was not read to its end")
        return verdict

    def _segments(self) -> Iterator[tuple[int, int, bytes, int]]:
        signer = Ed25519PublicKey.from_public_bytes(self.header.signer_key)
        chain = hashlib.sha256(self._record).digest()
        number = 0
        stream = self._stream
        while True:
            offset = self._offset
            head = stream.read(_HEAD_SIZE)
            if not head:
                self._end(complete=False, number=number, chain=chain, detail=None)
                return
            if len(head) < _HEAD_SIZE:
                self._end(complete=False, number=number, chain=chain, detail=offset)
                return
            if _check(head[: _SEGMENT_HEAD.size]) != head[_SEGMENT_HEAD.size :]:
                raise self._invalid(f"the head of segment {number} is damaged", offset)
            seen, flags, length = _SEGMENT_HEAD.unpack(head[: _SEGMENT_HEAD.size])
            if seen != number:
                raise self._invalid(
                    f"segment {seen} is where segment {number} should be (segments were "
                    "removed, repeated or reordered)",
                    offset,
                )
            if flags not in (0, FINAL) or not _TAG <= length <= SEGMENT_MAX + _ZSTD_SLACK + _TAG:
                raise self._invalid(f"segment {number} has an impossible flag or length", offset)
            ciphertext = stream.read(length)
            signature = stream.read(_SIGNATURE)
            if len(ciphertext) != length or len(signature) != _SIGNATURE:
                self._end(complete=False, number=number, chain=chain, detail=offset)
                return
            hashed = hashlib.sha256(chain)
            hashed.update(head)
            hashed.update(ciphertext)
            chain = hashed.digest()
            try:
                signer.verify(signature, _DOMAIN_SEGMENT + chain)
            except InvalidSignature:
                raise self._invalid(
                    f"segment {number} does not match the bastion's signature", offset
                ) from None
            self._offset = offset + _HEAD_SIZE + length + _SIGNATURE
            yield number, flags, ciphertext, offset
            number += 1
            if flags & FINAL:
                if stream.read(1):
                    raise self._invalid("there are bytes after the final segment", self._offset)
                self._end(complete=True, number=number, chain=chain, detail=None)
                return

    def _end(self, *, complete: bool, number: int, chain: bytes, detail: int | None) -> None:
        signer = self.header.signer_key_id
        if complete:
            text = f"{number} segments, signed by {signer}"
        elif detail is None:
            text = (
                f"the bastion stopped before closing it (or the file was cut short); the "
                f"{number} segments there are verified, signed by {signer}"
            )
        else:
            text = (
                f"it ends inside segment {number} at byte {detail} (the bastion stopped while "
                f"writing it, or the file was cut short); the {number} segments before it are "
                f"verified, signed by {signer}"
            )
        self.verdict = Verdict(complete, number, f"sha256:{chain.hex()}", text)
