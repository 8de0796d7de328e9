"""Name patterns in grants: ``prod-*``, ``team-?``, ``payments-[ab]``.

Deliberately narrower than :mod:`fnmatch`: a pattern may only contain the characters of a
Kubernetes name plus ``*``, ``?`` and closed ``[...]`` classes, so a typo such as an
unclosed bracket is a config error instead of a pattern that silently matches nothing.
"""

from __future__ import annotations

import re

__all__ = ["compile_glob"]

_LITERAL = re.compile(r"[a-z0-9.\-]")
_CLASS_BODY = re.compile(r"!?[a-z0-9.\-]+")


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a name pattern to an anchored regex; ValueError says what is wrong."""
    if not pattern:
        raise ValueError("expected a name pattern, got an empty string")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                raise ValueError(f"{pattern!r}: '[' at position {i} is never closed by ']'")
            body = pattern[i + 1 : end]
            if not _CLASS_BODY.fullmatch(body):
                raise ValueError(
                    f"{pattern!r}: character class [{body}] must list lower-case letters, "
                    "digits, '.', '-' or ranges such as a-f, optionally negated with '!'"
                )
            negate = body.startswith("!")
            members = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + members.replace("\\", "") + "]")
            i = end
        elif _LITERAL.fullmatch(ch):
            out.append(re.escape(ch))
        else:
            raise ValueError(
                f"{pattern!r}: character {ch!r} cannot appear in a Kubernetes name; "
                "use lower-case letters, digits, '-', '.', and the wildcards * ? [...]"
            )
        i += 1
    return re.compile("".join(out))
