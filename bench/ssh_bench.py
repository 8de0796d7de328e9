#!/usr/bin/env python3
"""SSH front door: logins/s, memory per idle connection and session start, against sshd.

What is measured, in one run, on loopback:

1. **Handshakes per second.** Each login is one TCP connection, the SSH handshake, the full
   login and the close. For the bastion that is the real ``bastion serve`` (supervisor and
   workers), with 1 and with 2 workers: publickey, then keyboard-interactive with the
   user's current TOTP code (``Verification code:``). For the baseline it is OpenSSH's
   ``sshd`` with publickey only: sshd cannot ask for a TOTP code without a PAM module, so
   its rows do less work than the bastion's. The load generator is the same for all rows:
   ``--clients`` asyncssh client processes with ``--concurrency`` connections in flight
   each, all offering the same algorithms (curve25519-sha256, AES-GCM, an ed25519 host key
   and one ed25519 client key).
2. **Memory per idle authenticated connection**, before any session is opened, at each of
   ``--hold`` concurrent connections (default 100, 500, 1000): the PSS
   (``/proc/PID/smaps_rollup``) of the server's processes, minus their PSS while idle just
   before the connections, divided by the number of connections. For the bastion (1 worker)
   that is the worker; the supervisor is shown apart. For sshd it is the listener and every
   per-connection process it forked. Kernel memory (socket buffers) is not in PSS.
3. **Session start.** One session is: TCP connect and full login (a), then a session
   channel with a PTY (``xterm-256color``, 80x24) and a shell request, up to the first byte
   of output on the terminal (b, split at the server's answer to the shell request); then,
   once the whole greeting is there, Enter, and the time until the channel closes (the
   wipe). Each session is a fresh connection and a fresh user. ``--sessions`` of them one
   at a time (1 client process), then ``--load-sessions`` with ``--session-load`` in
   flight (``--clients`` processes). Medians and p90. The bastion (1 worker) runs its
   console, today ``bastion.ssh.line_console`` (a session is opened first: audit event,
   journal, temp directory; Enter ends it and the session is wiped). sshd (key only) runs
   ``ForceCommand <this interpreter> -I -c 'import sys; print("Welcome");
   sys.stdin.readline()'`` through the user's shell, with ``SetEnv SHLVL=1`` so that
   Debian's bash does not source ``~/.bashrc`` for an sshd child. The same two commands
   are also timed alone (spawned on a pty, no SSH), and the bastion's sessions are split
   at its own audit events' time stamps.

Each successful bastion login burns the user's current TOTP time step (the replay guard),
so the bench enrols ``--users`` users (one shared client key, a fresh TOTP secret each) and
gives every bastion it starts a fresh state directory: no user logs in twice on one server.
The throttle is opened wide (``connections_per_source``, ``max_unauthenticated``) so it does
not interfere, and ``session_open_timeout`` is 10 minutes so idle connections stay up.

"server cores" is the CPU time the server's processes used (their own, and their reaped
children's for sshd) divided by the wall time: how many of the 2 cores the server kept busy.
"logins/core-s" is logins per second of server CPU time, the per-core capacity. The client
processes share the same cores ("client cores").

Run from the repository root (as root, or as a user sshd can run for)::

    .venv/bin/python bench/ssh_bench.py                # ~70 s on 2 cores
    .venv/bin/python bench/ssh_bench.py --quick        # ~35 s
    .venv/bin/python bench/ssh_bench.py --skip-sshd    # the bastion rows only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import platform
import pwd
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pyotp
import yaml

from bastion.recording.key_files import generate_auditor_keys

REPO = Path(__file__).resolve().parent.parent
SSHD = "/usr/sbin/sshd"
KEX = ["curve25519-sha256"]
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
IMAGE = "registry.example.com/debug-toolbox@sha256:" + "ab" * 32
FAKE_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
WARMUP = 3  # untimed logins per client process before a timed run
TARGET_LOGINS_PER_CORE = 150
TARGET_KB_PER_CONNECTION = 100
TARGET_CONNECTIONS = 1000
TERM_TYPE = "xterm-256color"
# The bastion's console today (bastion.ssh.line_console) greets and ends with this line.
GREETING_END = "Press Enter to end this session."
# What the sshd baseline runs (ForceCommand): the same interpreter printing one line, then
# waiting for Enter like the placeholder, so that the wipe rows are comparable too.
BASELINE_CODE = 'import sys; print("Welcome"); sys.stdin.readline()'
SESSION_WARMUP = 2  # untimed sessions per client process before the timed ones
SESSION_TIMEOUT = 30.0
T = TypeVar("T")


# ====================================================================== client processes
# ``ssh_bench.py --client JOB.json`` runs one load-generating process. It reads commands on
# stdin and answers one JSON line per command on stdout.


def _client_options(job: dict[str, Any]) -> asyncssh.SSHClientConnectionOptions:
    key = asyncssh.read_private_key(job["key_path"])
    return asyncssh.SSHClientConnectionOptions(
        config=None,
        known_hosts=None,
        agent_path=None,
        client_keys=[key],
        kex_algs=KEX,
        encryption_algs=CIPHERS,
        compression_algs=["none"],
        preferred_auth="publickey,keyboard-interactive" if job["totp"] else "publickey",
        login_timeout=60,
    )


class CodeClient(asyncssh.SSHClient):
    """Answers the server's one keyboard-interactive prompt with the current TOTP code."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret

    def kbdint_auth_requested(self) -> str | None:
        return "" if self._secret else None

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str] | None:
        if not prompts:
            return []
        if self._secret is None or len(prompts) != 1:
            return None
        return [pyotp.TOTP(self._secret).now()]


