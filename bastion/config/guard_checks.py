"""What ``bastion check-config`` says about the ``guard`` section: one line per rule that is
on (what trips it, what it does), and warnings for settings that load but cannot do what
they seem to:

* a shell rule (``output_volume``, ``sensitive_paths``, ``denied_commands``) where no grant
  and no break-glass section gives a shell: it can never fire;
* ``failures_from_source.count`` above what the front door's throttle lets one address try
  within the window: it can never fire;
* ``sensitive_paths`` turned off: reads of service-account tokens go unwatched.

An ``alert`` rule without ``break_glass.alerts`` does not load at all (the loader's check).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.durations import format_duration
from bastion.policy import Scope

if TYPE_CHECKING:
    from bastion.config.models import Config

__all__ = ["guard_lines", "guard_warnings", "most_failures_from_one_source"]


def guard_lines(config: Config) -> list[str]:
    """``guard: RULE: what trips it -> action``, one per rule that is on."""
    guard = config.guard
    lines: list[str] = []
    if guard.output_volume is not None:
        volume = guard.output_volume
        lines.append(
            f"output_volume: more than {volume.bytes} bytes of shell output within "
            f"{format_duration(volume.window)} -> {volume.action}"
        )
    if guard.sensitive_paths is not None:
        paths = guard.sensitive_paths.paths
        lines.append(
            f"sensitive_paths: a command naming one of {len(paths)} path glob(s) "
            f"({', '.join(paths)}) -> {guard.sensitive_paths.action}"
        )
    if guard.denied_commands is not None:
        patterns = guard.denied_commands.patterns
        lines.append(
            f"denied_commands: a command matching one of {len(patterns)} pattern(s) -> "
            f"{guard.denied_commands.action}"
        )
    if guard.new_source is not None:
        action = guard.new_source.action
        more = (
            " (the login is ended; allow an address with: bastion user allow-source USER ADDRESS)"
            if action == "end"
            else ""
        )
        lines.append(f"new_source: a login from an address new for its user -> {action}{more}")
    if guard.failures_from_source is not None:
        rule = guard.failures_from_source
        window = format_duration(rule.window)
        more = f" (the address is refused for {window})" if rule.action == "end" else ""
        lines.append(
            f"failures_from_source: {rule.count} failed logins from one address within "
            f"{window} -> {rule.action}{more}"
        )
    if not lines:
        return ["guard: no rule is on"]
    if "alert" in guard.actions() and config.break_glass is not None:
        alerts = config.break_glass.alerts
        where = [
            *([f"webhook {alerts.webhook.url}"] if alerts.webhook is not None else []),
            *([f"syslog {alerts.syslog.address}"] if alerts.syslog is not None else []),
        ]
        lines.append(f"alerts go to break_glass.alerts: {', '.join(where)}")
    return [f"guard: {line}" for line in lines]


def most_failures_from_one_source(config: Config) -> int:
    """The most failed logins one address can make within ``failures_from_source.window``:
    the throttle admits ``connections_per_source`` connections per ``connection_window``,
    and a connection ends after ``code_attempts_per_connection`` failed codes."""
    rule = config.guard.failures_from_source
    if rule is None:
        return 0
    limits = config.limits
    windows = int(rule.window / limits.connection_window) + 1
    return limits.connections_per_source * windows * limits.code_attempts_per_connection


def guard_warnings(config: Config) -> list[str]:
    guard = config.guard
    found: list[str] = []
    shell = config.break_glass is not None or any(Scope.SHELL in g.scopes for g in config.grants)
    shell_rules = [
        name
        for name, rule in (
            ("output_volume", guard.output_volume),
            ("sensitive_paths", guard.sensitive_paths),
            ("denied_commands", guard.denied_commands),
        )
        if rule is not None
    ]
    if shell_rules and not shell:
        found.append(
            f"guard.{', guard.'.join(shell_rules)} can never fire: no grant has scope 'shell' "
            "and there is no break_glass section, so no debug shell is ever watched"
        )
    rule = guard.failures_from_source
    if rule is not None:
        most = most_failures_from_one_source(config)
        if rule.count > most:
            found.append(
                f"guard.failures_from_source.count {rule.count} can never be reached: the "
                f"front door lets one address fail at most {most} logins within "
                f"{format_duration(rule.window)} (limits.connections_per_source x "
                "limits.code_attempts_per_connection per limits.connection_window); lower "
                "the count or lengthen the window"
            )
    if guard.sensitive_paths is None:
        found.append(
            "guard.sensitive_paths is off: commands reading service-account tokens or other "
            "processes' environments are not watched; remove 'sensitive_paths: null' to get "
            "the default (warn)"
        )
    return found
