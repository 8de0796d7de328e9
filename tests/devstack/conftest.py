"""kubesim in a background thread (its own event loop), for tests driving it with the
official synchronous ``kubernetes`` client; every JSON response it sends is recorded and
checked against the official OpenAPI schemas when the test session ends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from kube_contract import SESSION_LOG, response_recorder
from kubernetes import client

from bastion.devstack.stack import VaultRole
from bastion.policy import Mode
from devstack.kubesim_harness import ThreadedKubeSim, ThreadedStack

if TYPE_CHECKING:
    from devstack.terminals import Terminals


@pytest.fixture(scope="module")
def kubesim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedKubeSim]:
    running = ThreadedKubeSim(tmp_path_factory.mktemp("kubesim"))
    response_recorder(running.sim.api)
    running.start()
    yield running
    running.stop()
    SESSION_LOG.validate_all()


@pytest.fixture
def core(kubesim: ThreadedKubeSim) -> Iterator[client.CoreV1Api]:
    with kubesim.api_client() as api:
        yield client.CoreV1Api(api)


STACK_FIXTURE: dict[str, Any] = {
    "namespaces": [
        {"name": "payments", "pods": [{"name": "api-1", "labels": {"app": "api"}}]},
        {"name": "checkout", "pods": [{"name": "web-1"}]},
    ]
}


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    """kubesim and a real OpenBao, configured as devstack up does, for the test session."""
    running = ThreadedStack(
        tmp_path_factory.mktemp("stack"),
        STACK_FIXTURE,
        roles=[
            VaultRole("debug", ("payments",), modes=(Mode.EPHEMERAL,)),
            # Copy and toolbox modes create and delete pods: their own role, elsewhere.
            VaultRole("debug-pods", ("checkout",), modes=(Mode.COPY, Mode.POD)),
        ],
    )
    response_recorder(running.stack.kubesim.api)
    running.start()
    yield running
    running.stop()
    SESSION_LOG.validate_all()


@pytest.fixture
def terminals() -> Iterator[Terminals]:
    """OpenSSH clients in tmux windows (devstack/terminals.py), closed at the test's end."""
    # Imported here: it imports test modules, and they import this one.
    from devstack.terminals import Terminals  # noqa: PLC0415

    opened = Terminals()
    try:
        yield opened
    finally:
        opened.close()
