"""Versioned schema migrations of the state stores, on SQLite and on PostgreSQL: applied on
open and by ``bastion db migrate``, all or nothing, serialised between processes, and refused
against a schema a newer release migrated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from conftest import WriteConfig
from state_backends import Backend, race

from bastion.cli.main import main
from bastion.state.database import StateDatabase, open_sqlite
from bastion.state.logins import LoginGuard
from bastion.state.migrations import Migration, SchemaTooNew, migrate, schema_version
from bastion.state.stores import COMPONENTS, StateStores


def database(backend: Backend, file: str = "logins.db") -> StateDatabase:
    target = backend.open(file)
    return open_sqlite(target) if isinstance(target, Path) else target


def stores(backend: Backend) -> StateStores:
    return StateStores(backend.directory, backend.postgres)


def test_a_fresh_database_is_migrated_to_the_latest_version(state_backend: Backend) -> None:
    latest = {name: len(migrations) for name, (migrations, _) in COMPONENTS.items()}
    assert stores(state_backend).migrate() == latest
    assert stores(state_backend).migrate() == latest  # again: nothing to do
    for name, (_, file) in COMPONENTS.items():
        db = database(state_backend, file)
        assert schema_version(db, name) == latest[name]
        db.close()


def test_a_schema_from_a_newer_release_is_refused_and_left_alone(state_backend: Backend) -> None:
    LoginGuard(state_backend.open("logins.db")).close()
    db = database(state_backend)
    db.execute("UPDATE schema_versions SET version = 99 WHERE component = 'logins'")
    db.close()
    with pytest.raises(SchemaTooNew, match=r"logins schema is at version 99, newer than"):
        LoginGuard(state_backend.open("logins.db"))
    with pytest.raises(SchemaTooNew):
        stores(state_backend).migrate()
    db = database(state_backend)
    assert schema_version(db, "logins") == 99
    db.close()


BROKEN = (
    Migration(1, sqlite=("CREATE TABLE t1 (a INTEGER)",), postgresql=("CREATE TABLE t1 (a INT)",)),
    Migration(
        2,
        sqlite=("CREATE TABLE t2 (a INTEGER)", "INSERT INTO no_such_table VALUES (1)"),
        postgresql=("CREATE TABLE t2 (a INT)", "INSERT INTO no_such_table VALUES (1)"),
    ),
)


NO_TABLE = (sqlite3.OperationalError, psycopg.errors.UndefinedTable)


def test_a_failing_migration_changes_nothing(state_backend: Backend) -> None:
    db = database(state_backend)
    assert migrate(db, "test", BROKEN[:1]) == 1
    with pytest.raises(NO_TABLE, match="no_such_table"):
        migrate(db, "test", BROKEN)
    assert schema_version(db, "test") == 1
    # t2 was created by the failed migration's first statement: rolled back with it.
    with pytest.raises(NO_TABLE, match="t2"):
        db.execute("SELECT count(*) FROM t2").fetchone()
    db.close()


def test_migrations_are_numbered_without_gaps(state_backend: Backend) -> None:
    db = database(state_backend)
    with pytest.raises(ValueError, match="without gaps"):
        migrate(db, "test", BROKEN[1:])
    db.close()


def test_a_state_file_from_before_versioning_is_adopted_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "logins.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE totp_steps (user TEXT PRIMARY KEY, last_step INTEGER NOT NULL);"
        "INSERT INTO totp_steps VALUES ('alice', 1234);"
    )
    old.close()
    guard = LoginGuard(path)
    assert guard.last_step("alice") == 1234
    assert not guard.accept_step("alice", 1234)
    guard.close()
    db = open_sqlite(path)
    assert schema_version(db, "logins") == 1
    db.close()


def _open(backend: Backend) -> StateDatabase:
    return database(backend, "journal.db")


def _migrate_all(db: StateDatabase, _round: int) -> list[int]:
    return [migrate(db, name, migrations) for name, (migrations, _) in COMPONENTS.items()]


def test_processes_starting_together_migrate_once(state_backend: Backend) -> None:
    """Replicas starting at once: none fails on another's half-made schema."""
    (results,) = race(state_backend, _open, _migrate_all, rounds=1)
    latest = [len(migrations) for migrations, _ in COMPONENTS.values()]
    assert results == [latest] * 4


def test_bastion_db_migrate(
    state_backend: Backend, write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(data: dict[str, object]) -> None:
        data["paths"]["state_dir"] = str(state_backend.directory)  # type: ignore[index]
        if state_backend.postgres is not None:
            data["state"] = {
                "url": state_backend.postgres.url,
                "password_file": str(state_backend.postgres.password_file),
            }

    path = write_config(edit)
    assert main(["db", "migrate", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    where = "PostgreSQL at 127.0.0.1" if state_backend.postgres else "SQLite in"
    assert f"state schema up to date ({where}" in out
    for name, (migrations, _) in COMPONENTS.items():
        assert f"{name} " in out
        assert f"version {len(migrations)}" in out
