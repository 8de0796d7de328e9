"""PROXY protocol headers, versions 1 and 2 (HAProxy's ``proxy-protocol.txt``), parsed strictly.

A load balancer in TCP mode opens its own connection to the bastion; the PROXY header it
writes first says which address the operator really connected from. The header is trusted
only from the load balancers the configuration names (``listener.proxy_protocol``): the
policy lives in :mod:`bastion.ssh.proxied_listener`, this module only reads bytes.

Strict means: anything that is not exactly a header the specification allows is an error,
never a guess. Version 1 is one line of printable ASCII, ``PROXY TCP4|TCP6|UNKNOWN ...``
ending in CRLF within 107 bytes; version 2 is a 12-byte signature, a version/command byte
(``0x20`` LOCAL, ``0x21`` PROXY), a family/transport byte (only TCP over IPv4 or IPv6 is a
source address the bastion can use) and a length, then the addresses and TLVs. TLVs are
walked with their bounds checked and otherwise ignored: nothing the bastion decides depends
on them. Headers longer than :data:`V2_MAX_LENGTH` are refused, so a peer cannot make the
listener buffer 64 KiB per connection.

Pure: no I/O. :func:`parse_header` takes the bytes received so far and answers "not yet"
(``None``), a header (with the number of bytes it took, so the rest goes to SSH untouched),
or :class:`ProxyHeaderError`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "V1_MAX_LENGTH",
    "V1_PREFIX",
    "V2_MAX_LENGTH",
    "V2_SIGNATURE",
    "Endpoint",
    "ProxyCommand",
    "ProxyHeader",
    "ProxyHeaderError",
    "parse_header",
    "starts_like_header",
]

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the specification's worst case, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, length
V2_MAX_LENGTH = V2_FIXED + 4096

_V2_VERSION = 0x2
_V2_LOCAL = 0x0
_V2_PROXY = 0x1
_V2_TCP4 = 0x11  # AF_INET, STREAM
_V2_TCP6 = 0x21  # AF_INET6, STREAM
_V2_UNSPEC = 0x00
_V2_ADDRESS_LENGTHS = {_V2_TCP4: 12, _V2_TCP6: 36}
_TLV_FIXED = 3  # type, 16-bit length

_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY header this listener accepts; the message says why."""


class ProxyCommand(StrEnum):
    PROXY = "proxy"  # relayed for a client: the header names the client
    LOCAL = "local"  # opened by the load balancer itself (a health check): no client


@dataclass(frozen=True)
class Endpoint:
    address: str  # canonical text form (ipaddress)
    port: int


@dataclass(frozen=True)
class ProxyHeader:
    version: int
    command: ProxyCommand
    # None for v2 LOCAL and v1 UNKNOWN: the connection's own endpoints stand.
    source: Endpoint | None
    destination: Endpoint | None
    length: int  # bytes of the stream the header took; what follows is the client's


def starts_like_header(data: bytes) -> bool | None:
    """Whether ``data``, a connection's first bytes, begins a PROXY header.

    ``None`` while too few bytes have arrived to tell. An SSH client's first byte is ``S``
    (``SSH-2.0-...``), so ordinary clients are told apart on their first byte.
    """
    for signature in (V1_PREFIX, V2_SIGNATURE):
        if data.startswith(signature):
            return True
        if len(data) < len(signature) and signature.startswith(data):
            return None
    return False


