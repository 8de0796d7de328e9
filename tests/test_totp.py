"""TOTP: RFC 6238 vectors, Debian's oathtool agreeing, replay guard, malformed input, back-off."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.totp import (
    Outcome,
    code_at,
    decode_secret,
    hotp,
    lockout,
    time_step,
    verify,
)

SPECS = Path(__file__).resolve().parents[2] / "shared" / "specs"
SECRET = bytes(range(20))
NOW = 1_795_000_000.0


def vectors() -> list[tuple[int, str, str, bytes]]:
    data = json.loads((SPECS / "rfc6238-totp-test-vectors.json").read_text())
    seeds = {mode: bytes.fromhex(seed["hex"]) for mode, seed in data["seeds"].items()}
    return [(v["time"], v["mode"], v["totp"], seeds[v["mode"]]) for v in data["vectors"]]


@pytest.mark.parametrize(("time", "mode", "code", "seed"), vectors())
def test_rfc6238_vectors(time: int, mode: str, code: str, seed: bytes) -> None:
    assert code_at(seed, time, digits=8, algorithm=mode) == code


def test_codes_agree_with_oathtool() -> None:
    for _ in range(5):
        secret_b32 = base64.b32encode(secrets.token_bytes(20)).decode()
        moment = secrets.randbelow(2_000_000_000)
        printed = subprocess.run(
            ["oathtool", "--totp", "-b", "-N", f"@{moment}", secret_b32],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert code_at(decode_secret(secret_b32), moment) == printed


def test_accepts_current_and_adjacent_steps_once() -> None:
    for offset in (-30, 0, 30):
        code = code_at(SECRET, NOW + offset)
        result = verify(SECRET, code, NOW, None)
        assert result.accepted
        assert result.step == time_step(NOW + offset)
    assert verify(SECRET, code_at(SECRET, NOW + 60), NOW, None).outcome is Outcome.WRONG
    assert verify(SECRET, code_at(SECRET, NOW - 60), NOW, None).outcome is Outcome.WRONG


def test_each_step_is_accepted_at_most_once() -> None:
    code = code_at(SECRET, NOW)
    first = verify(SECRET, code, NOW, None)
    assert first.accepted
    again = verify(SECRET, code, NOW + 5, first.step)
    assert again.outcome is Outcome.REPLAYED
    assert again.counts_as_failure
    # An older step's code is a replay too, once a later step has been used.
    older = code_at(SECRET, NOW - 30)
    assert verify(SECRET, older, NOW, first.step).outcome is Outcome.REPLAYED
    assert verify(SECRET, code_at(SECRET, NOW + 30), NOW + 30, first.step).accepted


@pytest.mark.parametrize(
    "code",
    [
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        "12345",
        "1234567",
        "123 456",
        " 123456",
        "12345a",
        "",
        "\u0660\u0661\u0662\u0663\u0664\u0665",
    ],
)
def test_malformed_codes_consume_nothing(code: str) -> None:
    result = verify(SECRET, code, NOW, None)
    assert result.outcome is Outcome.MALFORMED
    assert not result.counts_as_failure
    assert result.step is None


def test_full_width_form_of_the_right_code_is_refused() -> None:
    code = code_at(SECRET, NOW)
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in code)
    assert verify(SECRET, full_width, NOW, None).outcome is Outcome.MALFORMED


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_no_step_is_ever_accepted_twice(first: int, second: int) -> None:
    earlier, later = sorted((first, second))
    code = hotp(SECRET, earlier)
    accepted = verify(SECRET, code, earlier * 30.0, None)
    assert accepted.step == earlier
    replay = verify(SECRET, code, earlier * 30.0, later)
    assert not replay.accepted


def test_secrets_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="has 80 bits; at least 160 are required"):
        decode_secret("JBSWY3DPEHPK3PXP")
    with pytest.raises(ValueError, match="not valid base32"):
        decode_secret("not base32!")


def test_backoff_then_hard_lock() -> None:
    assert not lockout(4, NOW, NOW).locked
    five = lockout(5, NOW, NOW + 10)
    assert five.locked
    assert five.message() == "too many failed logins: try again in 21 s"
    assert not lockout(5, NOW, NOW + 31).locked
    assert lockout(7, NOW, NOW + 100).seconds_left == pytest.approx(20)  # 120 s after 7
    hard = lockout(20, NOW, NOW + 10**6)
    assert hard.locked
    assert hard.hard
    assert hard.message() == "account locked after too many failed logins: ask an administrator"
