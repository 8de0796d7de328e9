"""The key registry's records (pure) and its file: rotations followed to the end, a damaged
file refused with a sentence, written whole and private."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import BastionError
from bastion.keys.model import KeyKind, KeyRecord, KeyState, Registry, RegistryError, format_age
from bastion.keys.registry import KeyStore

RECIPIENT = KeyKind.RECORDING_RECIPIENT


def record(fingerprint: str, **changes: object) -> KeyRecord:
    base = KeyRecord(RECIPIENT, fingerprint, f"x25519:{fingerprint}", "x25519", 100.0)
    return KeyRecord(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_a_key_is_followed_through_every_rotation_since() -> None:
    registry = Registry.of_records([record("a"), record("b"), record("c")])
    registry = registry.retire(RECIPIENT, "a", at=200.0, replaced_by="b")
    registry = registry.retire(RECIPIENT, "b", at=300.0, replaced_by="c", compromised=True)
    assert registry.successor(RECIPIENT, "a") == record("c")
    assert registry.successor(RECIPIENT, "c") is None
    assert registry.successor(RECIPIENT, "unknown") is None
    retired = registry.find(RECIPIENT, "b")
    assert retired is not None
    assert (retired.state, retired.retired_at, retired.compromised) == (
        KeyState.RETIRED,
        300.0,
        True,
    )
    assert Registry.decode(registry.encode()) == registry


def test_rotations_in_a_circle_are_refused_not_followed_forever() -> None:
    registry = Registry.of_records([record("a", replaced_by="b"), record("b", replaced_by="a")])
    with pytest.raises(RegistryError, match="go round in a circle"):
        registry.successor(RECIPIENT, "a")


def test_adopt_keeps_what_is_known() -> None:
    known = record("a", created=1.0)
    registry = Registry.of_records([known]).adopt(record("a", created=999.0))
    assert registry.keys == (known,)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{", "not JSON"),
        (b'{"version": 2, "keys": []}', "not a version 1 key registry"),
        (b'{"version": 1, "keys": {}}', "'keys' is not a list of records"),
        (b'{"version": 1, "keys": [{"kind": "host"}]}', "a key record is malformed"),
        (
            b'{"version": 1, "keys": [{"kind": "door", "fingerprint": "f", "public": "p", '
            b'"algorithm": "a", "created": 1}]}',
            "a key record is malformed",
        ),
    ],
)
def test_a_damaged_registry_is_refused(tmp_path: Path, raw: bytes, problem: str) -> None:
    store = KeyStore(tmp_path)
    store.directory.mkdir()
    store.path.write_bytes(raw)
    with pytest.raises(BastionError, match=f"the key registry .* is damaged: {problem}"):
        store.read()


def test_the_registry_is_private_and_written_only_under_its_lock(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    with pytest.raises(RuntimeError, match="only under its lock"):
        store.write(Registry())
    with store.locked():
        store.write(Registry.of_records([record("a")]))
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert store.directory.stat().st_mode & 0o777 == 0o700
    assert store.read().keys == (record("a"),)
    assert list(store.directory.glob(".registry.*")) == []


def test_ages_read_as_the_largest_whole_unit() -> None:
    assert [format_age(s) for s in (5, 90, 7200, 3 * 86400 + 5)] == ["5s", "1m", "2h", "3d"]
