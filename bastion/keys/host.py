"""The SSH host key files: ``listener.host_key`` (the active key) and, while a rotation's
overlap lasts, ``<host_key>.next`` (the key offered alongside it).

Both are OpenSSH private key files of mode 0600, ed25519 only (the algorithm the front door
serves), created complete or not at all (written beside, synced, linked into place). A
rotation ends with one ``rename`` of the next key over the active one: the old private key
is gone at that moment, and a worker reading the files sees one key set or the other.

This module reads and writes keys with ``cryptography`` (OpenSSH format), so the command
line needs no SSH library; the workers load the same files with asyncssh.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_ssh_private_key,
)

from bastion.config.loader import secret_file_problem
from bastion.errors import BastionError
from bastion.sshkeys import parse_public_key

__all__ = [
    "HostKeyFile",
    "NewHostKey",
    "next_path",
    "read_host_key",
    "write_host_key",
]

ALGORITHM = "ssh-ed25519"


def next_path(active: Path) -> Path:
    """Where the key offered alongside ``active`` during a rotation lives."""
    return active.with_name(active.name + ".next")


@dataclass(frozen=True)
class HostKeyFile:
    """A host key on disk: its public line (``ssh-ed25519 AAAA...``) and fingerprint."""

    path: Path
    public: str
    fingerprint: str
    modified: float  # the file's mtime: when it was written, for keys the registry lacks

    @property
    def algorithm(self) -> str:
        return self.public.split(" ", 1)[0]


@dataclass(frozen=True)
class NewHostKey:
    """A host key made in memory, not yet on disk."""

    pem: bytes
    public: str
    fingerprint: str


def new_host_key() -> NewHostKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return NewHostKey(pem, public, parse_public_key(public).fingerprint)


def read_host_key(path: Path) -> HostKeyFile | None:
    """The host key at ``path`` (None when there is none), checked like every secret file
    (a regular 0600 file of the current user, not a link) and ed25519 only."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BastionError(f"the host key {path} cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        problem = secret_file_problem(st, path, f"uid {os.geteuid()}", os.geteuid())
        if problem:
            raise BastionError(f"the host key {path} {problem}")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(1 << 16)
    finally:
        os.close(fd)
    try:
        key = load_ssh_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BastionError(f"the host key {path} cannot be read: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BastionError(
            f"the host key {path} is not an ed25519 key; the bastion serves ed25519 only",
            hint="move the file away and rotate: bastion keys rotate --kind host",
        )
    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return HostKeyFile(path, public, parse_public_key(public).fingerprint, st.st_mtime)


def write_host_key(key: NewHostKey, directory: Path) -> Path:
    """Write ``key`` (0600, synced) under a hidden temporary name in ``directory``; the
    caller links or renames it into place, or removes it."""
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".host-key.")
    except OSError as exc:
        raise BastionError(
            f"cannot write a new host key in {directory}: {exc.strerror}",
            hint="the host key's directory must be writable by the service user",
        ) from None
    try:
        os.fchmod(fd, 0o600)
        data = memoryview(key.pem)
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        Path(temp).unlink(missing_ok=True)
        raise BastionError(f"cannot write a new host key in {directory}: {exc.strerror}") from None
    os.close(fd)
    return Path(temp)