def parse_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``, or ``None`` if more bytes are needed."""
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if starts_like_header(data) is None:
        return None
    raise ProxyHeaderError("the connection did not start with a PROXY protocol header")


# ---------------------------------------------------------------------- version 1
def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    line = data[: V1_MAX_LENGTH if end < 0 else end]
    if end < 0 and line.endswith(b"\r") and len(line) == len(data):
        line = line[:-1]  # the CR of a CRLF whose LF has not arrived yet
    for byte in line:
        if not 0x20 <= byte <= 0x7E:
            raise ProxyHeaderError(f"PROXY v1 header has a control byte 0x{byte:02x} before CRLF")
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyHeaderError(f"PROXY v1 header has no CRLF within {V1_MAX_LENGTH} bytes")
        return None
    fields = line.split(b" ")
    protocol = fields[1]
    if protocol == b"UNKNOWN":
        # The specification: accept it and use the connection's own endpoints.
        return ProxyHeader(1, ProxyCommand.PROXY, None, None, end + 2)
    if protocol not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN")
    if len(fields) != 6:
        raise ProxyHeaderError(
            "PROXY v1 header must be 'PROXY TCPx SOURCE DESTINATION SPORT DPORT' with single spaces"
        )
    version = 4 if protocol == b"TCP4" else 6
    source = Endpoint(_v1_address(fields[2], version), _v1_port(fields[4]))
    destination = Endpoint(_v1_address(fields[3], version), _v1_port(fields[5]))
    return ProxyHeader(1, ProxyCommand.PROXY, source, destination, end + 2)


def _v1_address(text: bytes, version: int) -> str:
    decoded = text.decode("ascii")
    try:
        # Python refuses IPv4 octets with leading zeros (they read as octal elsewhere).
        address = ipaddress.ip_address(decoded)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1 address {decoded!r} is not an IP address") from None
    if address.version != version or "%" in decoded:
        raise ProxyHeaderError(f"PROXY v1 address {decoded!r} is not a plain IPv{version} address")
    return str(address)


def _v1_port(text: bytes) -> int:
    if _PORT.fullmatch(text) is None or int(text) > 0xFFFF:
        raise ProxyHeaderError(
            f"PROXY v1 port {text.decode('ascii')!r} is not a number from 0 to 65535"
        )
    return int(text)


# ---------------------------------------------------------------------- version 2
def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != _V2_VERSION:
        raise ProxyHeaderError(f"PROXY v2 header has version {version}, expected 2")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"PROXY v2 header has command {command}, expected LOCAL or PROXY")
    family = data[13]
    total = V2_FIXED + int.from_bytes(data[14:16], "big")
    if total > V2_MAX_LENGTH:
        raise ProxyHeaderError(
            f"PROXY v2 header of {total} bytes is longer than the {V2_MAX_LENGTH} accepted"
        )
    if len(data) < total:
        return None
    body = data[V2_FIXED:total]
    if command == _V2_LOCAL:
        # The specification: the receiver must ignore the rest and use the real endpoints.
        return ProxyHeader(2, ProxyCommand.LOCAL, None, None, total)
    if family == _V2_UNSPEC:
        raise ProxyHeaderError("PROXY v2 header relays an unspecified protocol: refused")
    needed = _V2_ADDRESS_LENGTHS.get(family)
    if needed is None:
        raise ProxyHeaderError(
            f"PROXY v2 family/transport 0x{family:02x} is not TCP over IPv4 or IPv6"
        )
    if len(body) < needed:
        raise ProxyHeaderError(
            f"PROXY v2 header is {len(body)} bytes after the fixed part, "
            f"too short for its addresses ({needed})"
        )
    size = (needed - 4) // 2
    source = ipaddress.ip_address(body[:size])
    destination = ipaddress.ip_address(body[size : 2 * size])
    ports = body[2 * size : needed]
    _check_tlvs(body[needed:])
    return ProxyHeader(
        2,
        ProxyCommand.PROXY,
        Endpoint(str(source), int.from_bytes(ports[:2], "big")),
        Endpoint(str(destination), int.from_bytes(ports[2:], "big")),
        total,
    )


def _check_tlvs(tlvs: bytes) -> None:
    at = 0
    while at < len(tlvs):
        if len(tlvs) - at < _TLV_FIXED:
            raise ProxyHeaderError("PROXY v2 header ends inside a TLV's type and length")
        length = int.from_bytes(tlvs[at + 1 : at + 3], "big")
        at += _TLV_FIXED + length
        if at > len(tlvs):
            raise ProxyHeaderError(
                f"PROXY v2 TLV of type 0x{tlvs[at - length - _TLV_FIXED]:02x} "
                "runs past the end of the header"
            )
