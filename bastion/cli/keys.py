"""``bastion keys list`` and ``bastion keys rotate``: the bastion's keys, their age, their
rotation.

* ``list [--json]``: every key (the SSH host keys, the checkpoint signing key, the recording
  signing key, the recordings' recipient) with its fingerprint, state and age.
* ``rotate --kind host [--overlap D]`` offers a new host key next to the old one; ``rotate
  --kind host --finish`` retires the old one (a running bastion does it by itself when the
  overlap has passed).
* ``rotate --kind checkpoint`` / ``recording-signing``: a new signing key at once.
* ``rotate --kind recording-recipient --recipient KEY``: new recordings go to KEY.
* ``rotate --all [--compromised] [--recipient KEY]``: every key. With ``--compromised``:
  logins are refused first, every live session is ended, no key gets an overlap, and logins
  are allowed again only when every key is replaced.

Run as root or as the service user: the key files and the audit log belong to it. Every
rotation is an audit event written before the change it records (see bastion/keys/rotate.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from bastion.audit.log import AuditLog
from bastion.cli.user import as_service_user, invoking_actor, service_identity
from bastion.config import Config, load_config
from bastion.durations import parse_duration
from bastion.errors import BastionError
from bastion.keys.inventory import KeyRow, inventory
from bastion.keys.lockdown import lift, lockdown
from bastion.keys.model import KeyKind, format_age
from bastion.keys.recipients import current_recipient, read_recipient, recipient_fingerprint
from bastion.keys.rotate import (
    KeyContext,
    Rotated,
    finish_host_rotation,
    replace_host_key,
    rotate_checkpoint_key,
    rotate_recipient,
    rotate_recording_signing_key,
    start_host_rotation,
)
from bastion.terminal_text import printable

__all__ = ["add_commands", "list_keys", "rotate"]

_WAIT_FOR_SESSIONS = 25.0


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``keys`` command and its actions, for the ``bastion`` parser."""
    p = commands.add_parser("keys", help="the bastion's keys: list them, rotate them")
    actions = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    k = actions.add_parser("list", help="every key with its fingerprint, state and age")
    k.add_argument("--json", action="store_true", help="one JSON object per key, in a list")
    config_option(k)
    k.set_defaults(run=lambda a: list_keys(a.config, as_json=a.json))

    r = actions.add_parser("rotate", help="replace a key (audited; the server follows at once)")
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--kind", choices=[str(k) for k in KeyKind], help="the key to replace")
    which.add_argument("--all", action="store_true", help="replace every key")
    r.add_argument(
        "--finish",
        action="store_true",
        help="host: retire the old host key now instead of at the end of the overlap",
    )
    r.add_argument(
        "--overlap",
        metavar="DURATION",
        help="host: how long the new key is offered next to the old one (default: "
        "keys.host_key_overlap of the config, 7d)",
    )
    r.add_argument(
        "--recipient",
        metavar="KEY|FILE",
        help="the new auditors' public key (x25519:..., or the NAME.pub of 'bastion "
        "recordings keygen'), for recording-recipient and --all",
    )
    r.add_argument(
        "--compromised",
        action="store_true",
        help="the old key is (or may be) known to someone else: no overlap, marked in the "
        "records; with --all also ends every session and refuses logins until done",
    )
    config_option(r)
    r.set_defaults(
        run=lambda a: rotate(
            a.config,
            kind=KeyKind(a.kind) if a.kind else None,
            every=a.all,
            finish=a.finish,
            overlap=a.overlap,
            recipient=a.recipient,
            compromised=a.compromised,
        )
    )


# ---------------------------------------------------------------------------- list
def list_keys(config_path: Path, *, as_json: bool = False, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = load_config(config_path, check_files=False)
    with as_service_user(service_identity(config)):
        rows = inventory(config)
    now = time.time()
    if as_json:
        json.dump([row.to_json(now) for row in rows], out, indent=1)
        out.write("\n")
        return 0
    table: list[tuple[str, ...]] = [("KIND", "ALGORITHM", "FINGERPRINT", "STATE", "AGE", "NOTE")]
    table += [_cells(row, now, config) for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for cells in table:
        line = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False))
        print(printable(f"{line}  {cells[-1]}".rstrip()), file=out)
    return 0


def _cells(row: KeyRow, now: float, config: Config) -> tuple[str, ...]:
    age = row.age(now)
    shown = "?" if age is None else format_age(age)
    note = row.note
    if age is not None and row.state != "retired" and age > config.keys.max_age.total_seconds():
        note = f"older than keys.max_age ({format_age(config.keys.max_age.total_seconds())}); " + (
            note
        )
    if row.retired_at is not None:
        note = f"retired {format_age(now - row.retired_at)} ago" + (f"; {note}" if note else "")
    return (str(row.kind), row.algorithm, row.fingerprint, str(row.state), shown, note)


# ---------------------------------------------------------------------------- rotate
@dataclass(frozen=True)
class _Request:
    """What ``keys rotate`` was asked, checked: ``kind`` None means every key."""

    kind: KeyKind | None
    finish: bool
    overlap: timedelta
    recipient: str | None
    compromised: bool


