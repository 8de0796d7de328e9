"""``bastion breakglass issue | codes | report``: the emergency accounts' codes, and what
each use of them did.

* ``issue NAME --count 5`` makes a new batch of one-time codes for a break-glass account,
  prints them once, and keeps only their keyed digests. A new batch revokes what is left of
  the previous one. Audited (the count and the batch, never a code) before it takes effect.
* ``codes NAME`` says how many codes are left, by count only.
* ``report SESSION [--json] [--key FILE]`` prints the incident record of a break-glass
  session: who, when, why, from where, what was touched, the commands' output (with the
  auditors' private key), the wipe, the alerts, the code burnt. Reading it is audited.

Like ``bastion user``, these act as the service user on the bastion's state (run as root
or as that user); the auditors' key is read as the invoking user.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bastion.breakglass.code_key import load_or_create_code_key
from bastion.breakglass.codes import MAX_BATCH, code_digest, new_batch_id, new_codes
from bastion.breakglass.report import (
    debug_recordings,
    incident_record,
    read_output,
    read_trail,
    render,
)
from bastion.cli.recordings import read_auditor_key
from bastion.cli.user import as_service_user, invoking_actor, open_audit, service_identity
from bastion.config import Config, load_config
from bastion.config.models import User
from bastion.errors import BastionError
from bastion.recording.key_files import read_signing_public_key

__all__ = ["codes", "issue", "report"]


def _account(config: Config, name: str) -> User:
    user = next((u for u in config.users if u.name == name), None)
    if user is None:
        raise BastionError(
            f"no user named {name!r} in {config.source}",
            hint="bastion user list shows the users",
        )
    if not user.break_glass:
        raise BastionError(
            f"{name} is not a break-glass account, so it gets no break-glass codes",
            hint="mark it with 'break_glass: true' in its user entry first",
        )
    return user


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------------------- issue
def issue(config_path: Path, name: str, count: int, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if not 1 <= count <= MAX_BATCH:
        raise BastionError(f"--count must be from 1 to {MAX_BATCH}, not {count}")
    config = load_config(config_path, check_files=False)
    _account(config, name)
    service = service_identity(config)
    actor, extra = invoking_actor()
    batch = new_batch_id()
    fresh = new_codes(count)
    with as_service_user(service):
        audit = open_audit(config)
        try:
            key = load_or_create_code_key(config)
            store = config.state_stores().break_glass_codes()
            try:

                def record(revoked: int) -> None:
                    # Inside the store's transaction: no event, no new codes.
                    audit.record_now(
                        "breakglass.codes_issued",
                        actor=actor,
                        outcome="ok",
                        user=name,
                        batch=batch,
                        count=count,
                        revoked=revoked,
                        **extra,
                    )

                revoked = store.issue(
                    name,
                    batch,
                    [code_digest(key, name, code) for code in fresh],
                    now=time.time(),
                    before_commit=record,
                )
            finally:
                store.close()
        finally:
            audit.close()
    print(f"Issued {count} break-glass codes for {name} (batch {batch}).", file=out)
    if revoked:
        print(
            f"Issuing a new batch revokes the old one: its {revoked} unused code(s) no longer "
            "work.",
            file=out,
        )
    else:
        print("No earlier code was left to revoke.", file=out)
    print("Each works once, after the account's SSH key and TOTP code. Seal them now:", file=out)
    print(file=out)
    for code in fresh:
        print(f"  {code}", file=out)
    print(file=out)
    print(
        "They will not be shown again: the bastion keeps only keyed digests of them. "
        f"'bastion breakglass codes {name}' shows how many are left.",
        file=out,
    )
    return 0


# ---------------------------------------------------------------------------- codes
def codes(config_path: Path, name: str, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = load_config(config_path, check_files=False)
    _account(config, name)
    with as_service_user(service_identity(config)):
        try:
            store = config.state_stores().break_glass_codes(read_only=True)
        except FileNotFoundError:
            state, uses = None, []
        else:
            try:
                state, uses = store.batch(name), store.uses(name)
            finally:
                store.close()
    if state is None:
        print(
            f"{name}: no codes issued; issue a batch with: bastion breakglass issue {name} "
            "--count 5",
            file=out,
        )
        return 0
    line = (
        f"{name}: {state.remaining} of {state.issued} codes left (batch {state.batch}, issued "
        f"{_when(state.issued_at)})"
    )
    mine = [u for u in uses if u.batch == state.batch]
    if mine:
        line += f"; {len(mine)} used, the last at {_when(mine[-1].used_at)}"
    print(line, file=out)
    if state.remaining == 0:
        print(f"warning: {name} cannot break the glass any more; issue a new batch", file=out)
    return 0


# ---------------------------------------------------------------------------- report
def report(
    config_path: Path,
    session: str,
    *,
    as_json: bool = False,
    key_file: Path | None = None,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    config = load_config(config_path, check_files=False)
    # As the invoking user: the key is the auditor's own, and the service user need not
    # be able to read it.
    key = read_auditor_key(key_file) if key_file is not None else None
    actor, extra = invoking_actor()
    with as_service_user(service_identity(config)):
        trail = read_trail(config.paths.audit_log, session)
        user = next((e.get("actor") for e in trail.events if e.get("session") == session), "")
        try:
            store = config.state_stores().break_glass_codes(read_only=True)
        except FileNotFoundError:
            batch, uses = None, []
        else:
            try:
                batch, uses = store.batch(str(user)), store.uses(str(user))
            finally:
                store.close()
        record = incident_record(session, trail, batch=batch, uses=uses)
        recordings = debug_recordings(record)
        audit = open_audit(config)
        try:
            # Audit before access: the record holds what the operator's commands printed.
            audit.record_now(
                "breakglass.report",
                actor=actor,
                outcome="allowed",
                session=session,
                user=record["user"],
                with_output=key is not None,
                recordings=recordings,
                **extra,
            )
        finally:
            audit.close()
        outputs: list[dict[str, Any]] = []
        note = ""
        if key is not None:
            trusted = read_signing_public_key(config.paths.state_dir)
            outputs = [
                read_output(config.paths.recordings_dir, r, key, trusted) for r in recordings
            ]
            if trusted is None and recordings:
                note = (
                    "The recordings' signatures were not checked against this bastion's key "
                    "(it has none in its state directory)."
                )
        elif recordings:
            note = (
                f"The commands' output is in {len(recordings)} encrypted recording(s), not "
                "read: pass --key with the auditors' private key to include it."
            )
    if as_json:
        document = {**record, "outputs": outputs, "outputs_read": key is not None}
        json.dump(document, out, ensure_ascii=False, indent=2)
        out.write("\n")
    else:
        print(render(record, outputs, note), file=out)
    return 0
