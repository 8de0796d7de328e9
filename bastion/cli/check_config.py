"""``bastion check-config PATH``: exit 0 with a one-line summary (and a ``warning:`` line for
each mistake that leaves the config valid but something unusable), or 2 with every problem."""

from __future__ import annotations

from pathlib import Path

from bastion.breakglass.checks import break_glass_warnings
from bastion.config import load_config, summary


def run(path: Path) -> int:
    config = load_config(path, check_files=True)
    print(summary(path, config))
    for warning in break_glass_warnings(config):
        print(f"warning: {warning}")
    return 0
