"""Connection throttling shared by every worker: new connections per source, and how many
connections may be authenticating at once in total (like sshd's MaxStartups).

The workers share the listening port, so a source's connections land on different
processes; the counts live in one SQLite file they all open. Nothing here needs to survive a
crash, so the file trades durability for speed (``synchronous=OFF``): an admission costs one
short write transaction, tens of microseconds. Rows of a worker that died are removed when
a worker starts.

IPv6 sources are counted per /64: one host usually holds a whole /64, and counting single
addresses would let it step around the limit.
"""

from __future__ import annotations

import ipaddress
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Admission", "SourceThrottle", "source_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS recent (source TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS recent_by_source ON recent (source, at);
CREATE TABLE IF NOT EXISTS authenticating (
    conn TEXT PRIMARY KEY, pid INTEGER NOT NULL, source TEXT NOT NULL, since REAL NOT NULL
);
"""


def source_key(address: str) -> str:
    """The unit a limit applies to: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str = ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SourceThrottle:
    def __init__(
        self,
        path: Path,
        *,
        per_source: int,
        window: float,
        max_authenticating: int,
        login_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._per_source = per_source
        self._window = window
        self._max_authenticating = max_authenticating
        # A row older than this belongs to a connection that should be gone by now.
        self._stale_after = login_timeout * 2 + 5
        self._clock = clock
        self._pid = os.getpid()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        path.chmod(0o600)
        self._forget_dead_workers()

    def close(self) -> None:
        self._db.close()

    def _forget_dead_workers(self) -> None:
        pids = [row[0] for row in self._db.execute("SELECT DISTINCT pid FROM authenticating")]
        for pid in pids:
            if pid != self._pid and not _alive(pid):
                self._db.execute("DELETE FROM authenticating WHERE pid = ?", (pid,))

    def admit(self, conn: str, address: str) -> Admission:
        """Count a new connection; refuse it when its source or the whole server is busy."""
        source = source_key(address)
        now = self._clock()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM recent WHERE at < ?", (now - self._window,))
            db.execute("DELETE FROM authenticating WHERE since < ?", (now - self._stale_after,))
            (recent,) = db.execute(
                "SELECT count(*) FROM recent WHERE source = ?", (source,)
            ).fetchone()
            if recent >= self._per_source:
                return Admission(
                    False,
                    f"more than {self._per_source} new connections from {source} "
                    f"in {self._window:g} s",
                )
            (authenticating,) = db.execute("SELECT count(*) FROM authenticating").fetchone()
            if authenticating >= self._max_authenticating:
                return Admission(False, f"{authenticating} connections are already authenticating")
            db.execute("INSERT INTO recent (source, at) VALUES (?, ?)", (source, now))
            db.execute(
                "INSERT OR REPLACE INTO authenticating (conn, pid, source, since) "
                "VALUES (?, ?, ?, ?)",
                (conn, self._pid, source, now),
            )
            return Admission(True)
        finally:
            db.execute("COMMIT")

    def authenticated(self, conn: str) -> None:
        """The connection finished authenticating (or ended): it no longer counts."""
        self._db.execute("DELETE FROM authenticating WHERE conn = ?", (conn,))

    def authenticating(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM authenticating").fetchone()
        return int(count)
