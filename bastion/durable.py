"""Writes that survive a crash: every byte written, and a new directory entry made durable.

``os.write`` may write less than asked (a signal, a nearly full disk), and a file renamed or
created into a directory is lost on a power cut until the directory itself is synced.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "write_all"]


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
