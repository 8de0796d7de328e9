"""Text from a cluster on its way to an operator's terminal. Pure.

Pod names, API messages and the like are untrusted: a control character (ESC above all) in
them could rewrite the operator's screen. Every character ``str.isprintable`` rejects (C0/C1
controls, format and bidi characters, separators other than space) becomes ``?``.
"""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)
