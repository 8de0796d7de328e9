"""The console ⇄ broker wire format: what it accepts and what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.console_protocol import MAX_LINE, Notice, ProtocolError, decode, encode


@given(
    kind=st.sampled_from(["idle", "hard"]),
    seconds=st.floats(-1e6, 1e6, allow_nan=False),
    message=st.text(max_size=200),
)
def test_notices_round_trip(kind: str, seconds: float, message: str) -> None:
    notice = Notice(kind, seconds, message)
    line = encode(notice)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1  # one message, one line, whatever the text holds
    assert decode(line) == notice


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"not json", "not a JSON line"),
        (b"[1]", "a JSON object with a string 'type'"),
        (b'{"type": 3}', "a JSON object with a string 'type'"),
        (b'{"type": "launch"}', "unknown message type; known: notice"),
        (b'{"type": "notice", "kind": "idle"}', "takes exactly the fields"),
        (
            b'{"type": "notice", "kind": "idle", "seconds_left": 1, "message": "m", "x": 1}',
            "takes exactly the fields",
        ),
        (
            b'{"type": "notice", "kind": "idle", "seconds_left": "1", "message": "m"}',
            "notice.seconds_left has the wrong type",
        ),
        (
            b'{"type": "notice", "kind": "idle", "seconds_left": true, "message": "m"}',
            "notice.seconds_left has the wrong type",
        ),
        (b"\xff\xfe", "not a JSON line"),
    ],
)
def test_malformed_lines_are_refused_with_the_reason(line: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode(line)


def test_oversized_lines_are_refused_both_ways() -> None:
    with pytest.raises(ProtocolError, match="longer than"):
        decode(b" " * (MAX_LINE + 1))
    with pytest.raises(ProtocolError, match="too long"):
        encode(Notice("idle", 1.0, "x" * MAX_LINE))