class _Terminal(asyncssh.SSHClientSession[bytes]):
    """The client's side of a PTY session: when the first byte came, and the greeting."""

    def __init__(self, marker: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.marker = marker
        self.first_byte: float | None = None
        self.output = bytearray()
        self.greeted: asyncio.Future[float] = loop.create_future()
        self.closed: asyncio.Future[float] = loop.create_future()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        now = time.time()
        if self.first_byte is None:
            self.first_byte = now
        if not self.greeted.done():
            self.output += data
            if self.marker in self.output:
                self.greeted.set_result(now)

    def connection_lost(self, exc: Exception | None) -> None:
        now = time.time()
        if not self.greeted.done():
            tail = bytes(self.output[-120:])
            self.greeted.set_exception(RuntimeError(f"closed before the greeting: {tail!r}"))
        if not self.closed.done():
            self.closed.set_result(now)


@dataclass
class _Tally:
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def failed(self, exc: BaseException) -> None:
        self.errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1


class _Client:
    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.options = _client_options(job)
        self.users: list[tuple[str, str | None]] = [tuple(u) for u in job["users"]]
        self.next_user = 0
        self.held: list[asyncssh.SSHClientConnection] = []
        self.dropped = 0

    def take_user(self) -> tuple[str, str | None] | None:
        if self.next_user >= len(self.users):
            return None
        user = self.users[self.next_user]
        self.next_user += 1
        return user

    async def login(self, user: tuple[str, str | None]) -> asyncssh.SSHClientConnection:
        name, secret = user
        return await asyncssh.connect(
            self.job["host"],
            self.job["port"],
            options=self.options,
            username=name,
            client_factory=lambda: CodeClient(secret),
        )

    async def handshakes(self, deadline: float, tally: _Tally) -> None:
        """Log in and close, one user after the other, until users or time run out."""
        while time.monotonic() < deadline and (user := self.take_user()) is not None:
            start = time.perf_counter()
            try:
                conn = await self.login(user)
            except (TimeoutError, OSError, asyncssh.Error) as exc:
                tally.failed(exc)
                continue
            tally.latencies.append(time.perf_counter() - start)
            conn.close()
            await conn.wait_closed()
            tally.ok += 1

    async def hold(self, count: int, tally: _Tally) -> None:
        """Open ``count`` more connections and keep them (no session is opened)."""
        remaining = count

        async def opener() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                user = self.take_user()
                if user is None:
                    tally.errors["ran out of users"] += 1
                    continue
                try:
                    conn = await self.login(user)
                except (TimeoutError, OSError, asyncssh.Error) as exc:
                    tally.failed(exc)
                    continue
                tally.ok += 1
                self.held.append(conn)
                asyncio.get_running_loop().create_task(self._watch(conn))

        await asyncio.gather(*(opener() for _ in range(self.job["concurrency"])))

    async def _watch(self, conn: asyncssh.SSHClientConnection) -> None:
        await conn.wait_closed()
        self.dropped += 1

    def open_now(self) -> int:
        return len(self.held) - self.dropped

    async def session(self, user: tuple[str, str | None]) -> dict[str, Any]:
        """Connect, log in, open a PTY + shell session, wait for the greeting, press Enter
        and wait for the channel to close. Wall-clock times (``time.time``), so that the
        coordinator can line them up with the bastion's audit log."""
        connect = time.time()
        conn = await self.login(user)
        try:
            login = time.time()
            chan, term = await conn.create_session(
                lambda: _Terminal(self.job["marker"].encode()),
                term_type=TERM_TYPE,
                term_size=(80, 24),
                encoding=None,
            )
            accepted = time.time()
            greeted = await asyncio.wait_for(term.greeted, SESSION_TIMEOUT)
            chan.write(b"\r")
            enter = time.time()
            closed = await asyncio.wait_for(term.closed, SESSION_TIMEOUT)
        finally:
            conn.close()
        await conn.wait_closed()
        return {
            "user": user[0],
            "connect": connect,
            "login": login,
            "accepted": accepted,
            "first_byte": term.first_byte,
            "greeted": greeted,
            "enter": enter,
            "closed": closed,
        }

    async def sessions(self, count: int, tally: _Tally, timings: list[dict[str, Any]]) -> None:
        """``count`` sessions, ``concurrency`` of them in flight, each with a fresh user."""
        remaining = count

        async def runner() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                user = self.take_user()
                if user is None:
                    tally.errors["ran out of users"] += 1
                    continue
                try:
                    timings.append(await self.session(user))
                except (TimeoutError, OSError, asyncssh.Error, RuntimeError) as exc:
                    tally.failed(exc)
                    continue
                tally.ok += 1

        await asyncio.gather(*(runner() for _ in range(self.job["concurrency"])))


async def _client_main(job: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    client = _Client(job)
    warm = _Tally()
    # Untimed logins first: imports, caches and the server's first-use costs.
    client.users, rest = client.users[:WARMUP], client.users[WARMUP:]
    await client.handshakes(time.monotonic() + 60, warm)
    client.users, client.next_user = rest, 0
    _reply({"ready": True, "warmup_ok": warm.ok, "warmup_errors": dict(warm.errors)})
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            break
        tally = _Tally()
        timings: list[dict[str, Any]] = []
        cpu = _own_cpu()
        started = time.time()
        if words[0] == "run":  # run SECONDS: timed handshakes
            deadline = time.monotonic() + float(words[1])
            await asyncio.gather(
                *(client.handshakes(deadline, tally) for _ in range(job["concurrency"]))
            )
        elif words[0] == "hold":  # hold N: open N more connections and keep them
            await client.hold(int(words[1]), tally)
        elif words[0] == "sessions":  # sessions N: N sessions start to end, then close
            await client.sessions(int(words[1]), tally, timings)
        ended = time.time()
        _reply(
            {
                "ok": tally.ok,
                "errors": dict(tally.errors),
                "started": started,
                "ended": ended,
                "cpu": _own_cpu() - cpu,
                "latencies": tally.latencies,
                "open": client.open_now(),
                "dropped": client.dropped,
                "sessions": timings,
            }
        )
    for conn in client.held:
        conn.close()
    await asyncio.gather(*(c.wait_closed() for c in client.held), return_exceptions=True)


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def client_entry(job_path: Path) -> int:
    _raise_nofile()
    job = json.loads(job_path.read_text())
    asyncio.run(_client_main(job))
    return 0


# ====================================================================== coordinator helpers
def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _proc_stat(int(entry.name))) is not None:
            children[int(fields[1])].append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pids: Sequence[int], *, reaped_children: bool = True) -> float:
    """utime + stime (+ cutime + cstime): own time (and that of reaped children)."""
    ticks = os.sysconf("SC_CLK_TCK")
    end = 15 if reaped_children else 13
    total = 0
    for pid in pids:
        fields = _proc_stat(pid)
        if fields is not None:
            total += sum(int(x) for x in fields[11:end])
    return total / ticks


