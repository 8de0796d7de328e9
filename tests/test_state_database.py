"""The connection under every state store: placeholders rewritten for psycopg, and a
PostgreSQL connection that broke failing its statement (closed), then coming back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psycopg
import pytest
from audit.receivers import make_ca
from postgres_server import PostgresServer

from bastion.errors import BackendUnavailable
from bastion.state.database import PostgresLocation, connect_postgres, to_psycopg


def test_placeholders_are_rewritten_and_percent_is_refused() -> None:
    assert to_psycopg("SELECT ? WHERE a = :name AND b = :other_2") == (
        "SELECT %s WHERE a = %(name)s AND b = %(other_2)s"
    )
    assert to_psycopg("SELECT CAST(? AS TEXT)") == "SELECT CAST(%s AS TEXT)"
    with pytest.raises(ValueError, match="must not contain '%'"):
        to_psycopg("SELECT 1 WHERE a LIKE 'x%'")


def _kill_backend(server: PostgresServer, pid: int) -> None:
    with server.connect() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_broken_connection_fails_its_statement_then_reconnects(
    postgres_server: PostgresServer, postgres_location: PostgresLocation
) -> None:
    db = connect_postgres(postgres_location)
    db.execute("CREATE TABLE t (a INTEGER)")
    _kill_backend(postgres_server, db.connection.info.backend_pid)
    with pytest.raises(psycopg.OperationalError):
        db.execute("INSERT INTO t VALUES (1)")  # fails closed: the caller is told
    db.execute("INSERT INTO t VALUES (2)")  # a new connection
    assert db.execute("SELECT a FROM t").fetchall() == [(2,)]
    assert db.execute("SHOW synchronous_commit").fetchone() == ("on",)
    db.close()


def test_a_transaction_never_continues_on_a_new_connection(
    postgres_server: PostgresServer, postgres_location: PostgresLocation
) -> None:
    db = connect_postgres(postgres_location)
    db.execute("CREATE TABLE t (a INTEGER)")

    def interrupted() -> None:
        with db.transaction():
            db.execute("INSERT INTO t VALUES (1)")
            _kill_backend(postgres_server, db.connection.info.backend_pid)
            db.execute("INSERT INTO t VALUES (2)")  # never on a fresh connection, autocommit

    with pytest.raises(psycopg.OperationalError):
        interrupted()
    assert db.execute("SELECT a FROM t").fetchall() == []
    db.close()


def test_tls_verifies_the_server_against_the_configured_ca(
    postgres_server: PostgresServer, postgres_location: PostgresLocation, tmp_path: Path
) -> None:
    tls = dataclasses.replace(postgres_location, ca_file=postgres_server.ca_file)
    db = connect_postgres(tls)
    row = db.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True,)
    # verify-full: the chain and the host name (the certificate names 127.0.0.1).
    assert "sslmode=verify-full" in db.connection.info.dsn
    db.close()
    other = make_ca(tmp_path / "other", "not the database's")
    with pytest.raises(BackendUnavailable, match=r"cannot be reached: .*certificate verify"):
        connect_postgres(dataclasses.replace(tls, ca_file=other.ca_file))
