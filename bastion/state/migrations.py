"""Versioned schema migrations for the state stores, on SQLite and PostgreSQL.

Each store owns a *component* (``logins``, ``break_glass_codes``, ``journal``,
``approvals``) and lists its migrations, numbered from 1, each with its statements for both
databases. The version a database is at is one row per component in ``schema_versions``.
:func:`migrate` brings a component up to date in one transaction (PostgreSQL's DDL is
transactional; SQLite's too, statement by statement), so a failed migration leaves the
version and the tables as they were.

A database at a *newer* version than this bastion knows was migrated by a newer release: it
is refused (:class:`SchemaTooNew`), never written to, since old code would break the new
schema's rules silently.

Migration 1 of every component is the schema as it was before versioning, written with
``IF NOT EXISTS``: a state file created by an earlier release is adopted as version 1.

Replicas that start together do not race: PostgreSQL serialises migrations with a
transaction-scoped advisory lock, SQLite with its write lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from bastion.errors import BastionError
from bastion.state.database import StateDatabase

__all__ = ["Migration", "SchemaTooNew", "migrate", "schema_version"]

# pg_advisory_xact_lock key for migrations: "bastmigr" as a big-endian int64.
_MIGRATION_LOCK = int.from_bytes(b"bastmigr", "big") - (1 << 63)

_VERSIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_versions ("
    "component TEXT PRIMARY KEY, version INTEGER NOT NULL CHECK (version > 0))"
)


@dataclass(frozen=True)
class Migration:
    version: int
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]


class SchemaTooNew(BastionError):
    """The state database was migrated by a newer release of the bastion."""

    exit_code = 2


def _check(migrations: Sequence[Migration]) -> int:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, ... without gaps: {versions}")
    return len(versions)


def schema_version(db: StateDatabase, component: str) -> int:
    """The version ``component`` is at (0: never migrated)."""
    if db.dialect == "postgresql":
        exists = db.execute("SELECT to_regclass('schema_versions') IS NOT NULL").fetchone()[0]
    else:
        exists = (
            db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'"
            ).fetchone()
            is not None
        )
    if not exists:
        return 0
    row = db.execute(
        "SELECT version FROM schema_versions WHERE component = ?", (component,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def migrate(db: StateDatabase, component: str, migrations: Sequence[Migration]) -> int:
    """Apply ``component``'s pending migrations; returns the version it is at now.
    SchemaTooNew when the database is past the last migration this release knows."""
    latest = _check(migrations)
    # The common case, every start after the first: one read, no lock.
    if schema_version(db, component) == latest:
        return latest
    with _migration_transaction(db):
        current = schema_version(db, component)
        if current > latest:
            raise SchemaTooNew(
                f"the state database's {component} schema is at version {current}, newer "
                f"than this bastion knows ({latest})",
                hint="run the release that migrated it (or a newer one); never downgrade "
                "against a migrated database",
            )
        for migration in migrations[current:]:
            statements = migration.postgresql if db.dialect == "postgresql" else migration.sqlite
            for statement in statements:
                db.execute(statement)
        if current < latest:
            db.execute(
                "INSERT INTO schema_versions (component, version) VALUES (?, ?) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, latest),
            )
    return latest


@contextlib.contextmanager
def _migration_transaction(db: StateDatabase) -> Iterator[None]:
    """One transaction that no other migration of this database runs beside, with the
    versions table created inside it (two concurrent CREATE TABLE IF NOT EXISTS can collide
    on PostgreSQL; SQLite's transaction holds the write lock from its start)."""
    with db.transaction():
        if db.dialect == "postgresql":
            db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        db.execute(_VERSIONS_TABLE)
        yield
