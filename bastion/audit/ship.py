"""Shipping the audit log off-host: its signed checkpoints (or every line) to a syslog
server over TLS and/or an HTTPS webhook, so that what an attacker on the bastion could
rewrite has already left it.

How it works, and why:

* **The log is the queue.** A shipper follows the log file from a cursor it keeps beside it
  (``audit.jsonl.ship-syslog``, ``audit.jsonl.ship-webhook``: byte offset, ``seq`` and
  ``hash`` of the last line sent). Nothing is buffered in memory, so an outage of hours
  costs no memory and loses nothing: when the destination answers again, everything not
  yet sent goes, in order. Lines written by any process (every worker, the command-line
  tools) are shipped.
* **One shipper per destination per host.** Every worker runs one; the one holding the
  cursor file's ``flock`` ships, the others wait and take over within seconds if it dies.
* **Never in the way of a session.** Shipping runs in its own task, reads the file, and
  never touches the write path. A failure is an audit event (``audit.ship_failed``,
  outcome ``alert``: at the first failure and then every 10 minutes while it lasts), is
  retried with back-off (1 s doubling to 60 s), and its end is ``audit.ship_resumed``.
* **A log cut under the shipper is noticed.** If the line at the cursor is no longer the
  one it sent (the file is shorter, or different there), the shipper writes
  ``audit.ship_rewound`` (``alert``) and sends the log again from its start.

Syslog: RFC 5424 messages (facility 13, "log audit"; severity from the outcome; MSGID the
event name; the JSON line as MSG after a UTF-8 BOM), octet-counted over TLS (RFC 5425 and
6587), the server's certificate checked against the configured CA only. Syslog has no
acknowledgement: a message written just before the connection breaks can be lost without
the sender knowing; the next checkpoint covers everything the lost one did.

Webhook: ``POST`` of up to 100 lines (``application/x-ndjson``), CA pinned, no redirects,
no proxy from the environment; any 2xx status is success. An optional bearer token is
read from a secret file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from bastion.audit.chain import REPLICA
from bastion.audit.checkpoint import is_signed
from bastion.audit.log import head_path, read_head
from bastion.errors import AuditUnavailable, ConfigError

if TYPE_CHECKING:
    from bastion.audit.log import AuditLog
    from bastion.config import Config

__all__ = [
    "Destination",
    "ShipFailed",
    "Shipper",
    "SyslogTls",
    "Webhook",
    "cursor_path",
    "rfc5424",
    "shippers_for",
    "tls_context",
]

log = logging.getLogger(__name__)

BATCH_LINES = 100
BATCH_BYTES = 1 << 20
_READ = 1 << 20
_FACILITY = 13  # "log audit" (RFC 5424, 6.2.1)
_BOM = b"\xef\xbb\xbf"
_ALERT_SEVERITY = {"alert": 1}
_WARNING_OUTCOMES = frozenset({"denied", "refused", "failed", "rejected"})
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
_PRINTABLE = re.compile(r"[^\x21-\x7e]")


class ShipFailed(Exception):
    """Sending to a destination failed; the message is one sentence naming it."""


class Destination(Protocol):
    name: str  # the cursor file's suffix: "syslog", "webhook"
    where: str  # for messages: "syslog logs.example.com:6514"

    async def send(self, lines: Sequence[bytes]) -> None:
        """Send complete log lines (each ending in a newline); ShipFailed when it did not."""

    async def aclose(self) -> None: ...


def tls_context(ca_file: Path) -> ssl.SSLContext:
    """A client context that trusts ``ca_file`` only (not the system's CAs), TLS 1.2+."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"CA file {ca_file} cannot be used: {exc}",
            hint="give the PEM certificate of the CA that signed the receiver's certificate",
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _header_token(text: str, limit: int) -> str:
    """A header field of RFC 5424: printable US-ASCII without spaces, at most ``limit``."""
    cleaned = _PRINTABLE.sub("_", text)[:limit]
    return cleaned or "-"


def rfc5424(
    line: bytes, *, hostname: str, app: str = "bastion", severity: int | None = None
) -> bytes:
    """One audit line as an RFC 5424 message (without the octet-count frame). The severity
    follows the line's outcome unless given (break-glass alerts are sent as 2, crit); the
    HOSTNAME is the replica the line names (whose chain it is), else ``hostname``."""
    body = line.rstrip(b"\n")
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    event: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    outcome = str(event.get("outcome", ""))
    if severity is None:
        severity = _ALERT_SEVERITY.get(outcome, 4 if outcome in _WARNING_OUTCOMES else 6)
    stamp = str(event.get("time", ""))
    header = " ".join(
        (
            f"<{_FACILITY * 8 + severity}>1",
            stamp if _TIME.fullmatch(stamp) else "-",
            _header_token(str(event.get(REPLICA) or hostname), 255),
            _header_token(app, 48),
            "-",  # PROCID: the shipper is not the process that wrote the line
            _header_token(str(event.get("event", "")), 32),
            "-",  # no structured data: the JSON line is the message
        )
    )
    return header.encode() + b" " + _BOM + body


class SyslogTls:
    """Syslog over TLS (RFC 5425): one connection, reopened after any failure."""

    name = "syslog"

    def __init__(
        self,
        host: str,
        port: int,
        ca_file: Path,
        *,
        timeout: float = 10.0,
        hostname: str = "",
        severity: int | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.where = f"syslog {host}:{port}"
        self._context = tls_context(ca_file)
        self._timeout = timeout
        self._hostname = hostname or socket.gethostname()
        self._severity = severity  # None: from each line's outcome
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, lines: Sequence[bytes]) -> None:
        frames = b"".join(
            b"%d %s" % (len(message), message)
            for message in (
                rfc5424(line, hostname=self._hostname, severity=self._severity) for line in lines
            )
        )
        try:
            _, writer = await self._connected()
            writer.write(frames)
            await asyncio.wait_for(writer.drain(), self._timeout)
        except ShipFailed:
            raise
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            await self.aclose()
            raise ShipFailed(f"cannot send to {self.where}: {_reason(exc)}") from None

    async def _connected(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._stream is not None:
            reader, writer = self._stream
            # A receiver that closed its end shows as EOF here: reconnect rather than
            # write into a dead connection.
            if not (reader.at_eof() or writer.is_closing()):
                return self._stream
            await self.aclose()
        try:
            self._stream = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host, self.port, ssl=self._context, server_hostname=self.host
                ),
                self._timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            raise ShipFailed(
                f"{self.where} presented a certificate the configured CA does not vouch for "
                f"({exc.verify_message})"
            ) from None
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ShipFailed(f"cannot connect to {self.where}: {_reason(exc)}") from None
        return self._stream

    async def aclose(self) -> None:
        if self._stream is None:
            return
        _, writer = self._stream
        self._stream = None
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


class Webhook:
    """HTTPS POST of JSON lines to one URL, CA pinned, optional bearer token."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        ca_file: Path,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        content_type: str = "application/x-ndjson",
    ) -> None:
        self.url = url
        self.where = f"webhook {url}"
        self._context = tls_context(ca_file)
        self._timeout = timeout
        # One JSON object per request (break-glass alerts) is sent as application/json.
        self._headers = {"Content-Type": content_type}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session: aiohttp.ClientSession | None = None

    async def send(self, lines: Sequence[bytes]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._context),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                trust_env=False,  # no proxy or netrc from the environment
            )
        try:
            async with self._session.post(
                self.url, data=b"".join(lines), headers=self._headers, allow_redirects=False
            ) as answer:
                if not 200 <= answer.status < 300:
                    raise ShipFailed(f"{self.where} answered HTTP {answer.status}")
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ShipFailed(
                f"{self.where} presented a certificate the configured CA does not vouch for "
                f"({exc.certificate_error})"
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ShipFailed(f"cannot send to {self.where}: {_reason(exc)}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# ------------------------------------------------------------------------------ the shipper
def cursor_path(log_path: Path, destination: str) -> Path:
    return log_path.with_name(f"{log_path.name}.ship-{destination}")


@dataclass(frozen=True)
class _Cursor:
    offset: int = 0
    seq: int = 0
    hash: str = ""


@dataclass(frozen=True)
class _Line:
    raw: bytes
    end: int  # the offset just after it
    seq: int
    hash: str
    checkpoint: bool


class Shipper:
    """Follows one log and sends its new lines (all, or checkpoints only) to one destination."""

    def __init__(
        self,
        destination: Destination,
        log_path: Path,
        *,
        everything: bool = False,
        poll: float = 0.5,
        leader_poll: float = 5.0,
        retry: tuple[float, float] = (1.0, 60.0),
        alert_every: float = 600.0,
    ) -> None:
        self.destination = destination
        self.log_path = log_path
        self.cursor_file = cursor_path(log_path, destination.name)
        self.everything = everything
        self._poll = poll
        self._leader_poll = leader_poll
        self._retry = retry
        self._alert_every = alert_every
        self._cursor = _Cursor()
        self._fd: int | None = None

    # ------------------------------------------------------------------ the loop
    async def run(self, audit: AuditLog) -> None:
        """Ship until ``audit.stopping`` is set, then one last round; see the module doc."""
        stopping = audit.stopping or asyncio.Event()
        try:
            while not self._lead():
                if await _wait(stopping, self._leader_poll):
                    return
            self._cursor = self._read_cursor()
            failing_since: float | None = None
            attempts, alerted = 0, float("-inf")
            while True:
                last_round = stopping.is_set()
                try:
                    sent = await self._round(audit)
                except ShipFailed as exc:
                    attempts += 1
                    now = time.monotonic()
                    failing_since = failing_since if failing_since is not None else now
                    if now - alerted >= self._alert_every:
                        alerted = now
                        await _audit(
                            audit,
                            "audit.ship_failed",
                            "alert",
                            destination=self.destination.where,
                            error=str(exc),
                            attempts=attempts,
                            shipped_to=self._cursor.seq,
                        )
                    if last_round:
                        return
                    delay = min(self._retry[0] * 2 ** (attempts - 1), self._retry[1])
                    await _wait(stopping, delay)
                    continue
                if failing_since is not None:
                    await _audit(
                        audit,
                        "audit.ship_resumed",
                        "ok",
                        destination=self.destination.where,
                        attempts=attempts,
                        failed_for_seconds=round(time.monotonic() - failing_since, 1),
                    )
                    failing_since, attempts, alerted = None, 0, float("-inf")
                if last_round:
                    return
                if not sent and await _wait(stopping, self._poll):
                    continue  # one last round for what came in meanwhile
        finally:
            await self.destination.aclose()
            self._release()

    async def _round(self, audit: AuditLog) -> int:
        """Send what is new in the log (everything written so far); lines sent."""
        sent = 0
        while True:
            lines, rewound = await asyncio.to_thread(self._read_new)
            if rewound is not None:
                await _audit(
                    audit,
                    "audit.ship_rewound",
                    "alert",
                    destination=self.destination.where,
                    reason=rewound,
                    shipped_to=self._cursor.seq,
                )
                self._cursor = _Cursor()
                self._save_cursor()
                continue
            if not lines:
                return sent
            chosen = [line for line in lines if self.everything or line.checkpoint]
            for batch in _batches(chosen):
                await self.destination.send([line.raw for line in batch])
                self._advance(batch[-1])
                sent += len(batch)
            # The lines passed over (events, when only checkpoints go) are done too.
            self._advance(lines[-1])

    def _advance(self, line: _Line) -> None:
        if line.end > self._cursor.offset:
            self._cursor = _Cursor(line.end, line.seq, line.hash)
            self._save_cursor()

    # ------------------------------------------------------------------ the file
    def _read_new(self) -> tuple[list[_Line], str | None]:
        """Durable lines after the cursor (at most about 1 MiB), or why the cursor no longer
        fits the log. Durable: up to the head record, which the writer updates only once the
        lines are synced; a line of a write that then fails is cut again, and is not sent."""
        cursor = self._cursor
        try:
            durable = read_head(head_path(self.log_path))
        except ValueError:
            durable = None
        try:
            with self.log_path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < cursor.offset:
                    return [], f"the log is shorter ({size} bytes) than what was shipped"
                if cursor.offset:
                    problem = _check_cursor(f, cursor)
                    if problem:
                        return [], problem
                f.seek(cursor.offset)
                data = f.read(_READ)
        except FileNotFoundError:
            return [], None if cursor.offset == 0 else "the log file is gone"
        except OSError as exc:
            raise ShipFailed(f"cannot read the audit log {self.log_path}: {exc.strerror}") from None
        lines: list[_Line] = []
        offset = cursor.offset
        for raw in data.splitlines(keepends=True):
            if not raw.endswith(b"\n"):
                break  # being written, or torn: not yet
            line = _parse(raw, offset + len(raw))
            if durable is not None and line.seq > durable.seq:
                break  # written, not yet synced: next round
            offset = line.end
            lines.append(line)
        return lines, None

    def _lead(self) -> bool:
        """Take the cursor file's lock: this process ships for the host while it holds it."""
        if self._fd is None:
            try:
                self._fd = os.open(
                    self.cursor_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
                )
            except OSError as exc:
                log.error("cannot open %s: %s", self.cursor_file, exc.strerror)  # noqa: TRY400
                return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def _read_cursor(self) -> _Cursor:
        if self._fd is None:
            return _Cursor()
        raw = os.pread(self._fd, 4096, 0)
        try:
            data = json.loads(raw)
            return _Cursor(int(data["offset"]), int(data["seq"]), str(data["hash"]))
        except (ValueError, KeyError, TypeError):
            return _Cursor()  # new (empty) or damaged: ship from the start, at least once

    def _save_cursor(self) -> None:
        # Not fsynced: after a crash the shipper re-sends from an older cursor (at least
        # once), which a receiver tells apart by seq.
        if self._fd is None:
            return
        record = json.dumps(
            {"offset": self._cursor.offset, "seq": self._cursor.seq, "hash": self._cursor.hash}
        ).encode()
        os.pwrite(self._fd, record.ljust(255) + b"\n", 0)


def _check_cursor(f: Any, cursor: _Cursor) -> str | None:
    """Whether the line just before ``cursor.offset`` is still the one that was shipped."""
    back = 4096
    while True:
        start = max(cursor.offset - back, 0)
        f.seek(start)
        block: bytes = f.read(cursor.offset - start)
        if b"\n" in block[:-1] or start == 0 or back >= _READ:
            break
        back *= 4
    if not block.endswith(b"\n"):
        return "the log no longer has a line end where shipping stopped"
    last = block[:-1].rsplit(b"\n", 1)[-1]
    line = _parse(last + b"\n", cursor.offset)
    if line.seq != cursor.seq or line.hash != cursor.hash:
        return f"line {cursor.seq}, shipped before, is no longer in the log as it was sent"
    return None


def _parse(raw: bytes, end: int) -> _Line:
    try:
        event = json.loads(raw)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        return _Line(raw, end, -1, "", checkpoint=False)
    seq = event.get("seq")
    return _Line(
        raw,
        end,
        seq if isinstance(seq, int) else -1,
        str(event.get("hash", "")),
        # Key rotation lines sign the chain too, and name the next key: shipped alike.
        checkpoint=is_signed(event),
    )


def _batches(lines: list[_Line]) -> list[list[_Line]]:
    batches: list[list[_Line]] = []
    size = 0
    for line in lines:
        if not batches or len(batches[-1]) >= BATCH_LINES or size + len(line.raw) > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(line)
        size += len(line.raw)
    return batches


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``event`` is set; whether it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


async def _audit(audit: AuditLog, event: str, outcome: str, **fields: Any) -> None:
    try:
        await audit.record(event, actor="bastion", outcome=outcome, **fields)
    except AuditUnavailable as exc:
        log.error("audit event %s not written: %s", event, exc)  # noqa: TRY400


# ------------------------------------------------------------------------------ from config
def read_token(path: Path) -> str:
    """A webhook token from its secret file, checked like every secret file."""
    # Imported here: the loader pulls in pydantic and yaml, which only the server needs.
    from bastion.config.loader import secret_file_problem  # noqa: PLC0415

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"webhook token file {path} cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        problem = secret_file_problem(st, path, f"uid {os.geteuid()}", os.geteuid())
        if problem:
            raise ConfigError(f"webhook token file {path} {problem}")
        token = os.read(fd, 4096).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(
            f"webhook token file {path} must hold one word (the token), and nothing else"
        )
    return token


def destinations_for(config: Config) -> list[Destination]:
    ship = config.audit.ship
    if ship is None:
        return []
    found: list[Destination] = []
    if ship.syslog is not None:
        host, port = ship.syslog.host_port()
        found.append(SyslogTls(host, port, ship.syslog.ca_file))
    if ship.webhook is not None:
        hook = ship.webhook
        token = read_token(hook.token_file) if hook.token_file is not None else None
        found.append(Webhook(hook.url, hook.ca_file, token=token))
    return found


def shippers_for(config: Config) -> list[Shipper]:
    ship = config.audit.ship
    everything = ship is not None and ship.events == "all"
    return [
        Shipper(destination, config.paths.audit_log, everything=everything)
        for destination in destinations_for(config)
    ]
