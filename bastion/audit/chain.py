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
off-host, which are what shows a tail cut by someone who could also rewrite the head. Key
rotation lines hand the signing over to a new key: from the key the log started with,
:func:`verify` follows them, and a rotation the key in force did not sign is a forgery.

Every line of a replica's chain names the replica (``replica``); :func:`verify` reports
what a chain says about itself (:class:`ChainFacts`: its replica, its genesis, its span), and
a line naming another replica than the chain's breaks it.

Pure: no I/O. :mod:`bastion.audit.log` does the writing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.audit.checkpoint import (
    check_checkpoint,
    check_rotation,
    is_rotation,
    is_signed,
)
from bastion.recording.keys import fingerprint, raw_public

__all__ = [
    "ENVELOPE",
    "GENESIS",
    "REPLICA",
    "RESERVED",
    "ChainBroken",
    "ChainFacts",
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
# The field naming the replica whose chain a line belongs to (the first of its fields).
REPLICA = "replica"

# What a verdict found, one word each; the command line maps each to its exit status.
VerdictKind = Literal["ok", "broken", "forged", "truncated", "diverged", "unsigned", "bad_rotation"]


@dataclass(frozen=True)
class Head:
    """The last event the writer made durable."""

    seq: int
    hash: str


@dataclass
class ChainFacts:
    """What a chain says about itself, as far as it was read: whose it is (the replica its
    lines name; None for a log from before replica ids), its genesis (the hash of line 1,
    which tells two chains apart), the times of its first and last lines, and the last
    line a verified signature covers."""

    replica: str | None = None
    genesis: str | None = None
    first_time: str | None = None
    last_time: str | None = None
    signed_to: int = 0

    def note(self, event: Mapping[str, Any]) -> str | None:
        """Take in the next verified line; a sentence when it names another replica."""
        if self.genesis is None:
            self.genesis = str(event["hash"])
            self.first_time = str(event["time"])
        self.last_time = str(event["time"])
        replica = event.get(REPLICA)
        if self.replica is None:
            # A log from before replica ids gains one when an upgraded writer continues it.
            self.replica = replica if isinstance(replica, str) else None
            return None
        if replica != self.replica:
            return (
                f"names replica {replica!r} in the chain of replica {self.replica!r} (a line "
                "of another chain was put in)"
            )
        return None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    events: int
    message: str
    bad_line: int | None = None
    kind: VerdictKind = "ok"
    chain: ChainFacts | None = None


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
    public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None = None,
    shipped: Sequence[Mapping[str, Any]] = (),
) -> Verdict:
    """Check every line of a log, in order; the first problem found is the verdict.

    ``lines`` are the file's lines with their line endings; a last line without a newline
    is a torn write and reported as such; every line must name the replica the chain's
    lines name (:class:`ChainFacts`, returned as the verdict's ``chain``). With
    ``public_key``, every checkpoint's signature is checked, the log must hold at least
    one, and its unsigned tail may not be longer than the last checkpoint's policy allows;
    given several keys (several replicas' chains), the chain is checked with the one its
    first signed line names. ``shipped`` are checkpoint lines received off-host (they need
    ``public_key``): the log must still hold, unchanged, every line they signed.
    """
    facts = ChainFacts()
    verdict = _verify(lines, head, facts, public_key, shipped)
    return replace(verdict, chain=facts)


def _verify(
    lines: Iterable[bytes],
    head: Head | None,
    facts: ChainFacts,
    public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None,
    shipped: Sequence[Mapping[str, Any]],
) -> Verdict:
    pool = [public_key] if isinstance(public_key, Ed25519PublicKey) else list(public_key or ())
    first_key = pool[0] if pool else None
    if shipped and first_key is None:
        raise ValueError("checking shipped checkpoints needs the bastion's public key")
    # The lines whose hashes the shipped checkpoints name: kept while the log is read.
    wanted = {v for c in shipped for v in (c.get("covers"), c.get("seq")) if isinstance(v, int)}
    seen: dict[int, str] = {}
    reader = ChainReader()
    hash_at_head: str | None = None
    checkpoints = 0
    last_signed: Mapping[str, Any] | None = None
    keys = _KeysInForce(first_key, pool) if first_key is not None else None
    for raw in lines:
        try:
            event = reader.feed(raw)
        except ChainBroken as exc:
            return Verdict(False, exc.line - 1, str(exc), exc.line, "broken")
        number = event["seq"]
        stray = facts.note(event)
        if stray is not None:
            return Verdict(False, number - 1, f"line {number}: {stray}", number, "broken")
        if number in wanted:
            seen[number] = event["hash"]
        if head is not None and number == head.seq:
            hash_at_head = event["hash"]
        if is_signed(event):
            checkpoints += 1
            if keys is not None:
                failed = keys.check(event)
                if failed is not None:
                    kind, problem = failed
                    return Verdict(False, number, f"line {number}: {problem}", number, kind)
                last_signed = event
                facts.signed_to = number
    count = reader.last.seq
    if head is not None:
        against_head = _check_head(count, head, hash_at_head)
        if against_head is not None:
            return against_head
    if keys is not None:
        # In the order they were written, so that shipped rotations past the log's end
        # hand over to the keys of the shipped checkpoints after them.
        beyond = _KeysInForce.after(keys)
        for checkpoint in sorted(shipped, key=_shipped_order):
            seq = checkpoint.get("seq")
            within = isinstance(seq, int) and seq <= count
            mismatch = _check_shipped(checkpoint, keys if within else beyond, count, seen)
            if mismatch is not None:
                return mismatch
        unsigned = _unsigned(count, last_signed)
        if unsigned is not None:
            return unsigned
    summary = _summary(count, checkpoints, last_signed, first_key, shipped)
    if keys is not None and keys.rotations:
        summary += f"; {keys.describe_rotations()}"
    return Verdict(True, count, summary)


