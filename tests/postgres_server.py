"""A real PostgreSQL server for the tests: Debian's ``postgresql`` binaries, a throwaway data
directory, a free port on 127.0.0.1, password (SCRAM) authentication over TCP only (TLS or
plain), stopped by its PID.

PostgreSQL refuses to run as root, and CI runs as root: then initdb and the server run as the
``postgres`` system user that the Debian package creates (``subprocess`` switches user in the
child before exec, so the PID we hold is the postmaster's own, not a wrapper's).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from audit.receivers import make_ca

SUPERUSER = "bastion_test"


def postgres_bin_dir() -> Path | None:
    """The newest installed server's bin directory (``/usr/lib/postgresql/N/bin``)."""
    root = Path("/usr/lib/postgresql")
    found = sorted(
        (p / "bin" for p in root.glob("*") if (p / "bin" / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    port: int
    password: str
    directory: Path
    process: subprocess.Popen[bytes]
    started_in: float  # seconds from initdb to the first accepted connection
    ca_file: Path  # the CA of the server's certificate (127.0.0.1 and localhost)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            self.url(database), password=self.password, autocommit=True, sslmode="disable"
        )

    def create_database(self) -> str:
        name = f"t_{secrets.token_hex(6)}"
        with self.connect() as conn:
            conn.execute(f"CREATE DATABASE {name}")  # our own hex name
        return name

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGQUIT is PostgreSQL's immediate shutdown: no checkpoint, which the data does
            # not need since it is deleted next (a fast shutdown's checkpoint took seconds).
            os.kill(self.process.pid, signal.SIGQUIT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    bindir = postgres_bin_dir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    as_root = os.geteuid() == 0
    account = pwd.getpwnam("postgres") if as_root else None
    user_args: dict[str, object] = (
        {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []} if account else {}
    )
    begun = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
    data, pwfile = directory / "data", directory / "pw"
    password = secrets.token_urlsafe(24)
    pwfile.write_text(password + "\n")
    if account is not None:
        for path in (directory, pwfile):
            os.chown(path, account.pw_uid, account.pw_gid)
    subprocess.run(
        [
            str(bindir / "initdb"),
            "--pgdata",
            str(data),
            "--username",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth-host=scram-sha-256",
            "--auth-local=reject",
            "--encoding=UTF8",
            "--no-instructions",
            "--no-sync",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **user_args,  # type: ignore[arg-type]
    )
    pwfile.unlink()
    # TLS as well as plain TCP (pg_hba's "host" lines take both): a certificate for
    # 127.0.0.1 and localhost from a CA of its own, the key readable by the server only.
    tls = make_ca(directory / "tls", "state database")
    for path in (tls.key_file, tls.cert_file, tls.key_file.parent):
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)
    tls.key_file.chmod(0o600)
    port = _free_port()
    log = (directory / "server.log").open("wb")
    process = subprocess.Popen(
        [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            "-c",
            "ssl=on",
            "-c",
            f"ssl_cert_file={tls.cert_file}",
            "-c",
            f"ssl_key_file={tls.key_file}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        **user_args,  # type: ignore[arg-type]
    )
    log.close()
    server = PostgresServer(port, password, directory, process, 0.0, tls.ca_file)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    "PostgreSQL exited at start:\n" + (directory / "server.log").read_text()
                )
            try:
                server.connect().close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        server.started_in = time.monotonic() - begun
        yield server
    finally:
        server.stop()
