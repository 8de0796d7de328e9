"""Secrets in text are replaced before the text is written anywhere."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.redact import PATTERNS, redact

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0"
    ".c2lnbmF0dXJlLWJ5dGVz"
)
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "expected", "kinds"),
    [
        (f"token: {JWT}", "token: [REDACTED:jwt]", ["jwt"]),
        (
            "VAULT_TOKEN=hvs.CAESIJ4x9yGZk2lYh0aBcDeFgHiJkLmN",
            "VAULT_TOKEN=[REDACTED:vault-token]",
            ["vault-token"],
        ),
        ("key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED:aws-key] used", ["aws-key"]),
        (f"x\n{PEM}\ny", "x\n[REDACTED:private-key]\ny", ["private-key"]),
        ("DB_PASSWORD=hunter2 next", "DB_PASSWORD=[REDACTED:assignment] next", ["assignment"]),
        ('password: "a b c"', "password: [REDACTED:assignment]", ["assignment"]),
        ("nothing to see", "nothing to see", []),
    ],
)
def test_patterns(text: str, expected: str, kinds: list[str]) -> None:
    assert redact(text) == (expected, kinds)


def test_known_secrets_are_replaced_whatever_they_look_like() -> None:
    text, kinds = redact(
        "lease kubernetes/creds/debug/abc123 issued", ["kubernetes/creds/debug/abc123"]
    )
    assert text == "lease [REDACTED:session-secret] issued"
    assert kinds == ["session-secret"]


@given(st.text(), st.text())
def test_a_planted_token_never_survives(before: str, after: str) -> None:
    text, _ = redact(f"{before} hvs.CAESIJ4x9yGZk2lYh0aBcDeFgHiJkLmN {after}")
    assert "hvs.CAESIJ4x9yGZk2lYh0aBcDeFgHiJkLmN" not in text


def redact_without_screening(text: str) -> str:
    for kind, pattern in PATTERNS:
        replacement = rf"\1[REDACTED:{kind}]" if kind == "assignment" else f"[REDACTED:{kind}]"
        text = pattern.sub(replacement, text)
    return text


fragments = st.sampled_from(
    [
        "password=", "Token: ", "api-key=", "hvs.", "s.", "AKIA", "ASIA", "eyJ", ".",
        "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", "abcdEFGH1234",
        "XYZ0123456789ABCD", " ", "\n", "\"q w\"", "x_y",
    ]
)  # fmt: skip


@given(st.lists(fragments, max_size=12).map("".join))
def test_the_quick_screen_never_skips_a_secret(text: str) -> None:
    assert redact(text)[0] == redact_without_screening(text)
