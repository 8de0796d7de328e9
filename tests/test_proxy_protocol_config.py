"""``listener.proxy_protocol``: off by default; trusted networks and the header timeout are
checked with messages that say what to write instead."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import WriteConfig

from bastion.config import load_config
from bastion.errors import ConfigError


def with_proxy(section: dict[str, Any]) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["listener"]["proxy_protocol"] = section

    return edit


def problem(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [line] = caught.value.message.splitlines()[1:]
    return line.strip().removeprefix(f"{path}:")


def test_off_by_default(write_config: WriteConfig) -> None:
    assert load_config(write_config()).listener.proxy_protocol is None


def test_trusted_networks_and_timeout(write_config: WriteConfig) -> None:
    path = write_config(with_proxy({"trusted": ["10.0.0.5", "10.1.0.0/24", "fd00::/64"]}))
    proxy = load_config(path).listener.proxy_protocol
    assert proxy is not None
    assert proxy.trusted == ["10.0.0.5/32", "10.1.0.0/24", "fd00::/64"]
    assert proxy.timeout == timedelta(seconds=5)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"trusted": ["10.1.0.7/24"]},
            "listener.proxy_protocol.trusted[0]: '10.1.0.7/24' has host bits set: "
            "write 10.1.0.0/24",
        ),
        (
            {"trusted": ["lb.example.com"]},
            "listener.proxy_protocol.trusted[0]: 'lb.example.com' is not an IP address or "
            "network (e.g. 10.0.0.5 or 10.0.0.0/24)",
        ),
        ({"trusted": []}, "listener.proxy_protocol.trusted: expected at least 1 item(s)"),
        (
            {"trusted": ["10.0.0.5"], "timeout": "5m"},
            "listener.proxy_protocol.timeout: expected a duration from 1s to 1m",
        ),
        ({"timeout": "5s"}, "listener.proxy_protocol.trusted: required key is missing"),
    ],
)
def test_bad_sections_are_named(
    write_config: WriteConfig, section: dict[str, Any], expected: str
) -> None:
    assert expected in problem(write_config(with_proxy(section)))
