"""The bastion's Vault/OpenBao adapter: login, Kubernetes credentials, leases.

hvac is synchronous, so every request runs on one of this client's two small thread pools (one
hvac adapter, hence one HTTP connection pool, per worker thread) and the event loop never
blocks: credential requests on one pool, logins, renewals, revocations and health checks on
the other, so a hanging credential request cannot hold up a revocation. Every call gives up
after ``vault.timeout``; requests' own connect and read timeouts then free the worker thread
(a credential request's thread keeps reading for one more timeout: see the last point below).

What this module guarantees:

- TLS only, verified against ``vault.ca_file``; plain ``http://`` is refused even if the
  configuration was built without validation. Redirects are not followed (the bastion's token
  is a header that ``requests`` would forward to wherever a redirect points), and proxy or
  CA-bundle environment variables are ignored: the address and CA in the config are the only
  ones used.
- The bastion's own token: AppRole login with the role-id from the config and the secret-id
  read from its 0600 file at each login (never kept), or TLS client certificate login (Vault's
  ``cert`` auth method) whose key file is checked the same way at each login and whose
  certificate every request presents (Vault checks it again when the token is renewed);
  renewed at two thirds of its TTL; a new login when renewal fails, when the token is not
  renewable, or when it nears its max TTL; a request refused with 403 because the token died
  behind our back is retried once after a new login.
- Kubernetes tokens are :class:`KubeToken` objects: ``repr``/``str`` say ``<redacted>``, they
  cannot be pickled, and :meth:`KubeToken.reveal` is the only way to the value.
- Every failure is a :class:`~bastion.errors.BackendUnavailable` whose message is one sentence
  an operator understands and whose hint tells the administrator what to fix. Messages and log
  lines never contain the bastion's token, the secret-id, the client key, a Kubernetes token
  or a response body.
- A credential request abandoned at its deadline (or cancelled) is not forgotten: if Vault
  answers within twice the timeout, the lease it brings is revoked. A later answer is lost and
  its lease ends at its TTL (docs/vault.md).

See docs/vault.md for the Vault policy the bastion needs and the TTL rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self
from urllib.parse import urlsplit

import hvac.adapters
import hvac.exceptions
import requests
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from bastion.config.loader import secret_file_problem
from bastion.config.models import Vault
from bastion.errors import BackendUnavailable

__all__ = ["MIN_KUBE_TTL", "KubeCredential", "KubeToken", "VaultClient"]

log = logging.getLogger(__name__)

# Kubernetes refuses service-account tokens shorter than 10 minutes (a TokenRequest's
# expirationSeconds must be >= 600) and OpenBao passes the TTL through unchecked: a shorter
# request would fail inside Vault, after it created the Role and RoleBinding. Refused here.
MIN_KUBE_TTL = timedelta(minutes=10)

_WORKERS = 4  # threads per pool: one pool for credential requests, one for everything else
# A credential request's worker thread keeps reading this many timeouts, although its caller
# gave up after one: a late answer still brings the lease id, and the lease is revoked.
_LATE_ANSWERS = 2
_MAX_SECRET_ID = 4096
_MAX_PEM = 1 << 20  # bytes: a client key or certificate chain file is far smaller
_CERT_EXPIRY_WARNING = timedelta(days=7)  # log a warning at each login from then on
# Why the renewer logs in again, in the login's log line: a refused or short renewal means the
# token reached its max TTL (or died); a replaced client certificate is told apart.
_MAX_TTL = "the token reached its maximum TTL"
_MIN_RENEW_DELAY = 0.2  # seconds: never spin on a zero or tiny TTL
_MAX_RETRY_DELAY = 30.0  # seconds between login attempts while Vault is unavailable
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_GONE_LEASE = ("lease not found", "invalid lease")


class KubeToken:
    """A Kubernetes bearer token: never printed, never logged, never serialised."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value: str | None = value

    def reveal(self) -> str:
        """The token itself: the only way to get it. ValueError once it was dropped."""
        if self._value is None:
            raise ValueError(
                "this Kubernetes token was dropped when its session ended; "
                "ask Vault for a new credential"
            )
        return self._value

    def drop(self) -> None:
        """Forget the value. Best effort: Python strings cannot be wiped, only released."""
        self._value = None

    @property
    def dropped(self) -> bool:
        return self._value is None

    def __repr__(self) -> str:
        return "KubeToken(<redacted>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "a KubeToken is never pickled or copied to disk: credentials live in memory only"
        )

    def __copy__(self) -> KubeToken:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> KubeToken:
        return self


@dataclass(frozen=True)
class KubeCredential:
    """A Kubernetes credential from Vault's Kubernetes secrets engine, for one namespace."""

    token: KubeToken
    lease_id: str
    lease_duration: timedelta
    renewable: bool
    namespace: str
    service_account: str
    issued_at: float  # the client's clock() when Vault answered


