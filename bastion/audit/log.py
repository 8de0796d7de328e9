"""The audit log writer: append-only, hash-chained, durable before anyone is told "done".

``await log.record(...)`` returns only after the event's line and the head record are on
disk (``fsync``). Concurrent callers are group-committed: the events waiting when a write
starts go out in one ``write`` and one ``fsync`` (``fsync="batch"``, the default), or one
at a time (``fsync="event"``). Either way no caller is acknowledged before its event is
durable, and a failure is raised to every caller whose event was in the failed write, so
the action they were about to take is refused. The first write that works again begins
with an ``audit.unavailable`` event (outcome ``alert``): since when, why, how many events
were refused.

Several processes may share one log (one worker per core): each write takes an exclusive
``flock`` and picks up the chain from the file's last line when another process wrote
since. A log that ends before its head record (cut by someone) is refused, not continued.

**Signed checkpoints** (:mod:`bastion.audit.checkpoint`), when a :class:`Checkpointer` is
given: a write that brings the chain ``every`` events past the last checkpoint, or comes
``interval`` seconds after it, appends a checkpoint line in the same write and ``fsync``
(so signing costs no extra disk round trip), and a timer writes one every ``interval``
while the log is open, even when nothing happens. The last checkpoint's line number and
time live in the head record, which every writer reads under the lock: however many
processes write, there is one schedule. Closing the log signs what is not yet signed.

**Key rotation** (:meth:`AuditLog.rotate_signing_key_now`, run by ``bastion keys rotate``):
under the lock, a rotation line signed by the key in use and naming the new key is written
and synced, and only then is the new key (staged beside the old one) installed. The head
record names the key the chain expects next, so every writer, in any process, signs its
next checkpoint with the new key; a writer finding the key file replaced any other way
refuses to sign (its checkpoints could not be verified) rather than sign with it.

**One chain per replica**: with ``replica`` (``state.replica_id``) every line carries it
as its first field, a writer refuses to continue a log whose last line names another
replica, and with ``genesis`` (the id set in the config) a new chain begins with an
``audit.chain_started`` line (the replica, a random chain id, the host).

Secrets never reach the log: values wrapped in :class:`Secret`, and values of fields whose
names say they are secret, are stored as keyed HMACs; every other string is passed through
:func:`bastion.redact.redact`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit.chain import GENESIS, REPLICA, RESERVED, Head, render, seal
from bastion.audit.checkpoint import (
    CHECKPOINT_ACTOR,
    CHECKPOINT_EVENT,
    CHECKPOINT_OUTCOME,
    ROTATION_EVENT,
    CheckpointPolicy,
    checkpoint_fields,
    rotation_fields,
)
from bastion.durable import write_all
from bastion.errors import AuditUnavailable
from bastion.recording.key_files import (
    SigningKeyFile,
    discard_staged_signing_key,
    install_staged_signing_key,
    load_or_create_signing_key,
    read_signing_key,
    read_staged_signing_key,
)
from bastion.recording.keys import fingerprint, raw_public
from bastion.redact import redact

if TYPE_CHECKING:
    from bastion.config import Config

__all__ = [
    "AUDIT_SIGNING_KEY",
    "GENESIS_EVENT",
    "AuditLog",
    "Checkpointer",
    "Secret",
    "SigningKeyFiles",
    "head_path",
    "load_or_create_hmac_key",
    "read_head",
    "utc_now",
]

log = logging.getLogger(__name__)

FsyncPolicy = Literal["batch", "event"]
Clock = Callable[[], datetime]
# A task that runs while the log is open (the shippers); it returns soon after
# ``log.stopping`` is set, and is cancelled if it does not.
Background = Callable[["AuditLog"], Awaitable[None]]

# The key that signs checkpoints: <state_dir>/audit-signing.key, its public half beside it.
AUDIT_SIGNING_KEY = SigningKeyFile("audit-signing", "the audit signing key", AuditUnavailable)
# The first line of a replica's chain (see AuditLog._genesis).
GENESIS_EVENT = "audit.chain_started"
# How long closing the log waits for background tasks (the shippers) to finish their round.
_STOP_GRACE = 3.0

_HEAD_SIZE = 256  # one fixed-size record, rewritten in place: a single sector write
_SECRET_NAMES = ("token", "password", "secret", "credential", "private_key", "lease_id")


def key_id(key: Ed25519PrivateKey) -> str:
    return fingerprint(raw_public(key.public_key()))


@dataclass(frozen=True)
class SigningKeyFiles:
    """The bastion's checkpoint key on disk (``<state_dir>/audit-signing.key``), read under
    the log's lock at each checkpoint so that a rotation made by another process is
    followed."""

    state_dir: Path
    kind: SigningKeyFile = AUDIT_SIGNING_KEY

    def current(self, expected: str | None) -> Ed25519PrivateKey:
        """The key to sign with when the chain expects key ``expected`` (None: any).

        A staged key that the chain already names is a rotation whose last step (the
        rename) did not happen: it is completed here. Any other key is refused.
        """
        key = read_signing_key(self.state_dir, self.kind)
        if expected is None or key_id(key) == expected:
            return key
        staged = read_staged_signing_key(self.state_dir, self.kind)
        if staged is not None and key_id(staged) == expected:
            log.warning("completing an interrupted rotation of %s", self.kind.what)
            return install_staged_signing_key(self.state_dir, self.kind)
        raise AuditUnavailable(
            f"{self.kind.what} in {self.state_dir} is {key_id(key)}, but the audit log's last "
            f"signature hands over to {expected}: the key was replaced outside 'bastion keys "
            "rotate', and checkpoints signed with it could not be verified",
            hint="put the right key back; or keep the log as evidence, move it and its .head "
            "aside, and start a new log with the new key",
        )


@dataclass(frozen=True)
class Checkpointer:
    """How this writer signs checkpoints: the bastion's key and the policy. With ``files``
    the key is read from there at each checkpoint (rotations are followed); without, ``key``
    signs every checkpoint (tools and tests)."""

    key: Ed25519PrivateKey
    policy: CheckpointPolicy
    files: SigningKeyFiles | None = None


@dataclass(frozen=True)
class _HeadRecord:
    """The head file: the chain's last durable line, the last checkpoint's line and time
    (epoch seconds), and the id of the key the next checkpoint must be signed with, shared
    by every process that writes the log."""

    seq: int
    hash: str
    checkpoint_seq: int = 0
    checkpoint_at: float = 0.0
    key_id: str | None = None

    def encode(self) -> bytes:
        fields: dict[str, Any] = {
            "seq": self.seq,
            "hash": self.hash,
            "checkpoint_seq": self.checkpoint_seq,
            "checkpoint_at": self.checkpoint_at,
        }
        if self.key_id is not None:
            fields["key_id"] = self.key_id
        record = json.dumps(fields).encode()
        if len(record) >= _HEAD_SIZE:
            raise ValueError(f"an audit head record is at most {_HEAD_SIZE - 1} bytes")
        return record.ljust(_HEAD_SIZE - 1) + b"\n"

    @classmethod
    def decode(cls, raw: bytes) -> _HeadRecord:
        """ValueError when ``raw`` is not a head record."""
        try:
            data = json.loads(raw.rstrip(b" \n"))
            return cls(
                seq=int(data["seq"]),
                hash=str(data["hash"]),
                checkpoint_seq=int(data.get("checkpoint_seq", 0)),
                checkpoint_at=float(data.get("checkpoint_at", 0.0)),
                key_id=str(data["key_id"]) if data.get("key_id") is not None else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a valid audit head record ({exc})") from None


@dataclass(frozen=True)
class Secret:
    """A value to be recorded only as an HMAC, e.g. ``Secret(token)``."""

    value: str

    def __repr__(self) -> str:
        return "Secret(<hidden>)"


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def head_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".head")


def read_head(path: Path) -> Head | None:
    """Read a head file; None when there is none. ValueError when it is unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        record = _HeadRecord.decode(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return Head(seq=record.seq, hash=record.hash)


def load_or_create_hmac_key(path: Path) -> bytes:
    """The key that turns secrets into stable, non-reversible audit references."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < 32:
            raise AuditUnavailable(
                f"audit HMAC key {path} is shorter than 32 bytes",
                hint="restore it from backup; a new key breaks the link to older events",
            ) from None
        return key
    key = secrets.token_bytes(32)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


@dataclass
class _Pending:
    event: str | None  # None: no event, a check whether a checkpoint is due (the timer's)
    session: str | None
    actor: str
    outcome: str
    fields: dict[str, Any]
    done: asyncio.Future[dict[str, Any]]
    final: bool = False  # closing: sign whatever is not signed yet


_Item = tuple[str, str | None, str, str, dict[str, Any]]


@dataclass(frozen=True)
class _Rotation:
    """A signing key handover to write: the new key, who asked, and how to install it."""

    new_key: Ed25519PrivateKey
    actor: str
    compromised: bool
    install: Callable[[], object]


class AuditLog:
    """Append events to one hash-chained JSON-lines file; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        hmac_key: bytes,
        fsync: FsyncPolicy = "batch",
        clock: Clock = utc_now,
        checkpoints: Checkpointer | None = None,
        background: Sequence[Background] = (),
        replica: str | None = None,
        genesis: bool = False,
    ) -> None:
        self.path = path
        # The replica whose chain this is: every line carries it (None: a log without one).
        # With ``genesis`` (replicas configured), a new chain begins with a line of its own.
        self.replica = replica
        self._genesis = genesis and replica is not None
        self.head_file = head_path(path)
        self._hmac_key = hmac_key
        self._fsync = fsync
        self._clock = clock
        self._checkpoints = checkpoints
        self._background = tuple(background)
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []  # the background tasks (shippers)
        self.stopping: asyncio.Event | None = None
        self._fd: int | None = None
        self._head_fd: int | None = None
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        # Chain state as of our last write; re-read from the file when its size moved.
        self._known_size = -1
        self._last = Head(0, GENESIS)
        # The last checkpoint (line, epoch seconds), from the head record like the above.
        self._checkpoint_seq = 0
        self._checkpoint_at = 0.0
        # The key the chain expects the next signature from (from the head record).
        self._key_id: str | None = None
        # Since when writes fail, why, and how many events were refused (the actions they
        # recorded were refused, or their sessions ended): written once the log works again.
        self._outage: dict[str, Any] | None = None

    @classmethod
    def for_config(cls, config: Config, *, fsync: FsyncPolicy = "batch") -> AuditLog:
        """The server's log: HMAC key, checkpoint signing key (both made in ``state_dir`` on
        first use) and policy from ``config.audit``, and a shipper per destination."""
        audit = config.audit
        checkpointer = Checkpointer(
            load_or_create_signing_key(config.paths.state_dir, AUDIT_SIGNING_KEY),
            CheckpointPolicy(audit.checkpoint_every, audit.checkpoint_interval.total_seconds()),
            files=SigningKeyFiles(config.paths.state_dir),
        )
        background: list[Background] = []
        if audit.ship is not None:
            # Imported here: the shippers load aiohttp and ssl, which the tools need not.
            from bastion.audit.ship import shippers_for  # noqa: PLC0415

            background = [shipper.run for shipper in shippers_for(config)]
        return cls(
            config.paths.audit_log,
            hmac_key=load_or_create_hmac_key(config.audit_hmac_key_path()),
            fsync=fsync,
            checkpoints=checkpointer,
            background=background,
            replica=config.state.replica_id,
            genesis=config.state.replica_named,
        )

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            self._head_fd = os.open(self.head_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self.close()
            raise AuditUnavailable(
                f"cannot open the audit log {self.path}: {exc.strerror}",
                hint="check that the directory exists and is writable by the service user",
            ) from None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a command-line tool (record_now): no timer, no shipping
        self.stopping = asyncio.Event()
        if self._checkpoints is not None:
            heartbeats = self._heartbeats(self._checkpoints.policy.interval)
            self._heartbeat = loop.create_task(heartbeats, name="audit-checkpoints")
        for run in self._background:
            self._tasks.append(loop.create_task(self._run_background(run), name="audit-ship"))

    async def _run_background(self, run: Background) -> None:
        try:
            await run(self)
        except asyncio.CancelledError:
            raise
        except Exception:  # a shipper's bug must not pass silently, nor stop the log
            log.exception("audit background task failed")

    async def aclose(self) -> None:
        """Wait for events already handed in, sign what is not signed yet, let the shippers
        finish their round, then close the files."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._checkpoints is not None and self._fd is not None:
            try:
                await self._submit(None, final=True)
            except AuditUnavailable as exc:
                log.error("the audit log's last checkpoint was not written: %s", exc)  # noqa: TRY400
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self.stopping is not None:
            self.stopping.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=_STOP_GRACE)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.close()

    def close(self) -> None:
        """Close the files at once (``aclose`` is the orderly way: it waits and signs)."""
        for task in (self._heartbeat, *self._tasks):
            if task is not None:
                task.cancel()
        self._heartbeat, self._tasks = None, []
        for fd in (self._fd, self._head_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._head_fd = None

    async def __aenter__(self) -> AuditLog:
        self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ recording
    def reference(self, secret: str) -> str:
        """A stable reference to a secret that does not reveal it (HMAC-SHA256)."""
        digest = hmac.new(self._hmac_key, secret.encode(), hashlib.sha256).hexdigest()
        return f"hmac-sha256:{digest[:32]}"

    async def record(
        self,
        event: str,
        *,
        actor: str,
        outcome: str,
        session: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Append one event; returns it sealed, once it is durable on disk.

        Raises AuditUnavailable when it cannot be written: the caller must not go ahead.
        """
        return await self._submit((event, session, actor, outcome, self._clean(fields)))

    def record_now(
        self, event: str, *, actor: str, outcome: str, session: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Blocking twin of :meth:`record` for the command-line tools."""
        return self._write([(event, session, actor, outcome, self._clean(fields))])[0]

    def rotate_signing_key_now(
        self,
        new_key: Ed25519PrivateKey,
        *,
        actor: str,
        compromised: bool = False,
        install: Callable[[], object] | None = None,
    ) -> dict[str, Any]:
        """Hand checkpoint signing over to ``new_key`` (blocking; the keys command).

        Under the log's lock: the rotation line, signed by the key in use and by
        ``new_key``, is written and synced with the head; then ``install`` makes ``new_key``
        the key in use (on disk: renames the staged key), before any other writer can sign.
        If ``install`` fails, the next checkpoint of any writer completes it (the head names
        the new key). Returns the rotation line.
        """
        if self._checkpoints is None:
            raise AuditUnavailable("this audit log has no signing key to rotate")
        rotation = _Rotation(new_key, actor, compromised, install or (lambda: None))
        return self._write([], rotation=rotation)[0]

    async def _submit(self, item: _Item | None, *, final: bool = False) -> dict[str, Any]:
        """Queue an event (or, with None, a checkpoint check) for the flusher; its result."""
        loop = asyncio.get_running_loop()
        pending = (
            _Pending(*item, loop.create_future())
            if item is not None
            else _Pending(None, None, "", "", {}, loop.create_future(), final=final)
        )
        self._pending.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_loop(), name="audit-flush")
        return await asyncio.shield(pending.done)

    async def _flush_loop(self) -> None:
        while self._pending:
            take = len(self._pending) if self._fsync == "batch" else 1
            batch, self._pending = self._pending[:take], self._pending[take:]
            items = [
                (p.event, p.session, p.actor, p.outcome, p.fields)
                for p in batch
                if p.event is not None
            ]
            outage = self._outage
            if outage is not None:
                # The first write that works again says first what the log could not take.
                items.insert(0, ("audit.unavailable", None, "bastion", "alert", outage))
            final = any(p.final for p in batch)
            try:
                sealed = await asyncio.to_thread(self._write, items, final=final)
            # Whatever went wrong, every waiter must hear of it, or its action would hang.
            except Exception as exc:  # noqa: BLE001
                self._note_outage(exc, len(items) - (outage is not None))
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(exc)
                continue
            self._outage = None
            results = iter(sealed[1:] if outage is not None else sealed)
            for p in batch:
                if not p.done.done():
                    p.done.set_result(next(results) if p.event is not None else {})

    def _note_outage(self, exc: Exception, refused: int) -> None:
        if self._outage is None:
            error = exc.message if isinstance(exc, AuditUnavailable) else str(exc)
            self._outage = {"since": rfc3339(self._clock()), "error": error, "refused_events": 0}
        self._outage["refused_events"] += refused
        self._outage["until"] = rfc3339(self._clock())

    async def _heartbeats(self, interval: float) -> None:
        """Write a checkpoint every ``interval``, whichever process's turn it is: each wakes
        when the last checkpoint it knows of is ``interval`` old, and under the lock finds
        out whether another process wrote one meanwhile."""
        while True:
            wait = self._checkpoint_at + interval - self._clock().timestamp()
            # At least a little: clocks of several processes may disagree slightly.
            await asyncio.sleep(min(max(wait, min(1.0, interval / 4)), interval))
            try:
                await self._submit(None)
            except AuditUnavailable as exc:
                log.error("audit checkpoint not written: %s", exc)  # noqa: TRY400
                await asyncio.sleep(interval)

    # ------------------------------------------------------------------ the write
    def _write(
        self, items: list[_Item], *, final: bool = False, rotation: _Rotation | None = None
    ) -> list[dict[str, Any]]:
        """Append ``items`` (and a checkpoint when one is due) in one write and one fsync;
        the sealed events, in order. ``final``: also sign a tail that is not due yet.
        ``rotation``: end with that key rotation line (it signs like a checkpoint) and
        install the new key before the lock is released; the rotation line is returned
        after the events."""
        fd, head_fd = self._fd, self._head_fd
        if fd is None or head_fd is None:
            raise AuditUnavailable(f"the audit log {self.path} is not open")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise AuditUnavailable(f"cannot lock the audit log {self.path}: {exc}") from None
        start = -1
        old_head: bytes | None = None
        try:
            start = os.fstat(fd).st_size
            if start != self._known_size:
                self._catch_up(start, head_fd)
            now = self._clock()
            sealed, chunks, last = self._seal(items, now)
            head = _HeadRecord(
                last.seq, last.hash, self._checkpoint_seq, self._checkpoint_at, self._key_id
            )
            signed = self._signed_line(last, now, final=final, rotation=rotation)
            if signed is not None:
                entry, signer = signed
                if rotation is not None:
                    sealed.append(entry)
                chunks.append(render(entry) + b"\n")
                seq = entry["seq"]
                head = _HeadRecord(seq, entry["hash"], seq, now.timestamp(), signer)
            if not chunks:
                return sealed
            write_all(fd, b"".join(chunks))
            os.fsync(fd)
            old_head = os.pread(head_fd, _HEAD_SIZE, 0)
            os.pwrite(head_fd, head.encode(), 0)
            os.fsync(head_fd)
        except OSError as exc:
            # Never leave a torn line behind: cut the file back to the last whole event,
            # and the head back to it too (a head past the log's end reads as a cut log).
            if start >= 0:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
            if old_head is not None:
                with contextlib.suppress(OSError):
                    os.pwrite(head_fd, old_head, 0)
            self._known_size = -1
            raise AuditUnavailable(
                f"cannot write the audit log {self.path}: {exc.strerror or exc}",
                hint="free disk space or fix permissions; actions stay refused until then",
            ) from None
        else:
            self._known_size = start + sum(len(c) for c in chunks)
            self._last = Head(head.seq, head.hash)
            self._checkpoint_seq, self._checkpoint_at = head.checkpoint_seq, head.checkpoint_at
            self._key_id = head.key_id
            if rotation is not None:
                self._install(rotation)
            return sealed
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _seal(
        self, items: list[_Item], now: datetime
    ) -> tuple[list[dict[str, Any]], list[bytes], Head]:
        """Seal ``items`` after the chain's last line (a replica's new chain begins with
        its genesis line): the callers' events, every line to write, the new head."""
        genesis: list[_Item] = []
        if self._last.seq == 0 and self._genesis:
            # Whose chain it is, and a random id that tells it from any other chain (two
            # chains never share a genesis, even when they start alike).
            fields = {"chain": secrets.token_hex(16), "host": socket.gethostname()}
            genesis = [(GENESIS_EVENT, None, "bastion", "ok", self._clean(fields))]
        sealed, chunks, last = _seal_all([*genesis, *items], self._last, rfc3339(now), self.replica)
        return sealed[len(genesis) :], chunks, last

    def settle_signing_key_now(self) -> str | None:
        """Before a rotation (blocking): finish or undo one that was interrupted.

        Under the log's lock, a staged key that the chain already hands over to is
        installed (its rotation line is in the log); a staged key it does not name is
        removed (its rotation never happened). Returns a sentence saying which, or None.
        """
        fd, head_fd = self._fd, self._head_fd
        files = self._checkpoints.files if self._checkpoints is not None else None
        if fd is None or head_fd is None or files is None:
            return None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size != self._known_size:
                self._catch_up(size, head_fd)
                self._known_size = size
            staged = read_staged_signing_key(files.state_dir, files.kind)
            if staged is None:
                return None
            if self._key_id == key_id(staged):
                install_staged_signing_key(files.state_dir, files.kind)
                return f"completed an interrupted rotation to {key_id(staged)}"
            discard_staged_signing_key(files.state_dir, files.kind)
            return f"removed the staged key {key_id(staged)} of a rotation that did not happen"
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _signed_line(
        self, last: Head, now: datetime, *, final: bool, rotation: _Rotation | None
    ) -> tuple[dict[str, Any], str] | None:
        """The checkpoint (or rotation) line to follow ``last`` when one is due, and the id
        of the key the chain expects next; None when none is due."""
        checkpoints = self._checkpoints
        if checkpoints is None or (
            rotation is None and not self._checkpoint_due(last.seq, now, final=final)
        ):
            return None
        key = self._signing_key(checkpoints)
        if rotation is not None:
            line = _rotation(checkpoints, key, rotation, last, now, replica=self.replica)
            return line, key_id(rotation.new_key)
        return _checkpoint(checkpoints.policy, key, last, now, replica=self.replica), key_id(key)

    def _signing_key(self, checkpoints: Checkpointer) -> Ed25519PrivateKey:
        if checkpoints.files is None:
            return checkpoints.key
        return checkpoints.files.current(self._key_id)

    def _install(self, rotation: _Rotation) -> None:
        """The rotation line is durable: make the new key the one in use. A failure leaves
        it staged, and the next checkpoint (of any writer) installs it."""
        try:
            rotation.install()
        except Exception as exc:  # noqa: BLE001 - the rotation itself is done and recorded
            log.error("the new audit signing key is recorded but not installed yet: %s", exc)  # noqa: TRY400
        if self._checkpoints is not None and self._checkpoints.files is None:
            # A key held in memory (tools, tests): this writer signs with the new one now.
            self._checkpoints = Checkpointer(rotation.new_key, self._checkpoints.policy)

    def _catch_up(self, size: int, head_fd: int) -> None:
        """Another process wrote (or someone changed the file): read the chain's end from
        the log and the checkpoint schedule from the head; refuse a log cut before its head."""
        last = self._read_tail(size)
        try:
            head = _HeadRecord.decode(os.pread(head_fd, _HEAD_SIZE, 0))
        except ValueError:
            head = None  # a new log (empty head file), or a damaged head: the log decides
        if head is not None and (
            last.seq < head.seq or (last.seq == head.seq and last.hash != head.hash)
        ):
            raise AuditUnavailable(
                f"the audit log {self.path} ends at event {last.seq} but its head records "
                f"event {head.seq}: it was cut or its last line replaced, so it is not "
                "continued",
                hint="run 'bastion audit verify', keep the log as evidence, and move the log "
                "and its .head aside; the bastion then starts a new log",
            )
        self._last = last
        if head is not None:
            self._checkpoint_seq, self._checkpoint_at = head.checkpoint_seq, head.checkpoint_at
            self._key_id = head.key_id

    def _checkpoint_due(self, seq: int, now: datetime, *, final: bool) -> bool:
        if self._checkpoints is None:
            return False
        if final:
            return seq > self._checkpoint_seq
        return self._checkpoints.policy.due(
            seq=seq,
            checkpoint_seq=self._checkpoint_seq,
            now=now.timestamp(),
            checkpoint_at=self._checkpoint_at,
        )

    def _read_tail(self, size: int) -> Head:
        """The chain's last (seq, hash), read from the end of the file."""
        if size == 0:
            return Head(0, GENESIS)
        with self.path.open("rb") as f:
            block = 4096
            data = b""
            offset = size
            while offset > 0:
                step = min(block, offset)
                offset -= step
                f.seek(offset)
                data = f.read(step) + data
                if data.count(b"\n") >= 2 or offset == 0:
                    break
                block *= 2
        last_line = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        if not data.endswith(b"\n"):
            raise AuditUnavailable(
                f"the audit log {self.path} ends with an incomplete line",
                hint="run 'bastion audit verify' and restore the log before recording more",
            )
        try:
            event = json.loads(last_line)
            last = Head(int(event["seq"]), str(event["hash"]))
        except (ValueError, KeyError, TypeError):
            raise AuditUnavailable(
                f"the last line of the audit log {self.path} is not an audit event",
                hint="run 'bastion audit verify' and restore the log before recording more",
            ) from None
        owner = event.get(REPLICA)
        if self.replica is not None and owner is not None and owner != self.replica:
            # Two replicas on one chain would make it nobody's: each replica writes its own.
            raise AuditUnavailable(
                f"the audit log {self.path} is the chain of replica {owner!r}, and this is "
                f"replica {self.replica!r}: it is not continued",
                hint=f"set state.replica_id: {owner} if this is that replica, or give this "
                "replica a log of its own (paths.audit_log)",
            )
        return last

    # ------------------------------------------------------------------ hygiene
    def _clean(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        clash = RESERVED.union((REPLICA,)).intersection(fields)
        if clash:
            raise ValueError(f"audit event fields may not be named {', '.join(sorted(clash))}")
        return {name: self._clean_value(name, value) for name, value in fields.items()}

    def _clean_value(self, name: str, value: Any) -> Any:
        if isinstance(value, Secret):
            return self.reference(value.value)
        if isinstance(value, str):
            lowered = name.lower()
            if any(word in lowered for word in _SECRET_NAMES) and not value.startswith(
                "hmac-sha256:"
            ):
                return self.reference(value)
            return redact(value)[0]
        if isinstance(value, Mapping):
            return {str(k): self._clean_value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean_value(name, v) for v in value]
        if isinstance(value, datetime):
            return rfc3339(value)
        if isinstance(value, Path):
            return str(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        raise TypeError(f"audit field {name!r} has a value of type {type(value).__name__}")


def _with_replica(replica: str | None, fields: Mapping[str, Any]) -> Mapping[str, Any]:
    """The event's fields, led by the replica whose chain it is (when the log has one)."""
    return fields if replica is None else {REPLICA: replica, **fields}


def _seal_all(
    items: list[_Item], last: Head, time: str, replica: str | None = None
) -> tuple[list[dict[str, Any]], list[bytes], Head]:
    """Seal ``items`` after ``last``: the events, their lines, and the new chain head."""
    sealed: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for event, session, actor, outcome, own in items:
        fields = _with_replica(replica, own)
        entry = seal(
            seq=last.seq + 1,
            time=time,
            event=event,
            session=session,
            actor=actor,
            outcome=outcome,
            fields=fields,
            prev=last.hash,
        )
        sealed.append(entry)
        chunks.append(render(entry) + b"\n")
        last = Head(entry["seq"], entry["hash"])
    return sealed, chunks, last


def _checkpoint(
    policy: CheckpointPolicy,
    key: Ed25519PrivateKey,
    last: Head,
    now: datetime,
    *,
    replica: str | None = None,
) -> dict[str, Any]:
    """The checkpoint line that follows ``last``, signing it."""
    time = rfc3339(now)
    fields = checkpoint_fields(key, policy, covers=last.seq, hash=last.hash, time=time)
    return seal(
        seq=last.seq + 1,
        time=time,
        event=CHECKPOINT_EVENT,
        session=None,
        actor=CHECKPOINT_ACTOR,
        outcome=CHECKPOINT_OUTCOME,
        fields=_with_replica(replica, fields),
        prev=last.hash,
    )


def _rotation(
    checkpoints: Checkpointer,
    key: Ed25519PrivateKey,
    rotation: _Rotation,
    last: Head,
    now: datetime,
    *,
    replica: str | None = None,
) -> dict[str, Any]:
    """The key rotation line that follows ``last``: signed by ``key``, naming the new key."""
    time = rfc3339(now)
    fields = rotation_fields(
        key,
        rotation.new_key,
        checkpoints.policy,
        covers=last.seq,
        hash=last.hash,
        time=time,
        actor=rotation.actor,
        compromised=rotation.compromised,
    )
    return seal(
        seq=last.seq + 1,
        time=time,
        event=ROTATION_EVENT,
        session=None,
        actor=rotation.actor,
        outcome=CHECKPOINT_OUTCOME,
        fields=_with_replica(replica, fields),
        prev=last.hash,
    )
