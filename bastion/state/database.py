"""The connection every state store is written against: SQLite on one host, PostgreSQL for
several bastion replicas (issue 12), behind one small interface.

The stores (:mod:`bastion.state.logins`, :mod:`~bastion.state.breakglass_codes`,
:mod:`~bastion.state.approvals`, :mod:`~bastion.state.journal`) write their SQL once, in the
subset both databases share, with SQLite's placeholders (``?`` and ``:name``); the PostgreSQL
connection rewrites them to psycopg's. Every rule that must hold across processes is one
statement that the database decides (``INSERT ... ON CONFLICT DO UPDATE ... WHERE``,
``UPDATE ... WHERE <condition>``), never a read followed by a write: under PostgreSQL's READ
COMMITTED, a statement that finds a row another transaction is changing waits for it, then
re-checks its condition on the new version, so of two racing writers exactly one changes the
row, as with SQLite's single writer.

Where a read must decide a write, a store opens :meth:`StateDatabase.write_transaction` naming
the tables it reads and writes. SQLite takes its one write lock (``BEGIN IMMEDIATE``);
PostgreSQL locks those tables ``IN SHARE ROW EXCLUSIVE MODE``, which conflicts with every
other writer of them (and with itself) but not with readers: the same "one writer at a time,
what you read is what you change" that the SQLite code was written for. Tables are locked in
one sorted statement, so two transactions cannot deadlock on the order.

Durability: SQLite runs ``synchronous=FULL``; PostgreSQL commits are durable by default
(``synchronous_commit=on``), which the connection sets explicitly so a server-wide setting
cannot make an accepted TOTP step forgettable.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import sqlite3
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from bastion.errors import BackendUnavailable, ConfigError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "PostgresDatabase",
    "PostgresLocation",
    "Rows",
    "SqliteDatabase",
    "StateDatabase",
    "connect_postgres",
    "database_errors",
    "postgres_url_problem",
]

Params = Sequence[Any] | Mapping[str, Any]


def database_errors() -> tuple[type[Exception], ...]:
    """What a statement may raise on either database: for callers that carry on without the
    store (psycopg's errors only when the optional driver is installed)."""
    try:
        import psycopg  # noqa: PLC0415 - the optional extra
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


class Rows(Protocol):
    """What a statement gives back: the DB-API cursor subset the stores use."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class StateDatabase(Protocol):
    dialect: Literal["sqlite", "postgresql"]
    # Raised for a primary-key or unique violation; stores turn it into their own ValueError.
    integrity_errors: tuple[type[Exception], ...]

    def execute(self, sql: str, params: Params = ()) -> Rows: ...

    def executemany(self, sql: str, rows: Sequence[Params]) -> None: ...

    def write_transaction(self, *tables: str) -> contextlib.AbstractContextManager[None]:
        """One transaction in which no other writer changes ``tables``."""
        ...

    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        """One transaction whose reads all see the same committed state."""
        ...

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One transaction that takes its locks itself (SQLite: the write lock at once)."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------- SQLite
class SqliteDatabase:
    """A ``sqlite3`` connection in autocommit mode (one thread per object)."""

    dialect: Literal["sqlite", "postgresql"] = "sqlite"
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Params = ()) -> Rows:
        return self.connection.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self.connection.executemany(sql, rows)

    @contextlib.contextmanager
    def write_transaction(self, *tables: str) -> Iterator[None]:
        # IMMEDIATE takes the write lock of the whole file up front.
        with self._transaction("BEGIN IMMEDIATE"):
            yield

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        # In WAL mode a plain BEGIN is a read snapshot from its first SELECT.
        with self._transaction("BEGIN"):
            yield

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._transaction("BEGIN IMMEDIATE"):
            yield

    def close(self) -> None:
        self.connection.close()

    @contextlib.contextmanager
    def _transaction(self, begin: str) -> Iterator[None]:
        self.connection.execute(begin)
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")


def open_sqlite(path: Path, *, any_thread: bool = False) -> SqliteDatabase:
    """The state database file at ``path``: created 0600 in a 0700 directory, never through a
    symbolic link, durable (WAL, ``synchronous=FULL``), foreign keys enforced. Used from one
    thread, unless ``any_thread`` (the caller then holds a lock around every use)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Create the file 0600 ourselves, so it is never readable by others, not even
    # between SQLite creating it and a chmod; SQLite gives -wal and -shm the same mode.
    # Only a file that does not exist yet is opened here: closing any descriptor of the
    # database would drop the POSIX locks this process's SQLite connections hold on it, and
    # another process closing its last connection would then delete the WAL under them
    # (their later commits lost to everyone else).
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        os.close(os.open(path, flags, 0o600))
    except FileExistsError:
        # A symbolic link in its place is refused (ELOOP), not followed.
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path)) from None
    path.chmod(0o600)
    # Autocommit: every statement is its own transaction; timeout is the busy timeout.
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=not any_thread)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        db.close()
        raise
    return SqliteDatabase(db)