class _Refused(Exception):
    """Vault answered with an error the caller handles itself (never leaves this module)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(status)
        self.status = status
        self.text = text


class _Redirected(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Malformed(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _error_text(exc: hvac.exceptions.VaultError) -> str:
    """Vault's error strings, lower-cased, for classification only: never shown or logged."""
    errors = exc.errors if isinstance(exc.errors, list) else []
    return " ".join(str(e) for e in errors).lower()


def _status(exc: hvac.exceptions.VaultError) -> int:
    for status, kind in (
        (400, hvac.exceptions.InvalidRequest),
        (401, hvac.exceptions.Unauthorized),
        (403, hvac.exceptions.Forbidden),
        (404, hvac.exceptions.InvalidPath),
        (429, hvac.exceptions.RateLimitExceeded),
        (500, hvac.exceptions.InternalServerError),
        (501, hvac.exceptions.VaultNotInitialized),
        (502, hvac.exceptions.BadGateway),
        (503, hvac.exceptions.VaultDown),
    ):
        if isinstance(exc, kind):
            return status
    return 0


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _require(data: Any, key: str, kind: type, what: str) -> Any:
    """``data[key]`` if it is a ``kind`` (a bool is not taken for an int), else _Malformed."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Malformed(what)
    return value


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned request's outcome as seen, so asyncio does not log it."""
    if not future.cancelled():
        future.exception()


def _read_private(path: Path, what: str, fix: str, limit: int) -> bytes:
    """A secret file's bytes (at most ``limit`` + 1), checked on the open descriptor as at
    start-up: a regular file, not a symbolic link, mode 0600, owned by the running user."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BackendUnavailable(
            f"The {what} {path} does not exist, so the bastion cannot log in to Vault.",
            hint=fix,
        ) from None
    except OSError as exc:
        problem = (
            "is a symbolic link"
            if exc.errno == errno.ELOOP
            else f"cannot be opened ({exc.strerror})"
        )
        raise BackendUnavailable(
            f"The {what} {path} {problem}, so the bastion cannot log in to Vault.",
            hint=fix,
        ) from None
    try:
        uid = os.geteuid()
        unsafe = secret_file_problem(os.fstat(fd), path, f"uid {uid}", uid)
        if unsafe:
            raise BackendUnavailable(
                f"The {what} {path} {unsafe}, so the bastion refuses to use it to log in to Vault.",
                hint=fix,
            )
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise BackendUnavailable(
            f"The {what} {path} cannot be read ({exc.strerror}), so the bastion cannot log in "
            "to Vault.",
            hint=fix,
        ) from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _read_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file (the client certificate; intermediates follow)."""
    fix = f"write the bastion's client certificate (PEM) to {path}"
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_PEM)
    except FileNotFoundError:
        raise BackendUnavailable(
            f"The TLS client certificate file {path} does not exist, so the bastion cannot log "
            "in to Vault.",
            hint=fix,
        ) from None
    except OSError as exc:
        raise BackendUnavailable(
            f"The TLS client certificate file {path} cannot be read ({exc.strerror}), so the "
            "bastion cannot log in to Vault.",
            hint=fix,
        ) from None
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        raise BackendUnavailable(
            f"The TLS client certificate file {path} holds no PEM certificate, so the bastion "
            "cannot log in to Vault.",
            hint=fix,
        ) from None


@dataclass(frozen=True)
class _Doing:
    """What the bastion was doing, for the one-sentence error message."""

    action: str  # completes "the bastion could not ..."
    path: str  # the Vault API path, for permission errors
    capability: str = "update"  # what the policy must grant on ``path``
    login: bool = False
    role: str = ""
    mount: str = ""
    namespace: str = ""


