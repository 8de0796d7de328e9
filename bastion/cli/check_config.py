"""``bastion check-config PATH``: exit 0 with a one-line summary, the guard's rules (one
``guard:`` line each), and a ``warning:`` line for each mistake that leaves the config valid
but something unusable; or 2 with every problem."""

from __future__ import annotations

from pathlib import Path

from bastion.breakglass.checks import break_glass_warnings
from bastion.cli.user import as_service_user, service_identity
from bastion.config import Config, load_config, summary
from bastion.config.approval_checks import approval_warnings
from bastion.config.guard_checks import guard_lines, guard_warnings
from bastion.errors import BastionError
from bastion.keys.inventory import key_warnings


def run(path: Path) -> int:
    config = load_config(path, check_files=True)
    print(summary(path, config))
    for line in guard_lines(config):
        print(line)
    warnings = [
        *_key_warnings(config),
        *approval_warnings(config),
        *break_glass_warnings(config),
        *guard_warnings(config),
    ]
    for warning in warnings:
        print(f"warning: {path}: {warning}")
    return 0


def _key_warnings(config: Config) -> list[str]:
    # The key files belong to the service user, and are read as it (like the server does).
    try:
        with as_service_user(service_identity(config)):
            return key_warnings(config)
    except BastionError as exc:
        return [f"the keys' ages were not checked: {exc.message}"]