def pss_kb(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
                break
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _pipe(stream: T | None) -> T:
    if stream is None:
        raise RuntimeError("a child process was started without its pipe")
    return stream


def send(proc: subprocess.Popen[str], *words: str | int) -> None:
    """One command line to a client process."""
    stdin = _pipe(proc.stdin)
    stdin.write(" ".join(map(str, words)) + "\n")
    stdin.flush()


def _secret_file(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(content)
    path.chmod(0o600)


# ====================================================================== servers
@dataclass
class Server:
    """A running server: how to find its processes, and how to stop it."""

    label: str
    auth: str
    workers: str
    port: int
    proc: subprocess.Popen[Any]
    totp: bool
    log: Path
    marker: str = ""  # the text that ends the console's greeting
    audit_log: Path | None = None

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def measured_pids(self) -> list[int]:
        """The processes whose memory counts (the bastion's supervisor is shown apart)."""
        pids = self.pids()
        return pids[1:] if self.totp else pids

    def stop(self) -> None:
        stop(self.proc)


class Lab:
    """The temporary directory: client key, users, bastion configs, sshd config."""

    def __init__(self, root: Path, users: int) -> None:
        self.root = root
        self.key = asyncssh.generate_private_key("ssh-ed25519", comment="ssh-bench")
        self.key_path = root / "client_ed25519"
        _secret_file(self.key_path, self.key.export_private_key())
        self.public = self.key.export_public_key().decode().strip()
        self.users: list[tuple[str, str]] = []
        for i in range(users):
            name = f"u{i:05d}"
            secret = pyotp.random_base32()
            _secret_file(root / "totp" / name, secret.encode() + b"\n")
            self.users.append((name, secret))
        _secret_file(root / "approle-secret-id", b"secret-id\n")
        (root / "ca").mkdir(exist_ok=True)
        (root / "ca" / "prod.pem").write_bytes(FAKE_PEM)
        # Debug shells are recorded (to this key) or refused.
        self.auditor = generate_auditor_keys(root / "auditor.key", root / "auditor.pub")
        self._runs = 0

    def bastion_config(self, **sections: Any) -> Path:
        """A config with every user and a state directory of its own (a fresh replay guard).

        ``sections`` replace top-level sections (``clusters=[...]``) or, for a mapping, are
        merged into them (``listener={"allow_chacha20": True}``)."""
        self._runs += 1
        state = f"state-{self._runs}"
        config = {
            # The line console: the session rows time its greeting (GREETING_END).
            "listener": {
                "address": "127.0.0.1",
                "port": 0,
                "host_key": f"{state}/host_ed25519",
                "console": "line",
            },
            "users": [
                {
                    "name": name,
                    "groups": ["oncall"],
                    "public_keys": [self.public],
                    "totp_secret_file": f"totp/{name}",
                }
                for name, _ in self.users
            ],
            "clusters": [
                {
                    "name": "prod-eu",
                    "api_url": "https://prod-eu.example.com:6443",
                    "ca_file": "ca/prod.pem",
                    "vault_mount": "kubernetes-prod-eu",
                }
            ],
            "grants": [
                {
                    "name": "oncall",
                    "groups": ["oncall"],
                    "clusters": ["prod-*"],
                    "namespaces": ["payments"],
                    "images": [IMAGE],
                    "vault_role": "debug-payments",
                }
            ],
            "vault": {
                "address": "https://vault.example.com:8200",
                "ca_file": "ca/prod.pem",
                "approle": {"role_id": "role-1", "secret_id_file": "approle-secret-id"},
            },
            "paths": {
                "state_dir": state,
                "audit_log": f"{state}/audit.jsonl",
                "recordings_dir": f"{state}/recordings",
            },
            "limits": {
                "connections_per_source": 1_000_000,
                "max_unauthenticated": 100_000,
                "session_open_timeout": "10m",
                "login_timeout": "60s",
            },
            "recording": {"auditor_public_key": self.auditor},
        }
        for name, value in sections.items():
            current = config.get(name)
            merge = isinstance(value, dict) and isinstance(current, dict)
            config[name] = {**current, **value} if merge else value
        path = self.root / f"bastion-{self._runs}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start_bastion(self, workers: int, **sections: Any) -> Server:
        config = self.bastion_config(**sections)
        log = self.root / f"bastion-{self._runs}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bastion.cli.main",
                    "serve",
                    "--config",
                    str(config),
                    "--workers",
                    str(workers),
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=REPO,
            )
        line = _pipe(proc.stdout).readline()
        if "listening on" not in line:
            stop(proc)
            raise RuntimeError(f"bastion serve did not start: {line!r}\n{log.read_text()[-2000:]}")
        port = int(line.split(" with ")[0].rsplit(":", 1)[1])
        label = f"bastion serve --workers {workers}"
        audit = self.root / f"state-{self._runs}" / "audit.jsonl"
        return Server(label, "key + TOTP", str(workers), port, proc, True, log, GREETING_END, audit)

    def start_sshd(
        self,
        sshd: str,
        session_command: str | None = None,
        ciphers: Sequence[str] = CIPHERS,
    ) -> Server:
        """sshd, key only; with ``session_command``, every session runs it (ForceCommand)."""
        directory = self.root / "sshd"
        directory.mkdir(exist_ok=True)
        host_key = directory / "ssh_host_ed25519_key"
        _secret_file(host_key, asyncssh.generate_private_key("ssh-ed25519").export_private_key())
        authorized = directory / "authorized_keys"
        authorized.write_text(self.public + "\n")
        authorized.chmod(0o600)
        port = free_port()
        config = directory / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"AuthorizedKeysFile {authorized}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PidFile none",
                    "MaxStartups 2000",
                    "MaxSessions 10",
                    "LogLevel ERROR",
                    f"Ciphers {','.join(ciphers)}",
                    "KexAlgorithms curve25519-sha256",
                    "HostKeyAlgorithms ssh-ed25519",
                    "PubkeyAcceptedAlgorithms ssh-ed25519",
                    *(
                        [
                            "PrintMotd no",
                            "PrintLastLog no",
                            # Debian's bash sources ~/.bashrc when SSH_CLIENT is set and SHLVL
                            # is below 2; the user's rc files are not sshd's cost.
                            "SetEnv SHLVL=1",
                            f"ForceCommand {session_command}",
                        ]
                        if session_command
                        else []
                    ),
                    "",
                ]
            )
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = directory / "sshd.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=err
            )
        try:
            wait_for_port(port, proc)
        except RuntimeError as exc:
            stop(proc)
            raise RuntimeError(f"sshd did not start: {exc}\n{log.read_text()[-2000:]}") from None
        version = subprocess.run([sshd, "-V"], capture_output=True, text=True, check=False)
        name = (version.stderr or version.stdout).split(",")[0].strip() or "sshd"
        return Server(
            f"{name} sshd", "key only (no TOTP)", "fork/conn", port, proc, False, log, "Welcome"
        )


