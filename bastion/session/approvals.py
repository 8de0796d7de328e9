"""Four-eyes approval in the broker: requests made instead of debugs, the decisions of
approvers in their consoles, the use of an approval by the debug it covers, and expiry.

* :meth:`ApprovalDesk.admit` is called by :mod:`bastion.session.debug` once a debug is
  decided with the pod's real labels, when a covering grant requires approval. It spends a
  live approval of exactly that debug (and the debug goes on), or finds the request already
  waiting, or makes a new one; in the last two cases it raises :class:`ApprovalPending`,
  and the debug's credential is revoked like that of any debug that does not start.
* Consoles poll :meth:`answer` with ``ListApprovals`` and send ``DecideApproval``.
* ``ssh ... debug NS/POD`` waits in :meth:`wait` until the request is decided or lapses.
* A sweep in every worker marks lapsed requests expired; the store's conditional update
  makes exactly one worker report each.

Audit, and in which order (docs/approvals.md has the events):

* a request is recorded (``approval.requested``) before it is stored, so nobody can decide
  a request the log does not know;
* an approval is stored by one conditional update, then recorded; if the record cannot be
  written the approval is taken back (``retract``) before the approver hears of a failure;
* a use is stored, then recorded, and the debug goes on only once the record is written
  (otherwise the session ends, as for any event it cannot write: the approval is spent and
  nothing starts);
* expiry removes access, so it is stored first and reported after (an unwritable log is
  logged, as the reaper does).

Approvals never outlive policy: the approvers a request was asked of are part of what the
approval covers, so a changed ``approval`` section leaves old approvals unusable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from bastion.approval import (
    ApprovalNeed,
    ApprovalRequest,
    DebugKey,
    Refusal,
    Status,
    decision_refusal,
    unknown_request,
)
from bastion.audit.log import AuditLog
from bastion.console_protocol import (
    ApprovalDecided,
    ApprovalItem,
    Approvals,
    DecideApproval,
    ListApprovals,
    Message,
)
from bastion.errors import (
    AuditUnavailable,
    BackendUnavailable,
    BastionError,
    PolicyDenied,
    SessionExpired,
)
from bastion.policy import MAX_REASON_CHARS, Principal
from bastion.session.lifecycle import Ending
from bastion.session.session import Session
from bastion.state.approvals import ApprovalStore
from bastion.terminal_text import printable

__all__ = ["RECENT", "SWEEP_EVERY", "WAIT_POLL", "ApprovalDesk", "ApprovalPending", "when"]

log = logging.getLogger(__name__)

SWEEP_EVERY = 2.0  # seconds between expiry sweeps (expiry itself is exact: status_at)
WAIT_POLL = 1.0  # seconds between looks at a request ``ssh ... debug`` waits for
RECENT = 3600.0  # seconds: how far back a console lists its operator's own requests
_LISTED = 200  # at most this many of them
# Every console polls every 2 s; the open requests are read at most this often per worker
# and shared (1,000 open requests take about 28 ms to read; bench figures in approvals.md).
OPEN_CACHE = 1.0

RunInDb = Callable[..., Awaitable[Any]]


def when(epoch: float) -> str:
    """``12:10:00 UTC``: the time a request lapses, as operators are told it."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")


class ApprovalPending(PolicyDenied):
    """The debug needs another operator's approval; ``request`` waits for it. The message
    says so, and by whom and until when."""

    def __init__(self, request: ApprovalRequest, *, new: bool) -> None:
        state = "waits for a decision" if new else "is still waiting for a decision"
        super().__init__(
            f"this debug needs the approval of another operator ({request.describe_approvers()}): "
            f"request {request.id} {state} until {when(request.expires_at)}"
        )
        self.request = request
        self.new = new


def new_request_id() -> str:
    # 48 random bits: short enough to read out ("approve 3f2a9c0d81e4"), and guessing one
    # gains nothing (deciding needs an approver's console or the bastion host).
    return secrets.token_hex(6)