# ---------------------------------------------------------------------------- PostgreSQL
# ``?`` and ``:name`` outside quotes; the stores' SQL has no string holding either, and no
# ``::`` cast (a cast is written CAST(x AS t), which both databases read).
_POSITIONAL = re.compile(r"\?")
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def to_psycopg(sql: str) -> str:
    """SQLite placeholders to psycopg's (``%s``, ``%(name)s``)."""
    if "%" in sql:
        raise ValueError("state SQL must not contain '%': psycopg reads it as a placeholder")
    return _NAMED.sub(r"%(\1)s", _POSITIONAL.sub("%s", sql))


class PostgresDatabase:
    """A psycopg connection in autocommit mode (one thread per object, like SQLite's).

    A connection that broke (the server restarted, a failover, the network) fails the
    statement that found it broken: that caller fails closed (a login is refused). The next
    statement outside a transaction opens a new connection with ``reconnect``, so a replica
    comes back with its database without a restart.
    """

    dialect: Literal["sqlite", "postgresql"] = "postgresql"

    def __init__(
        self,
        connection: psycopg.Connection[Any],
        reconnect: Callable[[], psycopg.Connection[Any]] | None = None,
    ) -> None:
        import psycopg  # noqa: PLC0415 - the optional extra, loaded only when configured

        self.connection = connection
        self._reconnect = reconnect
        self._in_transaction = False
        self.integrity_errors: tuple[type[Exception], ...] = (psycopg.errors.IntegrityError,)

    def execute(self, sql: str, params: Params = ()) -> Rows:
        return self._live().execute(to_psycopg(sql), params)

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        with self._live().cursor() as cursor:
            cursor.executemany(to_psycopg(sql), rows)

    def _live(self) -> psycopg.Connection[Any]:
        if self.connection.broken and not self._in_transaction and self._reconnect:
            self.connection.close()
            self.connection = self._reconnect()
        return self.connection

    @contextlib.contextmanager
    def write_transaction(self, *tables: str) -> Iterator[None]:
        if not tables or not all(re.fullmatch(r"[a-z_]+", t) for t in tables):
            raise ValueError("a write transaction names the tables it locks")
        with self._transaction("BEGIN"):
            self.connection.execute(
                f"LOCK TABLE {', '.join(sorted(set(tables)))} IN SHARE ROW EXCLUSIVE MODE"
            )
            yield

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        with self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"):
            yield

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._transaction("BEGIN"):
            yield

    def close(self) -> None:
        self.connection.close()

    @contextlib.contextmanager
    def _transaction(self, begin: str) -> Iterator[None]:
        self._live().execute(begin)
        self._in_transaction = True
        try:
            yield
        except BaseException:
            if not self.connection.broken:
                self.connection.execute("ROLLBACK")
            raise
        finally:
            self._in_transaction = False
        self.connection.execute("COMMIT")


