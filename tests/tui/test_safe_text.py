"""Strings from a cluster reach the terminal inert: no control, escape or bidi character, no
markup read."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st
from textual.content import Content

from tui.safe_text import REPLACEMENT, clean, escape_markup, safe

HOSTILE = [
    "\x1b]0;owned\x07",  # set the window title
    "\x1b[2J\x1b[H",  # clear the screen
    "ok\rfake",  # overwrite the line
    "\u202etxt.exe",  # right-to-left override
    "a\u2066b\u2069c",  # bidi isolate
    "\x9b31m",  # C1 CSI
    "del\x7f",
    "zero\u200bwidth",
    "line\u2028break",
]
BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x61C)}


def forbidden(char: str) -> bool:
    return (
        ord(char) < 0x20
        or 0x7F <= ord(char) <= 0x9F
        or char in BIDI
        or unicodedata.category(char) in {"Cf", "Zl", "Zp", "Cs"}
    )


@given(st.text())
def test_no_control_escape_or_bidi_character_survives(text: str) -> None:
    assert not any(forbidden(char) for char in clean(text))


@given(st.text())
def test_printable_text_is_unchanged_and_unsafe_characters_stay_visible(text: str) -> None:
    cleaned = clean(text)
    assert len(cleaned) == len(text)
    for before, after in zip(text, cleaned, strict=True):
        # Private-use and (to this Python) unassigned characters have no known width.
        unknown = unicodedata.category(before) in {"Co", "Cn"}
        if before == "\t":
            assert after == " "
        elif forbidden(before) or unknown:
            assert after == REPLACEMENT
        else:
            assert after == before


@given(st.text())
def test_textual_markup_in_an_escaped_string_renders_literally(text: str) -> None:
    assert Content.from_markup(escape_markup(text)).plain == clean(text)


@given(st.text())
def test_a_safe_text_is_never_read_as_markup(text: str) -> None:
    rendered = safe(text)
    assert rendered.plain == clean(text)
    assert not rendered.spans


def test_the_known_attacks_are_neutralised() -> None:
    for text in HOSTILE:
        assert not any(forbidden(char) for char in clean(text)), text
    assert clean("\x1b[31mred") == f"{REPLACEMENT}[31mred"
    assert Content.from_markup(escape_markup("[@click=app.quit]x[/]")).plain == (
        "[@click=app.quit]x[/]"
    )
    assert Content.from_markup(escape_markup("[$accent]x")).plain == "[$accent]x"


def test_a_limit_cuts_visibly() -> None:
    assert clean("abcdef", limit=4) == "abc…"
    assert clean("abcd", limit=4) == "abcd"
    assert safe("x" * 10, limit=5).plain == "xxxx…"
