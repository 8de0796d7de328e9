"""The sealed file: round trip, and every alteration, cut or wrong key is caught and said."""

from __future__ import annotations

import hashlib
import io
import itertools

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.recording import sealed
from bastion.recording.errors import RecordingInvalid, WrongRecordingKey
from bastion.recording.keys import fingerprint, raw_public
from bastion.recording.sealed import SEGMENT_MAX, SealedReader, Sealer

AUDITOR = X25519PrivateKey.generate()
SIGNER = Ed25519PrivateKey.generate()
SEGMENTS = [b'{"version": 2}\n', b'[0.1, "o", "secret-free output"]\n', b""]


def make(
    segments: list[bytes] = SEGMENTS, *, close: bool = True, compress: bool = True
) -> tuple[bytes, Sealer]:
    sealer = Sealer(
        recording_id="0123456789abcdef",
        session_id="fedcba9876543210",
        created="2026-11-28T10:00:00Z",
        auditor_key=AUDITOR.public_key(),
        signing_key=SIGNER,
        compress=compress,
    )
    data = sealer.header_record
    for i, segment in enumerate(segments):
        data += sealer.seal(segment, final=close and i == len(segments) - 1)
    return data, sealer


def read(data: bytes, key: X25519PrivateKey = AUDITOR) -> tuple[bytes, SealedReader]:
    reader = SealedReader(io.BytesIO(data), "rec")
    return b"".join(reader.plaintext(key)), reader


def test_round_trip_and_the_verdict() -> None:
    data, sealer = make()
    plain, reader = read(data)
    assert plain == b"".join(SEGMENTS)
    assert reader.verdict is not None
    assert reader.verdict.complete
    assert reader.verdict.segments == 3
    assert reader.verdict.digest == sealer.digest
    assert reader.verdict.summary == (
        f"complete: 3 segments, signed by {fingerprint(raw_public(SIGNER.public_key()))}"
    )
    assert reader.header.session_id == "fedcba9876543210"
    assert reader.header.auditor_key_id == fingerprint(raw_public(AUDITOR.public_key()))


def test_the_header_in_clear_names_no_user_pod_or_content() -> None:
    data, _ = make([b"alice on prod-eu/payments/api-1 hunter2\n"])
    for word in (b"alice", b"payments", b"hunter2"):
        assert word not in data
    assert b"fedcba9876543210" in data  # the session id: what the audit log is searched by


def test_each_recording_has_its_own_key() -> None:
    one, _ = make()
    two, _ = make()
    assert SealedReader(io.BytesIO(one), "a").header.ephemeral_key != (
        SealedReader(io.BytesIO(two), "b").header.ephemeral_key
    )


def test_every_single_altered_byte_is_rejected() -> None:
    data, _ = make()
    for i in range(len(data)):
        altered = bytearray(data)
        altered[i] ^= 0x01
        with pytest.raises(RecordingInvalid) as caught:
            read(bytes(altered))
        assert "rec" in caught.value.message, i
        assert caught.value.hint, i


@pytest.mark.parametrize(
    ("flip_at", "says"),
    [
        (0, "is not a bastion recording"),
        (len(sealed.MAGIC) + 10, "header"),
        (-1, "segment 2 does not match the bastion's signature"),
        (-80, "segment 2 does not match the bastion's signature"),
    ],
)
def test_messages_say_where(flip_at: int, says: str) -> None:
    data = bytearray(make()[0])
    data[flip_at] ^= 0x01
    with pytest.raises(RecordingInvalid, match=says):
        read(bytes(data))


def test_a_cut_file_reads_as_incomplete_and_shows_the_whole_segments_before_the_cut() -> None:
    data, _ = make()
    header_end = len(make()[1].header_record)
    reader = SealedReader(io.BytesIO(data), "rec")
    # Where each segment record ends: where the reader is after it.
    ends = [reader._offset for _ in reader.plaintext(AUDITOR)]
    for size in range(len(data)):
        cut = data[:size]
        if size < header_end:
            with pytest.raises(RecordingInvalid):
                read(cut)
            continue
        plain, reader = read(cut)
        whole = sum(1 for end in ends if end <= size)
        assert plain == b"".join(SEGMENTS[:whole]), size
        assert reader.verdict is not None
        assert not reader.verdict.complete
        assert reader.verdict.segments == whole
        assert "incomplete: " in reader.verdict.summary
        if size in (header_end, *ends):
            assert "the bastion stopped before closing it" in reader.verdict.summary
        else:
            assert f"ends inside segment {whole}" in reader.verdict.summary


def test_a_recording_whose_writer_died_is_verified_up_to_its_last_segment() -> None:
    data, sealer = make([b"one\n", b"two\n"], close=False)
    plain, reader = read(data)
    assert plain == b"one\ntwo\n"
    assert reader.verdict is not None
    assert reader.verdict.summary.startswith(
        "incomplete: the bastion stopped before closing it (or the file was cut short); the "
        "2 segments there are verified"
    )
    assert reader.verdict.digest == sealer.digest


