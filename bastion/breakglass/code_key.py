"""The key under which break-glass codes are digested: ``<state_dir>/breakglass-codes.key``.

32 random bytes, made on first use (by ``bastion breakglass issue``, or a worker checking a
code), mode 0600, owned by the service user, checked like every secret file each time it is
read. It lives beside the database, not in it, so a copy of the database alone cannot check
a guessed code. Losing it voids every code issued under it: issue a new batch.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from bastion.config import Config
from bastion.config.loader import secret_file_problem, service_owner
from bastion.errors import SecretFileError

__all__ = ["KEY_BYTES", "code_key_path", "load_or_create_code_key"]

KEY_BYTES = 32


def code_key_path(config: Config) -> Path:
    return config.paths.state_dir / "breakglass-codes.key"


def load_or_create_code_key(config: Config) -> bytes:
    """The key, made if missing; SecretFileError (one sentence) when it is unsafe."""
    path = code_key_path(config)
    owner = service_owner(config)
    if owner is None:
        raise SecretFileError(
            f"service user {config.service_user!r} does not exist on this host, so the "
            f"break-glass code key {path} cannot be checked",
            hint="create the service user or fix service_user in the config",
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        _create(path)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SecretFileError(
            f"the break-glass code key {path} cannot be opened: {exc.strerror}",
            hint="it must be a regular file of the service user, mode 0600",
        ) from None
    try:
        problem = secret_file_problem(os.fstat(fd), path, *owner)
        if problem:
            raise SecretFileError(f"the break-glass code key {path} {problem}")
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise SecretFileError(
            f"the break-glass code key {path} holds {len(key)} bytes, not {KEY_BYTES}",
            hint="restore it from backup, or remove it and issue new batches of codes",
        )
    return key


def _create(path: Path) -> None:
    """Write a new key under a temporary name and link it into place: a process racing us
    sees either no key or a whole one, and the loser of the race reads the winner's."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        # Another process may have made it first: then theirs is the key.
        with contextlib.suppress(FileExistsError):
            os.link(partial, path)
    finally:
        partial.unlink(missing_ok=True)
