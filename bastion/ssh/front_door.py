"""The SSH front door of one worker: key, then code, then one operator session.

``FrontDoor`` owns what a worker's connections share (host key, login service, throttle,
audit, the Vault client). ``_Connection`` is asyncssh's per-connection server object and
drives the two-factor login; :class:`bastion.ssh.operator_session.OperatorSession` is the one
session channel it allows.

A break-glass account answers a third prompt, one of its one-time codes, after its TOTP
code on the same connection; its login is announced at once (an alert, in the background).

Everything a client may ask for beyond a PTY with a shell or the ``debug`` command is
refused, and each refusal is an audit event: other commands (answered with a line on stderr
and exit status 1), subsystems (sftp, scp), env, agent and X11 forwarding, TCP and
Unix-socket forwarding, tun/tap, a second session on the same connection.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh
from asyncssh.auth import KbdIntChallenge

from bastion.audit.log import AuditLog
from bastion.breakglass.alerts import AlertDispatcher
from bastion.config import Config
from bastion.session.broker import SessionBroker
from bastion.session.notices import NoticeFeed
from bastion.ssh import asyncssh_ext
from bastion.ssh.algorithms import algorithms
from bastion.ssh.key_watch import Refusal
from bastion.ssh.login import BREAK_GLASS_METHOD, LoginService, Peer, Verdict
from bastion.ssh.login_watch import LoginWatch
from bastion.ssh.operator_session import EXEC_REFUSAL, OperatorSession
from bastion.ssh.proxied_listener import (
    PROXY_HEALTH_CHECK_EXTRA,
    PROXY_REFUSED_EXTRA,
    PROXY_VIA_EXTRA,
    ProxyListener,
)
from bastion.ssh.throttle import SourceThrottle, source_key
from bastion.sshkeys import PublicKey
from bastion.vault import VaultClient

__all__ = ["EXEC_REFUSAL", "FrontDoor", "Identity"]

log = logging.getLogger(__name__)

PROMPT = "Verification code: "
BREAK_GLASS_PROMPT = "Break-glass code: "
BREAK_GLASS_INSTRUCTIONS = (
    "This is a break-glass account: give one of its one-time codes. Its use alerts "
    "security at once and everything is recorded."
)
# Advertised in server-sig-algs; anything else is refused by asyncssh_ext.
SIGNATURE_ALGORITHMS = (
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
_MAX_NAME = 64

asyncssh_ext.install()


@dataclass(frozen=True)
class Identity:
    """Who logged in, as the console is told."""

    user: str
    groups: tuple[str, ...]
    key_fingerprint: str
    method: str
    connection: str
    peer: Peer
    break_glass: bool = False  # logged in with a break-glass code (docs/break-glass.md)


ConsoleCommand = Callable[[Identity], Sequence[str]]
# Why a login must be refused before its code is checked (a lockdown, a retired host key).
LoginGate = Callable[[asyncssh.SSHServerConnection | None], Refusal | None]


class FrontDoor:
    """One worker's SSH listener and the state its connections share."""

    def __init__(
        self,
        config: Config,
        *,
        host_keys: Sequence[asyncssh.SSHKey],
        login: LoginService,
        throttle: SourceThrottle,
        audit: AuditLog,
        broker: SessionBroker,
        console_command: ConsoleCommand,
        vault: VaultClient | None = None,
        gate: LoginGate | None = None,
        alerts: AlertDispatcher | None = None,
        notices: NoticeFeed | None = None,
        login_watch: LoginWatch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.login_watch = login_watch  # the guard's login rules; None when none is set
        self.vault = vault
        self.alerts = alerts  # break-glass alerts; None when there is no break_glass section
        self.notices = notices  # what every console shows (break-glass banners)
        self.broker = broker
        self.login = login
        self.throttle = throttle
        self.console_command = console_command
        self._audit = audit
        # The first does the key exchange; all are announced after login (hostkeys-00).
        self._host_keys = list(host_keys)
        self.gate = gate
        self._clock = clock
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Refusals of a flooding source are audited once per window, with a count.
        self._refusals: dict[tuple[str, str], tuple[float, int]] = {}

    # ------------------------------------------------------------------ listening
    async def listen(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        limits = self.config.limits
        algs = algorithms(allow_chacha20=self.config.listener.allow_chacha20)
        proxy = self.config.listener.proxy_protocol
        # Behind a load balancer, connections pass the PROXY header check first
        # (bastion/ssh/proxied_listener.py); asyncssh's tunnel hook opens that listener.
        tunnel: ProxyListener | tuple[()] = ()
        if proxy is not None:
            tunnel = ProxyListener(
                proxy.trusted,
                timeout=proxy.timeout.total_seconds(),
                refused=self.refused_proxy,
                reuse_port=reuse_port,
            )
        self._acceptor = await asyncssh.listen(
            host,
            port,
            reuse_port=reuse_port,
            tunnel=tunnel,
            server_factory=lambda: _Connection(self),
            server_host_keys=self._host_keys,
            # Clients using OpenSSH's UpdateHostKeys learn a rotation's next key from this.
            send_server_host_keys=True,
            server_version="bastion",
            kex_algs=list(algs.kex),
            encryption_algs=list(algs.ciphers),
            mac_algs=list(algs.macs),
            compression_algs=list(algs.compression),
            signature_algs=list(SIGNATURE_ALGORITHMS),
            login_timeout=limits.login_timeout.total_seconds(),
            keepalive_interval=limits.keepalive_interval.total_seconds(),
            keepalive_count_max=3,
            tcp_keepalive=True,
            gss_host=None,
            password_auth=False,
            host_based_auth=False,
            kbdint_auth=True,
            public_key_auth=True,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_pty=True,
            line_editor=False,
            encoding=None,
            allow_scp=False,
        )
        sockets = self._acceptor.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    def update_host_keys(self, keys: Sequence[asyncssh.SSHKey]) -> None:
        """Offer ``keys`` to connections accepted from now on (a host key rotation)."""
        self._host_keys = list(keys)
        if self._acceptor is not None:
            self._acceptor.update(server_host_keys=self._host_keys, send_server_host_keys=True)

    async def stop_accepting(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None

    async def close(self) -> None:
        """Stop accepting, end every connection, and wait for their audit events."""
        await self.stop_accepting()
        # Consoles whose sessions were just wiped finish first: they tell their operator why.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for conn in list(self._connections):
            conn.shut_down("the bastion is shutting down")
        deadline = self._clock() + 10
        while (self._connections or self._tasks) and self._clock() < deadline:  # noqa: ASYNC110
            # Connections leave the set from asyncssh callbacks; polling briefly is simpler
            # than an event per connection, and this runs once, at shutdown.
            await asyncio.sleep(0.02)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # ------------------------------------------------------------------ audit helpers
    def track(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background; :meth:`close` waits for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def audit_soon(self, event: str, **fields: Any) -> None:
        """Record an event without holding up the protocol (refusals, disconnects)."""
        self.track(self.audit(event, **fields))

    async def audit(self, event: str, **fields: Any) -> bool:
        actor = fields.pop("actor", None) or "-"
        outcome = fields.pop("outcome", "refused")
        return await self.login.audit(event, actor=actor, outcome=outcome, **fields)

    def refused_connection(
        self, peer: Peer, reason: str, *, event: str = "connection.throttled"
    ) -> None:
        source = source_key(peer.address)
        now = self._clock()
        window = self.config.limits.connection_window.total_seconds()
        started, suppressed = self._refusals.get((event, source), (0.0, 0))
        if now - started < window:
            self._refusals[(event, source)] = (started, suppressed + 1)
            return
        self._refusals[(event, source)] = (now, 0)
        if len(self._refusals) > 10000:  # a spread-out flood must not grow this forever
            self._refusals = {k: v for k, v in self._refusals.items() if now - v[0] < window}
        via = {"via": peer.via} if peer.via else {}
        self.audit_soon(
            event,
            source=peer.address,
            source_port=peer.port,
            **via,
            reason=reason,
            refused_since_last_event=suppressed,
        )

    def refused_proxy(self, peer: Peer, reason: str) -> None:
        """A connection refused for its PROXY header, or for the lack of one."""
        self.refused_connection(peer, reason, event="connection.proxy_refused")


class _Connection(asyncssh.SSHServer):
    """One client connection: the two-factor login, then at most one console session."""

    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self._conn: asyncssh.SSHServerConnection | None = None
        self.id = secrets.token_hex(6)
        self.peer = Peer("", 0)
        self._admitted = False
        self._username = ""
        self._candidate: PublicKey | None = None
        self._offered = ""  # fingerprint of the last key offered, for the failure event
        self._key: PublicKey | None = None
        self._code_attempts = 0
        # A break-glass account's second factor, once accepted: its code is asked next.
        self._second_factor: str | None = None
        self._closed_for_auth = False  # no method is offered any more on this connection
        self._failure_recorded = False
        self._identity: Identity | None = None
        self._session: OperatorSession | None = None
        self._session_timer: asyncio.TimerHandle | None = None
        self._close_reason = ""  # set when the server ends the connection

    # ------------------------------------------------------------------ connection
    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        # Behind a load balancer: the address its PROXY header named, and the balancer's.
        peer = conn.get_extra_info("peername") or ("", 0)
        via = conn.get_extra_info(PROXY_VIA_EXTRA)
        self.peer = Peer(str(peer[0]), int(peer[1]), via=str(via[0]) if via else None)
        admission = self._door.throttle.admit(self.id, self.peer.address)
        if not admission.admitted:
            self._door.refused_connection(self.peer, admission.reason)
            conn.abort()
            return
        self._admitted = True
        self._door._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._door._connections.discard(self)
        self._door.throttle.authenticated(self.id)
        if self._session_timer is not None:
            self._session_timer.cancel()
        if self._session is not None:
            self._session.end_console()
        # A forged PROXY header: audited as connection.proxy_refused, not a login attempt.
        proxy_refused = self._conn is not None and self._conn.get_extra_info(PROXY_REFUSED_EXTRA)
        # A load balancer's health check (every few seconds, from each balancer) that named
        # no user is not a failed login: as one, it would flood the audit log and count
        # towards the guard's failures_from_source against the balancer's own address.
        health_check = (
            self._conn is not None
            and bool(self._conn.get_extra_info(PROXY_HEALTH_CHECK_EXTRA))
            and not self._username
        )
        if (
            self._identity is None
            and not self._failure_recorded
            and not proxy_refused
            and not health_check
        ):
            reason = "no accepted key" if self._key is None else "no code given"
            if exc is not None and "timeout" in str(exc).lower():
                reason = f"login timeout ({reason})"
            self._record_failure(reason, mfa="not_reached" if self._key is None else "none")
        elif self._identity is not None:
            self._door.audit_soon(
                "connection.closed",
                actor=self._identity.user,
                outcome="closed",
                connection=self.id,
                **self._source(),
                reason=self._close_reason or (str(exc) if exc else "client closed the connection"),
            )

    def shut_down(self, reason: str) -> None:
        self._close_reason = reason
        if self._conn is not None:
            self._conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)

    def _fields(self) -> dict[str, Any]:
        key = self._key.fingerprint if self._key else self._offered
        return {
            "user": self._username[:_MAX_NAME],
            "key": key or None,
            "connection": self.id,
            **self._source(),
        }

    def _source(self) -> dict[str, Any]:
        # ``via`` only behind a load balancer, so that direct connections log as before.
        fields: dict[str, Any] = {"source": self.peer.address, "source_port": self.peer.port}
        if self.peer.via is not None:
            fields["via"] = self.peer.via
        return fields

    def _record_failure(self, reason: str, *, mfa: str) -> None:
        self._failure_recorded = True
        self._door.audit_soon(
            "login.failed",
            actor=self._username[:_MAX_NAME] or "-",
            outcome="denied",
            mfa=mfa,
            reason=reason,
            **self._fields(),
        )
        if self._door.login_watch is not None:
            self._door.track(
                self._door.login_watch.failed(
                    self._username[:_MAX_NAME], self.peer.address, self.id
                )
            )

    # ------------------------------------------------------------------ first factor
    async def begin_auth(self, username: str) -> bool:
        # A new user name restarts authentication from nothing (RFC 4252 section 5).
        if username != self._username:
            self._username = username
            self._candidate = self._key = None
            self._offered = ""
            self._code_attempts = 0
            self._second_factor = None
        await self._blocked()
        return True

    async def _blocked(self) -> bool:
        """Whether the guard refuses this address (``failures_from_source: end``); if so the
        refusal is recorded and the client disconnected with its message (a failure with
        no method left would make OpenSSH ask for a password). Asked before the key and
        before each code."""
        watch = self._door.login_watch
        message = await watch.refusal(self.peer.address) if watch is not None else None
        if message is None:
            return False
        if not self._closed_for_auth:
            self._closed_for_auth = True
            self._record_failure(message, mfa="not_reached" if self._key is None else "none")
            self.shut_down(message)
        return True

    def password_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return not self._closed_for_auth and self._key is None

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        data = key.public_data
        self._candidate = self._door.login.key_for(username, data)
        if self._candidate is None:
            self._offered = PublicKey(key.get_algorithm(), data, "", 0).fingerprint
        return self._candidate is not None

    def signature_algorithm_allowed(self, algorithm: bytes) -> bool:
        return algorithm not in asyncssh_ext.REFUSED_SIGNATURE_ALGORITHMS

    def first_factor_verified(self, username: str, key_data: bytes) -> bool:
        if self._candidate is None or self._candidate.blob != key_data:
            # Cannot happen with asyncssh's handler order; refuse rather than guess.
            self._candidate = self._door.login.key_for(username, key_data)
        self._key = self._candidate
        return True

    # ------------------------------------------------------------------ second factor
    def kbdint_auth_supported(self) -> bool:
        return not self._closed_for_auth and self._key is not None

    def _refused(self) -> str | None:
        """The gate's refusal (a lockdown, a retired host key), recorded; its message."""
        refusal = self._door.gate(self._conn) if self._door.gate is not None else None
        if refusal is None:
            return None
        self._closed_for_auth = True
        self._record_failure(refusal.message, mfa=refusal.mfa)
        return refusal.message

    async def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> KbdIntChallenge:
        refused = self._refused()
        if refused is not None:
            return "", refused, "", []
        lock = await self._door.login.lock_state(username)
        if lock.locked:
            self._closed_for_auth = True
            self._record_failure(lock.message(), mfa=Verdict.LOCKED)
            return "", lock.message(), "", []
        return "", "", "", [(PROMPT, False)]

    async def validate_kbdint_response(
        self, username: str, responses: Sequence[str]
    ) -> KbdIntChallenge | bool:
        if self._closed_for_auth or self._key is None:
            return False
        refused = self._refused()
        if refused is not None:
            return "", refused, "", []
        if await self._blocked():
            return False
        prompt = PROMPT if self._second_factor is None else BREAK_GLASS_PROMPT
        if len(responses) != 1:
            return "", "answer with one code", "", [(prompt, False)]
        login = self._door.login
        if self._second_factor is not None:
            result = await login.check_break_glass_code(username, responses[0], connection=self.id)
            if result.accepted:
                method = f"{self._second_factor}+{BREAK_GLASS_METHOD}"
                return await self._logged_in(username, method, break_glass=True)
        else:
            user = login.user(username)
            break_glass = user is not None and user.break_glass
            result = await login.check_code(username, responses[0], final=not break_glass)
            if result.accepted and not break_glass:
                return await self._logged_in(username, result.method)
            if result.accepted:
                return self._ask_break_glass_code(username, result.method)
        self._code_attempts += 1
        self._record_failure(result.message or result.verdict, mfa=result.verdict)
        left = self._door.config.limits.code_attempts_per_connection - self._code_attempts
        final = (Verdict.LOCKED, Verdict.NOT_ENROLLED, Verdict.UNAVAILABLE)
        if result.verdict in final or left <= 0 or result.locked_now:
            self._closed_for_auth = True
            # No prompt: the client shows the message, answers nothing, and is refused.
            return "", result.message, "", []
        return "", f"{result.message}; {left} attempt(s) left", "", [(prompt, False)]

    def _ask_break_glass_code(self, username: str, second_factor: str) -> KbdIntChallenge:
        if self._door.config.break_glass is None:
            # A users_dir file marked the account after start-up; the config cannot serve it.
            message = "this break-glass account cannot log in here; tell an administrator"
            self._closed_for_auth = True
            self._record_failure("no break_glass section in the config", mfa="unavailable")
            return "", message, "", []
        self._second_factor = second_factor
        return "", BREAK_GLASS_INSTRUCTIONS, "", [(BREAK_GLASS_PROMPT, False)]

    async def _logged_in(self, username: str, method: str, *, break_glass: bool = False) -> bool:
        if self._key is None:  # asyncssh offers the code only after the key
            return False
        fields = self._fields()
        if method.startswith("scratch_code"):
            fields["scratch_codes_left"] = await self._door.login.scratch_codes_left(username)
        if break_glass:
            fields["break_glass"] = True
            left = await self._door.login.break_glass_codes_left(username)
            fields["break_glass_codes_left"] = left
        # Audit before action: no event on disk, no login.
        if not await self._door.audit(
            "login.succeeded", actor=username, outcome="allowed", mfa=method, **fields
        ):
            self._closed_for_auth = True
            self._failure_recorded = True
            return False
        if self._door.login_watch is not None:
            # The guard may end a login from a new address, before any session exists.
            ended = await self._door.login_watch.succeeded(username, self.peer.address, self.id)
            if ended is not None:
                self._closed_for_auth = True
                self._failure_recorded = True  # its record is login.ended
                self.shut_down(ended)
                return False
        user = self._door.login.user(username)
        self._identity = Identity(
            user=username,
            groups=tuple(user.groups) if user else (),
            key_fingerprint=self._key.fingerprint,
            method=method,
            connection=self.id,
            peer=self.peer,
            break_glass=break_glass,
        )
        if break_glass and self._door.alerts is not None:
            self._door.alerts.send(
                "breakglass.login",
                user=username,
                session=None,
                connection=self.id,
                **self._source(),
                key=self._key.fingerprint,
                codes_left=fields["break_glass_codes_left"],
            )
        return True

    def auth_completed(self) -> None:
        self._door.throttle.authenticated(self.id)
        timeout = self._door.config.limits.session_open_timeout.total_seconds()
        self._session_timer = asyncio.get_running_loop().call_later(timeout, self._no_session)

    def _no_session(self) -> None:
        if self._session is None:
            self.shut_down("no session was opened")

    # ------------------------------------------------------------------ channels
    def session_requested(self) -> asyncssh.SSHServerSession[bytes] | bool:
        if self._identity is None:
            return False
        if self._session is not None:
            self.refuse("session", "a second session on one connection")
            return False
        # A login that came through just before a lockdown opens nothing during it.
        refusal = self._door.gate(None) if self._door.gate is not None else None
        if refusal is not None:
            self.refuse("session", refusal.message)
            return False
        if self._session_timer is not None:
            self._session_timer.cancel()
        self._session = OperatorSession(self._door, self, self._identity)
        return self._session

    def refuse(self, what: str, detail: str = "") -> None:
        self._door.audit_soon(
            "channel.refused",
            actor=self._username[:_MAX_NAME] or "-",
            outcome="refused",
            request=what,
            detail=detail,
            **self._fields(),
        )

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        self.refuse("direct-tcpip", f"{dest_host[:255]}:{dest_port}")
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self.refuse("tcpip-forward", f"{listen_host[:255]}:{listen_port}")
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        self.refuse("direct-streamlocal", dest_path[:255])
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        self.refuse("streamlocal-forward", listen_path[:255])
        return False

    def tun_requested(self, unit: int | None) -> bool:
        self.refuse("tun", str(unit))
        return False

    def tap_requested(self, unit: int | None) -> bool:
        self.refuse("tap", str(unit))
        return False
