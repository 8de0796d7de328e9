"""One worker process: the front door on a shared port, until SIGTERM.

The supervisor (``bastion serve``) starts one worker per core; each binds the same port
with ``SO_REUSEPORT`` and the kernel spreads new connections across them. Everything the
workers share lives in files made for several writers: the audit log (flock), the replay
guard and lockouts (SQLite, durable), the throttle (SQLite, in-memory durability).

    python -m bastion.ssh.worker --config PATH --port N [--ready-fd FD] [--lifeline-fd FD]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from bastion.audit.log import AuditLog
from bastion.breakglass.alerts import AlertDispatcher, destinations_for
from bastion.config import Config, load_config
from bastion.config.users import UserDirectory
from bastion.errors import BastionError
from bastion.keys.rotate import adopt_keys
from bastion.recording.errors import RecordingUnavailable
from bastion.recording.recorder import recording_process, stop_recording_processes
from bastion.session.broker import SessionBroker
from bastion.session.cleaners import debug_cleaner, lease_cleaner
from bastion.session.failover import ReplicaWatch
from bastion.session.notices import NoticeFeed
from bastion.session.reaper import Reaper, temp_dir_cleaner
from bastion.ssh.console import python_argv
from bastion.ssh.front_door import FrontDoor, Identity
from bastion.ssh.key_watch import HostKeyWatch
from bastion.ssh.login import LoginService
from bastion.ssh.login_watch import LoginWatch
from bastion.ssh.throttle import SourceThrottle
from bastion.ssh.zygote import Zygote
from bastion.state.liveness import ReaperLeadership
from bastion.vault import VaultClient

__all__ = [
    "CONSOLE_MODULES",
    "Worker",
    "console_modules",
    "line_console",
    "main",
    "textual_console",
]

log = logging.getLogger("bastion.worker")

# What the console template preloads: every module a console command may run. Both, whatever
# the configuration says: the line console costs the template next to nothing.
CONSOLE_MODULES = ("tui.app", "bastion.ssh.line_console")


def console_modules() -> list[str]:
    return [name for name in CONSOLE_MODULES if importlib.util.find_spec(name) is not None]


def textual_console(identity: Identity) -> list[str]:
    # tui.app, not the tui package: the template starts a module's main(argv), and a fresh
    # interpreter runs the same module (tui/app.py is safe to run with -m).
    return python_argv("tui.app", identity.user)


def line_console(identity: Identity) -> list[str]:
    return python_argv(
        "bastion.ssh.line_console",
        identity.user,
        identity.key_fingerprint,
        identity.method,
        *identity.groups,
    )


class Worker:
    """Everything one worker runs, opened and closed together (also used by tests)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        state = config.paths.state_dir
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Checkpoint signing key and shippers too (config.audit): see bastion.audit.log.
        self.audit = AuditLog.for_config(config)
        limits = config.limits
        self.throttle = SourceThrottle(
            state / "throttle.db",
            per_source=limits.connections_per_source,
            window=limits.connection_window.total_seconds(),
            max_authenticating=limits.max_unauthenticated,
            login_timeout=limits.login_timeout.total_seconds(),
        )
        self.vault = VaultClient(config.vault)  # logs in on first use, not here
        # Made here, not at start: a break-glass destination that cannot be used (its token
        # file unsafe, its CA unreadable) stops the worker before it listens.
        self.alerts_to = destinations_for(config.break_glass.alerts) if config.break_glass else []
        self.alerts: AlertDispatcher | None = None
        self.notices: NoticeFeed | None = None
        self.login: LoginService | None = None
        self.broker: SessionBroker | None = None
        self.reaper: Reaper | None = None
        self._reaping: asyncio.Task[None] | None = None
        self.replica_watch: ReplicaWatch | None = None
        self._watching: asyncio.Task[None] | None = None
        self.door: FrontDoor | None = None
        self.login_watch: LoginWatch | None = None
        self.host_keys: HostKeyWatch | None = None
        self.zygote: Zygote | None = None
        self.port = 0

    async def start(self, port: int | None = None, *, reuse_port: bool = False) -> int:
        config = self.config
        self.audit.open()
        self.login = LoginService(config, UserDirectory(config), self.audit)
        self.broker = SessionBroker(config, self.audit)
        self.broker.start()
        # After the broker: the notice board lives in the journal's database.
        self.notices = NoticeFeed(config.state_stores().notice_board)
        if config.break_glass is not None:
            self.alerts = AlertDispatcher(self.alerts_to, self.audit)
        # Sessions of a worker that died (even by kill -9) are wiped from the journal: at
        # start and then every minute.
        self.reaper = Reaper(
            self.broker.journal,
            {
                "temp_dir": temp_dir_cleaner(self.broker.temp_root),
                "lease": lease_cleaner(self.vault),
                "debug_container": debug_cleaner(self.vault, config.clusters),
                "debug_pod": debug_cleaner(self.vault, config.clusters),
            },
            self.audit,
            in_db=self.broker.in_db,
        )
        self._reaping = asyncio.get_running_loop().create_task(self.reaper.run(), name="reaper")
        # This replica's heartbeat, and on PostgreSQL the bid to reap for dead replicas. The
        # first beat comes before listening: a replica id in use elsewhere stops the start.
        postgres = config.state.postgres
        self.replica_watch = ReplicaWatch(
            self.broker.journal,
            self.broker.in_db,
            self.reaper,
            self.audit,
            interval=config.state.heartbeat_interval.total_seconds(),
            leadership=ReaperLeadership(postgres) if postgres is not None else None,
        )
        await self.replica_watch.beat()
        self._watching = asyncio.get_running_loop().create_task(
            self.replica_watch.run(), name="replica-watch"
        )
        if config.recording is not None:
            # Recordings are written by a process of their own (bastion.recording.service),
            # off this loop; started now so that the first session does not wait for it.
            try:
                await recording_process(config.paths.recordings_dir)
            except RecordingUnavailable as exc:
                log.error("%s; sessions are refused until it starts", exc.message)  # noqa: TRY400
        if config.listener.console_zygote:
            self.zygote = Zygote(console_modules())
            if not await self.zygote.start():
                log.warning("the console template is not ready; consoles start fresh until it is")
        # Host keys follow rotations without a restart (bastion/ssh/key_watch.py); the keys
        # in use are recorded in the key registry so that their age can be told.
        self.host_keys = HostKeyWatch(config, self.audit)
        try:
            await asyncio.to_thread(adopt_keys, config, time.time())
        except BastionError as exc:  # only the ages shown by `bastion keys list` miss it
            log.error("the keys in use could not be recorded in the key registry: %s", exc)  # noqa: TRY400
        if LoginWatch.active(config.guard):
            self.login_watch = LoginWatch(
                config.guard,
                config.state_stores().login_sources,
                audit=self.login.audit,
                alerts=self.alerts,
                notices=self.notices,
            )
        self.door = FrontDoor(
            config,
            host_keys=self.host_keys.keys.offered,
            gate=self.host_keys.refusal,
            login=self.login,
            throttle=self.throttle,
            audit=self.audit,
            broker=self.broker,
            console_command=self._console_command,
            vault=self.vault,
            alerts=self.alerts,
            notices=self.notices,
            login_watch=self.login_watch,
        )
        listen_port = config.listener.port if port is None else port
        self.port = await self.door.listen(
            config.listener.address, listen_port, reuse_port=reuse_port
        )
        self.host_keys.start(self.door.update_host_keys)
        return self.port

    def _console_command(self, identity: Identity) -> Sequence[str]:
        if self.config.listener.console == "line":
            argv = line_console(identity)
        else:
            argv = textual_console(identity)
        return self.zygote.command(argv) if self.zygote is not None else argv

    async def stop(self) -> None:
        """Stop accepting, wipe every session (within 20 s), close connections, flush."""
        if self.door is not None:
            await self.door.stop_accepting()
        if self.host_keys is not None:
            await self.host_keys.aclose()
        if self.broker is not None:
            await self.broker.shutdown()
        if self.door is not None:
            await self.door.close()
        if self.zygote is not None:
            await self.zygote.aclose()
        # Every session has closed its recordings by now: the recording process can go.
        await stop_recording_processes(self.config.paths.recordings_dir)
        for task in (self._watching, self._reaping):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.replica_watch is not None:
            await self.replica_watch.aclose()
        if self.reaper is not None:
            await self.reaper.aclose()
        if self.notices is not None:
            await self.notices.aclose()
        if self.alerts is not None:
            await self.alerts.aclose()  # its last events go to the audit log, still open
        if self.broker is not None:
            self.broker.close()
        await self.vault.close()
        await self.audit.aclose()
        if self.login is not None:
            self.login.close()
        if self.login_watch is not None:
            self.login_watch.close()
        self.throttle.close()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _watch_lifeline(loop: asyncio.AbstractEventLoop, fd: int, stop: asyncio.Event) -> None:
    def readable() -> None:
        if not os.read(fd, 64):
            log.error("the supervisor has gone; this worker stops")
            loop.remove_reader(fd)
            stop.set()

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)


async def _serve(config: Config, port: int, ready_fd: int | None, lifeline_fd: int | None) -> None:
    worker = Worker(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if lifeline_fd is not None:
        _watch_lifeline(loop, lifeline_fd, stop)
    try:
        await worker.start(port, reuse_port=True)
        if ready_fd is not None:
            os.write(ready_fd, f"ready {os.getpid()}\n".encode())
            os.close(ready_fd)
        log.info("worker %d listening on %s:%d", os.getpid(), config.listener.address, port)
        await stop.wait()
    finally:
        await worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bastion.ssh.worker")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--lifeline-fd", type=int)
    args = parser.parse_args(argv)
    # The supervisor blocks these to wait for them synchronously; exec keeps the mask.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD})
    # A thousand connections need more descriptors than the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(
        level=logging.INFO, format=f"bastion worker {os.getpid()}: %(levelname)s %(message)s"
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
        asyncio.run(_serve(config, args.port, args.ready_fd, args.lifeline_fd))
    except BastionError as exc:
        sys.stderr.write(f"bastion worker: {exc}\n")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
