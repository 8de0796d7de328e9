"""Break-glass codes: made with enough entropy, read back forgivingly but strictly, stored
only as keyed digests, used once (racing processes included), one batch in force."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from state_backends import Backend, race

from bastion.breakglass.codes import (
    CODE_ALPHABET,
    CODE_BITS,
    MAX_BATCH,
    code_digest,
    new_codes,
    normalize_code,
)
from bastion.enrolment import new_scratch_codes, normalize_scratch_code
from bastion.state.breakglass_codes import SqlBreakGlassCodes, SqliteBreakGlassCodes

KEY = b"k" * 32


def test_codes_carry_100_bits_from_an_unambiguous_alphabet() -> None:
    assert CODE_BITS == 100
    assert len(CODE_ALPHABET) == 32
    assert not set("ilou") & set(CODE_ALPHABET)
    codes = new_codes(MAX_BATCH)
    assert len(set(codes)) == MAX_BATCH
    for code in codes:
        groups = code.split("-")
        assert [len(g) for g in groups] == [5, 5, 5, 5]
        assert set("".join(groups)) <= set(CODE_ALPHABET)
        assert normalize_code(code) == code
    # Every character of the alphabet turns up (8,000 draws): nothing narrows the choice.
    seen = {ch for _ in range(20) for code in new_codes(MAX_BATCH) for ch in code}
    assert seen - {"-"} == set(CODE_ALPHABET)


@pytest.mark.parametrize("count", [0, MAX_BATCH + 1, -1])
def test_a_batch_has_1_to_20_codes(count: int) -> None:
    with pytest.raises(ValueError, match="1 to 20"):
        new_codes(count)


def test_what_is_typed_is_read_as_printed() -> None:
    code = "7k2mq-x9p4d-0a1bc-zz3yw"
    assert normalize_code(code.upper()) == code
    assert normalize_code(code.replace("-", "")) == code
    assert normalize_code(f"  {code}\t") == code
    assert normalize_code("7k2mq-x9p4d-Oa1bc-zz3yw") == code  # O read as 0
    assert normalize_code("7k2mq-x9p4d-0aIbc-zz3yw") == code  # I read as 1
    assert normalize_code("7k2mq-x9p4d-0albc-zz3yw") == code  # l read as 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "123456",  # a TOTP code
        "abcd-efgh-jkmn-pqrs",  # a scratch code's shape
        "7k2mq-x9p4d-0a1bc-zz3y",  # one short
        "7k2mq-x9p4d-0a1bc-zz3ywq",  # one long
        "7k2mq-x9p4d-0a1bc-zz3yu",  # u is not in the alphabet
        "\uff17k2mq-x9p4d-0a1bc-zz3yw",  # full-width digit
        "7k2mq x9p4d 0a1bc zz3yw",  # spaces between the groups
    ],
)
def test_anything_else_is_not_a_code(text: str) -> None:
    assert normalize_code(text) is None


def test_scratch_codes_and_break_glass_codes_never_pass_for_each_other() -> None:
    for scratch in new_scratch_codes(10):
        assert normalize_code(scratch) is None
    for code in new_codes(10):
        assert normalize_scratch_code(code) is None


@given(st.text(max_size=40))
def test_normalizing_is_idempotent_and_ascii_only(text: str) -> None:
    normalized = normalize_code(text)
    if normalized is not None:
        assert normalized.isascii()
        assert normalize_code(normalized) == normalized


def test_digests_are_keyed_and_per_user() -> None:
    code = new_codes(1)[0]
    digest = code_digest(KEY, "emergency", code)
    assert len(digest) == 64
    assert code_digest(b"o" * 32, "emergency", code) != digest
    assert code_digest(KEY, "other", code) != digest
    with pytest.raises(ValueError, match="normalize_code"):
        code_digest(KEY, "emergency", code.upper())
    with pytest.raises(ValueError, match="32 bytes"):
        code_digest(b"short", "emergency", code)


# ---------------------------------------------------------------------------- the store
def digests(codes: list[str], user: str = "emergency") -> list[str]:
    return [code_digest(KEY, user, c) for c in codes]


def open_store(backend: Backend) -> SqlBreakGlassCodes:
    target = backend.open("logins.db")
    if isinstance(target, Path):
        return SqliteBreakGlassCodes(target)
    return SqlBreakGlassCodes(target)


def test_each_code_works_once_and_a_new_batch_revokes_the_old(state_backend: Backend) -> None:
    store = open_store(state_backend)
    first = new_codes(3)
    assert store.issue("emergency", "b1", digests(first), now=100.0) == 0
    assert store.batch("emergency") is not None
    assert store.use("emergency", digests(first)[0], now=110.0, connection="c1")
    assert not store.use("emergency", digests(first)[0], now=111.0, connection="c2")
    assert not store.use("other", digests(first)[1], now=111.0, connection="c3")
    state = store.batch("emergency")
    assert state is not None
    assert (state.batch, state.issued, state.used, state.remaining) == ("b1", 3, 1, 2)

    second = new_codes(5)
    assert store.issue("emergency", "b2", digests(second), now=200.0) == 2  # two unused
    assert not store.use("emergency", digests(first)[1], now=210.0, connection="c4")
    assert store.use("emergency", digests(second)[4], now=220.0, connection="c5")
    state = store.batch("emergency")
    assert state is not None
    assert (state.batch, state.issued, state.used, state.remaining) == ("b2", 5, 1, 4)
    uses = store.uses("emergency")
    assert [(u.batch, u.used_at, u.connection) for u in uses] == [
        ("b1", 110.0, "c1"),
        ("b2", 220.0, "c5"),
    ]
    assert store.batch("nobody") is None
    store.close()


def test_issuing_is_all_or_nothing(state_backend: Backend) -> None:
    """The audit event is written inside the transaction: if it fails, nothing changed."""
    store = open_store(state_backend)
    old = new_codes(2)
    store.issue("emergency", "b1", digests(old), now=1.0)

    def audit_fails(revoked: int) -> None:
        assert revoked == 2
        raise OSError("the audit log is full")

    with pytest.raises(OSError, match="full"):
        store.issue("emergency", "b2", digests(new_codes(3)), now=2.0, before_commit=audit_fails)
    state = store.batch("emergency")
    assert state is not None
    assert (state.batch, state.remaining) == ("b1", 2)
    assert store.use("emergency", digests(old)[0], now=3.0, connection="c")
    store.close()


def test_no_code_is_stored_only_its_digest(tmp_path: Path) -> None:
    path = tmp_path / "logins.db"
    store = SqliteBreakGlassCodes(path)
    codes = new_codes(5)
    store.issue("emergency", "b1", digests(codes), now=1.0)
    store.close()
    assert path.stat().st_mode & 0o777 == 0o600
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for code in codes:
        assert code.encode() not in raw
        assert code.replace("-", "").encode() not in raw
    rows = sqlite3.connect(path).execute("SELECT digest FROM break_glass_codes").fetchall()
    assert {r[0] for r in rows} == set(digests(codes))


def test_read_only_inspection_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SqliteBreakGlassCodes(tmp_path / "none.db", read_only=True)
    assert not (tmp_path / "none.db").exists()
    sqlite3.connect(tmp_path / "old.db").execute("CREATE TABLE x (y)").connection.close()
    old = SqliteBreakGlassCodes(tmp_path / "old.db", read_only=True)  # before any code
    assert old.batch("emergency") is None
    assert old.uses("emergency") == []
    old.close()


def _burn(store: SqlBreakGlassCodes, round_: int) -> bool:
    codes = store_codes()
    return store.use("emergency", codes[round_], now=1.0, connection="racer")


def store_codes() -> list[str]:
    return [f"{i:064x}" for i in range(3)]


def test_racing_processes_burn_a_code_once(state_backend: Backend) -> None:
    store = open_store(state_backend)
    store.issue("emergency", "b1", store_codes(), now=0.0)
    store.close()
    rounds = race(state_backend, open_store, _burn, rounds=3)
    assert rounds == [[False, False, False, True]] * 3
    store = open_store(state_backend)
    state = store.batch("emergency")
    assert state is not None
    assert state.remaining == 0
    assert len(store.uses("emergency")) == 3
    store.close()


def _issue(store: SqlBreakGlassCodes, round_: int) -> int:
    batch = secrets.token_hex(4)
    return store.issue("emergency", batch, [f"{batch}-{i}" for i in range(2)], now=float(round_))


def test_batches_issued_at_once_leave_one_in_force(state_backend: Backend) -> None:
    """Each issue revokes what was in force before it: of four at once, whatever the order,
    exactly one batch's codes remain usable, and every code issued is accounted for."""
    rounds = race(state_backend, open_store, _issue, rounds=3)
    # The first issue of all revokes nothing; every later one revokes one whole batch (2).
    assert sorted(v for values in rounds for v in values) == [0] + [2] * 11
    store = open_store(state_backend)
    state = store.batch("emergency")
    assert state is not None
    assert (state.issued, state.remaining) == (2, 2)
    store.close()
