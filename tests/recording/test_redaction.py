"""The streaming redactor: secrets never reach a recording, however the output is chunked."""

from __future__ import annotations

import base64
import itertools
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bastion.recording.redaction import (
    MAX_HOLD,
    MIN_KNOWN_SECRET,
    PRIVATE_KEY_MAX,
    TAIL,
    StreamRedactor,
    final_pattern,
)

JWT = (
    b"eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0"
    b".c2lnbmF0dXJlLWJ5dGVz"
)
PEM_BODY = b"MIIEowIBAAKCAQEAxQ7vZc1e2m\r\nWjCfwqF0n5pY+3rX/z9yQ==\r\n"
PEM = b"-----BEGIN RSA PRIVATE KEY-----\r\n" + PEM_BODY + b"-----END RSA PRIVATE KEY-----"
VAULT = b"hvs.CAESIJ4x9yGZk2lYh0aBcDeFgHiJkLmNoPq"
LEASE = "kubernetes/creds/debug/AbCdEf0123456789"
LABELS = {
    "known": "session-secret",
    "pem": "private-key",
    "pem_cut_run": "private-key",
    "jwt_run": "jwt",
    "vault_run": "vault-token",
    "vault_legacy_edge": "vault-token",
    "aws_key_edge": "aws-key",
    "aws_secret": "aws-secret-key",
    "assignment": "assignment",
}


def reference(data: bytes, secrets: list[str] = ()) -> bytes:  # type: ignore[assignment]
    """One left-to-right pass of the defining pattern over the whole stream."""
    out: list[bytes] = []
    last = 0
    for m in final_pattern(secrets).finditer(data):
        name = m.lastgroup or ""
        out.append(data[last : m.start()])
        if name in ("assignment", "aws_secret"):
            out.append(m.group(f"{name}_lead"))
        out.append(b"[REDACTED:%s]" % LABELS[name].encode())
        last = m.end()
    out.append(data[last:])
    return b"".join(out)


def streamed(chunks: list[bytes], secrets: list[str] = ()) -> bytes:  # type: ignore[assignment]
    redactor = StreamRedactor(secrets)
    return b"".join(redactor.feed(c) for c in chunks) + redactor.flush()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"token: " + JWT + b" ok", b"token: [REDACTED:assignment] ok"),
        (b"Bearer " + JWT + b"\r\n", b"Bearer [REDACTED:jwt]\r\n"),
        (b"x " + PEM + b"\r\n$ ", b"x [REDACTED:private-key]\r\n$ "),
        (b"VAULT " + VAULT + b" end", b"VAULT [REDACTED:vault-token] end"),
        (b"old s.AbCdEfGhIjKlMnOpQrStUvWx end", b"old [REDACTED:vault-token] end"),
        (b"notes.AbCdEfGhIjKlMnOpQrStUvWx", b"notes.AbCdEfGhIjKlMnOpQrStUvWx"),
        (b"id AKIAIOSFODNN7EXAMPLE used", b"id [REDACTED:aws-key] used"),
        (
            b"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\r\n",
            b"aws_secret_access_key = [REDACTED:aws-secret-key]\r\n",
        ),
        (b"DB_PASSWORD=hunter2 next", b"DB_PASSWORD=[REDACTED:assignment] next"),
        (b'{"password": "a b c", "n": 1}', b'{"password": [REDACTED:assignment], "n": 1}'),
        (b"export API_KEY='x y'\r\n", b"export API_KEY=[REDACTED:assignment]\r\n"),
        (b"api_key=\x1b[31mhunter2\x1b[0m", b"api_key=[REDACTED:assignment]\x1b[0m"),
        (b"passphrase: correct horse", b"passphrase: [REDACTED:assignment] horse"),
        (b"curl '/x?token=abc123&page=2'", b"curl '/x?token=[REDACTED:assignment]&page=2'"),
        # Words that merely contain a keyword are left alone.
        (b"passed: 5, tokens: 9, monkey=3, KEY=v", b"passed: 5, tokens: 9, monkey=3, KEY=v"),
        (b"kubectl get secrets\r\nSecretName:  db", b"kubectl get secrets\r\nSecretName:  db"),
        (b"plain output \xc3\xa9\r\n", b"plain output \xc3\xa9\r\n"),
    ],
)
def test_each_kind_is_replaced(text: bytes, expected: bytes) -> None:
    assert streamed([text]) == expected
    assert reference(text) == expected


def test_known_secrets_and_their_base64_form() -> None:
    b64 = base64.b64encode(LEASE.encode())
    text = b"lease " + LEASE.encode() + b" data: " + b64 + b"\r\n"
    assert streamed([text], [LEASE]) == (
        b"lease [REDACTED:session-secret] data: [REDACTED:session-secret]\r\n"
    )


def test_short_known_secrets_are_ignored() -> None:
    assert streamed([b"admin true admin"], ["admin", "true"]) == b"admin true admin"
    assert MIN_KNOWN_SECRET == 6


