"""The login decisions behind the SSH front door: which key, which code, locked or not.

The SSH layer (``bastion.ssh.server``) speaks the protocol; this module decides, records
and audits. Rules:

* The key is the first factor. A wrong key is never counted against the account: anyone
  can try any user name, and counting would let strangers lock operators out. Sources are
  throttled instead (``bastion.ssh.throttle``).
* The code is the second factor, asked only after a verified key. Wrong and replayed codes
  count towards the account's back-off and hard lock; a malformed code (not six ASCII
  digits, not a scratch code) is refused without touching the replay guard or the counter.
* A time step is accepted once per user: the SQLite guard's conditional write decides, so of
  two connections racing with one code exactly one wins, and the loser is told "replayed".
* Success is reported only after the accepted step and the audit event are on disk.
* A break-glass account needs a third factor, one of its one-time codes
  (:meth:`LoginService.check_break_glass_code`): its TOTP code alone resets nothing (with
  ``final=False``), so a wrong break-glass code counts towards the lock like a wrong TOTP
  code, and a good TOTP code does not wipe the count. Using a code is one conditional
  write: of racing connections exactly one gets in with it.

SQLite calls run on one dedicated thread: the replay guard fsyncs, and an fsync on the event
loop would stall every other session's keystrokes in this worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from bastion import totp
from bastion.audit.log import AuditLog
from bastion.breakglass.code_key import load_or_create_code_key
from bastion.breakglass.codes import code_digest, normalize_code
from bastion.config import Config
from bastion.config.models import User
from bastion.config.users import UserDirectory
from bastion.enrolment import normalize_scratch_code, scratch_code_digest
from bastion.errors import AuditUnavailable, SecretFileError
from bastion.sshkeys import PublicKey
from bastion.state.breakglass_codes import SqlBreakGlassCodes
from bastion.state.logins import LoginGuard

__all__ = ["BREAK_GLASS_METHOD", "CodeCheck", "LoginService", "Peer", "Verdict"]

log = logging.getLogger(__name__)
T = TypeVar("T")
BREAK_GLASS_METHOD = "break_glass_code"


@dataclass(frozen=True)
class Peer:
    address: str
    port: int
    # The load balancer the connection came through (PROXY protocol), if any.
    via: str | None = None


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    WRONG = "wrong"
    REPLAYED = "replayed"
    MALFORMED = "malformed"
    LOCKED = "locked"
    NOT_ENROLLED = "not_enrolled"
    UNAVAILABLE = "unavailable"  # a secret file or the audit log is unusable


@dataclass(frozen=True)
class CodeCheck:
    verdict: Verdict
    message: str = ""  # shown to the operator (never says which factor was wrong)
    method: str = "totp"
    locked_now: bool = False  # this failure locked the account

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPTED


class LoginService:
    """One per worker process; shared by its connections."""

    def __init__(
        self,
        config: Config,
        users: UserDirectory,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._users = users
        self._audit = audit
        self._clock = clock
        self._db = ThreadPoolExecutor(1, thread_name_prefix="login-guard")
        # The guard's SQLite connection belongs to the thread that uses it.
        stores = config.state_stores()
        self._guard: LoginGuard = self._db.submit(stores.login_guard).result()
        self._codes: SqlBreakGlassCodes = self._db.submit(stores.break_glass_codes).result()

    def close(self) -> None:
        self._db.submit(self._guard.close).result()
        self._db.submit(self._codes.close).result()
        self._db.shutdown()

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    # ------------------------------------------------------------------ users and keys
    def user(self, name: str) -> User | None:
        return self._users.get(name)

    def key_for(self, name: str, key_data: bytes) -> PublicKey | None:
        """The configured key of ``name`` matching ``key_data`` (the SSH wire blob)."""
        user = self.user(name)
        if user is None:
            return None
        for key in user.public_keys:
            if key.blob == key_data:
                return key
        return None

    # ------------------------------------------------------------------ the second factor
    async def lock_state(self, name: str) -> totp.Lockout:
        record = await self._in_db(self._guard.failures, name)
        limits = self._config.limits
        return totp.lockout(
            record.failures,
            record.last_failure,
            self._clock(),
            lockout_after=limits.lockout_after_failures,
            hard_lock_after=limits.hard_lock_after_failures,
        )

    async def check_code(self, name: str, code: str, *, final: bool = True) -> CodeCheck:
        """Verify a TOTP or scratch code and record the outcome; see the module docstring.

        ``final=False`` when another factor follows (a break-glass account): success then
        leaves the failure count alone, for the last factor to clear."""
        user = self.user(name)
        if user is None:  # removed from the directory after its key was accepted
            return CodeCheck(Verdict.NOT_ENROLLED, "this account is not enrolled")
        locked = await self.lock_state(name)
        if locked.locked:
            return CodeCheck(Verdict.LOCKED, locked.message())
        scratch = normalize_scratch_code(code)
        if scratch is not None:
            return await self._check_scratch(name, scratch, final=final)
        try:
            secret = self._users.totp_secret(user)
        except SecretFileError as exc:
            log.error("login of %s refused: %s", name, exc)  # noqa: TRY400 - expected, no trace
            return CodeCheck(Verdict.UNAVAILABLE, "login is unavailable; tell an administrator")
        if secret is None:
            return CodeCheck(
                Verdict.NOT_ENROLLED,
                "no verification code is enrolled for this account; ask an administrator "
                "to run: bastion user enroll " + name,
            )
        now = self._clock()
        last = await self._in_db(self._guard.last_step, name)
        result = totp.verify(secret, code, now, last)
        if result.outcome is totp.Outcome.MALFORMED:
            return CodeCheck(Verdict.MALFORMED, "a verification code is six digits (0-9)")
        if result.accepted and result.step is not None:
            if await self._in_db(self._guard.accept_step, name, result.step):
                return await self._succeeded(name, "totp", final=final)
            # Another connection accepted this step between our read and our write.
            result = totp.Verification(totp.Outcome.REPLAYED, result.step)
        verdict = Verdict.REPLAYED if result.outcome is totp.Outcome.REPLAYED else Verdict.WRONG
        return await self._failed(name, verdict)

    async def _check_scratch(self, name: str, code: str, *, final: bool) -> CodeCheck:
        digest = scratch_code_digest(name, code)
        if await self._in_db(self._guard.use_scratch_code, name, digest, self._clock()):
            return await self._succeeded(name, "scratch_code", final=final)
        return await self._failed(name, Verdict.WRONG, method="scratch_code")

    async def check_break_glass_code(self, name: str, code: str, *, connection: str) -> CodeCheck:
        """Verify and burn one of a break-glass account's one-time codes (the last factor,
        asked after its TOTP code on the same connection)."""
        locked = await self.lock_state(name)
        if locked.locked:
            return CodeCheck(Verdict.LOCKED, locked.message(), BREAK_GLASS_METHOD)
        normalized = normalize_code(code)
        if normalized is None:
            return CodeCheck(
                Verdict.MALFORMED,
                "a break-glass code is 20 letters and digits (xxxxx-xxxxx-xxxxx-xxxxx)",
                BREAK_GLASS_METHOD,
            )
        try:
            # Read and checked at each use, as TOTP seeds are: a key replaced by an
            # administrator (with new batches) takes effect at the next login.
            key = await self._in_db(load_or_create_code_key, self._config)
        except SecretFileError as exc:
            log.error("break-glass login of %s refused: %s", name, exc)  # noqa: TRY400
            unavailable = "login is unavailable; tell an administrator"
            return CodeCheck(Verdict.UNAVAILABLE, unavailable, BREAK_GLASS_METHOD)
        digest = code_digest(key, name, normalized)
        if await self._in_db(self._burn, name, digest, connection):
            return await self._succeeded(name, BREAK_GLASS_METHOD, final=True)
        return await self._failed(name, Verdict.WRONG, method=BREAK_GLASS_METHOD)

    def _burn(self, name: str, digest: str, connection: str) -> bool:
        return self._codes.use(name, digest, now=self._clock(), connection=connection)

    async def break_glass_codes_left(self, name: str) -> int:
        state = await self._in_db(self._codes.batch, name)
        return 0 if state is None else state.remaining

    async def _succeeded(self, name: str, method: str, *, final: bool = True) -> CodeCheck:
        if final:
            await self._in_db(self._guard.reset_failures, name)
        return CodeCheck(Verdict.ACCEPTED, method=method)

    async def _failed(self, name: str, verdict: Verdict, *, method: str = "totp") -> CodeCheck:
        await self._in_db(self._guard.record_failure, name, self._clock())
        locked = await self.lock_state(name)
        message = locked.message() if locked.locked else "the code was not accepted"
        return CodeCheck(verdict, message, method, locked_now=locked.locked)

    async def scratch_codes_left(self, name: str) -> int:
        return await self._in_db(self._guard.scratch_codes_left, name)

    # ------------------------------------------------------------------ audit
    async def audit(self, event: str, *, actor: str, outcome: str, **fields: Any) -> bool:
        """Record an event; False (and logged) when the audit log cannot take it."""
        try:
            await self._audit.record(event, actor=actor, outcome=outcome, **fields)
        except AuditUnavailable as exc:
            log.error("audit event %s not written: %s", event, exc)  # noqa: TRY400
            return False
        return True
