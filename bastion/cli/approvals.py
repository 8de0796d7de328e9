"""``bastion approvals list|approve|deny``: four-eyes approval from the bastion host.

The administrator's side of docs/approvals.md. These commands read and change the approval
requests in the state database that every worker shares, as the service user, and record
each decision in the audit log. An administrator is not held to a grant's approvers (they
run the bastion), but never approves their own request: the invoking user, and the user who
ran ``sudo``, are compared with the requester.

Order, as in the broker: a decision is one conditional update, then its audit event; an
approval whose event cannot be written is taken back and the command fails. A refusal
(self-approval, a request decided or expired already) is recorded too.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from bastion.approval import (
    ApprovalRequest,
    Refusal,
    decision_refusal,
    unknown_request,
)
from bastion.audit.log import AuditLog
from bastion.cli.user import as_service_user, invoking_actor, open_audit, service_identity
from bastion.config import Config, load_config
from bastion.durations import format_duration
from bastion.errors import AuditUnavailable, BastionError, PolicyDenied
from bastion.policy import MAX_REASON_CHARS
from bastion.state.approvals import SqlApprovalStore
from bastion.terminal_text import printable

__all__ = ["decide", "list_approvals"]

RECENT = 7 * 86400.0  # --all: requests of the last week
_LISTED = 500


def _store_path(config: Config) -> Path:
    return config.paths.state_dir / "journal.db"


def _time(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _as_json(request: ApprovalRequest, now: float) -> dict[str, Any]:
    key = request.key
    return {
        "id": request.id,
        "status": str(request.status_at(now)),
        "requester": request.requester,
        "session": request.session,
        "cluster": key.cluster,
        "namespace": key.namespace,
        "pod": key.pod,
        "pod_uid": key.pod_uid,
        "container": key.container,
        "mode": key.mode,
        "image": key.image,
        "run_as_user": key.run_as_user,
        "duration_seconds": key.duration_seconds,
        "reason": request.reason,
        "approvers": request.describe_approvers(),
        "grants": list(request.grants),
        "requested_at": _time(request.requested_at),
        "expires_at": _time(request.expires_at),
        "decided_by": request.decided_by,
        "decided_at": _time(request.decided_at) if request.decided_at else None,
        "decision_reason": request.decision_reason,
        "used_at": _time(request.used_at) if request.used_at else None,
    }


def list_approvals(
    config_path: Path, *, as_json: bool = False, everything: bool = False, out: TextIO | None = None
) -> int:
    """The open requests (pending, or approved and unused), oldest first; with
    ``everything``, every request of the last week, newest first."""
    out = out or sys.stdout
    config = load_config(config_path, check_files=False)
    now = time.time()
    found: list[ApprovalRequest] = []
    if config.state.postgres is not None or _store_path(config).exists():
        with as_service_user(service_identity(config)):
            store = config.state_stores().approvals()
            try:
                found = (
                    store.recent(now - RECENT, _LISTED) if everything else store.open_requests(now)
                )
            finally:
                store.close()
    if as_json:
        json.dump([_as_json(r, now) for r in found], out, indent=2)
        out.write("\n")
        return 0
    rows = [
        ("ID", "STATUS", "REQUESTER", "TARGET", "MODE", "TIME", "EXPIRES", "APPROVERS", "REASON")
    ]
    for r in found:
        key = r.key
        rows.append(
            (
                r.id,
                str(r.status_at(now)) + (f" by {r.decided_by}" if r.decided_by else ""),
                r.requester,
                f"{key.target} ({key.container})",
                key.mode,
                format_duration_seconds(key.duration_seconds),
                _time(r.expires_at)[11:] if r.status_at(now).open else "-",
                r.describe_approvers(),
                r.reason,
            )
        )
    # Every cell comes from operators or clusters: neutralised before it reaches a terminal.
    cells = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)
    if not found:
        print("(no open approval requests)" if not everything else "(none this week)", file=out)
    return 0


def format_duration_seconds(seconds: int) -> str:
    return format_duration(timedelta(seconds=seconds))


def decide(
    config_path: Path,
    request_id: str,
    *,
    approve: bool,
    reason: str,
    out: TextIO | None = None,
) -> int:
    """Approve or deny request ``request_id`` as the invoking administrator."""
    out = out or sys.stdout
    reason = printable(reason.strip())
    if len(reason) > MAX_REASON_CHARS:
        raise BastionError(
            f"the reason is too long: say why in at most {MAX_REASON_CHARS} characters"
        )
    if not approve and not reason:
        raise BastionError("a denial needs a reason for the requester", hint="add --reason 'why'")
    config = load_config(config_path, check_files=False)
    actor, extra = invoking_actor()
    with as_service_user(service_identity(config)):
        audit = open_audit(config)
        store = config.state_stores().approvals()
        try:
            decided = _decide(
                store, audit, request_id, actor, extra, approve=approve, reason=reason
            )
        finally:
            store.close()
            audit.close()
    key = decided.key
    if approve:
        print(
            f"approved request {decided.id} of {decided.requester} ({key.target}, container "
            f"{key.container}, {key.mode}, {format_duration_seconds(key.duration_seconds)}); "
            f"unused, it expires at {_time(decided.expires_at)} UTC",
            file=out,
        )
    else:
        print(f"denied request {decided.id} of {decided.requester} ({key.target})", file=out)
    return 0


def _decide(
    store: SqlApprovalStore,
    audit: AuditLog,
    request_id: str,
    actor: str,
    extra: dict[str, Any],
    *,
    approve: bool,
    reason: str,
) -> ApprovalRequest:
    request = store.get(request_id)
    refusal = _refusal(request, request_id, actor, extra, approve=approve)
    if refusal is None and request is not None:
        change = store.approve if approve else store.deny
        # The requester compared with the sudo user too: nobody approves their own request
        # by running the command as root.
        if change(request_id, by=actor, reason=reason, now=time.time()):
            _record(store, audit, request, actor, extra, approve=approve, reason=reason)
            decided = store.get(request_id)
            return decided if decided is not None else request
        request = store.get(request_id)
        refusal = _refusal(request, request_id, actor, extra, approve=approve) or (
            Refusal.DECIDED,
            f"request {request_id} changed meanwhile; list it again",
        )
    kind, sentence = refusal or unknown_request(request_id)
    event = (
        "approval.self_approval_refused"
        if kind is Refusal.SELF_APPROVAL
        else "approval.decision_refused"
    )
    fields: dict[str, Any] = {
        "request": request_id[:64],
        "decision": "approve" if approve else "deny",
        "why": str(kind),
        "via": "cli",
        **extra,
    }
    if request is not None:
        fields.update(requester=request.requester, **request.key.fields())
    try:
        audit.record_now(event, actor=actor, outcome="refused", **fields)
    except AuditUnavailable as exc:
        sentence += f" (and the refusal could not be recorded: {exc.message})"
    raise PolicyDenied(sentence, hint="bastion approvals list shows the open requests")


def _refusal(
    request: ApprovalRequest | None,
    request_id: str,
    actor: str,
    extra: dict[str, Any],
    *,
    approve: bool,
) -> tuple[Refusal, str] | None:
    if request is None:
        return unknown_request(request_id)
    if approve and request.requester in {actor, extra.get("sudo_user")}:
        return Refusal.SELF_APPROVAL, (
            f"request {request.id} is your own, and nobody approves their own request: "
            "another approver must decide it"
        )
    return decision_refusal(
        request, decider=actor, groups=(), approve=approve, now=time.time(), administrator=True
    )


def _record(
    store: SqlApprovalStore,
    audit: AuditLog,
    request: ApprovalRequest,
    actor: str,
    extra: dict[str, Any],
    *,
    approve: bool,
    reason: str,
) -> None:
    try:
        audit.record_now(
            "approval.approved" if approve else "approval.denied",
            actor=actor,
            outcome="approved" if approve else "denied",
            request=request.id,
            requester=request.requester,
            reason=reason,
            via="cli",
            **request.key.fields(),
            **extra,
        )
    except AuditUnavailable:
        if approve:
            # Audit before action: an approval nobody can read of is taken back.
            store.retract(request.id, by=actor)
        raise