class ApprovalDesk:
    """The approvals of one worker, over a store used from the broker's database thread."""

    def __init__(
        self,
        store: ApprovalStore,
        *,
        in_db: RunInDb,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._in_db = in_db
        self._audit = audit
        self._clock = clock
        self._sweeper: asyncio.Task[None] | None = None
        self._open: tuple[float, list[ApprovalRequest]] | None = None  # (read at, requests)

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn`` of the store, on the broker's database thread. A failing store (a locked
        or broken file, a database server away) is one sentence for the operator."""
        try:
            return await self._in_db(fn, *args, **kwargs)
        except (BastionError, ValueError):
            raise
        except Exception as exc:  # noqa: BLE001 - every store's own errors, said once here
            log.error("approvals store: %s failed: %s", getattr(fn, "__name__", fn), exc)  # noqa: TRY400
            raise BackendUnavailable(
                "the approval requests could not be read or written; try again",
                hint="an administrator finds the cause in the bastion's log",
            ) from None

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep_forever(), name="approval-expiry"
        )

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            try:
                await self.sweep()
            except Exception:
                log.exception("the approval expiry sweep failed; it runs again shortly")

    async def sweep(self) -> list[ApprovalRequest]:
        """Mark lapsed requests expired and report each (once, across every worker)."""
        expired: list[ApprovalRequest] = await self._db(self.store.expire_due, self._clock())
        if expired:
            self._changed()
        for request in expired:
            try:
                await self._audit.record(
                    "approval.expired",
                    actor="bastion",
                    outcome="expired",
                    request=request.id,
                    requester=request.requester,
                    was=str(request.status),
                    **request.key.fields(),
                )
            except AuditUnavailable:
                # Expiry removes access, which is always right: it stands, and is logged.
                log.exception("approval %s expired; its audit event was not written", request.id)
        return expired

    # ------------------------------------------------------------------ a debug asks
    async def admit(
        self,
        session: Session,
        *,
        principal: Principal,
        key: DebugKey,
        reason: str,
        need: ApprovalNeed,
    ) -> ApprovalRequest:
        """The approval this debug uses (spent now); ApprovalPending when it has none yet."""
        now = self._clock()
        live: list[ApprovalRequest] = await self._db(self.store.open_for, principal.name, key, now)
        for request in live:
            if request.status is not Status.APPROVED:
                continue
            used = await self._db(
                self.store.use,
                request.id,
                requester=principal.name,
                session=session.id,
                now=now,
            )
            if not used:
                continue  # spent by another of this operator's sessions, or just expired
            self._changed()
            await session.record(
                "approval.used",
                outcome="used",
                request=request.id,
                approved_by=request.decided_by,
                **key.fields(),
            )
            _recorded(session)
            return request
        waiting = [r for r in live if r.status is Status.PENDING]
        if waiting:
            raise ApprovalPending(waiting[0], new=False)
        request = ApprovalRequest(
            id=new_request_id(),
            requester=principal.name,
            session=session.id,
            key=key,
            reason=printable(reason),
            grants=need.grants,
            expires_after=need.expires_after.total_seconds(),
            status=Status.PENDING,
            requested_at=now,
            expires_at=now + need.expires_after.total_seconds(),
        )
        await session.record(
            "approval.requested",
            outcome="requested",
            request=request.id,
            reason=request.reason,
            approvers=need.describe(),
            grants=list(need.grants),
            expires_at=datetime.fromtimestamp(request.expires_at, UTC),
            **key.fields(),
        )
        _recorded(session)
        try:
            await self._db(self.store.create, request)
        except ValueError:
            raise BackendUnavailable(
                "the approval request could not be stored; try again"
            ) from None
        self._changed()
        raise ApprovalPending(request, new=True)

    async def wait(
        self,
        session: Session,
        request: ApprovalRequest,
        *,
        progress: Callable[[str], None],
        stop: Callable[[], bool],
    ) -> ApprovalRequest:
        """Wait for ``request`` to be decided (``ssh ... debug`` asked for it): the approved
        request, or PolicyDenied saying what became of it. ``stop()`` true: the operator
        gave up waiting (the request stays open)."""
        progress(
            f"ask an approver to decide it in their console, or an administrator to run "
            f"'bastion approvals approve {request.id}'; waiting until "
            f"{when(request.expires_at)} (Ctrl-C stops waiting)"
        )
        while True:
            if session.ending is not None:
                raise SessionExpired(f"the session ended ({session.ending}) while waiting")
            if stop():
                raise PolicyDenied(
                    f"you stopped waiting; request {request.id} stays open until "
                    f"{when(request.expires_at)}: run the same command again to use it "
                    "once it is approved"
                )
            current: ApprovalRequest | None = await self._db(self.store.get, request.id)
            status = Status.EXPIRED if current is None else current.status_at(self._clock())
            if current is not None and status is Status.APPROVED:
                progress(
                    f"request {request.id} was approved by {current.decided_by}{_said(current)}"
                )
                return current
            if current is not None and status is Status.DENIED:
                raise PolicyDenied(
                    f"request {request.id} was denied by {current.decided_by}{_said(current)}"
                )
            if status is Status.USED:
                raise PolicyDenied(
                    f"request {request.id} was used by another of your sessions; "
                    "run the command again to ask anew"
                )
            if status is Status.EXPIRED:
                raise PolicyDenied(
                    f"request {request.id} expired without a decision; run the command "
                    "again to ask anew"
                )
            await asyncio.sleep(WAIT_POLL)

    # ------------------------------------------------------------------ consoles
    async def answer(
        self, session: Session, principal: Principal, message: ListApprovals | DecideApproval
    ) -> Message:
        """A console's request answered: the list, or the decision (BastionError: refused)."""
        if isinstance(message, ListApprovals):
            return Approvals(message.id, await self.items(principal))
        decided = await self.decide(
            session,
            principal,
            message.request_id,
            approve=message.approve,
            reason=message.reason,
        )
        return ApprovalDecided(
            message.id,
            decided.id,
            str(decided.status),
            f"request {decided.id} of {decided.requester} {decided.status}",
        )

    async def items(self, principal: Principal) -> list[ApprovalItem]:
        """What a console lists: the operator's own requests of the last hour (newest
        first), then the open ones they may decide (oldest first)."""
        now = self._clock()
        name, groups = principal.name, principal.groups
        mine: list[ApprovalRequest] = await self._db(
            self.store.recent, now - RECENT, _LISTED, requester=name
        )
        live = await self._open_requests(now)
        theirs = [
            r
            for r in live
            if r.requester != name and r.status_at(now) is Status.PENDING and r.admits(name, groups)
        ]
        return [_item(r, name, groups, now) for r in [*mine, *theirs]]

    async def _open_requests(self, now: float) -> list[ApprovalRequest]:
        """The open requests, read once for every console of this worker polling within
        OPEN_CACHE seconds. For display only: every decision and use is checked against the
        store, and each request's expiry against ``now``."""
        if self._open is not None and 0 <= now - self._open[0] < OPEN_CACHE:
            return self._open[1]
        found: list[ApprovalRequest] = await self._db(self.store.open_requests, now)
        self._open = (now, found)
        return found

    def _changed(self) -> None:
        """This worker changed a request: its consoles see it at their next poll."""
        self._open = None

    async def decide(
        self,
        session: Session,
        principal: Principal,
        request_id: str,
        *,
        approve: bool,
        reason: str,
    ) -> ApprovalRequest:
        """An operator's decision in their console; PolicyDenied (audited) when they may not
        make it, AuditUnavailable (and their session ends) when it cannot be recorded."""
        reason = printable(reason.strip())
        if len(reason) > MAX_REASON_CHARS:
            raise PolicyDenied(f"say why in at most {MAX_REASON_CHARS} characters")
        if not approve and not reason:
            raise PolicyDenied("a denial needs a reason: say why, for the requester")
        name = principal.name
        now = self._clock()
        request: ApprovalRequest | None = await self._db(self.store.get, request_id)
        refusal = self._refusal(request, request_id, principal, approve=approve)
        if refusal is None and request is not None:
            change = self.store.approve if approve else self.store.deny
            if await self._db(change, request_id, by=name, reason=reason, now=now):
                self._changed()
                return await self._record_decision(session, principal, request, approve, reason)
            # Lost a race (decided by someone else, or lapsed, a moment ago): say what won.
            request = await self._db(self.store.get, request_id)
            refusal = self._refusal(request, request_id, principal, approve=approve) or (
                Refusal.DECIDED,
                f"request {request_id} changed meanwhile; look again",
            )
        kind, sentence = refusal or unknown_request(request_id)
        await self._record_refusal(
            session, principal, request_id, request=request, kind=kind, approve=approve
        )
        raise PolicyDenied(sentence)

    def _refusal(
        self,
        request: ApprovalRequest | None,
        request_id: str,
        principal: Principal,
        *,
        approve: bool,
    ) -> tuple[Refusal, str] | None:
        if request is None:
            return unknown_request(request_id)
        return decision_refusal(
            request,
            decider=principal.name,
            groups=principal.groups,
            approve=approve,
            now=self._clock(),
        )

    async def _record_decision(
        self,
        session: Session,
        principal: Principal,
        request: ApprovalRequest,
        approve: bool,
        reason: str,
    ) -> ApprovalRequest:
        event = "approval.approved" if approve else "approval.denied"
        fields = {
            "request": request.id,
            "requester": request.requester,
            "reason": reason,
            "via": "console",
            **request.key.fields(),
        }
        try:
            await self._audit.record(
                event,
                actor=principal.name,
                outcome="approved" if approve else "denied",
                session=session.id,
                **fields,
            )
        except AuditUnavailable:
            if approve:
                # Audit before action: an approval nobody can read of is taken back.
                await self._db(self.store.retract, request.id, by=principal.name)
                self._changed()
            session.end_soon(Ending.ERROR)
            raise AuditUnavailable(
                f"your decision on request {request.id} could not be recorded, so "
                f"{'it was taken back' if approve else 'it stands, unrecorded'}; "
                "tell an administrator"
            ) from None
        decided: ApprovalRequest | None = await self._db(self.store.get, request.id)
        return decided if decided is not None else request

    async def _record_refusal(
        self,
        session: Session,
        principal: Principal,
        request_id: str,
        *,
        request: ApprovalRequest | None,
        kind: Refusal,
        approve: bool,
    ) -> None:
        event = (
            "approval.self_approval_refused"
            if kind is Refusal.SELF_APPROVAL
            else "approval.decision_refused"
        )
        fields: dict[str, Any] = {
            "request": request_id[:64],
            "decision": "approve" if approve else "deny",
            "why": str(kind),
            "via": "console",
        }
        if request is not None:
            fields.update(requester=request.requester, **request.key.fields())
        # A refusal changes nothing, so an unwritable log does not change the answer; the
        # session still ends, as for any event of it that cannot be written.
        await session.record(event, outcome="refused", **fields)


def _recorded(session: Session) -> None:
    """``session.record`` ends the session when its event cannot be written: nothing
    more is done for it then."""
    if session.ending is not None:
        raise SessionExpired(
            f"the session ended ({session.ending}) before the approval could be recorded"
        )


def _said(request: ApprovalRequest) -> str:
    return f": {request.decision_reason}" if request.decision_reason else ""


def _item(request: ApprovalRequest, user: str, groups: frozenset[str], now: float) -> ApprovalItem:
    key = request.key
    status = request.status_at(now)
    mine = request.requester == user
    return ApprovalItem(
        id=request.id,
        requester=request.requester,
        cluster=key.cluster,
        namespace=key.namespace,
        pod=key.pod,
        container=key.container,
        mode=key.mode,
        image=key.image,
        run_as_user=key.run_as_user,
        duration_seconds=float(key.duration_seconds),
        reason=request.reason,
        status=str(status),
        expires_at=request.expires_at,
        approvers=request.describe_approvers(),
        decided_by=request.decided_by or "",
        decision_reason=request.decision_reason,
        mine=mine,
        can_decide=status is Status.PENDING and not mine and request.admits(user, groups),
    )
