"""The three places where the bastion reaches into asyncssh's internals, kept in one module.

asyncssh (the pinned range in pyproject.toml) has no public hook for any of these:

1. **Partial success.** A bastion wants OpenSSH's ``AuthenticationMethods
   publickey,keyboard-interactive``: a verified key is one factor, not a login. asyncssh
   completes the login on a valid key. :class:`PublicKeyFirstFactor` replaces its server
   handler for ``publickey``: only after the *signature* has been verified does it tell the
   connection's owner (``first_factor_verified``), and then it answers ``USERAUTH_FAILURE``
   with ``partial_success=True`` when the owner still wants a second factor. The signature
   algorithm is checked first: ``ssh-rsa`` (SHA-1) signatures are refused.
2. **paramiko's repeated service request.** paramiko sends ``SERVICE_REQUEST ssh-userauth``
   before each auth method; asyncssh disconnects on the second one. While authentication
   is in progress and not complete, a repeated request for ``ssh-userauth`` is accepted again.
3. **Channel requests.** ``env``, ``x11-req``, agent forwarding and any other request that
   the console does not need are refused before asyncssh acts on them, and the session is
   told (``channel_request_refused``) so that every refusal becomes an audit event.

:func:`install` applies all three; ``tests/test_asyncssh_internals.py`` fails loudly when an
asyncssh upgrade moves any name used here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from asyncssh import auth as _auth
from asyncssh import channel as _channel
from asyncssh import connection as _connection
from asyncssh.constants import MSG_SERVICE_ACCEPT, MSG_SERVICE_REQUEST
from asyncssh.misc import ServiceNotAvailable
from asyncssh.packet import SSHPacket, String

__all__ = [
    "ALLOWED_CHANNEL_REQUESTS",
    "REFUSED_SIGNATURE_ALGORITHMS",
    "FirstFactorOwner",
    "PublicKeyFirstFactor",
    "RefusalListener",
    "install",
]

# The only channel requests a console session needs. "exec" is let through so the session
# can answer it with an explanation on stderr and exit status 1 rather than a bare failure.
ALLOWED_CHANNEL_REQUESTS = frozenset(
    {"pty-req", "shell", "exec", "window-change", "keepalive@openssh.com"}
)
REFUSED_SIGNATURE_ALGORITHMS = frozenset({b"ssh-rsa", b"ssh-dss"})
_USERAUTH = b"ssh-userauth"


class FirstFactorOwner(Protocol):
    """What the connection's owner (our ``asyncssh.SSHServer``) provides to the handler."""

    def signature_algorithm_allowed(self, algorithm: bytes) -> bool: ...

    def first_factor_verified(self, username: str, key_data: bytes) -> bool:
        """Record the verified key; True when a second factor is still required."""
        ...


class RefusalListener(Protocol):
    def channel_request_refused(self, request: str, detail: str) -> None: ...


class PublicKeyFirstFactor(_auth.ServerAuth):
    """asyncssh's publickey server handler, turned into the first of two factors."""

    @classmethod
    def supported(cls, conn: _connection.SSHServerConnection) -> bool:
        return conn.public_key_auth_supported()

    async def _start(self, packet: SSHPacket) -> None:
        sig_present = packet.get_boolean()
        algorithm = packet.get_string()
        key_data = packet.get_string()
        if sig_present:
            msg = packet.get_consumed_payload()
            signature = packet.get_string()
        else:
            msg = signature = b""
        packet.check_end()

        owner = cast(FirstFactorOwner, self._conn.get_owner())
        if not owner.signature_algorithm_allowed(algorithm):
            self.send_failure()
            return
        if not await self._conn.validate_public_key(self._username, key_data, msg, signature):
            self.send_failure()
        elif not sig_present:
            # The client only asked whether this key would do; it has proven nothing yet.
            self.send_packet(_auth.MSG_USERAUTH_PK_OK, String(algorithm), String(key_data))
        elif owner.first_factor_verified(self._username, key_data):
            self.send_failure(partial_success=True)
        else:
            await self.send_success()


def _tolerant_service_request(
    original: Callable[..., None],
) -> Callable[..., None]:
    def handler(self: Any, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        repeated = self._auth_in_progress and not self._auth_complete and self._next_service is None
        if repeated:
            service = packet.get_string()
            packet.check_end()
            if service == _USERAUTH:
                self.send_packet(MSG_SERVICE_ACCEPT, String(service))
                return
            raise ServiceNotAvailable("Unexpected service in service request")
        original(self, pkttype, pktid, packet)

    handler.__bastion_ext__ = True  # type: ignore[attr-defined]
    return handler


def _request_detail(request: str, packet: SSHPacket) -> str:
    """What an audit reader needs to know about a refused request (never a value)."""
    try:
        if request == "env":
            return "variable " + packet.get_string().decode("utf-8", "replace")[:64]
        if request == "subsystem":
            return packet.get_string().decode("utf-8", "replace")[:64]
        if request == "signal":
            return "SIG" + packet.get_string().decode("ascii", "replace")[:16]
    except Exception:  # noqa: BLE001 - a malformed request is still refused, just undescribed
        return "malformed"
    return ""


def _policed_requests(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def service_next_request(self: Any) -> None:
        request, packet, _ = self._request_queue[0]
        if request in ALLOWED_CHANNEL_REQUESTS:
            original(self)
            return
        listener = getattr(self._session, "channel_request_refused", None)
        if listener is not None:
            listener(request, _request_detail(request, packet))
        self._report_response(False)

    service_next_request.__bastion_ext__ = True  # type: ignore[attr-defined]
    return service_next_request


def install() -> None:
    """Apply the three extensions (idempotent). Affects asyncssh *server* objects only."""
    _auth._server_auth_handlers[b"publickey"] = PublicKeyFirstFactor

    server = _connection.SSHServerConnection
    handlers = cast(Mapping[int, Callable[..., None]], server._packet_handlers)
    current = handlers[MSG_SERVICE_REQUEST]
    if not getattr(current, "__bastion_ext__", False):
        patched = dict(handlers)
        patched[MSG_SERVICE_REQUEST] = _tolerant_service_request(current)
        server._packet_handlers = patched  # type: ignore[assignment]

    chan = _channel.SSHServerChannel
    if not getattr(chan._service_next_request, "__bastion_ext__", False):
        chan._service_next_request = _policed_requests(chan._service_next_request)  # type: ignore[method-assign,assignment]
