"""What a worker does about key rotations while it runs: no restart needed.

* **Host keys.** Every second the worker looks at ``listener.host_key`` and its ``.next``
  (one ``stat`` each); when either changed, it loads them and offers them to connections
  accepted from then on (asyncssh's ``SSHAcceptor.update``). Every connection is sent the
  full list after login (OpenSSH's ``hostkeys-00@openssh.com``), so clients with
  ``UpdateHostKeys`` learn a next key during the overlap and forget a retired one after.
* **Retirement.** When a rotation's overlap has passed, the first worker to notice finishes
  it (audited, under the keys lock; the others find nothing left to do).
* **The login gate.** A login is refused on a connection whose key exchange used a host key
  that is no longer the active one on disk (checked at the second factor, after re-reading
  the files if they changed), and while a compromise rotation holds the lockdown marker. So
  a worker slow to reload never lets anyone in over a retired key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from bastion.audit.log import AuditLog
from bastion.config import Config
from bastion.errors import BastionError
from bastion.keys.lockdown import LOGIN_REFUSAL, lockdown_path, read_lockdown_file
from bastion.keys.rotate import KeyContext, finish_host_rotation, host_retirement_due
from bastion.ssh.host_key import HostKeySet, load_host_keys

__all__ = ["HostKeyWatch", "Refusal"]

log = logging.getLogger(__name__)

POLL = 1.0
STALE_HOST_KEY = (
    "the bastion's host key changed while you were logging in: connect again (your client "
    "will check the new key)"
)

_Signature = tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]


class Refusal:
    """Why a login is refused before its code is checked: ``mfa`` names it in the audit
    event (``login.failed``), ``message`` is what the client is shown."""

    def __init__(self, mfa: str, message: str) -> None:
        self.mfa = mfa
        self.message = message


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class HostKeyWatch:
    """One worker's host keys, kept in step with the files; see the module docstring."""

    def __init__(self, config: Config, audit: AuditLog) -> None:
        self._config = config
        self._audit = audit
        self._path = config.listener.host_key
        self._lockdown = lockdown_path(config.paths.state_dir)
        self._signature = self._read_signature()
        self.keys: HostKeySet = load_host_keys(self._path)
        # The front door's update_host_keys, once it listens.
        self._offer: Callable[[list[asyncssh.SSHKey]], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_error = ""

    def _read_signature(self) -> _Signature:
        return (_stat(self._path), _stat(self._path.with_name(self._path.name + ".next")))

    # ------------------------------------------------------------------ loading
    def refresh(self) -> bool:
        """Load the keys again if their files changed; whether they did."""
        signature = self._read_signature()
        if signature == self._signature:
            return False
        keys = load_host_keys(self._path)
        self._signature, self.keys = signature, keys
        if self._offer is not None:
            self._offer(keys.offered)
        log.info(
            "host keys reloaded: %s",
            ", ".join(k.get_fingerprint("sha256") for k in keys.offered),
        )
        return True

    # ------------------------------------------------------------------ the gate
    def refusal(self, conn: asyncssh.SSHServerConnection | None) -> Refusal | None:
        """Why a login on ``conn`` must be refused now, or None."""
        if read_lockdown_file(self._lockdown) is not None:
            return Refusal("lockdown", LOGIN_REFUSAL)
        if conn is None:
            return None
        used = conn.get_server_host_key()
        if used is None:
            return None
        try:
            self.refresh()
        except (BastionError, OSError) as exc:
            # The files are being changed under us; the previous set stands until the
            # next look, and the comparison below still uses it.
            log.warning("host keys not reloaded: %s", exc)
        if used.public_data != self.keys.active.public_data:
            return Refusal("retired_host_key", STALE_HOST_KEY)
        return None

    # ------------------------------------------------------------------ the task
    def start(self, offer: Callable[[list[asyncssh.SSHKey]], None]) -> None:
        """Offer the keys through ``offer(keys)`` (the front door's ``update_host_keys``)
        from now on, and watch the files."""
        self._offer = offer
        self._task = asyncio.get_running_loop().create_task(self._run(), name="host-key-watch")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(POLL)
            try:
                self.refresh()
                due = await asyncio.to_thread(
                    host_retirement_due, self._config.paths.state_dir, self._path, time.time()
                )
                if due:
                    await asyncio.to_thread(self._finish, loop)
                    self.refresh()
                self._last_error = ""
            except (BastionError, OSError) as exc:
                message = str(exc)
                if message != self._last_error:  # once per distinct problem, not every second
                    log.error("host key rotation: %s", message)  # noqa: TRY400
                self._last_error = message

    def _finish(self, loop: asyncio.AbstractEventLoop) -> None:
        """In a thread: finish the rotation, auditing through this worker's log."""

        def record(event: str, **fields: Any) -> object:
            actor = fields.pop("actor")
            outcome = fields.pop("outcome")
            coro = self._audit.record(event, actor=actor, outcome=outcome, **fields)
            return asyncio.run_coroutine_threadsafe(coro, loop).result()

        done = finish_host_rotation(
            KeyContext(self._config, record, actor="bastion"), automatic=True
        )
        if done is not None:
            log.info("host key rotation finished: %s", "; ".join(done.lines))
