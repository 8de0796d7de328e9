"""The SSH listener behind a load balancer: PROXY protocol headers from trusted peers only.

With ``listener.proxy_protocol`` set, each accepted TCP connection first meets a
:class:`ProxiedConnection`, which decides what its source address is before asyncssh sees a
byte:

- from a peer in ``trusted`` (the load balancers), a PROXY header (v1 or v2) is required
  within ``timeout``; its source address becomes the connection's ``peername`` (what the
  audit log, the throttle, the guard's login rules and the session show) and the load
  balancer's own address is kept as ``proxied_by`` (the audit events' ``via``). A trusted
  peer that sends no header, a malformed one or none in time is refused: otherwise a load
  balancer that lost its ``send-proxy`` setting would silently put its own address on every
  login. A v2 LOCAL header (a health check) keeps the load balancer's address.
- from any other peer, SSH starts at once as without a load balancer, and if its first
  bytes are a PROXY header the connection is refused: a header from an untrusted address
  is a forgery and its addresses are never read.

Each refusal is a ``connection.proxy_refused`` audit event (once per source and
``limits.connection_window``, with a count, like ``connection.throttled``).

The header is read by the protocol object that asyncio gives the socket's bytes to, and what
follows the header (the client's ``SSH-2.0-...`` line, if it came in the same segment) is
handed to the SSH connection as if it had been the first bytes received. asyncssh is given
this listener through its ``tunnel`` hook (an object with ``create_server``), so it still
builds, configures and owns every SSH connection itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any, cast

import asyncssh

from bastion.ssh.login import Peer
from bastion.ssh.proxy_protocol import (
    ProxyHeaderError,
    parse_header,
    starts_like_header,
)

__all__ = [
    "PROXY_HEALTH_CHECK_EXTRA",
    "PROXY_REFUSED_EXTRA",
    "PROXY_VIA_EXTRA",
    "ProxiedConnection",
    "ProxyListener",
]

# Extra-info names set on an SSH connection (read back by bastion.ssh.front_door).
PROXY_VIA_EXTRA = "proxied_by"  # (address, port) of the load balancer
PROXY_REFUSED_EXTRA = "proxy_refused"  # why the connection was refused (already audited)
# A v2 LOCAL (or v1 UNKNOWN) header: the load balancer's own health check.
PROXY_HEALTH_CHECK_EXTRA = "proxy_health_check"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Refused = Callable[[Peer, str], None]
SessionFactory = Callable[[str, int], Any]  # asyncssh's: makes one SSHServerConnection


def plain_address(address: str) -> str:
    """``address`` with an IPv4-mapped IPv6 form (a dual-stack socket's) made plain IPv4."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class TrustedProxies:
    """The load balancers whose PROXY headers are believed."""

    def __init__(self, networks: Sequence[str]) -> None:
        self._networks: list[Network] = [ipaddress.ip_network(n) for n in networks]

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(plain_address(address))
        except ValueError:
            return False
        return any(ip in network for network in self._networks)


class ProxiedConnection(asyncio.Protocol):
    """One accepted TCP connection: its PROXY header (or its absence), then SSH."""

    def __init__(
        self,
        make_ssh: Callable[[], asyncio.Protocol],
        trusted: TrustedProxies,
        *,
        timeout: float,
        refused: Refused,
    ) -> None:
        self._make_ssh = make_ssh
        self._trusted = trusted
        self._timeout = timeout
        self._refused = refused
        self._transport: asyncio.Transport | None = None
        self._peer = Peer("", 0)
        self._ssh: asyncio.Protocol | None = None
        self._buffer = b""
        self._awaiting_header = False  # a trusted peer, header not read yet
        self._sniffing = False  # an untrusted peer, first bytes not seen yet
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername") or ("", 0)
        self._peer = Peer(plain_address(str(peername[0])), int(peername[1]))
        if self._peer.address in self._trusted:
            self._awaiting_header = True
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._timeout, self._header_timed_out)
        else:
            self._sniffing = True
            self._start_ssh({})

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if not (self._awaiting_header or self._sniffing):
            if self._ssh is not None:
                self._ssh.data_received(data)
            return
        self._buffer += data
        if self._awaiting_header:
            self._read_header()
        else:
            self._sniff()

    def _read_header(self) -> None:
        try:
            header = parse_header(self._buffer)
        except ProxyHeaderError as exc:
            self._refuse(f"from trusted load balancer {self._peer.address}: {exc}")
            return
        if header is None:
            return
        self._awaiting_header = False
        if self._timer is not None:
            self._timer.cancel()
        rest, self._buffer = self._buffer[header.length :], b""
        extra: dict[str, Any] = {PROXY_VIA_EXTRA: (self._peer.address, self._peer.port)}
        if header.source is not None:
            extra["peername"] = (header.source.address, header.source.port)
        else:
            extra[PROXY_HEALTH_CHECK_EXTRA] = True
        self._start_ssh(extra)
        # The SSH side may have refused the connection already (the throttle).
        if rest and self._ssh is not None and not self._transport_closing():
            self._ssh.data_received(rest)

    def _sniff(self) -> None:
        looks = starts_like_header(self._buffer)
        if looks is None:
            return
        if looks:
            self._refuse(f"a PROXY protocol header from {self._peer.address}, not a trusted peer")
            return
        self._sniffing = False
        first, self._buffer = self._buffer, b""
        if self._ssh is not None and not self._transport_closing():
            self._ssh.data_received(first)

    def _transport_closing(self) -> bool:
        return self._closed or self._transport is None or self._transport.is_closing()

    def _header_timed_out(self) -> None:
        if self._awaiting_header and not self._closed:
            self._refuse(
                f"from trusted load balancer {self._peer.address}: "
                f"no PROXY protocol header within {self._timeout:g} s"
            )

    def _start_ssh(self, extra: dict[str, Any]) -> None:
        ssh = self._make_ssh()
        if extra:
            # Before connection_made: the front door reads the peer there.
            cast(asyncssh.SSHServerConnection, ssh).set_extra_info(**extra)
        self._ssh = ssh
        if self._transport is not None:
            ssh.connection_made(self._transport)

    def _refuse(self, reason: str) -> None:
        self._closed = True
        self._buffer = b""
        if self._timer is not None:
            self._timer.cancel()
        if self._ssh is not None:
            # An untrusted peer's SSH connection exists already: its own login.failed
            # would only repeat this refusal.
            cast(asyncssh.SSHServerConnection, self._ssh).set_extra_info(
                **{PROXY_REFUSED_EXTRA: reason}
            )
        self._refused(self._peer, reason)
        if self._transport is not None:
            self._transport.abort()

    # Flow control and the end of the stream belong to SSH once it has started.
    def eof_received(self) -> bool | None:
        if self._ssh is not None and not self._closed:
            return self._ssh.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._ssh is not None:
            self._ssh.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._ssh is not None:
            self._ssh.pause_writing()

    def resume_writing(self) -> None:
        if self._ssh is not None:
            self._ssh.resume_writing()


class ProxyListener:
    """What asyncssh's ``listen(tunnel=...)`` calls to open the listening socket."""

    def __init__(
        self,
        trusted: Sequence[str],
        *,
        timeout: float,
        refused: Refused,
        reuse_port: bool = False,
    ) -> None:
        self._trusted = TrustedProxies(trusted)
        self._timeout = timeout
        self._refused = refused
        self._reuse_port = reuse_port

    async def create_server(
        self, session_factory: SessionFactory, listen_host: str, listen_port: int
    ) -> asyncio.Server:
        def accepted() -> ProxiedConnection:
            return ProxiedConnection(
                lambda: cast(asyncio.Protocol, session_factory("", 0)),
                self._trusted,
                timeout=self._timeout,
                refused=self._refused,
            )

        loop = asyncio.get_running_loop()
        return await loop.create_server(
            accepted, listen_host or None, listen_port, reuse_port=self._reuse_port or None
        )
