"""The audit log writer: append-only, hash-chained, durable before anyone is told "done".

``await log.record(...)`` returns only after the event's line and the head record are on
disk (``fsync``). Concurrent callers are group-committed: the events waiting when a write
starts go out in one ``write`` and one ``fsync`` (``fsync="batch"``, the default), or one
at a time (``fsync="event"``). Either way no caller is acknowledged before its event is
durable, and a failure is raised to every caller whose event was in the failed write, so
the action they were about to take is refused.

Several processes may share one log (one worker per core): each write takes an exclusive
``flock`` and picks up the chain from the file's last line when another process wrote
since.

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
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from bastion.audit.chain import GENESIS, RESERVED, Head, render, seal
from bastion.errors import AuditUnavailable
from bastion.redact import redact

__all__ = ["AuditLog", "Secret", "head_path", "load_or_create_hmac_key", "read_head", "utc_now"]

FsyncPolicy = Literal["batch", "event"]
Clock = Callable[[], datetime]

_HEAD_SIZE = 256  # one fixed-size record, rewritten in place: a single sector write
_SECRET_NAMES = ("token", "password", "secret", "credential", "private_key", "lease_id")


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
        data = json.loads(raw.rstrip(b" \n"))
        return Head(seq=int(data["seq"]), hash=str(data["hash"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a valid audit head record ({exc})") from None


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
    event: str
    session: str | None
    actor: str
    outcome: str
    fields: dict[str, Any]
    done: asyncio.Future[dict[str, Any]]


class AuditLog:
    """Append events to one hash-chained JSON-lines file; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        hmac_key: bytes,
        fsync: FsyncPolicy = "batch",
        clock: Clock = utc_now,
    ) -> None:
        self.path = path
        self.head_file = head_path(path)
        self._hmac_key = hmac_key
        self._fsync = fsync
        self._clock = clock
        self._fd: int | None = None
        self._head_fd: int | None = None
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        # Chain state as of our last write; re-read from the file when its size moved.
        self._known_size = -1
        self._last = Head(0, GENESIS)

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

    async def aclose(self) -> None:
        """Wait for events already handed in, then close the files."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        self.close()

    def close(self) -> None:
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
        loop = asyncio.get_running_loop()
        pending = _Pending(
            event, session, actor, outcome, self._clean(fields), loop.create_future()
        )
        self._pending.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_loop(), name="audit-flush")
        return await asyncio.shield(pending.done)

    def record_now(
        self, event: str, *, actor: str, outcome: str, session: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Blocking twin of :meth:`record` for the command-line tools."""
        return self._write([(event, session, actor, outcome, self._clean(fields))])[0]

    async def _flush_loop(self) -> None:
        while self._pending:
            take = len(self._pending) if self._fsync == "batch" else 1
            batch, self._pending = self._pending[:take], self._pending[take:]
            items = [(p.event, p.session, p.actor, p.outcome, p.fields) for p in batch]
            try:
                sealed = await asyncio.to_thread(self._write, items)
            # Whatever went wrong, every waiter must hear of it, or its action would hang.
            except Exception as exc:  # noqa: BLE001
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(exc)
                continue
            for p, event in zip(batch, sealed, strict=True):
                if not p.done.done():
                    p.done.set_result(event)

    # ------------------------------------------------------------------ the write
    def _write(
        self, items: list[tuple[str, str | None, str, str, dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        fd, head_fd = self._fd, self._head_fd
        if fd is None or head_fd is None:
            raise AuditUnavailable(f"the audit log {self.path} is not open")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise AuditUnavailable(f"cannot lock the audit log {self.path}: {exc}") from None
        start = -1
        try:
            start = os.fstat(fd).st_size
            last = self._last if start == self._known_size else self._read_tail(start)
            sealed: list[dict[str, Any]] = []
            chunks: list[bytes] = []
            for event, session, actor, outcome, fields in items:
                entry = seal(
                    seq=last.seq + 1,
                    time=rfc3339(self._clock()),
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
            _write_all(fd, b"".join(chunks))
            os.fsync(fd)
            record = json.dumps({"seq": last.seq, "hash": last.hash}).encode()
            os.pwrite(head_fd, record.ljust(_HEAD_SIZE - 1) + b"\n", 0)
            os.fsync(head_fd)
        except OSError as exc:
            # Never leave a torn line behind: cut the file back to the last whole event.
            if start >= 0:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
            self._known_size = -1
            raise AuditUnavailable(
                f"cannot write the audit log {self.path}: {exc.strerror or exc}",
                hint="free disk space or fix permissions; actions stay refused until then",
            ) from None
        else:
            self._known_size = start + sum(len(c) for c in chunks)
            self._last = last
            return sealed
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

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
            return Head(int(event["seq"]), str(event["hash"]))
        except (ValueError, KeyError, TypeError):
            raise AuditUnavailable(
                f"the last line of the audit log {self.path} is not an audit event",
                hint="run 'bastion audit verify' and restore the log before recording more",
            ) from None

    # ------------------------------------------------------------------ hygiene
    def _clean(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        clash = RESERVED.intersection(fields)
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
