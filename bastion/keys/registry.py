"""The key registry on disk: ``<state_dir>/keys/registry.json``, and the lock that makes
each rotation one step at a time across the command line and every worker.

The file is replaced whole (written beside it, synced, renamed), so a reader sees the old
registry or the new one; writers hold ``<state_dir>/keys/lock`` (``flock``) from the moment
they read it until they have renamed the new one in place, and so does every rotation
from its first check to its last write.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bastion.errors import BastionError
from bastion.keys.model import Registry, RegistryError

__all__ = ["KeyStore", "keys_dir"]


def keys_dir(state_dir: Path) -> Path:
    return state_dir / "keys"


class KeyStore:
    """The registry of the bastion whose state directory is ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = keys_dir(state_dir)
        self.path = self.directory / "registry.json"
        self._lock_path = self.directory / "lock"
        self._held = False

    def read(self) -> Registry:
        """The registry (empty when there is none yet); BastionError when unreadable."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Registry()
        except OSError as exc:
            raise BastionError(
                f"cannot read the key registry {self.path}: {exc.strerror}",
                hint="run this as root or as the bastion's service user",
            ) from None
        try:
            return Registry.decode(raw)
        except RegistryError as exc:
            raise BastionError(
                f"the key registry {self.path} is damaged: {exc}",
                hint="restore it from backup; the keys themselves are in their own files",
            ) from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the keys lock (blocking until other rotations are done)."""
        if self._held:
            yield
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise BastionError(
                f"cannot open the keys lock {self._lock_path}: {exc.strerror}",
                hint="state_dir must be writable by the service user",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held = True
            yield
        finally:
            self._held = False
            os.close(fd)

    def write(self, registry: Registry) -> None:
        """Replace the registry (the caller holds :meth:`locked`)."""
        if not self._held:
            raise RuntimeError("the key registry is written only under its lock")
        try:
            fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".registry.")
            try:
                os.fchmod(fd, 0o600)
                data = memoryview(registry.encode())
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                Path(temp).replace(self.path)
            except OSError:
                Path(temp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise BastionError(
                f"cannot write the key registry {self.path}: {exc.strerror or exc}",
                hint="free disk space or fix permissions of state_dir, then run it again",
            ) from None
