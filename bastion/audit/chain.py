"""The audit log's hash chain: how a line is sealed and how a whole log is verified.

A line is one JSON object with, in this order: ``seq``, ``time``, ``event``, ``session``,
``actor``, ``outcome``, the event's own fields, ``prev`` and ``hash``. ``hash`` is the
SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of every other member, and
``prev`` is the ``hash`` of the line before (64 zeros for the first), so editing, deleting
or reordering any line breaks the chain at that line.

A chain alone cannot show that lines were cut from its end. The writer therefore keeps a
*head* record beside the log (the last ``seq`` and ``hash`` it made durable); a log that
ends before its head is reported as truncated. (Signed checkpoints build on this later.)

Pure: no I/O. :mod:`bastion.audit.log` does the writing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENVELOPE",
    "GENESIS",
    "RESERVED",
    "Head",
    "Verdict",
    "canonical",
    "render",
    "seal",
    "verify",
]

GENESIS = "0" * 64
ENVELOPE = ("seq", "time", "event", "session", "actor", "outcome")
_TRAILER = ("prev", "hash")
RESERVED = frozenset(ENVELOPE + _TRAILER)


@dataclass(frozen=True)
class Head:
    """The last event the writer made durable."""

    seq: int
    hash: str


@dataclass(frozen=True)
class Verdict:
    ok: bool
    events: int
    message: str
    bad_line: int | None = None


def canonical(event: Mapping[str, Any]) -> bytes:
    """The bytes the hash covers: every member but ``hash``, sorted, compact, UTF-8."""
    body = {k: v for k, v in event.items() if k != "hash"}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def render(event: Mapping[str, Any]) -> bytes:
    """The line as written: envelope first, fields, then ``prev`` and ``hash``; no newline."""
    ordered = {k: event[k] for k in ENVELOPE}
    ordered.update((k, v) for k, v in event.items() if k not in RESERVED)
    ordered["prev"] = event["prev"]
    ordered["hash"] = event["hash"]
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def seal(
    *,
    seq: int,
    time: str,
    event: str,
    session: str | None,
    actor: str,
    outcome: str,
    fields: Mapping[str, Any],
    prev: str,
) -> dict[str, Any]:
    """Build the complete event, ``hash`` included, that follows ``prev`` at ``seq``."""
    clash = RESERVED.intersection(fields)
    if clash:
        raise ValueError(f"event fields may not be named {', '.join(sorted(clash))}")
    sealed: dict[str, Any] = {
        "seq": seq,
        "time": time,
        "event": event,
        "session": session,
        "actor": actor,
        "outcome": outcome,
        **fields,
        "prev": prev,
    }
    sealed["hash"] = hashlib.sha256(canonical(sealed)).hexdigest()
    return sealed


def verify(lines: Iterable[bytes], head: Head | None) -> Verdict:
    """Check every line of a log, in order; the first problem found is the verdict.

    ``lines`` are the file's lines with their line endings; a last line without a newline
    is a torn write and reported as such.
    """
    prev = GENESIS
    count = 0
    hash_at_head: str | None = None
    for number, raw in enumerate(lines, start=1):
        problem = _check_line(number, raw, prev)
        if isinstance(problem, str):
            return Verdict(False, count, f"line {number}: {problem}", number)
        prev = problem["hash"]
        count += 1
        if head is not None and number == head.seq:
            hash_at_head = prev
    if head is not None:
        if count < head.seq:
            return Verdict(
                False,
                count,
                f"line {count + 1}: missing: the log ends after {count} events but its head "
                f"records {head.seq}; the tail was truncated",
                count + 1,
            )
        # A head that lags the log is fine (the writer crashed between the two writes);
        # the line it names must still be the one it recorded.
        if hash_at_head != head.hash:
            return Verdict(
                False,
                count,
                f"line {head.seq}: does not match the hash recorded in the head file",
                head.seq,
            )
    return Verdict(True, count, f"ok: {count} events")


def _check_line(number: int, raw: bytes, prev: str) -> dict[str, Any] | str:
    if not raw.endswith(b"\n"):
        return "incomplete line at the end of the log (torn write or truncation)"
    body = raw[:-1]
    try:
        event = json.loads(body)
    except ValueError as exc:
        return f"not valid JSON ({exc.args[0] if exc.args else exc})"
    if not isinstance(event, dict):
        return "not a JSON object"
    missing = [k for k in (*ENVELOPE, *_TRAILER) if k not in event]
    if missing:
        return f"missing member(s) {', '.join(missing)}"
    if event["seq"] != number:
        return f"seq is {event['seq']!r}, expected {number} (a line was removed or moved)"
    if event["prev"] != prev:
        return "prev does not match the hash of the line before (a line was removed or moved)"
    if hashlib.sha256(canonical(event)).hexdigest() != event["hash"]:
        return "hash does not match the content (the line was edited)"
    try:
        exact = render(event) == body
    except (KeyError, ValueError):
        exact = False
    if not exact:
        return "not in the form the writer produces (the line was edited)"
    return event
