"""The users the server knows, kept current while it runs, and their TOTP seeds.

Users come from the config file and from ``paths.users_dir`` (one ``NAME.yaml`` per user,
written by ``bastion user add``). :class:`UserDirectory` re-reads the directory when it
changes (the directory's or any user file's modification or change time, size or inode), so
a new user can log in without a restart. A directory that no longer reads cleanly after a
change (a broken file, a duplicate name, an unsafe mode) is refused as a whole: the last
good set of users stays in force and :attr:`UserDirectory.reload_error` says what is wrong,
until the next change fixes it.

TOTP seeds are read from disk on every use, through the same safety rules as at start-up:
re-enrolling a user (``bastion user enroll``) takes effect at the next login.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

from bastion.config.loader import read_users_dir, secret_file_problem, service_owner
from bastion.config.models import Config, User
from bastion.errors import ConfigError, SecretFileError
from bastion.policy import Principal
from bastion.totp import decode_secret

__all__ = ["UserDirectory"]

log = logging.getLogger(__name__)

_MAX_SECRET_FILE = 4096  # a base32 seed is a few dozen bytes
_Signature = tuple[object, ...]


def _signature(directory: Path) -> _Signature:
    """What changes when a user file is added, removed, replaced, edited or re-moded."""
    try:
        st = directory.stat()
    except OSError as exc:
        return ("unreadable", exc.errno)
    entries: list[tuple[str, int, int, int, int]] = []
    try:
        with os.scandir(directory) as listing:
            for entry in listing:
                if not entry.name.endswith(".yaml") or entry.name.startswith("."):
                    continue
                try:
                    s = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while listing: the directory's mtime moved too
                entries.append((entry.name, s.st_mtime_ns, s.st_ctime_ns, s.st_size, s.st_ino))
    except OSError as exc:
        return ("unlistable", exc.errno)
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, tuple(sorted(entries)))


class UserDirectory:
    """The merged users of a loaded :class:`Config`, re-read from users_dir on change."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._base = {u.name: u for u in config.users if config.user_file(u.name) is None}
        self._users: dict[str, User] = {u.name: u for u in config.users}
        self._files: dict[str, Path] = {
            u.name: f for u in config.users if (f := config.user_file(u.name)) is not None
        }
        self._seen: _Signature | None = None
        self.reload_error: str | None = None
        """Why the last change of users_dir was refused (None: the directory is in force)."""
        self.refresh()

    # ------------------------------------------------------------------ users
    def get(self, name: str) -> User | None:
        """The user called ``name``, after picking up any change of users_dir."""
        self.refresh()
        return self._users.get(name)

    def principal(self, name: str) -> Principal | None:
        """The policy's view of user ``name`` (None when there is no such user)."""
        user = self.get(name)
        return (
            None if user is None else Principal(user.name, frozenset(user.groups), user.break_glass)
        )

    def users(self) -> list[User]:
        """Every user in force: the config file's first, then users_dir's by name."""
        self.refresh()
        return list(self._users.values())

    def source(self, name: str) -> Path | None:
        """The users_dir file of user ``name``; None for a user of the config file."""
        return self._files.get(name)

    def refresh(self) -> None:
        """Re-read users_dir if it changed since the last look; see the module docstring."""
        directory = self._config.paths.users_dir
        if directory is None:
            return
        with self._lock:
            # Taken before reading: a change made while reading is seen at the next look.
            now = _signature(directory)
            if now == self._seen:
                return
            self._seen = now
            try:
                users, files = read_users_dir(self._config)
            except ConfigError as exc:
                error: str | None = exc.message
            else:
                error = None
            if error is not None:
                self.reload_error = f"{error}\n  the users read before this change stay in force"
                log.error("users directory not reloaded: %s", self.reload_error)
                return
            merged = dict(self._base)
            merged.update((u.name, u) for u in users)
            self._users = merged
            self._files = files
            self.reload_error = None

    # ------------------------------------------------------------------ second factor
    def totp_secret(self, user: User) -> bytes | None:
        """The user's TOTP seed; None when the user is not enrolled yet.

        The file is checked as at start-up (regular file, not a symbolic link, mode 0600,
        owned by the service user) on the open descriptor, so it cannot be swapped between
        the check and the read. Raises SecretFileError saying what is wrong and what to do.
        """
        path = self._config.totp_secret_path(user)
        owner = service_owner(self._config)
        if owner is None:
            raise SecretFileError(
                f"service user {self._config.service_user!r} does not exist on this host, so "
                f"the secret file {path} of {user.name} cannot be checked",
                hint="create the service user or fix service_user in the config",
            )
        fix = f"re-enrol the user: bastion user enroll {user.name}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            if user.totp_secret_file is None:
                return None  # the default location, not written yet: not enrolled
            raise SecretFileError(
                f"secret file {path} of {user.name} (its totp_secret_file) does not exist",
                hint=f"restore it, or {fix}",
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SecretFileError(
                    f"secret file {path} of {user.name} is a symbolic link; secret files "
                    "must be regular files",
                    hint=f"replace the link by the file itself, or {fix}",
                ) from None
            raise SecretFileError(
                f"secret file {path} of {user.name} cannot be opened: {exc.strerror}",
                hint="it must be readable by the service user",
            ) from None
        try:
            problem = secret_file_problem(os.fstat(fd), path, *owner)
            if problem:
                raise SecretFileError(
                    f"secret file {path} of {user.name} {problem}", hint="fix it as shown"
                )
            raw = os.read(fd, _MAX_SECRET_FILE + 1)
        except OSError as exc:
            raise SecretFileError(
                f"secret file {path} of {user.name} cannot be read: {exc.strerror}"
            ) from None
        finally:
            os.close(fd)
        reason = f"it is longer than {_MAX_SECRET_FILE} bytes"
        if len(raw) <= _MAX_SECRET_FILE:
            try:
                return decode_secret(raw.decode("ascii").strip())
            except UnicodeDecodeError:
                reason = "it is not ASCII text"
            except ValueError as exc:
                reason = str(exc)
        raise SecretFileError(
            f"secret file {path} of {user.name} holds no usable TOTP secret: {reason}", hint=fix
        )
