"""``bastion check-config PATH``: exit 0 with a one-line summary (and a line per warning),
or 2 with every problem."""

from __future__ import annotations

from pathlib import Path

from bastion.config import load_config, summary
from bastion.config.approval_checks import approval_warnings


def run(path: Path) -> int:
    config = load_config(path, check_files=True)
    print(summary(path, config))
    for warning in approval_warnings(config):
        print(f"warning: {path}: {warning}")
    return 0
