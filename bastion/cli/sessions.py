"""``bastion sessions list`` and ``bastion sessions kill ID``.

Both read the state journal that every worker writes (on PostgreSQL, every replica's).
``list`` names each session's replica and whether it is alive (its heartbeat is younger than
``state.replica_dead_after``): a dead replica's sessions are the reaper leader's to close.

A kill is a request in the journal, with a mandatory reason (audited first, then noted
beside the journal): the worker that owns the session sees it within about a second and
wipes the session as for any other ending (the operator is told who ended it and why).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from bastion.cli.user import as_service_user, invoking_actor, open_audit, service_identity
from bastion.config import Config, load_config
from bastion.errors import BastionError
from bastion.oversight.watch_point import read_watchers
from bastion.state.liveness import ReplicaRecord

__all__ = ["kill", "list_sessions"]

_WAIT_FOR_WIPE = 25.0
MIN_REASON = 8


def _journal_path(config: Config) -> Path:
    return config.paths.state_dir / "journal.db"


def _when(moment: float | None, now: float) -> str:
    if moment is None:
        return "-"
    stamp = datetime.fromtimestamp(moment, UTC).strftime("%H:%M:%S")
    left = moment - now
    return f"{stamp} ({int(left // 60)}m{int(left % 60):02d}s)" if left > 0 else f"{stamp} (due)"


def _alive(replica: ReplicaRecord | None, now: float, dead_after: float) -> str:
    """ "yes", or "no (last seen Ns ago)": its sessions are reaped by the leader; "-" when
    the session or its replica predates heartbeats."""
    if replica is None:
        return "-"
    if replica.alive(now, dead_after):
        return "yes"
    return f"no (last seen {int(now - replica.heartbeat_at)}s ago)"


def _watchers(config: Config, session_id: str) -> str:
    """Who watches: names, "none" (a debug shell nobody watches), "-" (nothing to watch)."""
    with as_service_user(service_identity(config)):
        watchers = read_watchers(config.paths.state_dir, session_id)
    if watchers is None:
        return "-"
    return ",".join(watchers) or "none"


def list_sessions(config_path: Path, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = load_config(config_path, check_files=False)
    if config.state.postgres is None and not _journal_path(config).exists():
        print("no sessions: the bastion has not run with this state_dir yet", file=out)
        return 0
    with as_service_user(service_identity(config)):
        # On PostgreSQL: every replica's sessions.
        journal = config.state_stores().journal()
        try:
            live = journal.live_sessions()
            replicas = {r.id: r for r in journal.replicas()}
        finally:
            journal.close()
    now = time.time()
    dead_after = config.state.replica_dead_after.total_seconds()
    rows = [
        (
            "ID", "USER", "FROM", "STATE", "SINCE", "IDLE DEADLINE", "HARD DEADLINE", "TARGET",
            "REPLICA", "ALIVE", "BREAK-GLASS", "WATCHERS",
        )
    ]  # fmt: skip
    break_glass = {u.name for u in config.users if u.break_glass}
    for s in live:
        target = "-"
        if s.target:
            target = "/".join(str(s.target.get(k, "?")) for k in ("cluster", "namespace", "pod"))
        since = datetime.fromtimestamp(s.opened_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            (
                s.id,
                s.user,
                s.source,
                s.state,
                since,
                _when(s.idle_deadline, now),
                _when(s.hard_deadline, now),
                target,
                s.replica or "-",
                _alive(replicas.get(s.replica or ""), now, dead_after),
                "yes" if s.user in break_glass else "-",
                _watchers(config, s.id),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)
    if not live:
        print("(no live sessions)", file=out)
    return 0


def kill(config_path: Path, session_id: str, reason: str, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    reason = " ".join(reason.split())
    if len(reason) < MIN_REASON:
        raise BastionError(
            "a kill needs a reason of a few words, which its operator is shown",
            hint='bastion sessions kill ID --reason "INC-4711: credential leak suspected"',
        )
    config = load_config(config_path, check_files=False)
    service = service_identity(config)
    actor, extra = invoking_actor()
    with as_service_user(service):
        audit = open_audit(config)
        journal = config.state_stores().journal()
        notes = config.state_stores().kill_notes()
        try:
            record = journal.session(session_id)
            if record is None or record.closed:
                state = "has already ended" if record is not None else "does not exist"
                raise BastionError(
                    f"session {session_id} {state}",
                    hint="bastion sessions list shows the live sessions and their IDs",
                )
            # Audit before action: the request exists only once it is on record.
            audit.record_now(
                "session.kill_requested",
                actor=actor,
                outcome="requested",
                session=session_id,
                user=record.user,
                reason=reason,
                **extra,
            )
            notes.write(session_id, by=actor, reason=reason)
            if not journal.request_kill(session_id):
                print(f"session {session_id} of {record.user} has already ended", file=out)
                return 0
            deadline = time.monotonic() + _WAIT_FOR_WIPE
            while time.monotonic() < deadline:
                now = journal.session(session_id)
                if now is not None and now.state == "closed":
                    print(f"session {session_id} of {record.user} ended and wiped", file=out)
                    return 0
                time.sleep(0.2)
        finally:
            notes.close()
            journal.close()
            audit.close()
    print(
        f"kill requested for session {session_id} of {record.user}, but it has not closed "
        f"within {_WAIT_FOR_WIPE:.0f} s; if its bastion worker is gone, the reaper wipes it "
        "(that replica's next start, or the reaper leader once the replica is dead)",
        file=out,
    )
    return 1