def segment_records(data: bytes) -> tuple[bytes, list[bytes]]:
    reader = SealedReader(io.BytesIO(data), "rec")
    start = reader._offset
    edges = [start, *(reader._offset for _ in reader._segments())]
    return data[:start], [data[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize(
    "rearrange",
    [
        lambda s: [s[1], s[0], s[2]],  # reordered
        lambda s: [s[0], s[2]],  # one removed
        lambda s: [s[0], s[0], s[1], s[2]],  # one repeated
    ],
)
def test_reordered_removed_or_repeated_segments_are_rejected(rearrange: object) -> None:
    head, records = segment_records(make()[0])
    altered = head + b"".join(rearrange(records))  # type: ignore[operator]
    with pytest.raises(RecordingInvalid, match="should be"):
        read(altered)


def test_a_segment_from_another_recording_is_rejected() -> None:
    head, records = segment_records(make()[0])
    _, others = segment_records(make()[0])
    with pytest.raises(RecordingInvalid, match="segment 1 does not match"):
        read(head + records[0] + others[1] + records[2])


def test_bytes_after_the_final_segment_are_rejected() -> None:
    with pytest.raises(RecordingInvalid, match="bytes after the final segment"):
        read(make()[0] + b"\n")


def test_an_auditor_cannot_forge_content() -> None:
    """The auditors' key decrypts, so it could re-encrypt: the bastion's signature stops it."""
    data, _ = make()
    head, records = segment_records(data)
    reader = SealedReader(io.BytesIO(data), "rec")
    header_json = head[len(sealed.MAGIC) + 4 : -64]
    shared = AUDITOR.exchange(X25519PublicKey.from_public_bytes(reader.header.ephemeral_key))
    key = sealed._derive_key(shared, reader.header, raw_public(AUDITOR.public_key()), header_json)
    anchor = hashlib.sha256(head).digest()
    aad = anchor + (1).to_bytes(8, "big") + b"\x00"  # what the reader checks segment 1 with
    forged = AESGCM(key).encrypt((1).to_bytes(12, "big"), b"forged\n", aad)
    seg_head = sealed._SEGMENT_HEAD.pack(1, 0, len(forged))
    record = seg_head + sealed._check(seg_head) + forged + records[1][-64:]
    with pytest.raises(RecordingInvalid, match="segment 1 does not match the bastion's signature"):
        read(head + records[0] + record + records[2])


def test_the_wrong_key_is_named_with_both_fingerprints() -> None:
    other = X25519PrivateKey.generate()
    with pytest.raises(WrongRecordingKey) as caught:
        read(make()[0], other)
    assert fingerprint(raw_public(AUDITOR.public_key())) in caught.value.message
    assert fingerprint(raw_public(other.public_key())) in caught.value.message


def test_a_recording_signed_by_another_key_is_refused_when_the_signer_is_pinned() -> None:
    reader = SealedReader(io.BytesIO(make()[0]), "rec")
    reader.check_signer({raw_public(SIGNER.public_key())})
    with pytest.raises(RecordingInvalid, match="not the bastion signing key given"):
        reader.check_signer({raw_public(Ed25519PrivateKey.generate().public_key())})


def test_scan_verifies_without_the_key() -> None:
    reader = SealedReader(io.BytesIO(make()[0]), "rec")
    assert reader.scan().complete


def test_segments_are_bounded_and_nothing_follows_the_final_one() -> None:
    sealer = make([], close=False)[1]
    with pytest.raises(ValueError, match="at most"):
        sealer.seal(b"x" * (SEGMENT_MAX + 1))
    sealer.seal(b"", final=True)
    with pytest.raises(ValueError, match="closed"):
        sealer.seal(b"more")


def test_plaintext_is_compressed_before_it_is_sealed() -> None:
    # A NUL byte is six in asciicast's JSON; compressed, a burst of them costs next to nothing.
    burst = b'[0.5, "o", "' + b"\\u0000" * 100_000 + b'"]\n'
    data, _ = make([burst, burst, b""])
    assert len(data) < len(burst) // 50
    plain, reader = read(data)
    assert plain == burst + burst
    assert reader.header.compression == sealed.ZSTD


def test_a_recording_cut_short_decompresses_up_to_its_last_whole_segment() -> None:
    lines = [b'[%d, "o", "line %d"]\n' % (i, i) for i in range(3)]
    data, _ = make(lines, close=False)
    _, records = segment_records(data)
    cut = data[: -len(records[-1]) + 10]  # into the last segment
    plain, reader = read(cut)
    assert plain == lines[0] + lines[1]
    assert reader.verdict is not None
    assert not reader.verdict.complete


def test_recordings_written_before_compression_still_read() -> None:
    data, sealer = make(compress=False)
    assert b"compression" not in data[: len(sealer.header_record)]
    assert SEGMENTS[1] not in data  # encrypted all the same
    plain, reader = read(data)
    assert plain == b"".join(SEGMENTS)
    assert reader.header.compression is None
    assert reader.verdict is not None
    assert reader.verdict.complete


def test_an_unknown_compression_is_refused_by_name() -> None:
    header = sealed.SealedHeader(
        recording_id="r",
        session_id="s",
        created="2026-11-28T10:00:00Z",
        auditor_key_id="k",
        signer_key=b"\x01" * 32,
        ephemeral_key=b"\x02" * 32,
        compression="lz4",
    )
    with pytest.raises(ValueError, match="it uses compression 'lz4', not zstd"):
        sealed.SealedHeader.decode(header.encode())
