"""The server's ed25519 host keys: the active one, created with mode 0600 on first start and
checked after, and during a rotation the next one beside it (``<host_key>.next``), offered
to clients so that they learn it before it becomes active (see bastion/keys/host.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from bastion.errors import SecretFileError

__all__ = ["HostKeySet", "load_host_keys", "load_or_create_host_key"]


@dataclass(frozen=True)
class HostKeySet:
    """The keys a worker offers: ``active`` does the key exchange; ``upcoming`` (a rotation's
    next key) is only announced, for clients using OpenSSH's UpdateHostKeys to learn."""

    active: asyncssh.SSHKey
    upcoming: asyncssh.SSHKey | None = None

    @property
    def offered(self) -> list[asyncssh.SSHKey]:
        return [self.active] if self.upcoming is None else [self.active, self.upcoming]


def load_host_keys(path: Path) -> HostKeySet:
    """The active key (created if missing) and the next key, if a rotation is under way."""
    active = load_or_create_host_key(path)
    upcoming = path.with_name(path.name + ".next")
    try:
        return HostKeySet(active, _load(upcoming))
    except FileNotFoundError:
        return HostKeySet(active)


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """Load the host key, creating it (O_EXCL, 0600) if it does not exist yet."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return _load(path)
    except OSError as exc:
        raise SecretFileError(
            f"cannot create the host key {path}: {exc.strerror}",
            hint="create the directory and make it writable by the service user",
        ) from None
    key = asyncssh.generate_private_key("ssh-ed25519", comment="bastion host key")
    try:
        os.write(fd, key.export_private_key())
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def _load(path: Path) -> asyncssh.SSHKey:
    st = path.lstat()
    if not path.is_file() or path.is_symlink():
        raise SecretFileError(f"the host key {path} is not a regular file")
    if st.st_mode & 0o077:
        raise SecretFileError(
            f"the host key {path} has mode {st.st_mode & 0o777:04o}; expected 0600",
            hint=f"run: chmod 600 {path}",
        )
    try:
        key = asyncssh.read_private_key(path)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise SecretFileError(f"the host key {path} cannot be read: {exc}") from None
    if key.algorithm != b"ssh-ed25519":
        raise SecretFileError(
            f"the host key {path} is {key.algorithm.decode()}; the bastion serves ed25519 only",
            hint="move the file away; a new ed25519 key is created on the next start",
        )
    return key