class Clients:
    """``count`` client processes, each with its own slice of the users."""

    def __init__(
        self,
        lab: Lab,
        server: Server,
        count: int,
        concurrency: int,
        users: Sequence[tuple[str, str | None]],
    ) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        for i in range(count):
            job = {
                "host": "127.0.0.1",
                "port": server.port,
                "key_path": str(lab.key_path),
                "totp": server.totp,
                "concurrency": concurrency,
                "marker": server.marker,
                "users": [list(u) for u in users[i::count]],
            }
            job_path = lab.root / f"client-{server.port}-{i}.json"
            job_path.write_text(json.dumps(job))
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--client", str(job_path)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=REPO,
                )
            )
        self.warmup_errors: Counter[str] = Counter()
        for reply in self._replies():
            self.warmup_errors.update(reply["warmup_errors"])

    def _replies(self) -> Iterator[dict[str, Any]]:
        for proc in self.procs:
            line = _pipe(proc.stdout).readline()
            if not line:
                raise RuntimeError(f"a client process died (status {proc.wait()})")
            yield json.loads(line)

    def command(self, *words: str | int) -> list[dict[str, Any]]:
        for proc in self.procs:
            send(proc, *words)
        return list(self._replies())

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                send(proc, "quit")
                _pipe(proc.stdin).close()
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ====================================================================== measurements
@dataclass
class RateRow:
    server: Server
    logins: int
    errors: Counter[str]
    seconds: float
    server_cpu: float
    client_cpu: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.logins / self.seconds if self.seconds > 0 else 0.0

    @property
    def per_core(self) -> float:
        return self.logins / self.server_cpu if self.server_cpu > 0 else 0.0


@dataclass
class MemoryRow:
    server: Server
    connections: int
    open: int
    errors: int
    idle_kb: int
    pss_kb: int
    processes: int
    supervisor_kb: int | None

    @property
    def per_connection_kb(self) -> float:
        return (self.pss_kb - self.idle_kb) / self.connections


def measure_rate(
    lab: Lab, server: Server, users: Sequence[tuple[str, str | None]], args: argparse.Namespace
) -> RateRow:
    clients = Clients(lab, server, args.clients, args.concurrency, users)
    try:
        time.sleep(0.5)  # let the warm-up connections end on the server side
        before = cpu_seconds(server.pids())
        replies = clients.command("run", args.seconds)
        time.sleep(0.5)  # the server finishes closing (sshd reaps its children)
        after = cpu_seconds(server.pids())
    finally:
        clients.close()
    errors: Counter[str] = Counter(clients.warmup_errors)
    for reply in replies:
        errors.update(reply["errors"])
    seconds = max(r["ended"] for r in replies) - min(r["started"] for r in replies)
    return RateRow(
        server,
        sum(r["ok"] for r in replies),
        errors,
        seconds,
        after - before,
        sum(r["cpu"] for r in replies),
        sorted(x for r in replies for x in r["latencies"]),
    )


