"""The console under test: a ConsoleApp on a fake broker, with the clock pinned."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.tui.fake_broker import HARD_DEADLINE, FakeBroker, Script
from tui.app import ConsoleApp

NOW = HARD_DEADLINE - 3600.0  # an hour of session left, pods created a few days before


def make_app(broker: FakeBroker, *, timeout: float | None = None) -> ConsoleApp:
    return ConsoleApp(
        "alice", broker.transport(), clock=lambda: NOW, fixed_now=NOW, timeout=timeout
    )


@pytest.fixture
def console() -> Callable[..., tuple[ConsoleApp, FakeBroker]]:
    def build(script: Script | None = None, **kwargs: float) -> tuple[ConsoleApp, FakeBroker]:
        broker = FakeBroker(script)
        return make_app(broker, **kwargs), broker

    return build
