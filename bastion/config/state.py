"""``state:`` in the configuration: where the bastion keeps what its processes (and, on
PostgreSQL, its replicas) must agree on: the TOTP replay guard and lockouts, scratch and
break-glass codes, approvals, and the journal of sessions and what they created.

```yaml
state:
  url: sqlite                  # the default: SQLite files in paths.state_dir, one host
---
state:
  url: postgresql://bastion@db.example.com:5432/bastion
  password_file: /etc/bastion/state-db-password     # 0600, never the password itself
  tls:
    ca_file: /etc/bastion/state-db-ca.pem           # verify-full against this CA
    client_cert_file: /etc/bastion/state-db.crt     # optional: TLS client certificate
    client_key_file: /etc/bastion/state-db.key      # (0600)
  connect_timeout: 10s
  replica_id: bastion-1        # default: the host name; unique per replica
  heartbeat_interval: 5s       # how often each replica says it is alive
  replica_dead_after: 15s      # a replica silent this long is dead: its sessions are reaped
```

``replica_id`` (``[a-z0-9][a-z0-9-]{0,62}``) names this replica: every audit event carries
it, and when it is set here the audit log's file name includes it (``audit.jsonl`` becomes
``audit.bastion-a.jsonl``), so that each replica writes a chain of its own. Unset, it is the
host name made to fit (lower case, its first label), and paths stay as configured.

A URL carries no password and no options: TLS is configured only here, so nothing in the URL
can turn it off. Without ``tls`` only a server on a loopback address is accepted.

It also names the replica's sessions and heartbeat (:mod:`bastion.state.liveness`). Two
hosts must never share one: a replica refuses to start while another boot beats under its id.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from bastion.durations import parse_duration
from bastion.state.database import PostgresLocation, postgres_url_problem
from bastion.state.liveness import REPLICA_ID, default_replica_id

__all__ = ["REPLICA_ID", "State", "StateTls", "default_replica_id"]


def _resolve(value: Path, info: ValidationInfo) -> Path:
    # As bastion.config.models resolves paths: relative to the config file's directory.
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base is not None:
        return Path(base) / value
    return value


_Path = Annotated[Path, AfterValidator(_resolve)]


def _replica_id(value: str) -> str:
    if not REPLICA_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a replica id: expected 1 to 63 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit (e.g. bastion-a)"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateTls(_Strict):
    ca_file: _Path
    client_cert_file: _Path | None = None
    client_key_file: _Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> StateTls:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError(
                "set both client_cert_file and client_key_file (a TLS client certificate), "
                "or neither"
            )
        return self


class State(_Strict):
    url: str = "sqlite"
    password_file: _Path | None = None
    tls: StateTls | None = None
    connect_timeout: Annotated[timedelta, BeforeValidator(parse_duration)] = timedelta(seconds=10)
    replica_id: Annotated[str, AfterValidator(_replica_id)] = Field(
        default_factory=default_replica_id
    )
    heartbeat_interval: Annotated[timedelta, BeforeValidator(parse_duration)] = timedelta(seconds=5)
    replica_dead_after: Annotated[timedelta, BeforeValidator(parse_duration)] = timedelta(
        seconds=15
    )

    @model_validator(mode="after")
    def _valid(self) -> State:
        beat, dead = self.heartbeat_interval, self.replica_dead_after
        if not timedelta(seconds=1) <= beat <= timedelta(seconds=60):
            raise ValueError("heartbeat_interval: expected a duration from 1s to 60s")
        if not 2 * beat <= dead <= timedelta(minutes=10):
            raise ValueError(
                "replica_dead_after: expected at least twice heartbeat_interval (one late "
                "heartbeat is not a death) and at most 10m"
            )
        if self.url == "sqlite":
            if self.password_file is not None or self.tls is not None:
                raise ValueError(
                    "password_file and tls apply to url: postgresql://...; with the "
                    "default url: sqlite remove them"
                )
            return self
        problem = postgres_url_problem(self.url, has_ca=self.tls is not None)
        if problem:
            raise ValueError(f"url {problem}")
        if not timedelta(seconds=1) <= self.connect_timeout <= timedelta(seconds=60):
            raise ValueError("connect_timeout: expected a duration from 1s to 60s")
        return self

    def secret_files(self) -> list[tuple[Path, tuple[str, ...]]]:
        """The files held to the secret-file rules (0600, the service user's), by key."""
        found: list[tuple[Path, tuple[str, ...]]] = []
        if self.password_file is not None:
            found.append((self.password_file, ("state", "password_file")))
        if self.tls is not None and self.tls.client_key_file is not None:
            found.append((self.tls.client_key_file, ("state", "tls", "client_key_file")))
        return found

    def ca_files(self) -> list[tuple[Path, tuple[str, ...]]]:
        return [] if self.tls is None else [(self.tls.ca_file, ("state", "tls", "ca_file"))]

    @property
    def replica_named(self) -> bool:
        """Whether ``replica_id`` was set in the config (not the host name by default)."""
        return "replica_id" in self.model_fields_set

    @property
    def postgres(self) -> PostgresLocation | None:
        """Where the PostgreSQL state is; None for SQLite (files in ``paths.state_dir``)."""
        if self.url == "sqlite":
            return None
        return PostgresLocation(
            url=self.url,
            password_file=self.password_file,
            ca_file=self.tls.ca_file if self.tls else None,
            client_cert_file=self.tls.client_cert_file if self.tls else None,
            client_key_file=self.tls.client_key_file if self.tls else None,
            connect_timeout=self.connect_timeout.total_seconds(),
        )


def with_replica_log_name(data: object) -> object:
    """The raw config, its ``paths.audit_log`` named after ``state.replica_id`` when that is
    set (``audit.jsonl`` becomes ``audit.bastion-a.jsonl``): each replica writes a chain of
    its own even where replicas share a log directory. A name that already holds the id, a
    config without one, and anything not yet valid are left alone (validation reports them)."""
    if not isinstance(data, dict):
        return data
    state, paths = data.get("state"), data.get("paths")
    replica = (
        state.get("replica_id")
        if isinstance(state, dict)
        else state.replica_id
        if isinstance(state, State) and state.replica_named
        else None
    )
    if not isinstance(replica, str) or not REPLICA_ID.fullmatch(replica):
        return data
    log = paths.get("audit_log") if isinstance(paths, dict) else getattr(paths, "audit_log", None)
    if not isinstance(log, str | Path):
        return data
    named = _replica_log_name(Path(log), replica)
    if isinstance(paths, dict):
        return {**data, "paths": {**paths, "audit_log": named}}
    if isinstance(paths, BaseModel):
        return {**data, "paths": paths.model_copy(update={"audit_log": named})}
    return data


def _replica_log_name(log: Path, replica: str) -> Path:
    if re.search(rf"(^|[._-]){re.escape(replica)}([._-]|$)", log.name):
        return log
    if log.suffix:
        return log.with_name(f"{log.stem}.{replica}{log.suffix}")
    return log.with_name(f"{log.name}.{replica}")