def measure_memory(
    lab: Lab,
    server: Server,
    users: Sequence[tuple[str, str | None]],
    counts: Sequence[int],
    args: argparse.Namespace,
) -> list[MemoryRow]:
    clients = Clients(lab, server, args.clients, args.concurrency, users)
    rows = []
    try:
        time.sleep(1.0)
        idle = pss_kb(server.measured_pids())
        held = 0
        errors = 0
        for count in counts:
            share = count - held
            per_client = [share // len(clients.procs)] * len(clients.procs)
            per_client[0] += share - sum(per_client)
            for proc, n in zip(clients.procs, per_client, strict=True):
                send(proc, "hold", n)
            replies = list(clients._replies())
            held = count
            time.sleep(1.0)  # the last logins' audit events and timers settle
            pids = server.measured_pids()
            opened = sum(r["open"] for r in clients.command("hold", 0))
            errors += sum(sum(r["errors"].values()) for r in replies)
            errors_now = errors + sum(clients.warmup_errors.values()) + (count - opened)
            rows.append(
                MemoryRow(
                    server,
                    count,
                    opened,
                    errors_now,
                    idle,
                    pss_kb(pids),
                    len(pids),
                    pss_kb([server.proc.pid]) if server.totp else None,
                )
            )
    finally:
        clients.close()
    return rows


@dataclass
class SessionRun:
    server: Server
    in_flight: int
    timings: list[dict[str, Any]]
    errors: Counter[str]
    seconds: float
    server_cpu: float

    def phase(self, end: str, start: str) -> list[float]:
        """Sorted ``end - start`` of every session, in seconds."""
        return sorted(t[end] - t[start] for t in self.timings)


def measure_sessions(
    lab: Lab,
    server: Server,
    users: Sequence[tuple[str, str | None]],
    *,
    in_flight: int,
    count: int,
    max_clients: int,
) -> SessionRun:
    """``count`` sessions with ``in_flight`` of them at a time, from 1 or more processes."""
    procs = max_clients if in_flight >= max_clients and in_flight % max_clients == 0 else 1
    shares = [count // procs + (i < count % procs) for i in range(procs)]
    clients = Clients(lab, server, procs, in_flight // procs, users)
    try:
        warm = clients.command("sessions", SESSION_WARMUP)
        time.sleep(0.3)  # the warm-up sessions' last audit events and reaping settle
        before = cpu_seconds(server.pids())
        for proc, n in zip(clients.procs, shares, strict=True):
            send(proc, "sessions", n)
        replies = list(clients._replies())
        time.sleep(0.5)  # sshd reaps its children (their CPU time counts once reaped)
        after = cpu_seconds(server.pids())
    finally:
        clients.close()
    errors: Counter[str] = Counter(clients.warmup_errors)
    for reply in warm:
        errors.update({f"warm-up: {k}": v for k, v in reply["errors"].items()})
    for reply in replies:
        errors.update(reply["errors"])
    return SessionRun(
        server,
        in_flight,
        [t for r in replies for t in r["sessions"]],
        errors,
        max(r["ended"] for r in replies) - min(r["started"] for r in replies),
        after - before,
    )


async def _first_bytes_on_pty(argv: Sequence[str], env: dict[str, str], count: int) -> list[float]:
    """Start ``argv`` on a fresh pty ``count`` times, as the front door starts its console
    (without SSH, session or audit): seconds from the spawn to the first byte on the master.
    Each run then gets Enter and is waited for."""
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(count):
        master, slave = os.openpty()
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.set_blocking(master, False)
        first: asyncio.Future[float] = loop.create_future()

        def readable(master: int = master, first: asyncio.Future[float] = first) -> None:
            now = time.perf_counter()
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not first.done():
                if data:
                    first.set_result(now)
                else:
                    first.set_exception(RuntimeError(f"{argv[0]} wrote nothing"))

        start = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
        finally:
            os.close(slave)
        loop.add_reader(master, readable)
        try:
            times.append(await asyncio.wait_for(first, SESSION_TIMEOUT) - start)
            os.write(master, b"\r")
            await asyncio.wait_for(proc.wait(), SESSION_TIMEOUT)
        finally:
            loop.remove_reader(master)
            os.close(master)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return sorted(times)


def audit_stamps(path: Path) -> dict[str, dict[str, float]]:
    """Per user (every timed session has its own): when each session event was stamped.

    The audit log stamps an event in its writer thread just before the write and fsync."""
    wanted = {"browsing", "wiping", "closed"}
    stamps: dict[str, dict[str, float]] = defaultdict(dict)
    with path.open() as lines:
        for line in lines:
            event = json.loads(line)
            name, outcome = event.get("event"), event.get("outcome")
            if name == "session.opened":
                key = "opened"
            elif name == "session.state" and outcome in wanted:
                key = outcome
            else:
                continue
            moment = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
            stamps[event["actor"]][key] = moment.timestamp()
    return stamps


# ====================================================================== report
def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: set[int]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = (
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def print_rates(rows: Sequence[RateRow]) -> None:
    base = next((r for r in rows if not r.server.totp), None)
    out = []
    for r in rows:
        if r.server.totp and base is not None and base.rate > 0:
            versus = f"{r.rate / base.rate:.2f}x"
            versus_core = f"{r.per_core / base.per_core:.2f}x" if base.per_core else "-"
        else:
            versus = versus_core = "(baseline)" if not r.server.totp else "-"
        out.append(
            (
                r.server.label,
                r.server.auth,
                r.server.workers,
                f"{r.logins:,}",
                str(sum(r.errors.values())),
                f"{r.seconds:.2f}",
                f"{r.rate:,.0f}",
                f"{r.server_cpu / r.seconds:.2f}",
                f"{r.client_cpu / r.seconds:.2f}",
                f"{r.per_core:,.0f}",
                f"{percentile(r.latencies, 0.5) * 1e3:.0f}",
                f"{percentile(r.latencies, 0.99) * 1e3:.0f}",
                versus,
                versus_core,
            )
        )
    table(
        (
            "server",
            "auth",
            "workers",
            "logins",
            "errors",
            "seconds",
            "logins/s",
            "server cores",
            "client cores",
            "logins/core-s",
            "p50 ms",
            "p99 ms",
            "vs sshd",
            "per core vs sshd",
        ),
        out,
        {0, 1},
    )
    for r in rows:
        for error, count in r.errors.most_common(3):
            print(f"  {r.server.label}: {count} x {error}")


def print_memory(rows: Sequence[MemoryRow]) -> None:
    base = {r.connections: r for r in rows if not r.server.totp}
    out = []
    previous: MemoryRow | None = None
    for r in rows:
        if previous is None or previous.server is not r.server:
            step = r.per_connection_kb
        else:
            step = (r.pss_kb - previous.pss_kb) / (r.connections - previous.connections)
        previous = r
        ref = base.get(r.connections)
        if not r.server.totp:
            versus = "(baseline)"
        elif ref is not None and ref.per_connection_kb > 0:
            versus = f"{r.per_connection_kb / ref.per_connection_kb:.3f}x"
        else:
            versus = "-"
        label = "bastion serve --workers 1 (worker)" if r.server.totp else f"{r.server.label} (all)"
        out.append(
            (
                label,
                f"{r.connections:,}",
                f"{r.open:,}",
                str(r.errors),
                str(r.processes),
                f"{r.idle_kb / 1024:.1f}",
                f"{r.pss_kb / 1024:.1f}",
                f"{r.per_connection_kb:.1f}",
                f"{step:.1f}",
                f"{r.supervisor_kb / 1024:.1f}" if r.supervisor_kb is not None else "-",
                versus,
            )
        )
    table(
        (
            "server",
            "connections",
            "open",
            "errors",
            "processes",
            "idle PSS MB",
            "PSS MB",
            "KB/conn",
            "KB/conn since last row",
            "supervisor MB",
            "vs sshd",
        ),
        out,
        {0},
    )


SESSION_PHASES = (
    ("(a) TCP connect + full login", "login", "connect"),
    ("(b) session request -> first output byte", "first_byte", "login"),
    ("  (b1) channel open, PTY and shell answered", "accepted", "login"),
    ("  (b2) shell answered -> first output byte", "first_byte", "accepted"),
    ("(a)+(b) TCP connect -> first output byte", "first_byte", "connect"),
    ("wipe: Enter -> channel closed", "closed", "enter"),
)
AUDIT_STEPS = (
    ("session request -> session.opened stamped", "audit_opened", "login"),
    ("session.opened -> browsing stamped", "audit_browsing", "audit_opened"),
    ("browsing stamped -> first byte at the client", "first_byte", "audit_browsing"),
    ("Enter -> wiping stamped", "audit_wiping", "enter"),
    ("wiping -> closed stamped", "audit_closed", "audit_wiping"),
    ("closed stamped -> channel closed at the client", "closed", "audit_closed"),
)


def _ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q) * 1e3:.1f}" if values else "-"


def _ratio(ours: Sequence[float], base: Sequence[float], q: float) -> str:
    if not ours or not base or percentile(base, q) <= 0:
        return "-"
    return f"{percentile(ours, q) / percentile(base, q):.2f}x"


def print_sessions(runs: Sequence[SessionRun], alone: dict[str, list[float]]) -> None:
    out = []

    def row(
        label: str,
        level: str,
        count: str,
        base: list[float],
        ours: list[float],
        *,
        spread: bool = True,
        scale: float = 1e3,
    ) -> None:
        def cell(values: list[float], q: float) -> str:
            if not spread and q != 0.5:
                return ""
            return f"{percentile(values, q) * scale:.1f}" if values else "-"

        out.append(
            (
                label,
                level,
                count,
                cell(base, 0.5),
                cell(base, 0.9),
                cell(ours, 0.5),
                cell(ours, 0.9),
                _ratio(ours, base, 0.5),
                _ratio(ours, base, 0.9) if spread else "",
            )
        )

    for level in sorted({r.in_flight for r in runs}):
        base = next((r for r in runs if not r.server.totp and r.in_flight == level), None)
        ours = next((r for r in runs if r.server.totp and r.in_flight == level), None)
        counts = [str(len(r.timings)) if r else "-" for r in (base, ours)]
        count = counts[1] if base is None else "/".join(counts)
        for label, end, start in SESSION_PHASES:
            row(
                label,
                str(level),
                count,
                base.phase(end, start) if base else [],
                ours.phase(end, start) if ours else [],
            )
        cpu = [[r.server_cpu / len(r.timings)] if r and r.timings else [] for r in (base, ours)]
        row("server CPU per session, with child processes", str(level), count, *cpu, spread=False)
        rates = [[len(r.timings) / r.seconds] if r and r.seconds else [] for r in (base, ours)]
        label = "sessions per second (a rate, not ms)"
        row(label, str(level), count, *rates, spread=False, scale=1.0)
    if alone:
        base_alone, ours_alone = alone.get("baseline", []), alone.get("console", [])
        count = f"{len(base_alone)}/{len(ours_alone)}"
        label = "console process alone: spawn on a pty -> first byte"
        row(label, "1", count, base_alone, ours_alone)
    table(
        (
            "phase (ms)",
            "in flight",
            "sessions",
            "sshd p50",
            "sshd p90",
            "bastion p50",
            "bastion p90",
            "p50 vs sshd",
            "p90 vs sshd",
        ),
        out,
        {0},
    )
    for r in runs:
        for error, n in r.errors.most_common(3):
            print(f"  {r.server.label}, {r.in_flight} in flight: {n} x {error}")


def print_audit_split(runs: Sequence[SessionRun]) -> None:
    """The bastion's session start and wipe, split at its own audit events' stamps."""
    out = []
    for r in runs:
        if not r.server.totp or r.server.audit_log is None or not r.server.audit_log.exists():
            continue
        stamps = audit_stamps(r.server.audit_log)
        merged = [
            {**t, **{f"audit_{k}": v for k, v in stamps.get(t["user"], {}).items()}}
            for t in r.timings
        ]
        for label, end, start in AUDIT_STEPS:
            values = sorted(t[end] - t[start] for t in merged if end in t and start in t)
            out.append(
                (label, str(r.in_flight), str(len(values)), _ms(values, 0.5), _ms(values, 0.9))
            )
    if out:
        table(("bastion step (ms)", "in flight", "sessions", "p50", "p90"), out, {0})


def verdicts(rates: Sequence[RateRow], memory: Sequence[MemoryRow]) -> bool:
    ok = True
    print()
    one = next((r for r in rates if r.server.totp and r.server.workers == "1"), None)
    if one is not None:
        best = max(r.per_core for r in rates if r.server.totp)
        met = best >= TARGET_LOGINS_PER_CORE
        ok &= met
        print(
            f"target: >= {TARGET_LOGINS_PER_CORE} key+TOTP logins/s per core: "
            f"{best:,.0f} logins per server CPU-second "
            f"(1 worker: {one.rate:,.0f} logins/s with {one.server_cpu / one.seconds:.2f} "
            f"cores busy): {'meets it' if met else 'MISSES it'}"
        )
    bastion_mem = [r for r in memory if r.server.totp]
    if bastion_mem:
        worst = max(r.per_connection_kb for r in bastion_mem)
        met = worst < TARGET_KB_PER_CONNECTION
        ok &= met
        print(
            f"target: < {TARGET_KB_PER_CONNECTION} KB per idle authenticated connection: "
            f"at most {worst:.1f} KB (1 worker): {'meets it' if met else 'MISSES it'}"
        )
        top = max(bastion_mem, key=lambda r: r.connections)
        met = top.connections >= TARGET_CONNECTIONS and top.errors == 0
        if top.connections >= TARGET_CONNECTIONS or top.errors:
            ok &= met
            verdict = "meets it" if met else "MISSES it"
        else:
            verdict = f"not measured (this run held at most {top.connections:,})"
        print(
            f"target: {TARGET_CONNECTIONS:,} concurrent connections without errors: "
            f"{top.open:,} of {top.connections:,} open, {top.errors} errors: {verdict}"
        )
    return ok


# ====================================================================== main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts (~35 s)")
    parser.add_argument("--skip-sshd", action="store_true", help="no OpenSSH baseline rows")
    parser.add_argument("--sshd", default=SSHD, help=f"path of OpenSSH's sshd (default {SSHD})")
    parser.add_argument("--users", type=int, help="enrolled users (default 1500, quick 600)")
    parser.add_argument("--seconds", type=float, help="timed handshakes per row (default 6)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="connections in flight per client (default 8)"
    )
    parser.add_argument(
        "--hold", type=int, nargs="+", help="idle connection counts (default 100 500 1000)"
    )
    parser.add_argument(
        "--sessions", type=int, help="sequential sessions per server (default 30, quick 10)"
    )
    parser.add_argument(
        "--load-sessions", type=int, help="sessions under load per server (default 64, quick 16)"
    )
    parser.add_argument(
        "--session-load", type=int, default=8, help="sessions in flight under load (default 8)"
    )
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.users is None:
        args.users = 600 if args.quick else 1500
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 6.0
    if args.hold is None:
        args.hold = [20, 50, 100] if args.quick else [100, 500, 1000]
    args.hold = sorted(args.hold)
    if args.sessions is None:
        args.sessions = 10 if args.quick else 30
    if args.load_sessions is None:
        args.load_sessions = 16 if args.quick else 64
    needed = args.hold[-1] + WARMUP * args.clients
    if args.users < needed:
        parser.error(f"--users must be at least {needed} for --hold {args.hold[-1]}")
    needed = session_users(args, 1) + session_users(args, args.clients)
    if args.users < needed:
        parser.error(f"--users must be at least {needed} for the session rows")
    return args


def session_users(args: argparse.Namespace, procs: int) -> int:
    """Users one session row uses up: its client processes' warm-ups, then its sessions."""
    count = args.sessions if procs == 1 else args.load_sessions
    return (WARMUP + SESSION_WARMUP) * procs + count


def session_rows(
    lab: Lab,
    sshd: str | None,
    sshd_users: Sequence[tuple[str, str | None]],
    bastion_users: Sequence[tuple[str, str | None]],
    args: argparse.Namespace,
) -> list[SessionRun]:
    """Measure and print the session start rows: sshd's (if any), then the bastion's."""
    sessions: list[SessionRun] = []
    baseline_argv = [sys.executable, "-I", "-c", BASELINE_CODE]
    baseline_command = shlex.join(baseline_argv)

    def run(server: Server, users: Sequence[tuple[str, str | None]]) -> None:
        first = session_users(args, 1)
        try:
            sessions.append(
                measure_sessions(
                    lab, server, users[:first], in_flight=1, count=args.sessions, max_clients=1
                )
            )
            sessions.append(
                measure_sessions(
                    lab,
                    server,
                    users[first:],
                    in_flight=args.session_load,
                    count=args.load_sessions,
                    max_clients=args.clients,
                )
            )
        finally:
            server.stop()

    if sshd is not None:
        run(lab.start_sshd(sshd, baseline_command), sshd_users)
    run(lab.start_bastion(1), bastion_users)
    from bastion.ssh.console import python_argv  # noqa: PLC0415 - only the session rows

    console_argv = python_argv(
        "bastion.ssh.line_console", lab.users[0][0], lab.key.get_fingerprint(), "totp", "oncall"
    )
    # The environment the front door gives its console (without the broker socket).
    env = {"TERM": TERM_TYPE, "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin", "COLORTERM": "truecolor"}
    alone = {
        "baseline": asyncio.run(_first_bytes_on_pty(baseline_argv, env, args.sessions)),
        "console": asyncio.run(_first_bytes_on_pty(console_argv, env, args.sessions)),
    }
    bare_argv = [sys.executable, "-I", "-S", "-c", BASELINE_CODE]
    bare = asyncio.run(_first_bytes_on_pty(bare_argv, env, args.sessions))
    shell = pwd.getpwuid(os.geteuid()).pw_shell
    print(
        "session start, on loopback: a fresh connection and user per session; the client asks "
        f"for a PTY ({TERM_TYPE}, 80x24) and a shell, waits for the greeting, sends Enter and "
        "waits for the channel to close\n"
        f"bastion serve --workers 1 runs its console: {shlex.join(console_argv[:4])} ..."
    )
    if sshd is not None:
        print(
            f"sshd (key only) runs ForceCommand {baseline_command} (through {shell} -c, "
            "SetEnv SHLVL=1)"
        )
    print_sessions(sessions, alone)
    print(
        f"for scale, the interpreter without site-packages ({shlex.join(bare_argv[1:4])} ...) "
        f"alone on a pty: {_ms(bare, 0.5)} ms p50, {_ms(bare, 0.9)} ms p90 to the first byte"
    )
    print()
    print(
        "inside the bastion: the same sessions split at its audit events' time stamps "
        "(stamped by the writer thread just before write + fsync)"
    )
    print_audit_split(sessions)
    return sessions


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client is not None:
        return client_entry(args.client)
    _raise_nofile()
    began = time.perf_counter()
    sshd = None
    if not args.skip_sshd:
        sshd = shutil.which(args.sshd) or (shutil.which("sshd") if args.sshd == SSHD else None)
    if sshd is None and not args.skip_sshd:
        print(
            f"ssh_bench: OpenSSH's sshd not found at {args.sshd}: no baseline rows. "
            "Install it with: apt-get install openssh-server (or pass --skip-sshd)\n"
        )
    user = pwd.getpwuid(os.geteuid()).pw_name
    print(
        f"ssh_bench: Python {platform.python_version()}, asyncssh {asyncssh.__version__}, "
        f"{os.cpu_count()} CPUs, {args.users} users, {args.clients} client processes x "
        f"{args.concurrency} connections in flight, {args.seconds:g} s per rate row\n"
        f"algorithms offered by every client: kex {','.join(KEX)}, ciphers "
        f"{','.join(CIPHERS)}, ed25519 host and client keys; sshd user: {user}\n"
    )
    rates: list[RateRow] = []
    memory: list[MemoryRow] = []
    with tempfile.TemporaryDirectory(prefix="ssh-bench-") as tmp:
        lab = Lab(Path(tmp), args.users)
        bastion_users: list[tuple[str, str | None]] = list(lab.users)
        sshd_users: list[tuple[str, str | None]] = [(user, None)] * args.users

        def run_rate(server: Server, users: Sequence[tuple[str, str | None]]) -> None:
            try:
                rates.append(measure_rate(lab, server, users, args))
            finally:
                server.stop()

        def run_memory(server: Server, users: Sequence[tuple[str, str | None]]) -> None:
            try:
                memory.extend(measure_memory(lab, server, users, args.hold, args))
            finally:
                server.stop()

        if sshd is not None:
            run_rate(lab.start_sshd(sshd), sshd_users)
        for workers in (1, 2):
            run_rate(lab.start_bastion(workers), bastion_users)
        print("handshakes: connect + full login + close, on loopback")
        print_rates(rates)
        print()
        if sshd is not None:
            run_memory(lab.start_sshd(sshd), sshd_users)
        run_memory(lab.start_bastion(1), bastion_users)
        print(
            "memory per idle authenticated connection (no session): PSS of the server's "
            "processes minus their idle PSS, divided by the connections"
        )
        print_memory(memory)
        print()

        session_rows(lab, sshd, sshd_users, bastion_users, args)
        ok = verdicts(rates, memory)
    print(f"\ntotal time {time.perf_counter() - began:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
