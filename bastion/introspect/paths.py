"""The one piece of operator input a view takes: a directory for the ``files`` view. Pure.

A path is checked strictly, not cleaned up: anything but an absolute, already normalised path
of printable characters is refused with what was wrong, so what is audited is exactly what
was listed. It then travels as one argv element of a fixed command, never through a shell.
"""

from __future__ import annotations

import posixpath
import unicodedata
from collections.abc import Iterable

__all__ = ["MAX_PATH", "check_path", "check_prefix", "within"]

MAX_PATH = 1024


def check_prefix(value: str) -> str:
    """A grant's path prefix as the config gives it; ValueError saying what was wrong."""
    return _checked(value, "path prefix")


def check_path(value: str, prefixes: Iterable[str]) -> str:
    """An operator's path for the ``files`` view: well formed and under one of ``prefixes``."""
    path = _checked(value, "path")
    allowed = tuple(prefixes)
    if not within(path, allowed):
        shown = ", ".join(allowed[:5]) or "none"
        raise ValueError(
            f"{path} is outside the paths your grant lets you list ({shown}): pick one of those"
        )
    return path


def within(path: str, prefixes: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or below one, by whole path components
    (``/etc`` covers ``/etc/app``, not ``/etcetera``)."""
    for prefix in prefixes:
        if prefix in ("/", path) or path.startswith(prefix.rstrip("/") + "/"):
            return True
    return False


def _checked(value: str, what: str) -> str:
    if not value:
        raise ValueError(f"the {what} is empty: give an absolute path such as /etc")
    if len(value) > MAX_PATH:
        raise ValueError(f"the {what} is longer than {MAX_PATH} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in value):
        raise ValueError(f"the {what} contains control or invisible characters: type it plainly")
    if not value.startswith("/"):
        raise ValueError(f"the {what} {value[:80]!r} is not absolute: start it with /")
    if ".." in value.split("/"):
        raise ValueError(f"the {what} {value[:80]!r} contains '..': name the directory itself")
    if posixpath.normpath(value) != value and value != "/":
        # normpath keeps a leading '//' (POSIX leaves it implementation-defined): refused too.
        raise ValueError(
            f"the {what} {value[:80]!r} is not normalised (no '.', '//' or trailing '/'): "
            f"write it as {posixpath.normpath(value)[:80]!r}"
        )
    if value.startswith("//"):
        raise ValueError(f"the {what} {value[:80]!r} starts with '//': write it with one '/'")
    return value
