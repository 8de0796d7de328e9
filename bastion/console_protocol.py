"""The console ⇄ broker protocol: message types and their encoding. Pure leaf module.

The console process (``tui``) and the session broker (``bastion.session``) both import this
module, and it imports neither of them: importing it must not pull in the broker.

Transport: a Unix socketpair; the console's end is the descriptor named by the environment
variable ``BASTION_BROKER_FD``. Framing: one JSON object per line, UTF-8, at most
``MAX_LINE`` bytes. Every message has a ``type``; unknown types, missing or extra fields and
wrong value types are protocol errors (the broker ends the session's console rather than
guess what a confused or compromised console meant).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

__all__ = [
    "BROKER_FD_ENV",
    "MAX_LINE",
    "DebugEnded",
    "DebugProgress",
    "DebugRefused",
    "DebugRequest",
    "Handover",
    "Message",
    "Notice",
    "ProtocolError",
    "decode",
    "encode",
]

BROKER_FD_ENV = "BASTION_BROKER_FD"
MAX_LINE = 64 * 1024


class ProtocolError(ValueError):
    """A line that is not a valid message."""


@dataclass(frozen=True)
class Message:
    type: ClassVar[str] = ""


@dataclass(frozen=True)
class Notice(Message):
    """Broker → console: a deadline is near (``seconds_left`` > 0) or has passed."""

    type: ClassVar[str] = "notice"
    kind: str  # "idle" or "hard"
    seconds_left: float
    message: str


@dataclass(frozen=True)
class DebugRequest(Message):
    """Console → broker: start a debug shell. Every field is untrusted: the broker decides
    with the pod's real labels and refuses privileges beyond the restricted profile."""

    type: ClassVar[str] = "debug"
    cluster: str  # "" = the bastion's only cluster
    namespace: str
    pod: str
    container: str  # "" = the pod's only container
    mode: str
    image: str  # "" = the one image policy approves there
    reason: str
    run_as_user: int
    privileged: bool
    add_capabilities: list[str]


@dataclass(frozen=True)
class DebugProgress(Message):
    """Broker → console: a step of starting the debug shell, for the operator to watch."""

    type: ClassVar[str] = "progress"
    message: str


@dataclass(frozen=True)
class DebugRefused(Message):
    """Broker → console: the debug did not start (one sentence); nothing of it is left."""

    type: ClassVar[str] = "refused"
    message: str


@dataclass(frozen=True)
class Handover(Message):
    """Broker → console: the shell is ready; restore the terminal and exit now, the broker
    attaches the operator's terminal to the debug container."""

    type: ClassVar[str] = "handover"
    message: str


@dataclass(frozen=True)
class DebugEnded(Message):
    """Broker → the next console: how the last debug shell ended, shown on arrival."""

    type: ClassVar[str] = "ended"
    target: str
    exit_status: int
    message: str


_TYPES: dict[str, type[Message]] = {
    cls.type: cls
    for cls in (Notice, DebugRequest, DebugProgress, DebugRefused, Handover, DebugEnded)
}
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "float": (int, float),
    "int": (int,),
    "bool": (bool,),
    "list[str]": (list,),
}
_MAX_ITEMS = 64


def encode(message: Message) -> bytes:
    line = json.dumps({"type": message.type, **asdict(message)}, separators=(",", ":"))
    data = line.encode() + b"\n"
    if len(data) > MAX_LINE:
        raise ProtocolError(f"a {message.type} message of {len(data)} bytes is too long")
    return data


def decode(line: bytes) -> Message:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"a line of {len(line)} bytes is longer than {MAX_LINE}")
    try:
        data: Any = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not a JSON line: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError("a message is a JSON object with a string 'type'")
    cls = _TYPES.get(data.pop("type"))
    if cls is None:
        raise ProtocolError(f"unknown message type; known: {', '.join(sorted(_TYPES))}")
    expected = {f.name: f.type for f in fields(cls)}
    if set(data) != set(expected):
        raise ProtocolError(
            f"{cls.type} takes exactly the fields {', '.join(sorted(expected))}, "
            f"got {', '.join(sorted(data)) or 'none'}"
        )
    for name, annotation in expected.items():
        value = data[name]
        allowed = _PY_TYPES[str(annotation)]
        if isinstance(value, bool) and bool not in allowed:
            raise ProtocolError(f"{cls.type}.{name} has the wrong type")
        if not isinstance(value, allowed):
            raise ProtocolError(f"{cls.type}.{name} has the wrong type")
        if isinstance(value, list) and (
            len(value) > _MAX_ITEMS or not all(isinstance(item, str) for item in value)
        ):
            raise ProtocolError(f"{cls.type}.{name} must be a short list of strings")
    return cls(**data)
