"""The two-replica deployment (docs/ha.md): each replica's bastion.yaml as the role renders it
(PostgreSQL state, its replica id naming its audit chain, the load balancers trusted for the
PROXY protocol), and the haproxy role's haproxy.cfg checked by Debian's HAProxy with
``haproxy -c`` and then run for real in front of two stand-in replicas on loopback: every
connection arrives with a PROXY v2 header naming the client, every health check with a
LOCAL header and nothing after it (the check reads the SSH banner and hangs up), and a
replica that sends no SSH banner is taken out."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.config import load_config
from bastion.config.models import Listener
from provisioning.ansible_render import ANSIBLE, render_templates

BASTION = ANSIBLE / "roles" / "bastion"
HAPROXY = ANSIBLE / "roles" / "haproxy"
# PROXY protocol v2: the signature, then version 2 with the command in the low nibble.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
LOCAL, PROXY = 0x20, 0x21

needs_haproxy = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy is not installed (apt-get install haproxy)"
)


def replica_vars(name: str) -> dict[str, Any]:
    """What the example inventory gives replica ``name`` (its own and the group's)."""
    inventory = yaml.safe_load((ANSIBLE / "inventory.ha.example.yml").read_text())
    group = inventory["all"]["children"]["bastion"]
    host = group["hosts"][f"{name}.example.com"]
    keep = {
        "bastion_proxy_protocol_trusted",
        "bastion_operator_cidrs",
        "bastion_state_url",
        "bastion_grants",
        "bastion_vault_approle_role_id",
        "bastion_listen_port",
    }
    values = {k: v for k, v in group["vars"].items() if k in keep}
    values.update(host)
    # The lookups and vault references of the example, as plain values.
    values.update(
        {
            "bastion_state_ca_pem": "-----BEGIN CERTIFICATE-----",
            "bastion_vault_address": "https://vault.example.com:8200",
            "bastion_clusters": [
                {
                    "name": "prod-eu",
                    "api_url": "https://prod-eu.k8s.example.com:6443",
                    "vault_mount": "kubernetes-prod-eu",
                }
            ],
        }
    )
    return values


def test_each_replica_gets_postgres_its_replica_id_and_the_trusted_balancers(
    tmp_path: Path,
) -> None:
    configs = {}
    for name in ("bastion-a", "bastion-b"):
        out = tmp_path / name
        out.mkdir()
        rendered = render_templates(BASTION, ["bastion.yaml"], out, replica_vars(name))
        configs[name] = yaml.safe_load(rendered["bastion.yaml"].read_text())
    a, b = configs["bastion-a"], configs["bastion-b"]
    assert a["state"] == {
        "url": "postgresql://bastion@db.example.com:5432/bastion",
        "password_file": "/etc/bastion/state-db-password",
        "tls": {"ca_file": "/etc/bastion/ca/state-db.pem"},
        "replica_id": "bastion-a",
    }
    assert b["state"]["replica_id"] == "bastion-b"
    assert a["listener"]["proxy_protocol"] == {"trusted": ["10.0.1.10", "10.0.1.11"]}
    # The host key path is the same on both: the role installs one shared key there.
    assert a["listener"]["host_key"] == b["listener"]["host_key"]
    # Loaded as the bastion will: each replica writes its own audit chain.
    for name, data in configs.items():
        if "proxy_protocol" not in Listener.model_fields:
            # Until listener.proxy_protocol (the proxy branch) is in this checkout.
            del data["listener"]["proxy_protocol"]
        path = tmp_path / name / "loaded.yaml"
        path.write_text(yaml.safe_dump(data))
        config = load_config(path, check_files=False)
        assert config.state.replica_id == name
        assert config.paths.audit_log == Path(f"/var/log/bastion/audit.{name}.jsonl")


def test_a_single_host_config_has_no_state_section(tmp_path: Path) -> None:
    values = replica_vars("bastion-a")
    for key in ("bastion_state_url", "bastion_replica_id", "bastion_proxy_protocol_trusted"):
        values.pop(key)
    rendered = render_templates(BASTION, ["bastion.yaml"], tmp_path, values)
    data = yaml.safe_load(rendered["bastion.yaml"].read_text())
    assert "state" not in data
    assert "proxy_protocol" not in data["listener"]


# ------------------------------------------------------------------ HAProxy, for real
@dataclass
class Replica:
    """A stand-in for a bastion replica behind HAProxy: records the PROXY header of each
    connection, answers with an SSH banner (unless ``silent``), and reports what came after
    the header until the peer hung up."""

    silent: bool = False
    seen: list[tuple[int, tuple[str, int] | None, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                command, source = _read_v2(conn)
            except (OSError, ValueError):
                return
            rest = b""
            try:
                if not self.silent:
                    conn.sendall(b"SSH-2.0-stand-in\r\n")
                while chunk := conn.recv(4096):
                    rest += chunk
                    if rest.endswith(b"\n"):
                        conn.sendall(rest)  # an echo: the client's line comes back
            except OSError:
                pass  # a check may hang up with a reset
            with self.lock:
                self.seen.append((command, source, rest))

    def connections(self) -> list[tuple[int, tuple[str, int] | None, bytes]]:
        with self.lock:
            return list(self.seen)

    def close(self) -> None:
        self.sock.close()


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ValueError("closed inside the PROXY header")
        data += chunk
    return data


def _read_v2(conn: socket.socket) -> tuple[int, tuple[str, int] | None]:
    """The command of a PROXY v2 header, and the source it names (TCP over IPv4)."""
    head = _read_exactly(conn, 16)
    if head[:12] != V2_SIGNATURE:
        raise ValueError(f"not a PROXY v2 header: {head!r}")
    command, family, length = head[12], head[13], struct.unpack("!H", head[14:16])[0]
    body = _read_exactly(conn, length)
    if command == PROXY and family == 0x11:
        source = socket.inet_ntoa(body[0:4]), struct.unpack("!H", body[8:10])[0]
        return command, source
    return command, None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(what: str, check: Any) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within 30 s: {what}")


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started = [Replica(), Replica(), Replica(silent=True)]
    yield started
    for replica in started:
        replica.close()


def _server_states(socket_path: Path) -> dict[str, str]:
    """HAProxy's view of each backend server (from its admin socket: ``show stat``)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(socket_path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {
        r["svname"]: r["status"]
        for r in rows
        if r.get("pxname") == "bastion_replicas" and r.get("svname") != "BACKEND"
    }


@needs_haproxy
def test_haproxy_hands_each_connection_over_with_the_clients_address(
    tmp_path: Path, replicas: list[Replica]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("HAProxy's config chroots and drops to the haproxy user: run as root")
    port = _free_port()
    stats = tmp_path / "admin.sock"
    rendered = render_templates(
        HAPROXY,
        ["haproxy.cfg"],
        tmp_path,
        {
            "haproxy_bind_address": "127.0.0.1",
            "haproxy_bind_port": port,
            "haproxy_check_interval": "200ms",
            "haproxy_check_rise": 1,
            "haproxy_check_fall": 1,
            "haproxy_stats_socket": str(stats),
            "haproxy_bastion_servers": [
                {"name": f"bastion-{n}", "address": "127.0.0.1", "port": r.port}
                for n, r in zip("abc", replicas, strict=True)
            ],
        },
    )
    cfg = rendered["haproxy.cfg"]
    check = subprocess.run(
        ["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "send-proxy-v2 check check-send-proxy" in cfg.read_text()
    # -db: in the foreground (the config's `daemon` is ignored), stopped by its PID.
    with (tmp_path / "haproxy.log").open("wb") as output:
        proxy = subprocess.Popen(
            ["haproxy", "-db", "-f", str(cfg)], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wanted = {"bastion-a": "UP", "bastion-b": "UP", "bastion-c": "DOWN"}
        _until(
            "a and b up, c (no SSH banner) down",
            lambda: stats.exists() and _server_states(stats) == wanted,
        )
        # Health checks: a LOCAL header, then nothing: no SSH version line, no login.
        for replica in replicas[:2]:
            checks = _until("a finished check", replica.connections)
            assert {(command, rest) for command, _, rest in checks} == {(LOCAL, b"")}
        # An operator's connection: the PROXY header names the client's address and port.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client_port = client.getsockname()[1]
            banner = client.recv(64)
            assert banner == b"SSH-2.0-stand-in\r\n"
            client.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            assert client.recv(64) == b"SSH-2.0-OpenSSH_9.2\r\n"
        served = _until(
            "the client's connection at a replica",
            lambda: [c for r in replicas[:2] for c in r.connections() if c[0] == PROXY],
        )
        assert served == [(PROXY, ("127.0.0.1", client_port), b"SSH-2.0-OpenSSH_9.2\r\n")]
    finally:
        # One process in -db mode (no master, no workers): nothing is left behind.
        proxy.kill()
        proxy.wait()
