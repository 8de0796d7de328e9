"""The audit log's hash chain: how a line is sealed and how a whole log is verified.

A line is one JSON object with, in this order: ``seq``, ``time``, ``event``, ``session``,
``actor``, ``outcome``, the event's own fields, ``prev`` and ``hash``. ``hash`` is the
SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of every other member, and
``prev`` is the ``hash`` of the line before (64 zeros for the first), so editing, deleting
or reordering any line breaks the chain at that line.

A chain alone cannot show that lines were cut from its end. The writer therefore keeps a
*head* record beside the log (the last ``seq`` and ``hash`` it made durable); a log that
ends before its head is reported as truncated. Signed checkpoints
(:mod:`bastion.audit.checkpoint`) are lines of the chain; given the bastion's public key,
:func:`verify` checks each one, and checks the log against checkpoints that were shipped
off-host, which are what shows a tail cut by someone who could also rewrite the head.

Pure: no I/O. :mod:`bastion.audit.log` does the writing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.audit.checkpoint import check_checkpoint, is_checkpoint

__all__ = [
    "ENVELOPE",
    "GENESIS",
    "RESERVED",
    "ChainBroken",
    "ChainReader",
    "Head",
    "Verdict",
    "VerdictKind",
    "canonical",
    "render",
    "seal",
    "verify",
]

GENESIS = "0" * 64
ENVELOPE = ("seq", "time", "event", "session", "actor", "outcome")
_TRAILER = ("prev", "hash")
RESERVED = frozenset(ENVELOPE + _TRAILER)

# What a verdict found, one word each; the command line maps each to its exit status.
VerdictKind = Literal["ok", "broken", "forged", "truncated", "diverged", "unsigned"]


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
    kind: VerdictKind = "ok"


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


class ChainBroken(Exception):
    """A line that does not continue the chain; ``line`` is its number (its expected seq)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


class ChainReader:
    """Checks a log's lines one at a time, in order, from its first line (or from ``after``,
    a head already verified): :meth:`feed` returns the event or raises ChainBroken."""

    def __init__(self, after: Head = Head(0, GENESIS)) -> None:
        self.last = after

    def feed(self, raw: bytes) -> dict[str, Any]:
        """``raw`` is one line with its line ending; one without is a torn write."""
        number = self.last.seq + 1
        problem = _check_line(number, raw, self.last.hash)
        if isinstance(problem, str):
            raise ChainBroken(number, problem)
        self.last = Head(number, problem["hash"])
        return problem


def shipped_hash_ok(event: Mapping[str, Any]) -> bool:
    """Whether a line received from elsewhere carries the hash of its own content."""
    return isinstance(event.get("hash"), str) and (
        hashlib.sha256(canonical(event)).hexdigest() == event["hash"]
    )


def verify(
    lines: Iterable[bytes],
    head: Head | None,
    *,
    public_key: Ed25519PublicKey | None = None,
    shipped: Sequence[Mapping[str, Any]] = (),
) -> Verdict:
    """Check every line of a log, in order; the first problem found is the verdict.

    ``lines`` are the file's lines with their line endings; a last line without a newline
    is a torn write and reported as such. With ``public_key``, every checkpoint's signature
    is checked, the log must hold at least one, and its unsigned tail may not be longer than
    the last checkpoint's policy allows. ``shipped`` are checkpoint lines received off-host
    (they need ``public_key``): the log must still hold, unchanged, every line they signed.
    """
    if shipped and public_key is None:
        raise ValueError("checking shipped checkpoints needs the bastion's public key")
    # The lines whose hashes the shipped checkpoints name: kept while the log is read.
    wanted = {v for c in shipped for v in (c.get("covers"), c.get("seq")) if isinstance(v, int)}
    seen: dict[int, str] = {}
    reader = ChainReader()
    hash_at_head: str | None = None
    checkpoints = 0
    last_signed: Mapping[str, Any] | None = None
    for raw in lines:
        try:
            event = reader.feed(raw)
        except ChainBroken as exc:
            return Verdict(False, exc.line - 1, str(exc), exc.line, "broken")
        number = event["seq"]
        if number in wanted:
            seen[number] = event["hash"]
        if head is not None and number == head.seq:
            hash_at_head = event["hash"]
        if is_checkpoint(event):
            checkpoints += 1
            if public_key is not None:
                problem = check_checkpoint(event, public_key)
                if problem is not None:
                    return Verdict(False, number, f"line {number}: {problem}", number, "forged")
                last_signed = event
    count = reader.last.seq
    if head is not None:
        if count < head.seq:
            return Verdict(
                False,
                count,
                f"line {count + 1}: missing: the log ends after {count} events but its head "
                f"records {head.seq}; the tail was truncated",
                count + 1,
                "truncated",
            )
        # A head that lags the log is fine (the writer crashed between the two writes);
        # the line it names must still be the one it recorded.
        if hash_at_head != head.hash:
            return Verdict(
                False,
                count,
                f"line {head.seq}: does not match the hash recorded in the head file",
                head.seq,
                "broken",
            )
    if public_key is not None:
        for checkpoint in shipped:
            mismatch = _check_shipped(checkpoint, public_key, count, seen)
            if mismatch is not None:
                return mismatch
        unsigned = _unsigned(count, last_signed)
        if unsigned is not None:
            return unsigned
    return Verdict(True, count, _summary(count, checkpoints, last_signed, public_key, shipped))


