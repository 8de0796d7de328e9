"""The local stand-ins on an event loop of their own, for synchronous callers.

Tests and benchmarks drive kubesim and OpenBao with synchronous clients (the official
``kubernetes`` client, hvac); the servers need a running loop. ``Background`` runs one
in a daemon thread and hands coroutines to it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from kubernetes import client

__all__ = ["Background", "kube_client"]

T = TypeVar("T")


class Background:
    """Start a server with ``start`` on a private loop; ``stop`` ends it and the loop."""

    def __init__(self, *, timeout: float = 60.0) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.timeout = timeout

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=self.timeout)

    def start(self, starting: Callable[[], Coroutine[Any, Any, T]]) -> T:
        self.thread.start()
        return self.call(starting())

    def stop(self, stopping: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            await stopping()

        try:
            self.call(run())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def kube_client(url: str, ca_file: str, token: str) -> client.ApiClient:
    """The official client against kubesim, its CA pinned as a cluster's would be."""
    config = client.Configuration()
    config.host = url
    config.ssl_ca_cert = ca_file
    config.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(config)
