"""Run kubesim: TLS material, the store seeded from a fixture, the API server, the pods.

sim = KubeSim(workdir, fixture)
await sim.start()            # https://127.0.0.1:<free port>, CA in sim.ca_file
...
await sim.stop()             # every container process ended, every temp file removed
"""

from __future__ import annotations

import secrets
import shutil
import socket
from pathlib import Path
from typing import Any

from aiohttp import web

from bastion.devstack.kubesim.fixture import Fixture, load_fixture, seed
from bastion.devstack.kubesim.pods import PodRuntime
from bastion.devstack.kubesim.server import ApiServer, server_ssl_context
from bastion.devstack.kubesim.store import Store
from bastion.devstack.kubesim.tls import create_serving_certificate
from bastion.devstack.kubesim.tokens import TokenSigner

__all__ = ["KubeSim"]


class KubeSim:
    def __init__(
        self,
        workdir: Path,
        fixture: Fixture | Path | dict[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.workdir = workdir
        self.fixture = (
            fixture if isinstance(fixture, Fixture) else load_fixture(fixture or {"namespaces": []})
        )
        self.host = host
        self.port = port
        self.store = Store()
        self.signer = TokenSigner()
        self.admin_token = secrets.token_urlsafe(32)
        self.api = ApiServer(self.store, self.signer, self.admin_token)
        self.pods = PodRuntime(self.store, self.fixture, workdir / "containers")
        self.pods.install(self.api)
        self._runner: web.AppRunner | None = None
        self._socket: socket.socket | None = None
        self.url = ""
        self.ca_file = workdir / "tls" / "kubesim-ca.crt"
        self.pod_count = 0

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        certificate = create_serving_certificate(
            self.workdir / "tls", hosts=(self.host, "localhost")
        )
        self.ca_file = certificate.ca_file
        self.pod_count = seed(self.store, self.fixture)
        self._runner = web.AppRunner(self.api.application(), handle_signals=False, access_log=None)
        await self._runner.setup()
        # Bind first, so port 0 yields a known free port before anyone is told the URL.
        sock = socket.create_server((self.host, self.port), reuse_port=False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        site = web.SockSite(
            self._runner,
            sock,
            ssl_context=server_ssl_context(str(certificate.cert_file), str(certificate.key_file)),
        )
        await site.start()
        self.url = f"https://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self.pods.stop_all()
        if self._runner is not None:
            # Idle keep-alive TLS connections would otherwise wait for a close_notify their
            # (possibly already stopped) client never sends: kubesim is going away, abort them.
            server = self._runner.server
            for handler in server.connections if server is not None else []:
                if handler.transport is not None:
                    handler.transport.abort()
            await self._runner.cleanup()
            self._runner = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        shutil.rmtree(self.workdir / "containers", ignore_errors=True)
