"""Kinds of keys, their states, and the key registry's records. Pure: no I/O.

The registry remembers what the key files alone cannot say: when a key was made or first
used, which key a rotation retired and when, whether it was retired as compromised, and
until when a retiring host key is still offered. The key material itself lives in its own
files (host keys, signing seeds) or in the config (the auditors' public key); the registry
holds public halves and fingerprints only.

States:

* ``active``: in use (the host key in the key exchange, the key signing checkpoints or
  recordings, the recipient of new recordings);
* ``next``: a host key offered to clients alongside the active one, so that clients using
  OpenSSH's ``UpdateHostKeys`` learn it before it becomes active;
* ``retiring``: the active host key during that overlap, until ``retire_at``;
* ``retired``: no longer used; kept so that old audit lines, recordings and ``keys list``
  can still name it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "KeyKind",
    "KeyRecord",
    "KeyState",
    "Registry",
    "RegistryError",
    "format_age",
]

_VERSION = 1


class KeyKind(StrEnum):
    HOST = "host"
    CHECKPOINT = "checkpoint"
    RECORDING_RECIPIENT = "recording-recipient"
    RECORDING_SIGNING = "recording-signing"


class KeyState(StrEnum):
    ACTIVE = "active"
    NEXT = "next"
    RETIRING = "retiring"
    RETIRED = "retired"


class RegistryError(ValueError):
    """The registry file does not hold what this module writes."""


@dataclass(frozen=True)
class KeyRecord:
    """One key: ``public`` is its public half as the bastion shows it (``ssh-ed25519 AAAA``,
    ``ed25519:...``, ``x25519:...``); times are epoch seconds."""

    kind: KeyKind
    fingerprint: str
    public: str
    algorithm: str
    created: float
    state: KeyState = KeyState.ACTIVE
    retire_at: float | None = None  # retiring host key: offered until then
    retired_at: float | None = None
    replaced_by: str | None = None  # the fingerprint of the key that took over
    compromised: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyRecord:
        try:
            return cls(
                kind=KeyKind(data["kind"]),
                fingerprint=_text(data, "fingerprint"),
                public=_text(data, "public"),
                algorithm=_text(data, "algorithm"),
                created=float(data["created"]),
                state=KeyState(data.get("state", "active")),
                retire_at=_time(data.get("retire_at")),
                retired_at=_time(data.get("retired_at")),
                replaced_by=data.get("replaced_by") if data.get("replaced_by") else None,
                compromised=bool(data.get("compromised", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"a key record is malformed ({exc})") from None


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is not a string")
    return value


def _time(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("a time is not a number")
    return float(value)


@dataclass(frozen=True)
class Registry:
    """Every key the bastion has used, in the order they were recorded."""

    keys: tuple[KeyRecord, ...] = field(default_factory=tuple)

    # ------------------------------------------------------------------ reading
    def of(self, kind: KeyKind, state: KeyState | None = None) -> list[KeyRecord]:
        return [k for k in self.keys if k.kind == kind and (state is None or k.state == state)]

    def find(self, kind: KeyKind, fingerprint: str) -> KeyRecord | None:
        return next((k for k in self.keys if k.kind == kind and k.fingerprint == fingerprint), None)

    def successor(self, kind: KeyKind, fingerprint: str) -> KeyRecord | None:
        """The key that ``fingerprint`` was finally handed over to (following every
        rotation since), or None when it was never retired."""
        seen = {fingerprint}
        record = self.find(kind, fingerprint)
        found: KeyRecord | None = None
        while record is not None and record.replaced_by is not None:
            if record.replaced_by in seen:
                raise RegistryError(f"the {kind} keys' rotations go round in a circle")
            seen.add(record.replaced_by)
            record = self.find(kind, record.replaced_by)
            found = record
        return found

    # ------------------------------------------------------------------ changing
    def adopt(self, record: KeyRecord) -> Registry:
        """Add ``record`` unless the registry knows that key already."""
        if self.find(record.kind, record.fingerprint) is not None:
            return self
        return Registry((*self.keys, record))

    def put(self, record: KeyRecord) -> Registry:
        """Add ``record``, or replace the record of the same key."""
        kept = [
            k
            for k in self.keys
            if not (k.kind == record.kind and k.fingerprint == record.fingerprint)
        ]
        return Registry((*kept, record))

    def retire(
        self,
        kind: KeyKind,
        fingerprint: str,
        *,
        at: float,
        replaced_by: str | None,
        compromised: bool = False,
    ) -> Registry:
        record = self.find(kind, fingerprint)
        if record is None:
            return self
        return self.put(
            replace(
                record,
                state=KeyState.RETIRED,
                retire_at=None,
                retired_at=at,
                replaced_by=replaced_by,
                compromised=compromised or record.compromised,
            )
        )

    # ------------------------------------------------------------------ the file
    def encode(self) -> bytes:
        body = {"version": _VERSION, "keys": [k.to_json() for k in self.keys]}
        return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def decode(cls, raw: bytes) -> Registry:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RegistryError(f"not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            raise RegistryError(f"not a version {_VERSION} key registry")
        keys = data.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise RegistryError("'keys' is not a list of records")
        return cls(tuple(KeyRecord.from_json(k) for k in keys))

    @classmethod
    def of_records(cls, records: Iterable[KeyRecord]) -> Registry:
        return cls(tuple(records))


def format_age(seconds: float) -> str:
    """``3d``, ``5h``, ``12m``: the largest whole unit, as ``keys list`` shows ages."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
