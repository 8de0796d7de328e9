"""``state:`` in the configuration: SQLite by default; PostgreSQL by URL, with the password in
a 0600 file and TLS set only by its own keys, every mistake named with its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import WriteConfig, secret_file
from test_config import problems

from bastion.config import load_config
from bastion.errors import BackendUnavailable, ConfigError
from bastion.state.database import PostgresLocation, connect_postgres

URL = "postgresql://bastion@db.example.com:5432/bastion"


def with_state(state: dict[str, Any]) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["state"] = state

    return edit


def test_sqlite_is_the_default(write_config: WriteConfig) -> None:
    config = load_config(write_config())
    assert config.state.url == "sqlite"
    assert config.state.postgres is None


def test_a_postgresql_state_with_tls_and_a_password_file(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    secret_file(tmp_path / "db-password", b"pw\n")
    (tmp_path / "db-ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n")
    path = write_config(
        with_state(
            {
                "url": URL,
                "password_file": "db-password",
                "tls": {"ca_file": "db-ca.pem"},
                "connect_timeout": "5s",
            }
        )
    )
    location = load_config(path).state.postgres
    assert location == PostgresLocation(
        url=URL,
        password_file=tmp_path / "db-password",
        ca_file=tmp_path / "db-ca.pem",
        connect_timeout=5.0,
    )


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (
            {"url": "postgresql://bastion:hunter2@db.example.com/bastion", "tls": {"ca_file": "x"}},
            "state: url holds a password; put it in state.password_file (mode 0600) instead",
        ),
        (
            {"url": URL + "?sslmode=disable", "tls": {"ca_file": "x"}},
            "state: url has options after '?' or '#'; TLS and timeouts are set by the state keys",
        ),
        (
            {"url": URL},
            "state: url reaches db.example.com without TLS; set state.tls.ca_file (only a "
            "server on a loopback address may be reached in plain text)",
        ),
        (
            {"url": "mysql://bastion@127.0.0.1/bastion"},
            "state: url must be sqlite or start with postgresql://",
        ),
        (
            {"url": "postgresql://127.0.0.1/bastion"},
            "state: url names no user (postgresql://USER@HOST/DATABASE)",
        ),
        (
            {"url": "postgresql://bastion@127.0.0.1/"},
            "state: url names no database (postgresql://USER@HOST/DATABASE)",
        ),
        (
            {"password_file": "pw"},
            "state: password_file and tls apply to url: postgresql://...; with the default "
            "url: sqlite remove them",
        ),
        (
            {"url": URL, "tls": {"ca_file": "ca.pem", "client_cert_file": "c.pem"}},
            "state.tls: set both client_cert_file and client_key_file (a TLS client "
            "certificate), or neither",
        ),
        (
            {"url": "postgresql://bastion@127.0.0.1/b", "connect_timeout": "5m"},
            "state: connect_timeout: expected a duration from 1s to 60s",
        ),
    ],
)
def test_mistakes_are_named_by_key(
    write_config: WriteConfig, state: dict[str, Any], expected: str
) -> None:
    found = problems(write_config(with_state(state)))
    assert any(expected in line for line in found), found


def test_the_password_file_is_held_to_the_secret_file_rules(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    secret_file(tmp_path / "db-password", b"pw\n", mode=0o644)
    path = write_config(
        with_state({"url": "postgresql://bastion@127.0.0.1/b", "password_file": "db-password"})
    )
    found = problems(path)
    assert any(
        ": state.password_file: secret file" in line and "has mode 0644" in line for line in found
    ), found
    assert load_config(path, check_files=False).state.password_file == tmp_path / "db-password"


def test_connecting_says_what_failed_and_never_shows_the_password(
    tmp_path: Path, postgres_location: PostgresLocation
) -> None:
    wrong = secret_file(tmp_path / "wrong", b"not-the-password\n")
    with pytest.raises(BackendUnavailable) as caught:
        connect_postgres(PostgresLocation(postgres_location.url, password_file=wrong))
    message = str(caught.value)
    assert message.startswith("the PostgreSQL state database at 127.0.0.1 cannot be reached")
    assert "password authentication failed" in message
    assert "not-the-password" not in message
    loose = secret_file(tmp_path / "loose", b"x\n", mode=0o640)
    with pytest.raises(ConfigError, match="must be a regular file of mode 0600"):
        connect_postgres(PostgresLocation(postgres_location.url, password_file=loose))
    db = connect_postgres(postgres_location)
    assert db.execute("SHOW synchronous_commit").fetchone() == ("on",)
    assert db.execute("SHOW ssl").fetchone() is not None
    db.close()