def _check_shipped(
    checkpoint: Mapping[str, Any],
    public_key: Ed25519PublicKey,
    count: int,
    seen: Mapping[int, str],
) -> Verdict | None:
    seq = checkpoint.get("seq")
    where = f"the checkpoint shipped as line {seq} at {checkpoint.get('time')}"
    missing = [k for k in (*ENVELOPE, *_TRAILER) if k not in checkpoint]
    problem = (
        f"missing member(s) {', '.join(missing)}"
        if missing
        else "its hash does not match its content"
        if not shipped_hash_ok(checkpoint)
        else check_checkpoint(checkpoint, public_key)
    )
    if problem is not None or not isinstance(seq, int):
        return Verdict(False, count, f"{where} does not verify: {problem}", None, "forged")
    if count < seq:
        return Verdict(
            False,
            count,
            f"line {count + 1}: missing: the log ends after {count} events but {where} "
            f"shows it held {seq}; the tail was truncated",
            count + 1,
            "truncated",
        )
    covers = seq - 1
    if covers > 0 and seen.get(covers) != checkpoint["prev"]:
        return Verdict(
            False,
            count,
            f"line {covers}: differs from what {where} signed; the log was rewritten after "
            "it was shipped",
            covers,
            "diverged",
        )
    if seen.get(seq) != checkpoint["hash"]:
        return Verdict(
            False,
            count,
            f"line {seq}: is not {where}; the log was rewritten after it was shipped",
            seq,
            "diverged",
        )
    return None


def _unsigned(count: int, last_signed: Mapping[str, Any] | None) -> Verdict | None:
    if count == 0:
        return None
    if last_signed is None:
        return Verdict(
            False,
            count,
            f"no checkpoint: none of the {count} events is signed (a log from before "
            "checkpoints, or one written without the bastion's signing key)",
            1,
            "unsigned",
        )
    signed_to = int(last_signed["seq"])
    tail, every = count - signed_to, int(last_signed["every"])
    if tail >= every:
        return Verdict(
            False,
            count,
            f"line {signed_to + 1}: the {tail} events after the last checkpoint (line "
            f"{signed_to}) are more than its policy leaves unsigned ({every - 1}); they were "
            "added without the bastion's signing key",
            signed_to + 1,
            "unsigned",
        )
    return None


def _summary(
    count: int,
    checkpoints: int,
    last_signed: Mapping[str, Any] | None,
    public_key: Ed25519PublicKey | None,
    shipped: Sequence[Mapping[str, Any]],
) -> str:
    message = f"ok: {count} events"
    if public_key is None:
        if checkpoints:
            message += f" ({checkpoints} checkpoints, signatures not checked without the key)"
        return message
    if last_signed is None:  # an empty log
        return message
    signed_to = int(last_signed["seq"])
    message += f", {checkpoints} checkpoints verified, signed up to line {signed_to} "
    message += f"({last_signed['time']})"
    if count > signed_to:
        message += f"; the {count - signed_to} events after it are not signed yet"
    if shipped:
        message += f"; {len(shipped)} shipped checkpoints match"
    return message


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
