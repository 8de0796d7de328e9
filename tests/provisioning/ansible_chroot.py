"""A throwaway Debian 12 root for applying the Ansible role for real.

``debootstrap --variant=minbase bookworm`` from the mirror apt already uses, plus what every
Debian 12 server has and the role expects (python3, systemd). Package scripts must not start
daemons in it: they would run on this machine's kernel and network (chronyd setting the
clock, auditd loading rules, sshd on port 22), so ``policy-rc.d`` refuses every start. Only
/proc is mounted, and the root is deleted only once nothing is mounted under it any more.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AptMirrors", "DebianRoot", "apt_mirrors", "debian_root", "mounts_under"]

_DEFAULT_MIRROR = "http://deb.debian.org/debian"
_DEFAULT_SECURITY = "http://deb.debian.org/debian-security"


@dataclass(frozen=True)
class AptMirrors:
    debian: str
    security: str


def apt_mirrors(etc: Path = Path("/etc/apt")) -> AptMirrors:
    """The Debian and security archives this machine's apt uses (one-line and deb822 files)."""
    entries: list[tuple[list[str], list[str]]] = []  # (uris, suites)
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"(?m)^([A-Za-z-]+):\s*(.*)$", stanza))
                if "deb" in fields.get("Types", "").split() and fields.get("Enabled") != "no":
                    uris, suites = fields.get("URIs", ""), fields.get("Suites", "")
                    entries.append((uris.split(), suites.split()))
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    entries.append(([m.group(1)], [m.group(2)]))
    debian = next((u[0] for u, s in entries if "bookworm" in s and u), _DEFAULT_MIRROR)
    security = next((u[0] for u, s in entries if "bookworm-security" in s and u), _DEFAULT_SECURITY)
    return AptMirrors(debian.rstrip("/"), security.rstrip("/"))


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first (the order to unmount them)."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


@dataclass(frozen=True)
class DebianRoot:
    path: Path
    mirrors: AptMirrors

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command inside the root (not checked: callers assert on the result)."""
        return subprocess.run(
            ["chroot", str(self.path), *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )

    def file(self, path: str) -> Path:
        return self.path / path.lstrip("/")


def _run(argv: list[str], what: str, timeout: float) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(f"{what} failed with exit status {result.returncode}:\n{tail}")


@contextmanager
def debian_root(parent: Path = Path("/var/tmp")) -> Iterator[DebianRoot]:
    """Make the root (about 45 s), yield it, then unmount and delete it."""
    mirrors = apt_mirrors()
    # /var/tmp, not /tmp: the root is about 500 MB once the role has run.
    workdir = Path(tempfile.mkdtemp(prefix="bastion-ansible-root-", dir=parent))
    root = workdir / "root"
    try:
        _run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), mirrors.debian],
            "debootstrap",
            timeout=600,
        )
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\n# No daemon starts in a throwaway build root.\nexit 101\n")
        policy.chmod(0o755)
        _run(["mount", "-t", "proc", "proc", str(root / "proc")], "mounting /proc", timeout=30)
        env = "DEBIAN_FRONTEND=noninteractive"
        _run(
            ["chroot", str(root), "env", env, "apt-get", "install", "-y", "-q",
             "--no-install-recommends", "python3", "systemd", "systemd-sysv"],
            "installing python3 and systemd in the root",
            timeout=600,
        )  # fmt: skip
        yield DebianRoot(root, mirrors)
    finally:
        _remove(workdir)


def _remove(workdir: Path) -> None:
    for point in mounts_under(workdir):
        if subprocess.run(["umount", point], check=False, capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    left = mounts_under(workdir)
    if left:
        # Deleting through a mount point would delete what it shows (/proc is harmless, a bind
        # mount of / is not): leave the directory for a human.
        raise RuntimeError(
            f"still mounted under {workdir}: {', '.join(left)}; unmount them, then remove "
            f"{workdir} by hand"
        )
    shutil.rmtree(workdir)
