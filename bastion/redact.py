"""Recognise secrets in text and replace them with ``[REDACTED:kind]``.

Used wherever text leaves the bastion's memory: audit events now, recordings later. The
patterns are the credential formats a Kubernetes debugging session is likely to show:
JWTs (service-account tokens), Vault/OpenBao tokens, AWS access keys, PEM private keys and
``password=...``-style assignments. Exact secrets the caller knows (the session's own token,
lease id) are replaced whatever they look like.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["PATTERNS", "redact"]

PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private-key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
            r".*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
            re.DOTALL,
        ),
    ),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")),
    ("vault-token", re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}")),
    ("vault-token", re.compile(r"\b[sbr]\.[A-Za-z0-9]{24}\b")),
    ("aws-key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    (
        "assignment",
        re.compile(
            r"(?i)\b([A-Za-z0-9_]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)"
            r"[A-Za-z0-9_]*\s*[=:]\s*)(?!\[REDACTED:)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
        ),
    ),
)

# One cheap scan for anything that could start a match: most text (pod names, event
# fields, terminal output) has none, and then the full patterns are not run at all.
_TRIGGERS = re.compile(
    r"-----BEGIN|eyJ|hv[sbr]\.|\b[sbr]\.[A-Za-z0-9]{24}|AKIA|ASIA"
    r"|(?i:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)"
)


def redact(text: str, known: Iterable[str] = ()) -> tuple[str, list[str]]:
    """Return ``text`` with secrets replaced, and the kinds that were found (in order)."""
    kinds: list[str] = []
    for secret in sorted({s for s in known if s}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "[REDACTED:session-secret]")
            kinds.append("session-secret")
    if not _TRIGGERS.search(text):
        return text, kinds
    for kind, pattern in PATTERNS:
        # An assignment keeps its "password=" so the reader still sees what was hidden.
        replacement = rf"\1[REDACTED:{kind}]" if kind == "assignment" else f"[REDACTED:{kind}]"
        text, count = pattern.subn(replacement, text)
        kinds.extend([kind] * count)
    return text, kinds
