"""Jinja filters for the bastion role, in the standard library only (no netaddr needed)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any


def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ValueError(
            f"{cidr!r} is not an IP network; write it like 192.0.2.0/24 or 2001:db8::/32"
        ) from None


def bastion_cidrs_contain(cidrs: Iterable[str], address: str) -> bool:
    """Whether ``address`` lies in one of ``cidrs`` (IPv4 or IPv6, host bits allowed)."""
    networks = [_network(cidr) for cidr in cidrs]
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return any(ip in net for net in networks)


def bastion_split_families(cidrs: Iterable[str]) -> dict[str, list[str]]:
    """``{"ipv4": [...], "ipv6": [...]}``, each network normalised (host bits cleared), so
    nftables sets get one canonical element per network."""
    out: dict[str, list[str]] = {"ipv4": [], "ipv6": []}
    for cidr in cidrs:
        net = _network(cidr)
        out[f"ipv{net.version}"].append(str(net))
    return out


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "bastion_cidrs_contain": bastion_cidrs_contain,
            "bastion_split_families": bastion_split_families,
        }
