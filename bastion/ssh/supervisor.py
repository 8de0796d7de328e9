"""``bastion serve``: start one worker per core on a shared port and keep them running.

One Python process encrypts about one core's worth of SSH traffic, so the port is served by
N worker processes (``SO_REUSEPORT``). The supervisor holds a bound, never-listening socket
on the port for its whole life: that fixes the port when the config says 0 (tests) and
keeps it ours while a crashed worker is replaced. It never accepts a connection itself.

Signals: SIGTERM or SIGINT stop the workers (each ends its sessions and flushes the audit
log) and then the supervisor; a worker that dies is restarted, unless workers keep dying
(more than 5 restarts a minute), which ends the service with an error instead of a loop.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bastion.config import Config, load_config
from bastion.errors import BastionError
from bastion.ssh.host_key import load_or_create_host_key

__all__ = ["serve"]

_READY_TIMEOUT = 60.0
_STOP_TIMEOUT = 15.0
_MAX_RESTARTS_PER_MINUTE = 5


def _reserve_port(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise BastionError(
            f"cannot use {address}:{port}: {exc.strerror}",
            hint="pick another listener.port, or stop what is using it",
        ) from None
    return sock


class _Workers:
    def __init__(self, config_path: Path, port: int, count: int) -> None:
        self._config_path = config_path
        self._port = port
        self.count = count
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._restarts: list[float] = []
        # Workers watch the read end: if the supervisor dies, even by SIGKILL, the pipe
        # reaches EOF and they shut down instead of serving on unsupervised.
        self._lifeline_read, self._lifeline_write = os.pipe()
        os.set_inheritable(self._lifeline_read, True)

    def spawn(self) -> subprocess.Popen[bytes]:
        read_fd, write_fd = os.pipe()
        argv = [
            sys.executable,
            "-m",
            "bastion.ssh.worker",
            "--config",
            str(self._config_path),
            "--port",
            str(self._port),
            "--ready-fd",
            str(write_fd),
            "--lifeline-fd",
            str(self._lifeline_read),
        ]
        try:
            proc = subprocess.Popen(argv, pass_fds=(write_fd, self._lifeline_read))  # noqa: S603
        finally:
            os.close(write_fd)
        try:
            self._await_ready(proc, read_fd)
        finally:
            os.close(read_fd)
        self.procs[proc.pid] = proc
        return proc

    @staticmethod
    def _await_ready(proc: subprocess.Popen[bytes], read_fd: int) -> None:
        ready, _, _ = select.select([read_fd], [], [], _READY_TIMEOUT)
        line = os.read(read_fd, 64) if ready else b""
        if not line.startswith(b"ready"):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = proc.wait()
            raise BastionError(
                f"a worker did not start (exit status {code})",
                hint="its error is printed above; `bastion check-config` checks the config",
            )

    def restart(self, pid: int) -> None:
        self.procs.pop(pid, None)
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 60] + [now]
        if len(self._restarts) > _MAX_RESTARTS_PER_MINUTE:
            raise BastionError(
                "workers keep dying: more than 5 restarts in a minute",
                hint="the workers' errors are printed above",
            )
        self.spawn()

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        os.close(self._lifeline_read)
        os.close(self._lifeline_write)


def _reap(workers: _Workers) -> list[int]:
    """PIDs of workers that have exited (and are now reaped)."""
    dead = []
    for pid, proc in list(workers.procs.items()):
        if proc.poll() is not None:
            sys.stderr.write(f"bastion: worker {pid} exited with status {proc.returncode}\n")
            dead.append(pid)
    return dead


def serve(config_path: Path, *, workers: int | None = None) -> int:
    config: Config = load_config(config_path)
    config.paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created here, once, so that N workers starting together do not race for it.
    load_or_create_host_key(config.listener.host_key)
    count = workers or config.listener.workers or os.cpu_count() or 1
    reserved = _reserve_port(config.listener.address, config.listener.port)
    port = int(reserved.getsockname()[1])
    pool = _Workers(config_path.absolute(), port, count)
    handled = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    try:
        for _ in range(count):
            pool.spawn()
        sys.stdout.write(
            f"bastion: listening on {config.listener.address}:{port} with {count} worker(s)\n"
        )
        sys.stdout.flush()
        while True:
            info = signal.sigtimedwait(handled, 1.0)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                break
            for pid in _reap(pool):
                pool.restart(pid)
    finally:
        pool.stop()
        reserved.close()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
    sys.stdout.write("bastion: stopped\n")
    sys.stdout.flush()
    return 0
