"""The ``guard`` section: which rules watch every session, and what each does when it trips.

::

    guard:
      output_volume: {bytes: 104857600, window: 1m, action: end}
      sensitive_paths:                 # default: these globs, action warn
        action: alert
        paths: ["/var/run/secrets/*", "/run/secrets/*", "/proc/*/environ", ...]
      denied_commands:
        action: end
        patterns: [{glob: "curl * -T *"}, {regex: "\\bbase64\\b.*\\|"}]
      new_source: {action: end}
      failures_from_source: {count: 10, window: 10m, action: end}

A rule left out is off, except ``sensitive_paths``, which is on (``warn``) with the default
globs. Every rule takes every action; what each means for the login rules is in
:mod:`bastion.ssh.login_watch`. ``alert`` needs ``break_glass.alerts`` (the destinations are
shared); that check is in :mod:`bastion.config.loader`. The rules themselves are
:mod:`bastion.guard_rules`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from bastion.durations import parse_duration
from bastion.guard_rules import Action, CommandRules, DenyPattern

__all__ = ["DEFAULT_SENSITIVE_PATHS", "Guard"]

DEFAULT_SENSITIVE_PATHS = (
    "/var/run/secrets/*",
    "/run/secrets/*",
    "/proc/*/root/var/run/secrets/*",
    "/proc/*/root/run/secrets/*",
    "/proc/*/environ",
)

_Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutputVolume(_Section):
    bytes: int = Field(ge=1024)
    window: _Duration = timedelta(minutes=1)
    action: Action

    @model_validator(mode="after")
    def _whole_seconds(self) -> OutputVolume:
        if self.window < timedelta(seconds=1):
            raise ValueError("output_volume.window must be at least 1s")
        return self


class SensitivePaths(_Section):
    action: Action = Action.WARN
    paths: list[str] = Field(default=list(DEFAULT_SENSITIVE_PATHS), min_length=1)

    @model_validator(mode="after")
    def _absolute(self) -> SensitivePaths:
        for path in self.paths:
            if not path.startswith("/"):
                raise ValueError(f"sensitive path {path!r} must be absolute (start with /)")
        return self


class Pattern(_Section):
    glob: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Pattern:
        if (self.glob is None) == (self.regex is None):
            raise ValueError("a denied command is either 'glob' or 'regex', not both or neither")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        return self


class DeniedCommands(_Section):
    action: Action
    patterns: list[Pattern] = Field(min_length=1)


class NewSource(_Section):
    action: Action


class FailuresFromSource(_Section):
    count: int = Field(ge=2)
    window: _Duration = timedelta(minutes=10)
    action: Action


class Guard(_Section):
    output_volume: OutputVolume | None = None
    sensitive_paths: SensitivePaths | None = SensitivePaths()
    denied_commands: DeniedCommands | None = None
    new_source: NewSource | None = None
    failures_from_source: FailuresFromSource | None = None

    def actions(self) -> set[Action]:
        """Every action some rule takes."""
        rules = (
            self.output_volume,
            self.sensitive_paths,
            self.denied_commands,
            self.new_source,
            self.failures_from_source,
        )
        return {rule.action for rule in rules if rule is not None}

    def command_rules(self) -> CommandRules:
        sensitive, denied = self.sensitive_paths, self.denied_commands
        return CommandRules(
            sensitive_paths=tuple(sensitive.paths) if sensitive else (),
            sensitive_action=sensitive.action if sensitive else None,
            deny=tuple(
                DenyPattern(p.glob, re.compile(p.regex) if p.regex is not None else None)
                for p in (denied.patterns if denied else [])
            ),
            deny_action=denied.action if denied else None,
        )
