"""The session guard's rules: what trips them, given what was seen. Pure: no I/O, time passed in.

Five rules, each with its own action (:class:`Action`: ``warn`` tells the operator, ``alert``
sends to the break-glass alert destinations, ``end`` ends and wipes the session):

* ``output_volume``: more than ``bytes`` of shell output within ``window`` (bulk copying out
  through the terminal). :class:`OutputMeter` counts per second, so its memory is one entry
  per second of the window, whatever the throughput; it trips once per debug shell.
* ``sensitive_path``: a command line naming a path that matches one of the globs (``*``
  crosses ``/``): service-account tokens, other processes' environments.
* ``denied_command``: a command line matching a glob (the whole line) or a regex (anywhere).
* ``new_source``: a login from an address never seen before for that user.
* ``failures_from_source``: failed logins from one address, across all users, reaching
  ``count`` within ``window``.

These read what the shell reported (:mod:`bastion.command_marker`) and what the front door
saw. They are tripwires for the honest mistake and the careless intruder, not a sandbox: a
path built at run time (``cat $(printf '/var/run/%s' secrets)/...``), a relative path after a
``cd``, or a shell that no longer reports commands go past them (docs/guardrails.md).
"""

from __future__ import annotations

import posixpath
import re
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

__all__ = [
    "Action",
    "CommandRules",
    "DenyPattern",
    "OutputMeter",
    "Trigger",
    "check_command",
    "check_failures",
    "check_source",
    "paths_in",
]


class Action(StrEnum):
    WARN = "warn"
    ALERT = "alert"
    END = "end"


@dataclass(frozen=True)
class Trigger:
    """One rule tripped: its name, what to do, and what was seen (not yet redacted)."""

    rule: str
    action: Action
    evidence: str


@dataclass(frozen=True)
class DenyPattern:
    """A denied command: ``glob`` matches the whole command line, ``regex`` anywhere in it."""

    glob: str | None = None
    regex: re.Pattern[str] | None = None

    def matches(self, command: str) -> bool:
        if self.glob is not None:
            return fnmatchcase(command, self.glob)
        return self.regex is not None and self.regex.search(command) is not None

    @property
    def text(self) -> str:
        return self.glob if self.glob is not None else self.regex.pattern if self.regex else ""


@dataclass(frozen=True)
class CommandRules:
    sensitive_paths: tuple[str, ...] = ()
    sensitive_action: Action | None = None
    deny: tuple[DenyPattern, ...] = ()
    deny_action: Action | None = None


# What separates words and paths in a command line, for the purpose of finding paths.
_SEPARATORS = re.compile(r"[\s<>|;&()'\"`=,]+")


def paths_in(command: str) -> list[str]:
    """The absolute paths a command line names, normalised (``//``, ``/./``, ``/..``)."""
    # normpath keeps a leading "//" (POSIX leaves its meaning open); Linux does not.
    return [
        "/" + posixpath.normpath(word).lstrip("/")
        for word in _SEPARATORS.split(command)
        if word.startswith("/")
    ]


def check_command(rules: CommandRules, command: str) -> list[Trigger]:
    """The rules a reported command line trips (at most one trigger per rule)."""
    triggers: list[Trigger] = []
    if rules.sensitive_action is not None and rules.sensitive_paths:
        for path in paths_in(command):
            hit = next((g for g in rules.sensitive_paths if fnmatchcase(path, g)), None)
            if hit is not None:
                triggers.append(
                    Trigger("sensitive_path", rules.sensitive_action, f"{path} (matches {hit})")
                )
                break
    if rules.deny_action is not None:
        denied = next((p for p in rules.deny if p.matches(command)), None)
        if denied is not None:
            triggers.append(
                Trigger("denied_command", rules.deny_action, f"{command} (matches {denied.text})")
            )
    return triggers


class OutputMeter:
    """Output bytes in a sliding window of whole seconds; trips once past ``limit``."""

    def __init__(self, limit: int, window: float, action: Action) -> None:
        if limit < 1 or window < 1:
            raise ValueError("an output limit needs at least 1 byte and 1 second")
        self._limit = limit
        self._window = int(window)
        self._action = action
        self._seconds: deque[list[int]] = deque()  # [second, bytes], oldest first
        self._total = 0
        self.tripped = False

    def add(self, size: int, now: float) -> Trigger | None:
        """Count ``size`` bytes at monotonic time ``now``; the trigger the first time the
        window holds more than the limit."""
        second = int(now)
        seconds = self._seconds
        if seconds and seconds[-1][0] == second:
            seconds[-1][1] += size
        else:
            seconds.append([second, size])
        self._total += size
        while seconds[0][0] <= second - self._window:
            self._total -= seconds.popleft()[1]
        if self.tripped or self._total <= self._limit:
            return None
        self.tripped = True
        return Trigger(
            "output_volume",
            self._action,
            f"{self._total} bytes of output within {self._window} s (limit {self._limit})",
        )


def check_source(action: Action | None, user: str, source: str, known: bool) -> Trigger | None:
    """A login from an address this user never logged in from (``known`` is False)."""
    if action is None or known:
        return None
    return Trigger("new_source", action, f"{user} logged in from {source} for the first time")


def check_failures(
    action: Action | None, source: str, failures: int, users: int, limit: int
) -> Trigger | None:
    """``failures`` failed logins (for ``users`` distinct users) from one address within the
    window; trips when it reaches ``limit``, once (the caller passes the count as it grows)."""
    if action is None or failures != limit:
        return None
    return Trigger(
        "failures_from_source",
        action,
        f"{failures} failed logins from {source} for {users} user(s) within the window",
    )