def _request(
    config: Config,
    *,
    kind: KeyKind | None,
    finish: bool,
    overlap: str | None,
    recipient: str | None,
    compromised: bool,
) -> _Request:
    """BastionError for a combination that does not make sense, before anything is opened
    or changed."""
    hosts = kind in (None, KeyKind.HOST)
    if finish and (kind != KeyKind.HOST or compromised):
        raise BastionError("--finish finishes a host key rotation: use it with --kind host alone")
    if overlap is not None and (not hosts or finish or compromised):
        raise BastionError(
            "--overlap applies to a new host key offered next to the old one: use it with "
            "--kind host or --all, without --finish or --compromised"
        )
    try:
        length = parse_duration(overlap) if overlap is not None else config.keys.host_key_overlap
    except ValueError as exc:
        raise BastionError(f"--overlap: {exc}") from None
    wants_recipient = kind == KeyKind.RECORDING_RECIPIENT or (
        kind is None and config.recording is not None
    )
    if recipient is not None and not wants_recipient:
        raise BastionError(
            "--recipient is the new auditors' key: use it with --kind recording-recipient or "
            "--all (and a config with a recording section)"
        )
    if wants_recipient and recipient is None:
        raise BastionError(
            "give the new auditors' public key with --recipient (its private key never comes "
            "to the bastion)",
            hint="make a key pair on an auditor's machine: bastion recordings keygen NAME; "
            "then pass NAME.pub",
        )
    line = read_recipient(recipient) if recipient is not None else None
    return _Request(kind, finish, length, line, compromised)


def rotate(
    config_path: Path,
    *,
    kind: KeyKind | None,
    every: bool = False,
    finish: bool = False,
    overlap: str | None = None,
    recipient: str | None = None,
    compromised: bool = False,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    config = load_config(config_path, check_files=False)
    if (kind is None) != every:
        raise BastionError("say which key to rotate: --kind KIND, or --all")
    request = _request(
        config,
        kind=kind,
        finish=finish,
        overlap=overlap,
        recipient=recipient,
        compromised=compromised,
    )
    service = service_identity(config)
    actor, extra = invoking_actor()
    with as_service_user(service):
        # Opened first: a log that cannot be written refuses the rotation before it starts.
        audit = AuditLog.for_config(config, fsync="event")
        audit.open()
        try:

            def record(event: str, **fields: Any) -> object:
                actor_name = fields.pop("actor")
                outcome = fields.pop("outcome")
                return audit.record_now(event, actor=actor_name, outcome=outcome, **fields)

            ctx = KeyContext(config, record, actor, extra)
            if request.kind is None:
                done = _rotate_all(ctx, audit, request, out)
            else:
                done = [_rotate_one(ctx, audit, request.kind, request)]
        finally:
            audit.close()
    for rotated in done:
        for line in rotated.lines:
            print(f"{rotated.kind}: {line}", file=out)
    return 0


def _rotate_one(ctx: KeyContext, audit: AuditLog, kind: KeyKind, request: _Request) -> Rotated:
    compromised = request.compromised
    if kind == KeyKind.HOST:
        if request.finish:
            done = finish_host_rotation(ctx)
            if done is None:  # only an automatic finish finds nothing without saying so
                raise BastionError("no host key rotation is under way")
            return done
        if compromised:
            return replace_host_key(ctx, compromised=True)
        return start_host_rotation(ctx, request.overlap)
    if kind == KeyKind.CHECKPOINT:
        return rotate_checkpoint_key(ctx, audit, compromised=compromised)
    if kind == KeyKind.RECORDING_SIGNING:
        return rotate_recording_signing_key(ctx, compromised=compromised)
    if request.recipient is None:
        raise BastionError("give the new auditors' public key with --recipient")
    return rotate_recipient(ctx, request.recipient, compromised=compromised)


def _rotate_all(ctx: KeyContext, audit: AuditLog, request: _Request, out: TextIO) -> list[Rotated]:
    state_dir = ctx.state_dir
    compromised = request.compromised
    if compromised:
        ctx.record("keys.compromise_rotation_started", "alert")
        lockdown(state_dir, since=ctx.clock(), actor=ctx.actor)
        print("logins are refused until every key is replaced", file=out)
        _end_sessions(ctx, out)
    done = [
        _rotate_one(ctx, audit, KeyKind.HOST, request),
        rotate_checkpoint_key(ctx, audit, compromised=compromised),
        rotate_recording_signing_key(ctx, compromised=compromised),
    ]
    settings = ctx.config.recording
    recipient = request.recipient
    if recipient is not None and settings is not None:
        current = current_recipient(state_dir, settings.auditor_public_key)
        if recipient_fingerprint(current) == recipient_fingerprint(recipient):
            # A compromise rotation run again after it stopped half-way: already done.
            print(
                f"recording-recipient: {recipient_fingerprint(recipient)} is already the recipient",
                file=out,
            )
        else:
            done.append(rotate_recipient(ctx, recipient, compromised=compromised))
    if compromised:
        ctx.record(
            "keys.compromise_rotation_finished",
            "ok",
            keys={str(r.kind): r.new for r in done},
        )
        lift(state_dir)
        print("every key is replaced: logins are allowed again", file=out)
    return done


def _end_sessions(ctx: KeyContext, out: TextIO) -> None:
    """Ask every live session's worker to end it, and wait (a while) until they have."""
    journal = ctx.config.state_stores().journal()
    try:
        asked = []
        for session in journal.live_sessions():
            ctx.record(
                "session.kill_requested",
                "requested",
                session=session.id,
                user=session.user,
                reason="key compromise rotation",
            )
            if journal.request_kill(session.id):
                asked.append(session.id)
        deadline = time.monotonic() + _WAIT_FOR_SESSIONS
        left = list(asked)
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = [s for s in left if (r := journal.session(s)) is not None and not r.closed]
    finally:
        journal.close()
    print(f"ended {len(asked) - len(left)} live session(s)", file=out)
    if left:
        print(
            f"{len(left)} session(s) did not close within {_WAIT_FOR_SESSIONS:.0f} s (their "
            f"worker is gone?): {', '.join(left)}; the reaper of the next start wipes them",
            file=out,
        )
