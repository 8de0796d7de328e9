"""``bastion check-config PATH``: exit 0 with a one-line summary, or 2 with every problem."""

from __future__ import annotations

from pathlib import Path

from bastion.config import load_config, summary


def run(path: Path) -> int:
    config = load_config(path, check_files=True)
    print(summary(path, config))
    return 0
