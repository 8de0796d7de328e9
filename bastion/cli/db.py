"""``bastion db migrate``: bring the state database's schema up to date.

The server migrates on start as well; this command is for a deployment that migrates once,
before rolling out replicas of a new release (and for seeing which version each part is at).
A database migrated by a newer release is refused, never written to.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from bastion.cli.user import as_service_user, service_identity
from bastion.config import load_config
from bastion.state.stores import StateStores

__all__ = ["migrate"]


def migrate(config_path: Path, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = load_config(config_path)
    stores = StateStores(config.paths.state_dir, config.state.postgres)
    with as_service_user(service_identity(config)):
        versions = stores.migrate()
    print(f"state schema up to date ({stores.description}):", file=out)
    for component, version in versions.items():
        print(f"  {component:<18} version {version}", file=out)
    return 0
