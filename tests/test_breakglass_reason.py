"""The break-glass reason: what counts as one, and how it is read from a raw terminal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.breakglass.reason import MAX_REASON_CHARS, LineEditor, Status, check_reason


def test_a_reason_is_a_few_words_of_enough_characters() -> None:
    assert check_reason("INC-4711 payments api returns 500s", 20) == (
        "INC-4711 payments api returns 500s"
    )
    # Spaces are folded, controls made visible: what is recorded cannot act on a terminal.
    assert check_reason("  INC-1   db\x1b[2J is down\r\n", 10) == "INC-1 db?[2J is down"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no reason was given"),
        ("   \t ", "no reason was given"),
        ("prod down", "too short"),  # two words
        ("a b c d e f g h i j k l", "too short"),  # letters are not words
        ("emergency!!!!!!!!!!!!!!!!!!!!!", "too short"),  # one word, however long
        ("x" * 6 + " yy zz", "too short"),  # three words, under 20 characters
        ("word " * 300, "at most 1000"),
    ],
)
def test_what_is_not_a_reason_is_refused_in_one_sentence(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_reason(text, 20)


@given(st.text(max_size=300))
def test_a_recorded_reason_never_holds_a_control_character(text: str) -> None:
    try:
        reason = check_reason(text, 10)
    except ValueError:
        return
    assert reason.isprintable()
    assert len(reason) <= MAX_REASON_CHARS
    assert "  " not in reason


def typed(*chunks: bytes) -> tuple[LineEditor, bytes]:
    editor = LineEditor()
    echo = b"".join(editor.feed(chunk) for chunk in chunks)
    return editor, echo


def test_enter_ends_the_line_and_what_is_typed_is_echoed() -> None:
    editor, echo = typed(b"INC-7 ", b"db down\r", b"ignored")
    assert editor.status is Status.DONE
    assert editor.line == "INC-7 db down"
    assert echo == b"INC-7 db down\r\n"


def test_backspace_ctrl_u_and_escape_sequences() -> None:
    editor, echo = typed(b"abx\x7f", b"c\x08d", b"\x1b[A\x1bOB\x1b[15~", b"\x15new\x1b[1;5C\n")
    assert editor.line == "new"
    assert b"\x1b" not in echo  # arrow and function keys are swallowed, not echoed
    assert echo.startswith(b"abx\b \bc\b \bd")
    assert editor.status is Status.DONE


def test_a_character_cut_between_two_reads_arrives_whole() -> None:
    data = "écrou ☃\r".encode()
    editor, echo = typed(data[:1], data[1:7], data[7:])
    assert editor.line == "écrou ☃"
    assert echo.decode() == "écrou ☃\r\n"


@pytest.mark.parametrize("key", [b"\x03", b"\x04"])
def test_ctrl_c_and_ctrl_d_refuse(key: bytes) -> None:
    editor, _ = typed(b"half a reas", key, b"on\r")
    assert editor.status is Status.REFUSED


def test_controls_are_refused_with_a_bell_and_the_line_has_a_limit() -> None:
    editor = LineEditor(max_chars=5)
    assert editor.feed(b"\x00\x07\x0e") == b"\a\a\a"
    assert editor.feed(b"abcdefg") == b"abcde\a\a"
    assert editor.line == "abcde"


@given(st.binary(max_size=200))
def test_whatever_arrives_the_line_is_printable(data: bytes) -> None:
    editor = LineEditor()
    editor.feed(data)
    assert editor.line.isprintable()
