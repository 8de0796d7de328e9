#!/usr/bin/env python3
"""Logins/s with the state on SQLite and on PostgreSQL: the real ``bastion serve`` (1 and 2
workers), each login a TCP connection, the SSH handshake, key then TOTP, and the close.

A login writes the state twice, each durably before the login goes on: the replay guard
accepts the TOTP step (one conditional upsert) and the failure counter is reset. The
PostgreSQL server is Debian's, started for the run by ``tests/postgres_server.py`` on
127.0.0.1 (password over TCP, no TLS, ``fsync`` and ``synchronous_commit`` on, on the same
2 cores as the bastion and the clients), with a fresh database per row. The load generator
and its options are ``bench/ssh_bench.py``'s.

Run from the repository root::

    .venv/bin/python bench/state_bench.py            # ~60 s on 2 cores
    .venv/bin/python bench/state_bench.py --quick    # ~30 s
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import ssh_bench

sys.path.insert(0, str(ssh_bench.REPO / "tests"))
from postgres_server import running_postgres


def main(argv: list[str] | None = None) -> int:
    args = ssh_bench.parse_args([*(argv or sys.argv[1:]), "--skip-sshd"])
    ssh_bench._raise_nofile()
    rows: list[ssh_bench.RateRow] = []
    with running_postgres() as pg, tempfile.TemporaryDirectory(prefix="state-bench-") as tmp:
        print(f"PostgreSQL {pg.connect().info.server_version} up in {pg.started_in:.2f} s")
        lab = ssh_bench.Lab(Path(tmp), args.users)
        users: list[tuple[str, str | None]] = list(lab.users)
        password = Path(tmp) / "pg-password"
        ssh_bench._secret_file(password, pg.password.encode() + b"\n")
        for backend in ("sqlite", "postgresql"):
            for workers in (1, 2):
                state = {}
                if backend == "postgresql":
                    state = {"url": pg.url(pg.create_database()), "password_file": str(password)}
                server = lab.start_bastion(workers, **({"state": state} if state else {}))
                server = dataclasses.replace(server, label=f"bastion, state on {backend}")
                try:
                    rows.append(ssh_bench.measure_rate(lab, server, users, args))
                finally:
                    server.stop()
    print("handshakes: connect + key + TOTP login + close, on loopback")
    ssh_bench.print_rates(rows)
    return 0 if all(r.logins > 0 and not r.errors for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