def test_a_secret_added_later_applies_from_then_on_including_what_is_held() -> None:
    redactor = StreamRedactor()
    out = redactor.feed(b"before " + LEASE.encode() + b"\r\nand then pass")
    assert redactor.held == len(b"pass")  # could be the start of "password="
    redactor.add_secret("passage-of-time")
    out += redactor.feed(b"age-of-time " + LEASE.encode()) + redactor.flush()
    assert out == b"before " + LEASE.encode() + b"\r\nand then [REDACTED:session-secret] " + (
        LEASE.encode()
    )
    redactor.add_secret(LEASE)
    assert redactor.feed(LEASE.encode() + b" ") == b"[REDACTED:session-secret] "


# ------------------------------------------------------------------ split at every point
PLANTED = [
    (JWT, []),
    (PEM, []),
    (VAULT, []),
    (b"s.AbCdEfGhIjKlMnOpQrStUvWx", []),
    (b"AKIAIOSFODNN7EXAMPLE", []),
    (b"aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", []),
    (b"password=hunter2hunter2", []),
    (b'"client_secret": "p4ss w0rd"', []),
    (b"x-api-key-v2-id: k3y-value-0001", []),
    (LEASE.encode(), [LEASE]),
    (base64.b64encode(LEASE.encode()), [LEASE]),
]


def secret_part(planted: bytes) -> bytes:
    """The part of a planted line that must never be seen."""
    for sep in (b"=", b": "):
        if sep in planted and not planted.startswith(b"-----"):
            return planted.split(sep, 1)[1].strip(b'"')
    return planted


@pytest.mark.parametrize(("planted", "secrets"), PLANTED)
def test_a_planted_secret_split_at_every_point_never_survives(
    planted: bytes, secrets: list[str]
) -> None:
    text = b"$ cat file\r\nx " + planted + b"\r\nalice@pod:~$ "
    want = reference(text, secrets)
    assert secret_part(planted) not in want
    for cut in range(len(text) + 1):
        assert streamed([text[:cut], text[cut:]], secrets) == want, cut
    # And byte by byte, the worst case for the hold-back.
    assert streamed([text[i : i + 1] for i in range(len(text))], secrets) == want


FRAGMENTS = st.sampled_from(
    [
        b"password", b"PASSWORD", b"pass", b"pwd", b"passphrase", b"token", b"secret", b"api_",
        b"key", b"KEY", b"credentials", b"aws_secret_access_key", b"=", b": ", b":", b" ", b"\t",
        b"\"", b"'", b"\r\n", b"\n", b",", b"&", b"_x", b"-",
        b"eyJ", b"eyJhbGciOiJIUzI1", b"eyJzdWIiOiIxMjM0", b".", b"c2lnbmF0dXJl",
        b"hvs.", b"hvb.", b"s.", b"b.", b"AbCdEfGhIjKlMnOpQrStUvWx", b"CAESIJ4x9yGZk2lYh0aB",
        b"AKIA", b"ASIA", b"IOSFODNN7EXAMPLE", b"0123", b"A",
        b"-----BEGIN RSA PRIVATE KEY-----", b"-----END RSA PRIVATE KEY-----", b"-----BEGIN ",
        b"PRIVATE KEY-----", b"-----", b"MIIE+/=", b"\\n", b"abc", b"\x1b[31m", b"\x1b[0m",
        b"\xc3\xa9", b"@pod:~$ ", LEASE.encode()[:12], LEASE.encode()[12:], b"ey", b"hv", b"AK",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(FRAGMENTS, max_size=24).map(b"".join),
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    st.booleans(),
)
@example(b"x -----BEGIN", [12], False)
def test_chunking_never_changes_the_result(data: bytes, cuts: list[int], known: bool) -> None:
    secrets = [LEASE] if known else []
    assert streamed(split(data, cuts), secrets) == reference(data, secrets)


@settings(max_examples=150, deadline=None)
@given(st.lists(FRAGMENTS, max_size=16).map(b"".join))
def test_byte_by_byte_is_the_same_as_at_once(data: bytes) -> None:
    assert streamed([data[i : i + 1] for i in range(len(data))], [LEASE]) == reference(
        data, [LEASE]
    )


tokens = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
around = st.text(alphabet=" \r\nabcxyz:=$#@/.-_", max_size=20).map(str.encode)


@st.composite
def planted_secret(draw: st.DrawFn) -> tuple[bytes, bytes, list[str]]:
    """A random secret of one kind: (the text shown, the part that must not appear, known)."""
    kind = draw(st.sampled_from(["jwt", "vault", "aws", "assignment", "known", "pem"]))
    if kind == "jwt":
        parts = [draw(tokens.filter(lambda s: len(s) >= 8)) for _ in range(3)]
        body = f"eyJ{parts[0]}.eyJ{parts[1]}.{parts[2]}".encode()
        return body, body, []
    if kind == "vault":
        body = ("hvs." + draw(tokens.filter(lambda s: len(s) >= 20))).encode()
        return body, body, []
    if kind == "aws":
        body = (
            "AKIA"
            + draw(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=16))
        ).encode()
        return body, body, []
    if kind == "known":
        value = draw(tokens.filter(lambda s: len(s) >= 12))
        return value.encode(), value.encode(), [value]
    if kind == "pem":
        lines = draw(st.lists(tokens.filter(lambda s: len(s) >= 16), min_size=1, max_size=4))
        body = "\r\n".join(lines).encode()
        block = b"-----BEGIN PRIVATE KEY-----\r\n" + body + b"\r\n-----END PRIVATE KEY-----"
        return block, body, []
    name = draw(st.sampled_from(["password", "DB_PASSWORD", "token", "client_secret"]))
    value = draw(tokens.filter(lambda s: len(s) >= 12))
    sep = draw(st.sampled_from(["=", ": ", '": "']))
    return f"{name}{sep}{value}".encode(), value.encode(), []


