"""``bastion audit verify``: check an audit log's hash chain and its head record."""

from __future__ import annotations

import sys
from pathlib import Path

from bastion.audit.chain import verify as verify_chain
from bastion.audit.log import head_path, read_head
from bastion.errors import BastionError


def verify(path: Path, *, head: Path | None, no_head: bool) -> int:
    head_file = head or head_path(path)
    try:
        recorded = None if no_head else read_head(head_file)
    except ValueError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    try:
        with path.open("rb") as log:
            if recorded is None and not no_head and log.read(1):
                print(
                    f"FAILED: {path}: the head file {head_file} is missing, so a truncated "
                    "tail cannot be ruled out; pass --head FILE, or --no-head to check the "
                    "chain alone",
                    file=sys.stderr,
                )
                return 1
            log.seek(0)
            verdict = verify_chain(log, recorded)
    except OSError as exc:
        raise BastionError(f"{path}: cannot read the audit log: {exc.strerror}") from None
    if verdict.ok:
        print(verdict.message)
        return 0
    print(f"FAILED: {path}: {verdict.message}", file=sys.stderr)
    return 1