class VaultClient:
    """The bastion's connection to Vault (or OpenBao). Start it once, close it at shutdown."""

    def __init__(self, config: Vault, *, clock: Callable[[], float] = time.time) -> None:
        parts = urlsplit(config.address)
        if parts.scheme != "https" or not parts.hostname:
            raise BackendUnavailable(
                f"Vault address {config.address!r} is not an https:// URL, and the bastion "
                "never talks to Vault without TLS.",
                hint="set vault.address in the config to Vault's https:// address",
            )
        if (config.approle is None) == (config.tls_client is None):
            raise BackendUnavailable(
                "The bastion's Vault configuration must name exactly one login method, "
                "AppRole or a TLS client certificate.",
                hint="set one of vault.approle and vault.tls_client in the config",
            )
        self._config = config
        self._address = config.address.rstrip("/")
        if config.tls_client is None:
            self._method, self._method_kind = "AppRole", "an AppRole"
            self._login_path = "auth/approle/login"
        else:
            self._method, self._method_kind = "TLS client certificate", "a cert (TLS certificate)"
            self._login_path = "auth/cert/login"
        self._timeout = config.timeout.total_seconds()
        self._clock = clock
        # Credential requests wait longer for late answers (see _LATE_ANSWERS) on their own
        # threads, so a hanging Vault cannot hold up logins, renewals and revocations.
        self._executor = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="vault")
        self._issuer = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="vault-creds")
        self._local = threading.local()
        self._adapters: list[Any] = []
        self._adapters_lock = threading.Lock()
        self._token: str | None = None
        self._generation = 0  # counts logins: who re-logs in after a 403, and only once
        self._login_lock = asyncio.Lock()
        self._token_changed = asyncio.Event()
        self._token_ttl = 0.0  # seconds, as Vault gave it at the last login or renewal
        self._login_ttl = 0.0  # seconds, the TTL of a fresh login: what renewal asks for
        self._renewable = False
        self._token_due = 0.0  # loop.time() when the next renewal is due
        self._renewer: asyncio.Task[None] | None = None
        self._orphans: set[asyncio.Task[None]] = set()
        self._closing = False  # close() has begun: requests still run until _closed
        self._closed = False

    def __repr__(self) -> str:
        return f"VaultClient({self._address})"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Log in (AppRole or TLS client certificate) and keep the bastion's token alive in
        the background."""
        self._check_open()
        if self._token is None:
            await self._login(self._generation, reason="start-up")
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._keep_token_alive(), name="vault-token")

    async def close(self) -> None:
        """Stop the renewer and release the threads. Revokes nothing: leases are the
        sessions' to revoke, and the bastion's token simply expires."""
        if self._closing:
            return
        self._closing = True
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        if self._orphans:
            _, pending = await asyncio.wait(self._orphans, timeout=self._timeout)
            for task in pending:
                task.cancel()
                log.warning(
                    "an abandoned Kubernetes credential was still being revoked when the "
                    "Vault client closed; it expires by itself at the end of its lease"
                )
            if pending:
                await asyncio.wait(pending)
        self._closed = True
        self._token = None
        await asyncio.to_thread(self._release_threads)

    def _release_threads(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        # A credential request still waiting for a late answer ends at its read timeout.
        self._issuer.shutdown(wait=False, cancel_futures=True)
        with self._adapters_lock:
            adapters, self._adapters = self._adapters, []
        for adapter in adapters:
            adapter.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable(
                "The bastion's Vault client is closed because the bastion is shutting down.",
                hint="start the session again once the bastion is back",
            )

    # ------------------------------------------------------------------ the session's calls
    async def issue_kube_credential(
        self,
        mount: str,
        role: str,
        namespace: str,
        ttl: timedelta,
        *,
        cluster_role_binding: bool = False,
    ) -> KubeCredential:
        """A Kubernetes token for ``namespace`` from ``<mount>/creds/<role>``, valid ``ttl``
        (or less, if the Vault role's token_max_ttl caps it: check ``lease_duration``).

        ``cluster_role_binding=True`` binds a ClusterRole-type role's rules cluster-wide
        (a ClusterRoleBinding); ``namespace`` is then only where the service account lives.
        """
        if ttl < MIN_KUBE_TTL:
            raise ValueError(
                f"a Kubernetes credential must be valid for at least 10 minutes (Kubernetes "
                f"refuses shorter service-account tokens), not {ttl}; ask for the whole "
                "session length, at least 10 minutes"
            )
        for value, pattern, what in (
            (mount, _NAME, "Vault mount"),
            (role, _NAME, "Vault role"),
            (namespace, _NAMESPACE, "Kubernetes namespace"),
        ):
            if not pattern.fullmatch(value):
                raise ValueError(f"{value!r} is not a valid {what} name")
        seconds = math.ceil(ttl.total_seconds())
        path = f"{mount}/creds/{role}"
        doing = _Doing(
            f"get a Kubernetes credential for namespace {namespace!r}",
            path,
            role=role,
            mount=mount,
            namespace=namespace,
        )
        body: dict[str, Any] = {"kubernetes_namespace": namespace, "ttl": f"{seconds}s"}
        if cluster_role_binding:
            body["cluster_role_binding"] = True
        answer = await self._authed("POST", path, body, doing, abandon=self._revoke_abandoned)
        issued_at = self._clock()
        try:
            credential = self._credential(answer, namespace, issued_at)
        except _Malformed as exc:
            lease_id = answer.get("lease_id") if isinstance(answer, dict) else None
            if isinstance(lease_id, str) and lease_id:
                await self._revoke_quietly(lease_id)
            raise BackendUnavailable(
                f"Vault's answer to the request to {doing.action} had no {exc.what}, so the "
                "credential was not used.",
                hint="check that the mount is a Kubernetes secrets engine and see Vault's log",
            ) from None
        if credential.lease_duration.total_seconds() < seconds:
            log.warning(
                "Vault issued a Kubernetes credential for %s valid for %d s instead of the "
                "%d s asked: the role %s/%s caps it (token_max_ttl)",
                namespace,
                credential.lease_duration.total_seconds(),
                seconds,
                mount,
                role,
            )
        log.info(
            "issued a Kubernetes credential for namespace %s (%s/%s), valid for %d s",
            namespace,
            mount,
            role,
            credential.lease_duration.total_seconds(),
        )
        return credential

    @staticmethod
    def _credential(answer: Any, namespace: str, issued_at: float) -> KubeCredential:
        lease_id = _require(answer, "lease_id", str, "lease id")
        duration = _require(answer, "lease_duration", int, "lease duration")
        renewable = _require(answer, "renewable", bool, "renewable flag")
        data = _require(answer, "data", dict, "data")
        token = _require(data, "service_account_token", str, "service-account token")
        account = _require(data, "service_account_name", str, "service-account name")
        where = data.get("service_account_namespace", namespace)
        if not lease_id or not token or not account or where != namespace:
            raise _Malformed("service account in the namespace asked for")
        return KubeCredential(
            token=KubeToken(token),
            lease_id=lease_id,
            lease_duration=timedelta(seconds=duration),
            renewable=renewable,
            namespace=namespace,
            service_account=account,
            issued_at=issued_at,
        )

    async def renew_lease(self, lease_id: str, increment: timedelta) -> timedelta | None:
        """Extend a lease; its new duration, or None when the lease is not renewable (the
        leases of OpenBao's Kubernetes secrets engine never are)."""
        if not lease_id:
            raise ValueError("renew_lease needs the lease id of a credential")
        doing = _Doing("renew a session's credential", "sys/leases/renew")
        body = {"lease_id": lease_id, "increment": math.ceil(increment.total_seconds())}
        try:
            answer = await self._authed(
                "PUT", "sys/leases/renew", body, doing, passthrough=lambda s, _: s == 400
            )
        except _Refused as refused:
            if "not renewable" in refused.text:
                return None
            if any(gone in refused.text for gone in _GONE_LEASE):
                raise BackendUnavailable(
                    "Vault no longer knows the session's credential: it expired or was revoked.",
                    hint="start a new debug session",
                ) from None
            raise BackendUnavailable(
                "Vault refused to renew the session's credential as asked (HTTP 400).",
                hint="see Vault's log for the reason",
            ) from None
        try:
            return timedelta(seconds=_require(answer, "lease_duration", int, "lease duration"))
        except _Malformed:
            raise BackendUnavailable(
                "Vault's answer to the lease renewal had no lease duration.",
                hint="see Vault's log; the session keeps its current deadline",
            ) from None

    async def revoke_lease(
        self, lease_id: str, *, attempts: int = 5, first_delay: float = 0.5
    ) -> None:
        """Revoke a lease and wait until Vault has (``sync=true``): the engine then deletes
        the service account, so its token is dead. A lease Vault no longer knows counts as
        revoked. Failures are retried with exponential back-off; BackendUnavailable after
        the last attempt."""
        if not lease_id:
            raise ValueError("revoke_lease needs the lease id of a credential")
        if attempts < 1:
            raise ValueError("revoke_lease needs at least one attempt")
        doing = _Doing("revoke a session's credential", "sys/leases/revoke")
        body = {"lease_id": lease_id, "sync": True}
        delay = first_delay
        started = time.monotonic()

        def gone(status: int, text: str) -> bool:
            return status == 400 and any(g in text for g in _GONE_LEASE)

        for attempt in range(1, attempts + 1):
            try:
                await self._authed("PUT", "sys/leases/revoke", body, doing, passthrough=gone)
            except _Refused:
                return
            except BackendUnavailable as exc:
                if attempt == attempts or self._closed:
                    elapsed = time.monotonic() - started
                    raise BackendUnavailable(
                        f"{exc.message.rstrip('.')} (gave up after {attempt} attempts "
                        f"in {elapsed:.1f} s).",
                        hint=f"{exc.hint or 'see the bastion log'}; until the lease is revoked "
                        "(the reaper retries it) the token stays valid to the end of its lease",
                    ) from None
                log.warning(
                    "revoking a credential failed (attempt %d of %d), retrying in %s: %s",
                    attempt,
                    attempts,
                    _seconds(delay),
                    exc.message,
                )
                await asyncio.sleep(delay)
                delay *= 2
            else:
                return

    async def healthy(self) -> bool:
        """Vault answers, is unsealed, and the bastion holds a valid token (a token that died
        behind its back is replaced by a new login)."""
        if self._closed:
            return False
        doing = _Doing("check its own Vault token", "auth/token/lookup-self", "read")
        try:
            await self._request("GET", "sys/health?standbyok=true&perfstandbyok=true", None, None)
            if self._token is None:
                return False
            await self._authed("GET", "auth/token/lookup-self", None, doing)
        except Exception as exc:  # noqa: BLE001 - a probe answers yes or no
            log.info("Vault is not healthy: %s", _describe(exc))
            return False
        return True

    # ------------------------------------------------------------------ the bastion's token
    async def _login(self, seen: int, *, reason: str) -> None:
        """Log in unless someone else already did since generation ``seen``. The login step
        is the only difference between AppRole and TLS client certificate login."""
        async with self._login_lock:
            if self._generation != seen and self._token is not None:
                return
            self._check_open()
            action = "AppRole" if self._config.tls_client is None else "its TLS client certificate"
            doing = _Doing(f"log in to Vault with {action}", self._login_path, login=True)
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(self._executor, self._login_body)
            try:
                # A certificate login opens a new TLS connection: it presents the certificate
                # and key in the files now, so a rotated pair counts from this login on.
                answer = await self._request(
                    "POST", self._login_path, body, None, fresh=self._config.tls_client is not None
                )
            except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence
                raise self._explain(exc, doing) from None
            finally:
                body.clear()
            mount = self._login_path.removesuffix("/login")
            try:
                auth = _require(answer, "auth", dict, "auth section")
                token = _require(auth, "client_token", str, "client token")
                ttl = _require(auth, "lease_duration", int, "token TTL")
                renewable = _require(auth, "renewable", bool, "renewable flag")
            except _Malformed as exc:
                raise BackendUnavailable(
                    f"Vault's answer to the bastion's {self._method} login had no {exc.what}.",
                    hint=f"check that {mount} is {self._method_kind} auth method and see "
                    "Vault's log",
                ) from None
            self._token = token
            self._generation += 1
            self._login_ttl = float(ttl)
            self._set_ttl(float(ttl), renewable)
            log.info(
                "logged in to Vault at %s with %s (%s); token valid for %d s%s",
                self._address,
                self._method,
                reason,
                ttl,
                ", renewable" if renewable else ", not renewable",
            )

    def _login_body(self) -> dict[str, Any]:
        """The login request's body, from the files read now (on a worker thread)."""
        tls = self._config.tls_client
        if tls is not None:
            self._check_client_certificate()
            return {"name": tls.role}
        assert self._config.approle is not None  # noqa: S101 - __init__ checked: one of two
        return {"role_id": self._config.approle.role_id, "secret_id": self._read_secret_id()}

    def _set_ttl(self, ttl: float, renewable: bool) -> None:
        self._token_ttl = ttl
        self._renewable = renewable
        self._token_due = asyncio.get_running_loop().time() + ttl * 2 / 3
        self._token_changed.set()

    def _read_secret_id(self) -> str:
        """The AppRole secret-id, read from its file now, checked as at start-up."""
        assert self._config.approle is not None  # noqa: S101 - only called for AppRole
        path: Path = self._config.approle.secret_id_file
        fix = f"write the AppRole secret-id to {path}, mode 0600, owned by the bastion's user"
        raw = _read_private(path, "AppRole secret-id file", fix, _MAX_SECRET_ID)
        try:
            secret_id = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            secret_id = ""
        if not secret_id or len(raw) > _MAX_SECRET_ID or any(c.isspace() for c in secret_id):
            raise BackendUnavailable(
                f"The AppRole secret-id file {path} does not hold one secret-id (it is empty, "
                "not ASCII, several words or too long), so the bastion cannot log in to Vault.",
                hint=fix,
            )
        return secret_id

    def _check_client_certificate(self) -> None:
        """Check the client key file (as the secret-id file is checked) and that it belongs
        to an unexpired certificate, before the login request presents them. requests loads
        both files again from their paths for each new TLS connection; nothing here keeps
        or logs the key."""
        tls = self._config.tls_client
        assert tls is not None  # noqa: S101 - only called for certificate login
        key_path, cert_path = tls.key_file, tls.cert_file
        fix = (
            f"write the private key of the certificate {cert_path} to {key_path} (PEM, not "
            "encrypted), mode 0600, owned by the bastion's user"
        )
        raw = _read_private(key_path, "TLS client key file", fix, _MAX_PEM)
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except TypeError:  # cryptography's way of saying "encrypted, and no password given"
            problem: str | None = "is encrypted with a passphrase, which the bastion cannot use"
        except (ValueError, UnsupportedAlgorithm):
            problem = "does not hold a PEM private key"
        else:
            problem = None
            public_key = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            del key
        del raw
        if problem is not None:
            raise BackendUnavailable(
                f"The TLS client key file {key_path} {problem}, so the bastion cannot log in "
                "to Vault.",
                hint=fix,
            )
        certificate = _read_certificate(cert_path)
        presented = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if presented != public_key:
            raise BackendUnavailable(
                f"The TLS client key file {key_path} does not hold the private key of the "
                f"certificate {cert_path}, so the bastion cannot log in to Vault.",
                hint="install the certificate and its own key together (docs/vault.md, rotation)",
            )
        now = datetime.now(UTC)
        until, since = certificate.not_valid_after_utc, certificate.not_valid_before_utc
        renew = "issue a new client certificate for the bastion (docs/vault.md, rotation)"
        if until <= now or since > now:
            when = (
                f"expired at {until:%Y-%m-%d %H:%M} UTC"
                if until <= now
                else f"is not valid before {since:%Y-%m-%d %H:%M} UTC"
            )
            raise BackendUnavailable(
                f"The TLS client certificate {cert_path} {when}, so the bastion cannot log in "
                "to Vault.",
                hint=renew if until <= now else f"check the clock of this host, or {renew}",
            )
        if until - now < _CERT_EXPIRY_WARNING:
            log.warning(
                "the bastion's TLS client certificate %s expires at %s UTC: %s",
                cert_path,
                f"{until:%Y-%m-%d %H:%M}",
                renew,
            )

    async def _keep_token_alive(self) -> None:
        """Renew the bastion's token at 2/3 of its TTL; log in again when renewal fails, the
        token is not renewable, or it nears its max TTL (a renewal gives less than asked)."""
        loop = asyncio.get_running_loop()
        retry = 1.0
        while True:
            self._token_changed.clear()
            if self._token_ttl <= 0 and self._token is not None:
                await self._token_changed.wait()  # a token without expiry: nothing to do
                continue
            delay = max(self._token_due - loop.time(), _MIN_RENEW_DELAY)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._token_changed.wait(), delay)
                continue  # someone logged in again: recompute the schedule
            seen = self._generation
            try:
                if self._token is None or not self._renewable:
                    await self._login(seen, reason="the token is not renewable")
                elif (why := await self._renew_self()) is not None:
                    await self._login(seen, reason=why)
                retry = 1.0
            except BackendUnavailable as exc:
                log.warning(
                    "the bastion's Vault token could not be kept alive (%s); next try in %s",
                    exc.message,
                    _seconds(retry),
                )
                self._token_due = loop.time() + retry
                retry = min(retry * 2, _MAX_RETRY_DELAY)

    async def _renew_self(self) -> str | None:
        """Renew the bastion's token; None when renewed, else why a new login is needed."""
        doing = _Doing("renew its own Vault token", "auth/token/renew-self")
        increment = f"{int(self._login_ttl)}s"
        seen = self._generation
        certificate = self._config.tls_client is not None
        try:
            # With a certificate login, Vault checks the certificate again at renewal: a new
            # connection presents the files as they are now, so a rotated certificate shows.
            answer = await self._request(
                "POST",
                "auth/token/renew-self",
                {"increment": increment},
                self._token,
                fresh=certificate,
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence
            failure = self._explain(exc, doing)
            if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.InvalidRequest):
                log.warning("Vault refused to renew the bastion's token; logging in again")
                return _MAX_TTL
            if (
                certificate
                and isinstance(exc, hvac.exceptions.VaultError)
                and "client identity" in _error_text(exc)
            ):
                # OpenBao (HTTP 500 "client identity during renewal not matching client
                # identity used during login") after the certificate was rotated.
                log.warning(
                    "Vault refused to renew the bastion's token: it belongs to the client "
                    "certificate of the last login, which was replaced since; logging in again"
                )
                return "the client certificate was replaced"
            raise failure from None
        if seen != self._generation:
            return None  # a new login happened meanwhile; its schedule stands
        try:
            auth = _require(answer, "auth", dict, "auth section")
            ttl = _require(auth, "lease_duration", int, "token TTL")
            renewable = _require(auth, "renewable", bool, "renewable flag")
        except _Malformed:
            return _MAX_TTL
        if ttl < self._login_ttl:
            log.info("the bastion's Vault token nears its maximum TTL (%d s left)", ttl)
            return _MAX_TTL
        self._set_ttl(float(ttl), renewable)
        log.info("renewed the bastion's Vault token; valid for %d s", ttl)
        return None

    # ------------------------------------------------------------------ requests
    async def _authed(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        doing: _Doing,
        *,
        passthrough: Callable[[int, str], bool] | None = None,
        abandon: Callable[[Any], None] | None = None,
    ) -> Any:
        """A request with the bastion's token, retried once after a new login when it is
        refused because the token died. Errors become BackendUnavailable, except those
        ``passthrough(status, text)`` selects, which are raised as _Refused."""
        self._check_open()
        if self._token is None:
            await self.start()
        for last in (False, True):
            seen = self._generation
            try:
                return await self._request(method, path, body, self._token, abandon=abandon)
            except hvac.exceptions.VaultError as exc:
                status, text = _status(exc), _error_text(exc)
                if passthrough is not None and passthrough(status, text):
                    raise _Refused(status, text) from None
                if status == 403 and not last and await self._token_died(seen):
                    await self._login(seen, reason="Vault no longer accepted the token")
                    continue
                raise self._explain(exc, doing) from None
            except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence
                raise self._explain(exc, doing) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _token_died(self, seen: int) -> bool:
        """After a 403: is the bastion's token dead (rather than the policy saying no)?"""
        if seen != self._generation:
            return True  # another task logged in meanwhile: retry with the new token
        try:
            await self._request("GET", "auth/token/lookup-self", None, self._token)
        except hvac.exceptions.Forbidden:
            return True
        except Exception as exc:  # noqa: BLE001 - the check's own failure is the news
            doing = _Doing("check its own Vault token", "auth/token/lookup-self", "read")
            raise self._explain(exc, doing) from None
        return False

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        token: str | None,
        *,
        abandon: Callable[[Any], None] | None = None,
        fresh: bool = False,
    ) -> Any:
        """One HTTP request on a worker thread, bounded by the timeout. Raises hvac's and
        requests' exceptions, TimeoutError, _Redirected or _Malformed. ``fresh``: on a new
        connection (a certificate login presents the files as they are now)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        if abandon is None:
            executor, read_timeout = self._executor, self._timeout
        else:
            executor, read_timeout = self._issuer, self._timeout * _LATE_ANSWERS
        send = functools.partial(
            self._send, method, path, body, token, read_timeout=read_timeout, fresh=fresh
        )
        future = loop.run_in_executor(executor, send)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except (TimeoutError, asyncio.CancelledError):
            # The worker thread finishes on its own (requests' timeouts); if it brings a
            # lease nobody waits for any more, ``abandon`` revokes it.
            future.add_done_callback(abandon or _consume)
            raise

    def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        token: str | None,
        *,
        read_timeout: float,
        fresh: bool,
    ) -> Any:
        adapter = getattr(self._local, "adapter", None)
        tls = self._config.tls_client
        if adapter is None:
            adapter = hvac.adapters.RawAdapter(
                base_uri=self._address,
                verify=str(self._config.ca_file),
                timeout=self._timeout,
                allow_redirects=False,
                # Every request presents the client certificate: Vault checks it at login
                # and again when the token is renewed. requests loads both files (by path)
                # for each new TLS connection.
                cert=None if tls is None else (str(tls.cert_file), str(tls.key_file)),
            )
            # Only the config's address and CA: no proxy, CA bundle or .netrc from the
            # environment.
            adapter.session.trust_env = False
            self._local.adapter = adapter
            with self._adapters_lock:
                self._adapters.append(adapter)
        elif fresh:
            # Drop this thread's kept-alive connections: the new one loads the certificate
            # and key files as they are now (a login, or a renewal Vault checks them at).
            adapter.session.close()
        adapter.token = token
        timeout = (self._timeout, read_timeout)
        try:
            if body is None:
                response = adapter.request(method, f"/v1/{path}", timeout=timeout)
            else:
                response = adapter.request(method, f"/v1/{path}", json=body, timeout=timeout)
        finally:
            adapter.token = None
        status = int(response.status_code)
        if 300 <= status < 400:
            raise _Redirected(status)
        if status == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise _Malformed("JSON body") from None

    # ------------------------------------------------------------------ abandoned requests
    def _revoke_abandoned(self, future: asyncio.Future[Any]) -> None:
        """A credential request we stopped waiting for: revoke what Vault issued anyway."""
        if future.cancelled() or future.exception() is not None:
            return
        lease_id = future.result().get("lease_id") if isinstance(future.result(), dict) else None
        if not isinstance(lease_id, str) or not lease_id:
            return
        if self._closed:
            log.warning(
                "Vault issued a Kubernetes credential after the bastion's Vault client closed; "
                "it expires by itself at the end of its lease"
            )
            return
        log.warning(
            "Vault issued a Kubernetes credential after the bastion stopped waiting for it; "
            "revoking it"
        )
        self._spawn(self._revoke_quietly(lease_id))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def _revoke_quietly(self, lease_id: str) -> None:
        try:
            await self.revoke_lease(lease_id, attempts=3, first_delay=0.5)
        except BackendUnavailable as exc:
            log.error(  # noqa: TRY400 - the sentence is the whole story, not a traceback
                "a Kubernetes credential nobody uses could not be revoked; it expires at the "
                "end of its lease: %s",
                exc.message,
            )

    # ------------------------------------------------------------------ errors
    def _explain(self, exc: BaseException, doing: _Doing) -> BackendUnavailable:
        """One sentence for the operator, one hint for the administrator."""
        if isinstance(exc, BackendUnavailable):
            return exc
        where = f"Vault at {self._address}"
        could_not = f"so the bastion could not {doing.action}"
        if isinstance(exc, requests.exceptions.SSLError):
            return BackendUnavailable(
                f"{where} failed the TLS check against the CA in {self._config.ca_file}, "
                f"{could_not}.",
                hint="make vault.ca_file the CA that signed Vault's certificate, and "
                "vault.address a name that certificate is issued for"
                + (
                    ""
                    if self._config.tls_client is None
                    else "; check too that vault.tls_client's certificate and key belong together"
                ),
            )
        if isinstance(exc, TimeoutError | requests.exceptions.Timeout):
            return BackendUnavailable(
                f"{where} did not answer within {_seconds(self._timeout)}, {could_not}.",
                hint="check that Vault is running and not overloaded and the network path to "
                "it, or raise vault.timeout in the config",
            )
        if isinstance(exc, requests.exceptions.RequestException):
            return BackendUnavailable(
                f"{where} cannot be reached, {could_not}.",
                hint="check that Vault is running and that vault.address is right and "
                "reachable from the bastion host (DNS, firewall)",
            )
        if isinstance(exc, _Redirected):
            return BackendUnavailable(
                f"{where} answered with a redirect (HTTP {exc.status}), which the bastion does "
                f"not follow, {could_not}.",
                hint="point vault.address at the active Vault node or its load balancer",
            )
        if isinstance(exc, _Malformed):
            return BackendUnavailable(
                f"{where} gave an answer without {exc.what}, {could_not}.",
                hint="check that vault.address is Vault's API address and see Vault's log",
            )
        tls = self._config.tls_client
        if tls is not None and isinstance(exc, OSError):
            # requests' own error when a certificate or key file vanished since the check.
            return BackendUnavailable(
                f"The bastion's TLS client certificate {tls.cert_file} or its key {tls.key_file} "
                f"could not be loaded, {could_not}.",
                hint="restore both files (the key mode 0600, owned by the bastion's user)",
            )
        if not isinstance(exc, hvac.exceptions.VaultError):
            log.error("unexpected error from the Vault client: %s", type(exc).__name__)
            return BackendUnavailable(
                f"The bastion's Vault client failed unexpectedly ({type(exc).__name__}), "
                f"{could_not}.",
                hint="this is a bug in the bastion; please report it with the bastion's log",
            )
        status, text = _status(exc), _error_text(exc)
        if status == 503 and "sealed" in text:
            return BackendUnavailable(
                f"{where} is sealed, {could_not}.",
                hint="an administrator must unseal Vault (bao operator unseal, or vault "
                "operator unseal)",
            )
        if status in (501, 503):
            return BackendUnavailable(
                f"{where} is not ready (HTTP {status}: "
                f"{'not initialised' if status == 501 else 'unavailable'}), {could_not}.",
                hint="check Vault's status (bao status) and its log",
            )
        if doing.login and status in (400, 401, 403):
            return self._login_refused()
        if doing.role and status == 400 and doing.namespace in text and "namespace" in text:
            return BackendUnavailable(
                f"Vault's Kubernetes role {doing.role!r} does not allow namespace "
                f"{doing.namespace!r}.",
                hint=f"add {doing.namespace} to allowed_kubernetes_namespaces of role "
                f"{doing.mount}/roles/{doing.role} (terraform/), or take the namespace out of "
                "the grant",
            )
        if doing.role and (
            status == 404 or (status == 400 and "role" in text and "not exist" in text)
        ):
            return BackendUnavailable(
                f"Vault has no Kubernetes role {doing.role!r} on the secrets engine mounted at "
                f"{doing.mount!r}.",
                hint="create the role (terraform/), or fix the grant's vault_role or the "
                "cluster's vault_mount in the config",
            )
        if status == 403:
            return BackendUnavailable(
                f"Vault's policy for the bastion does not allow {doing.path}, {could_not}.",
                hint=f'grant capabilities ["{doing.capability}"] on "{doing.path}" in the '
                "bastion's Vault policy (docs/vault.md lists every path the bastion needs)",
            )
        if status == 429:
            return BackendUnavailable(
                f"{where} is rate-limiting the bastion, {could_not}.",
                hint=f"raise the rate-limit quota that applies to the bastion's {self._method} "
                "login",
            )
        if status >= 500:
            return BackendUnavailable(
                f"{where} failed (HTTP {status}) when asked to {doing.action}.",
                hint="see Vault's server log at this time; for credentials, also the "
                "Kubernetes secrets engine's config (kubernetes_host, CA, service_account_jwt)",
            )
        return BackendUnavailable(
            f"{where} refused the request (HTTP {status or 'error'}), {could_not}.",
            hint="see Vault's server log at this time for the reason",
        )

    def _login_refused(self) -> BackendUnavailable:
        tls, approle = self._config.tls_client, self._config.approle
        if tls is not None:
            return BackendUnavailable(
                f"Vault refused the bastion's TLS client certificate login: its cert role "
                f"{tls.role!r} does not exist or does not trust the certificate {tls.cert_file}.",
                hint=f"make auth/cert/certs/{tls.role} trust the CA that issued the certificate "
                f"(bao write auth/cert/certs/{tls.role} certificate=@client-ca.pem "
                "token_policies=bastion), check vault.tls_client.role, and check that nothing "
                "between the bastion and Vault ends TLS (Vault must see the client certificate)",
            )
        assert approle is not None  # noqa: S101 - __init__ checked: one of the two
        return BackendUnavailable(
            "Vault refused the bastion's AppRole login: the role-id or the secret-id is "
            "wrong, or the secret-id has expired.",
            hint="generate a new secret-id (bao write -f "
            "auth/approle/role/<role>/secret-id), write it to "
            f"{approle.secret_id_file} with mode 0600, and check vault.approle.role_id",
        )


def _describe(exc: BaseException) -> str:
    """A log-safe description of a failure: our own sentences, or just the error's type."""
    if isinstance(exc, BackendUnavailable):
        return exc.message
    if isinstance(exc, hvac.exceptions.VaultError):
        return f"HTTP {_status(exc) or 'error'}"
    return type(exc).__name__