@dataclass(frozen=True)
class PostgresLocation:
    """Where the PostgreSQL state lives and how to reach it (``state:`` in the config).

    ``url`` is ``postgresql://USER@HOST[:PORT]/DATABASE`` with neither password nor options:
    the password comes from ``password_file`` (a 0600 file) and TLS from the fields below, so
    nothing in the URL can weaken them. TLS is ``verify-full`` against ``ca_file``; a server
    on a loopback address may be reached without TLS (``ca_file`` None).
    """

    url: str
    password_file: Path | None = None
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    connect_timeout: float = 10.0

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def postgres_url_problem(url: str, *, has_ca: bool) -> str | None:
    """What is wrong with ``url`` as a ``state.url``, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("postgresql", "postgres"):
        return "must be sqlite or start with postgresql://"
    if parts.password is not None:
        return "holds a password; put it in state.password_file (mode 0600) instead"
    if parts.query or parts.fragment:
        return "has options after '?' or '#'; TLS and timeouts are set by the state keys"
    if not parts.username:
        return "names no user (postgresql://USER@HOST/DATABASE)"
    if not parts.hostname:
        return "names no host (postgresql://USER@HOST/DATABASE)"
    if port == 0:
        return "has port 0"
    database = parts.path.lstrip("/")
    if not database or "/" in database:
        return "names no database (postgresql://USER@HOST/DATABASE)"
    if not has_ca and not _is_loopback(parts.hostname):
        return (
            f"reaches {parts.hostname} without TLS; set state.tls.ca_file (only a server on "
            "a loopback address may be reached in plain text)"
        )
    return None


def _read_password(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(
            f"the PostgreSQL password file {path} cannot be opened: {exc.strerror}",
            hint="create it with mode 0600, or fix state.password_file",
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(
                f"the PostgreSQL password file {path} must be a regular file of mode 0600",
                hint=f"run: chmod 600 {path}",
            )
        with os.fdopen(os.dup(fd), "r", encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    finally:
        os.close(fd)


def connect_postgres(location: PostgresLocation) -> PostgresDatabase:
    """A connection to the state database; BackendUnavailable when it cannot be reached."""
    problem = postgres_url_problem(location.url, has_ca=location.ca_file is not None)
    if problem:
        raise ConfigError(f"state.url {problem}")
    try:
        import psycopg  # noqa: PLC0415 - the optional extra, loaded only when configured
    except ImportError:
        raise ConfigError(
            "state.url names PostgreSQL but the driver is not installed",
            hint="install the bastion with its PostgreSQL extra: pip install "
            "'k8s-debug-bastion[postgresql]'",
        ) from None
    options: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": max(1, int(location.connect_timeout)),
        "application_name": "bastion",
        # libpq would otherwise fall back to ~/.pgpass: only the config's password counts.
        "passfile": os.devnull,
    }
    if location.password_file is not None:
        options["password"] = _read_password(location.password_file)
    if location.ca_file is not None:
        options["sslmode"] = "verify-full"
        options["sslrootcert"] = str(location.ca_file)
        if location.client_cert_file is not None:
            options["sslcert"] = str(location.client_cert_file)
        if location.client_key_file is not None:
            options["sslkey"] = str(location.client_key_file)
    else:
        options["sslmode"] = "disable"

    def open_connection() -> psycopg.Connection[Any]:
        try:
            connection = psycopg.connect(location.url, **options)
        except psycopg.OperationalError as exc:
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise BackendUnavailable(
                f"the PostgreSQL state database at {location.host} cannot be reached: {first}",
                hint="check state.url, the password file and that the server is up",
            ) from None
        try:
            connection.execute("SET synchronous_commit = on")
            connection.execute("SET TIME ZONE 'UTC'")
        except BaseException:
            connection.close()
            raise
        return connection

    return PostgresDatabase(open_connection(), reconnect=open_connection)