def _check_head(count: int, head: Head, hash_at_head: str | None) -> Verdict | None:
    if count < head.seq:
        return Verdict(
            False,
            count,
            f"line {count + 1}: missing: the log ends after {count} events but its head "
            f"records {head.seq}; the tail was truncated",
            count + 1,
            "truncated",
        )
    # A head that lags the log is fine (the writer crashed between the two writes); the
    # line it names must still be the one it recorded.
    if hash_at_head != head.hash:
        return Verdict(
            False,
            count,
            f"line {head.seq}: does not match the hash recorded in the head file",
            head.seq,
            "broken",
        )
    return None


class _KeysInForce:
    """Which signing key is in force at each line: the key the log started with, then each
    key a verified rotation line handed over to."""

    def __init__(self, first: Ed25519PublicKey, pool: Sequence[Ed25519PublicKey] = ()) -> None:
        self.first = first
        self.current = first
        # Several keys given (several replicas' chains): the first signed line picks one.
        self._pool = pool if len(pool) > 1 else ()
        # (line of the rotation, the new key): the new key signs the lines after it.
        self.rotations: list[tuple[int, Ed25519PublicKey, bool]] = []
        self._retired: dict[str, int] = {}

    @classmethod
    def after(cls, keys: _KeysInForce) -> _KeysInForce:
        """A walk that continues from where ``keys`` ended (for lines past the log's end)."""
        walk = cls(keys.first)
        walk.current = keys.current
        walk.rotations = list(keys.rotations)
        walk._retired = dict(keys._retired)
        return walk

    def key_at(self, seq: int) -> Ed25519PublicKey:
        key = self.first
        for line, new_key, _ in self.rotations:
            if line < seq:
                key = new_key
        return key

    def check(self, event: Mapping[str, Any]) -> tuple[VerdictKind, str] | None:
        """Check a signed line against the key in force at it; advance on a rotation."""
        if self._pool:
            self.first = self.current = _key_named(self._pool, event.get("key_id"))
            self._pool = ()
        seq = int(event["seq"])
        key = self.key_at(seq)
        if is_rotation(event):
            problem, new_key = check_rotation(event, key)
            if problem is not None or new_key is None:
                retired = self._retired.get(str(event.get("key_id")))
                if retired is not None:
                    problem = (
                        f"key rotation record signed by key {event.get('key_id')}, which was "
                        f"retired at line {retired}: a forged rotation"
                    )
                return "bad_rotation", str(problem)
            if seq > self._last_rotation():
                self._retired[_key_id(key)] = seq
                self.rotations.append((seq, new_key, bool(event["compromised"])))
                self.current = new_key
            return None
        name = "the key given" if key is self.first else "the key in force"
        retired = self._retired.get(str(event.get("key_id")))
        problem = check_checkpoint(event, key, key_name=name)
        if problem is not None and retired is not None and retired < seq:
            problem = (
                f"checkpoint signed by key {event.get('key_id')}, which was retired at line "
                f"{retired}: a checkpoint forged with an old key"
            )
        return None if problem is None else ("forged", problem)

    def _last_rotation(self) -> int:
        return self.rotations[-1][0] if self.rotations else 0

    def describe_rotations(self) -> str:
        parts = []
        for line, key, compromised in self.rotations:
            note = " (the old key declared compromised)" if compromised else ""
            parts.append(f"line {line} to {_key_id(key)}{note}")
        count = len(self.rotations)
        return f"{count} key rotation{'s' if count > 1 else ''} followed: " + ", ".join(parts)


def _key_id(key: Ed25519PublicKey) -> str:
    return fingerprint(raw_public(key))


def _key_named(pool: Sequence[Ed25519PublicKey], key_id: object) -> Ed25519PublicKey:
    """The key of ``pool`` with that id; else the first (whose check then names the
    mismatch: a chain signed by none of the keys given is forged)."""
    return next((key for key in pool if _key_id(key) == key_id), pool[0])


def _shipped_order(checkpoint: Mapping[str, Any]) -> int:
    seq = checkpoint.get("seq")
    return seq if isinstance(seq, int) else -1


def _check_shipped(
    checkpoint: Mapping[str, Any],
    keys: _KeysInForce,
    count: int,
    seen: Mapping[int, str],
) -> Verdict | None:
    seq = checkpoint.get("seq")
    what = "key rotation" if is_rotation(checkpoint) else "checkpoint"
    where = f"the {what} shipped as line {seq} at {checkpoint.get('time')}"
    missing = [k for k in (*ENVELOPE, *_TRAILER) if k not in checkpoint]
    if not isinstance(seq, int):
        missing.append("seq")
    failed: tuple[VerdictKind, str] | None = (
        ("forged", f"missing member(s) {', '.join(missing)}")
        if missing
        else ("forged", "its hash does not match its content")
        if not shipped_hash_ok(checkpoint)
        else keys.check(checkpoint)
    )
    if failed is not None or not isinstance(seq, int):
        kind, problem = failed or ("forged", "no line number")
        return Verdict(False, count, f"{where} does not verify: {problem}", None, kind)
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
