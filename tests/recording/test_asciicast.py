"""asciicast v2 lines: a character split across chunks is written whole, never as mojibake."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.recording.asciicast import (
    CastEncoder,
    CastHeader,
    events,
    parse_event,
    parse_header,
    title_for,
)


def test_header_line_follows_the_spec() -> None:
    title = title_for(
        session_id="0123456789abcdef",
        user="alice",
        cluster="prod-eu",
        namespace="payments",
        pod="api-7f9c",
        container="app",
    )
    header = CastHeader(width=120, height=40, timestamp=1795943784, title=title)
    data = json.loads(header.line())
    assert data == {
        "version": 2,
        "width": 120,
        "height": 40,
        "timestamp": 1795943784,
        "title": "bastion session 0123456789abcdef: alice on prod-eu/payments/api-7f9c (app)",
        "env": {"TERM": "xterm-256color"},
    }
    assert header.line().endswith(b"\n")
    assert header.line().count(b"\n") == 1
    assert parse_header(header.line()) == header


def test_events_are_json_arrays_with_escaped_controls() -> None:
    cast = CastEncoder()
    line = cast.output(1.2345678, b'\x1b[31mred\x1b[0m\r\n"q"')
    assert line == b'[1.234568,"o","\\u001b[31mred\\u001b[0m\\r\\n\\"q\\""]\n'
    assert json.loads(line) == [1.234568, "o", '\x1b[31mred\x1b[0m\r\n"q"']
    assert cast.resize(2.0, 100, 30) == b'[2.0,"r","100x30"]\n'
    assert cast.input(3.5, b"ls\r") == b'[3.5,"i","ls\\r"]\n'


@given(st.text(max_size=40), st.data())
def test_utf8_split_anywhere_is_never_mojibake(text: str, data: st.DataObject) -> None:
    raw = text.encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=5)))
    cast = CastEncoder()
    lines = [
        cast.output(float(i), raw[a:b])
        for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(raw)], strict=True))
    ]
    lines.append(cast.finish(9.0))
    assert "".join(e.data for e in events(lines)) == text


def test_invalid_bytes_become_replacement_characters_and_a_cut_character_at_the_end_too() -> None:
    cast = CastEncoder()
    out = cast.output(0.0, b"ok \xff\xfe then \xe2\x82")
    out += cast.finish(1.0)
    assert "".join(e.data for e in events(out.splitlines())) == "ok \ufffd\ufffd then \ufffd"


@pytest.mark.parametrize(
    "line",
    [b"not json", b'{"version": 1, "width": 80, "height": 24}', b'{"version": 2, "width": 0}'],
)
def test_bad_headers_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError, match="asciicast header"):
        parse_header(line)


@pytest.mark.parametrize("line", [b"[1, 2]", b'[true, "o", "x"]', b'["1", "o", "x"]', b"{}"])
def test_bad_events_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError, match="asciicast event"):
        parse_event(line)