@settings(max_examples=200, deadline=None)
@given(planted_secret(), around, around, st.randoms(use_true_random=False))
def test_a_planted_secret_never_appears_whatever_the_chunking(
    planted: tuple[bytes, bytes, list[str]], before: bytes, after: bytes, rnd: random.Random
) -> None:
    shown, secret, known = planted
    # A separator each side: "AKIA...X" followed by a letter is not a key id at all.
    text = before + b" " + shown + b"\r\n" + after
    cuts = [rnd.randrange(len(text) + 1) for _ in range(rnd.randrange(1, 6))]
    out = streamed(split(text, cuts), known)
    assert secret not in out
    assert out == reference(text, known)


# ------------------------------------------------------------------ bounded hold
def test_a_private_key_without_end_is_redacted_after_the_limit() -> None:
    body = (b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\r\n") * (PRIVATE_KEY_MAX // 38 + 50)
    text = b"-----BEGIN EC PRIVATE KEY-----\r\n" + body + b"@pod:~$ ls\r\n"
    redactor = StreamRedactor()
    out = b""
    for i in range(0, len(text), 4096):
        out += redactor.feed(text[i : i + 4096])
        assert redactor.held <= PRIVATE_KEY_MAX + 4096 + 200
    out += redactor.flush()
    assert out == b"[REDACTED:private-key]@pod:~$ ls\r\n"


def test_a_private_key_cut_short_by_the_end_of_the_stream_is_redacted() -> None:
    assert streamed([b"$ head -2 k.pem\r\n-----BEGIN PRIVATE KEY-----\r\nMIIE"]) == (
        b"$ head -2 k.pem\r\n[REDACTED:private-key]"
    )


def test_a_private_key_inside_json_with_escaped_newlines() -> None:
    text = b'{"tls.key": "' + PEM.replace(b"\r\n", b"\\n") + b'"}'
    assert streamed([text[:50], text[50:]]) == b'{"tls.key": "[REDACTED:private-key]"}'


def test_long_runs_are_not_held_while_they_last() -> None:
    redactor = StreamRedactor()
    out = redactor.feed(b"token=" + b"a" * 10_000)
    assert out == b"token=[REDACTED:assignment]"
    assert redactor.held == 0
    assert redactor.feed(b"b" * 10_000 + b" after") == b" after"


def test_clean_output_is_released_at_once_and_a_partial_lead_is_held() -> None:
    redactor = StreamRedactor()
    assert redactor.feed(b"total 12\r\nalice@pod:/app$ ") == b"total 12\r\nalice@pod:/app$ "
    assert redactor.held == 0
    assert redactor.feed(b"echo $DB_PASS") == b"echo $DB_"
    assert 0 < redactor.held <= TAIL
    assert redactor.flush() == b"PASS"


@pytest.mark.parametrize("seed", range(5))
def test_the_hold_stays_bounded_on_long_noisy_output(seed: int) -> None:
    rnd = random.Random(seed)  # noqa: S311 - a reproducible test input, not a secret
    pieces = [b"eyJ", b"hvs.", b"-----BEGIN ", b"password=", b"AKIA", b"s.", b"x" * 40, b"\r\n"]
    pieces.append(b"-----BEGIN PRIVATE KEY-----\r\n")
    redactor = StreamRedactor([LEASE])
    for _ in range(400):
        chunk = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(1, 60)))
        redactor.feed(chunk)
        assert redactor.held <= MAX_HOLD + len(chunk)


def test_counts_say_what_was_redacted() -> None:
    redactor = StreamRedactor([LEASE])
    redactor.feed(b"a " + JWT + b" b " + LEASE.encode() + b" password=x\r\n")
    redactor.flush()
    assert dict(redactor.counts) == {"jwt": 1, "session-secret": 1, "assignment": 1}
