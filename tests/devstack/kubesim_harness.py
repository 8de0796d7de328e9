"""kubesim in a background thread with its own event loop, for the synchronous client."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from kubernetes import client

from bastion.devstack.kubesim.app import KubeSim

TOOLBOX = "registry.example.com/debug-toolbox@sha256:" + "0d" * 32

FIXTURE: dict[str, Any] = {
    "images": {TOOLBOX: {"command": ["/bin/sh"]}},
    "namespaces": [
        {
            "name": "payments",
            "pods": [
                {"name": "api-1", "labels": {"app": "api", "tier": "web"}},
                {"name": "api-2", "labels": {"app": "api", "tier": "web"}, "phase": "Pending"},
                {"name": "db-0", "labels": {"app": "db"}},
                {
                    "name": "two",
                    "labels": {"app": "two"},
                    "containers": [{"name": "main"}, {"name": "sidecar"}],
                },
            ],
        },
        {"name": "big", "generate": {"count": 5000, "prefix": "load-", "labels": {"app": "load"}}},
    ],
}


class ThreadedKubeSim:
    def __init__(self, workdir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.sim = KubeSim(workdir, FIXTURE)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=60)

    def start(self) -> None:
        self.thread.start()
        self.call(self.sim.start())

    def stop(self) -> None:
        self.call(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def api_client(self, token: str | None = None) -> client.ApiClient:
        config = client.Configuration()
        config.host = self.sim.url
        config.ssl_ca_cert = str(self.sim.ca_file)
        config.api_key = {"authorization": f"Bearer {token or self.sim.admin_token}"}
        return client.ApiClient(config)


class ThreadedStack:
    """The whole local stack (kubesim + OpenBao) on a background event loop."""

    def __init__(self, state_dir: Path, fixture: dict[str, Any], roles: list[Any]) -> None:
        from bastion.devstack.stack import LocalStack  # noqa: PLC0415 - heavy, few tests

        self.loop = asyncio.new_event_loop()
        self.stack = LocalStack(state_dir, fixture, roles=roles)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=60)

    def start(self) -> dict[str, Any]:
        self.thread.start()
        info: dict[str, Any] = self.call(self.stack.start())
        return info

    def stop(self) -> None:
        self.call(self.stack.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
