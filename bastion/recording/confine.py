"""The recording process gives up what it does not need before it reads its first frame.

What it keeps: the socket to its worker, the files it has open, and the recordings
directory. What it gives up (Linux):

* ``PR_SET_NO_NEW_PRIVS``: nothing it could run gains privileges (setuid, file caps);
* ``PR_SET_DUMPABLE`` 0 and ``RLIMIT_CORE`` 0: it holds the bastion's signing key while it
  seals, so no core file, and no other process of the service user (a console, say) may
  ptrace it or read its memory through ``/proc``;
* ``RLIMIT_NPROC`` 0: no child processes (ignored for root, which is why Landlock's
  execute right below matters too);
* Landlock, where the kernel has it (5.13 and later): no file access outside the
  recordings directory (there, only what writing recordings takes: read, write, create
  regular files, truncate), no executing anything, no TCP, and no signals or abstract Unix
  sockets outside itself. A kernel without Landlock leaves the rest of this in force, and
  process says so on its standard error (the service's log).

``PR_SET_PDEATHSIG`` asks the kernel to signal it when its worker dies.

Nothing can be imported once the files are out of reach: the caller runs every code path
the writer takes first (``bastion.recording.service``'s warm-up).
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from pathlib import Path
from typing import Final

__all__ = ["confine", "landlock_abi"]

_PR_SET_PDEATHSIG: Final = 1
_PR_SET_DUMPABLE: Final = 4
_PR_SET_NO_NEW_PRIVS: Final = 38

# Landlock's system calls have the same numbers on every architecture.
_SYS_CREATE_RULESET: Final = 444
_SYS_ADD_RULE: Final = 445
_SYS_RESTRICT_SELF: Final = 446
_CREATE_RULESET_VERSION: Final = 1
_RULE_PATH_BENEATH: Final = 1

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_MAKE_REG: Final = 1 << 8
_ABI1_FS: Final = (1 << 13) - 1  # execute ... make_sym
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl({option}): {os.strerror(code)}")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (or it is switched off)."""
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(int(version), 0)


def confine(recordings_dir: Path, *, parent_death: int) -> bool:
    """Give up every right but the recordings directory; True if Landlock is in force.
    Raises OSError when a step that every supported kernel has fails."""
    _prctl(_PR_SET_PDEATHSIG, parent_death)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    _prctl(_PR_SET_DUMPABLE, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    abi = landlock_abi()
    if abi < 1:
        sys.stderr.write(
            "bastion recording process: this kernel has no Landlock; the recording process "
            "can read files outside the recordings directory\n"
        )
        return False
    _landlock(recordings_dir, abi)
    return True


def _landlock(recordings_dir: Path, abi: int) -> None:
    handled_fs = _ABI1_FS
    allowed = _WRITE_FILE | _READ_FILE | _READ_DIR | _MAKE_REG
    if abi >= 2:
        handled_fs |= _REFER
    if abi >= 3:
        handled_fs |= _TRUNCATE
        allowed |= _TRUNCATE
    if abi >= 5:
        handled_fs |= _IOCTL_DEV
    attr = _RulesetAttr(handled_fs, 0, 0)
    size = 8  # ABI 1 to 3 know handled_access_fs only
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL
        size = 24
    ruleset = _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"landlock_create_ruleset: {os.strerror(code)}")
    try:
        try:
            directory = os.open(recordings_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            # No directory to write to: no rule, so every file stays out of reach, and each
            # recording's opening fails with a sentence naming the file.
            directory = -1
        if directory >= 0:
            try:
                rule = _PathBeneathAttr(allowed, directory)
                if _libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0):
                    code = ctypes.get_errno()
                    raise OSError(code, f"landlock_add_rule: {os.strerror(code)}")
            finally:
                os.close(directory)
        if _libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"landlock_restrict_self: {os.strerror(code)}")
    finally:
        os.close(int(ruleset))
