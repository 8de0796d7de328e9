"""Make strings from a cluster safe to put on the operator's terminal. Pure.

Every name, label, annotation, env value and event message comes from whoever can write to
the cluster. Before display each one goes through :func:`clean`: control characters (C0,
DEL, C1: ESC and CSI start terminal escape sequences, CR rewrites the line), Unicode format
characters (bidi overrides and isolates reorder what the operator reads; zero-width ones hide
text) and line/paragraph separators become one visible ``�`` each; a tab becomes a space.

Textual and Rich also read markup (``[@click=app.quit]x[/]`` would be a live action): the
console builds widgets' content from :class:`rich.text.Text` objects (:func:`safe`), which
are never parsed as markup. Where only a markup string is accepted, :func:`escape_markup`.
"""

from __future__ import annotations

import re
import unicodedata

from rich.style import Style
from rich.text import Text

__all__ = ["REPLACEMENT", "clean", "escape_markup", "safe"]

REPLACEMENT = "\ufffd"
# Cc: C0, DEL, C1. Cf: bidi controls, zero-width joiners and spaces, soft hyphen, tags.
# Zl/Zp: U+2028/U+2029 break lines. Cs: lone surrogates cannot be encoded for the terminal.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
# One quick scan for the common case: almost every cluster string is plain ASCII.
_PLAIN = re.compile(r"[\x20-\x7e]*")


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def clean(text: str, limit: int = 0) -> str:
    """``text`` with every character that could act on a terminal made visible and inert;
    at most ``limit`` characters (0: no limit), the cut shown with ``…``."""
    if limit and len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    if _PLAIN.fullmatch(text):
        return text
    return "".join(" " if char == "\t" else REPLACEMENT if _unsafe(char) else char for char in text)


def safe(text: str, style: str | Style = "", limit: int = 0) -> Text:
    """A Rich ``Text`` of the cleaned ``text``: content that is never read as markup."""
    return Text(clean(text, limit), style=style, no_wrap=True, end="")


def escape_markup(text: str) -> str:
    """``text`` cleaned and escaped as a whole Textual markup string: every ``[`` is quoted
    (Textual drops one backslash before a ``[`` and shows the rest), so no tag, action or
    variable in it is read. Build larger markup with :class:`rich.text.Text` instead."""
    return clean(text).replace("[", "\\[")
