"""The lockdown marker: while ``<state_dir>/keys/lockdown.json`` exists, every worker
refuses new logins.

``bastion keys rotate --all --compromised`` writes it (after its audit event, before it ends
any session or touches any key) and removes it when every key is replaced. A rotation that
stops half-way leaves it in place: logins stay refused until the rotation is run again to
its end, which is what an operator wants after a compromise.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bastion.durable import fsync_dir
from bastion.errors import BastionError
from bastion.keys.registry import keys_dir

__all__ = [
    "LOGIN_REFUSAL",
    "Lockdown",
    "lift",
    "lockdown",
    "lockdown_path",
    "read_lockdown",
    "read_lockdown_file",
]

LOGIN_REFUSAL = (
    "the bastion is replacing all of its keys after a suspected compromise, and refuses "
    "logins until that is done: try again in a few minutes"
)


@dataclass(frozen=True)
class Lockdown:
    since: float
    actor: str


def lockdown_path(state_dir: Path) -> Path:
    return keys_dir(state_dir) / "lockdown.json"


def read_lockdown(state_dir: Path) -> Lockdown | None:
    """The lockdown in force, or None. A marker that cannot be read still locks down: its
    presence is what counts."""
    return read_lockdown_file(lockdown_path(state_dir))


def read_lockdown_file(path: Path) -> Lockdown | None:
    """:func:`read_lockdown` with the marker's path known (a worker's check at each login)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return Lockdown(0.0, "unknown")
    try:
        data = json.loads(raw)
        return Lockdown(float(data["since"]), str(data["actor"]))
    except (ValueError, KeyError, TypeError):
        return Lockdown(0.0, "unknown")


def lockdown(state_dir: Path, *, since: float, actor: str) -> None:
    """Put the marker in place (synced: a crash must not forget it)."""
    directory, path = keys_dir(state_dir), lockdown_path(state_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".lockdown.")
        try:
            os.write(fd, json.dumps({"since": since, "actor": actor}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        Path(temp).replace(path)
        fsync_dir(directory)
    except OSError as exc:
        raise BastionError(
            f"cannot refuse logins: writing {path} failed: {exc.strerror or exc}",
            hint="fix permissions or free space in state_dir, then run the rotation again",
        ) from None


def lift(state_dir: Path) -> None:
    path = lockdown_path(state_dir)
    try:
        path.unlink(missing_ok=True)
        fsync_dir(keys_dir(state_dir))
    except OSError as exc:
        raise BastionError(
            f"cannot allow logins again: removing {path} failed: {exc.strerror}",
            hint=f"remove {path} by hand once the rotation has finished",
        ) from None
