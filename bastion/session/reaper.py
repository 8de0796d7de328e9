"""The reaper: finishes the cleanup of sessions whose worker died or whose wipe fell short.

A session is left to the reaper (an orphan, see :meth:`bastion.state.journal.Journal.orphaned`)
when it is still open and the process that owned it is gone, or when it is closed with
resources still pending, whatever its owner's state: a worker closes a session only once its
wipe has run, so a lease that the wipe could not revoke (Vault down) is retried here, in the
worker that closed it as in any other, without waiting for that worker to exit. An open
session of a live worker is never touched. Each :meth:`Reaper.sweep`, for every orphan:

1. **claims** it in the journal (one conditional write under SQLite's write lock), so of two
   workers sweeping at once only one cleans it. A claim is void as soon as the claiming
   process is gone, and expires after ``claim_ttl`` if that process is alive but stuck;
2. cleans its pending resources **newest first** (the debug container before the lease that
   let us make it, the lease before the temp directory), renewing the claim before each one,
   with one :data:`Cleaner` per resource kind. Each cleaner call is bounded by
   ``cleaner_timeout`` (shorter than ``claim_ttl``, so a live claim never lapses mid-call);
3. marks each resource removed, or failed (its attempt counter goes up and it is retried at a
   later sweep, after ``backoff_base * 2 ** (attempts - 1)`` seconds, at most
   ``backoff_max``), and writes a ``reaper.cleaned`` or ``reaper.failed`` audit event
   (``outcome="alert"``). A kind without a cleaner fails loudly the same way: it is never
   dropped;
4. once nothing is pending, closes the session and writes ``session.reaped``.

Cleaning comes first and the audit event after it: removing access is always right, so an
audit log that cannot be written does not stop the reaper (the failure is logged). Cleaners
must be idempotent ("already gone" is a success): a reaper that dies between cleaning and
marking leaves the resource pending, and the next one cleans it again. A resource still
``planned`` may or may not have been created. A ``planned`` resource of a closed session
whose owner is alive is left alone (``deferred``): the owner may still be creating it (a
credential asked for while the wipe ran), and will mark it created, with what identifies it,
or removed; it is cleaned at a later sweep, or after the owner exits.

**Dead replicas** (PostgreSQL, issue 12). The reaper of the replica that leads
(:mod:`bastion.session.failover`) also sweeps, with :meth:`Reaper.sweep_dead_replicas`, the
sessions of replicas that stopped beating. Their resources are of two sorts, by kind:
*remote* ones (a Vault lease, a debug container, a debug pod) live in Vault and Kubernetes
and are cleaned from here as above; *host-local* ones (:data:`HOST_LOCAL_KINDS`: the temp
directory) exist only on the dead replica's disk, so they are marked deferred in the journal,
with the reason, and left to that replica's own reaper when it comes back (a
``reaper.deferred`` event says so). The session is closed once everything remote is clean,
and ``session.reaped`` names the reaping replica (``reaped_by``), the dead one
(``on_behalf_of``) and what was left to it (``left_to_owner``).

SQLite is used from one dedicated thread: the reaper's own (when given a journal factory) or
the broker's (when given the broker's journal and its ``in_db``), never the event loop's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from bastion.audit.log import AuditLog
from bastion.state.journal import PLANNED, Claim, Journal, ResourceRecord, SessionRecord

__all__ = [
    "HOST_LOCAL_KINDS",
    "Cleaner",
    "Reaper",
    "ResourceOutcome",
    "RunInDb",
    "SweepReport",
    "temp_dir_cleaner",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

Cleaner = Callable[[ResourceRecord], Awaitable[str]]
"""Removes one resource; returns a short sentence ("revoked", "already gone"), raises if not."""

RunInDb = Callable[..., Awaitable[Any]]
"""``await in_db(fn, *args)`` runs ``fn(*args)`` on the journal's thread (the broker's)."""

ACTOR = "reaper"
HOST_LOCAL_KINDS = frozenset({"temp_dir"})
"""Resource kinds that exist only on the host that made them (its disk): no other replica
can clean them. Every other kind (``lease``, ``debug_container``, ``debug_pod``) is remote:
it lives in Vault or Kubernetes and any replica's reaper can reach it."""
_BEING_CREATED = "planned by a worker that is still running, which may be creating it"
_ON_ITS_HOST = (
    "exists only on the host of replica {replica}, which is dead; its own reaper removes it "
    "when it comes back"
)


@dataclass(frozen=True)
class ResourceOutcome:
    session: str
    resource: int
    kind: str
    outcome: Literal["cleaned", "failed", "deferred"]
    detail: str  # the cleaner's sentence, the error, or when the next attempt is due


@dataclass(frozen=True)
class SweepReport:
    orphans: int = 0  # sessions found to reap: open of a dead owner, or closed with leftovers
    outcomes: tuple[ResourceOutcome, ...] = ()
    closed: tuple[str, ...] = ()  # sessions this sweep finished and closed
    busy: tuple[str, ...] = ()  # orphans another reaper was working on
    errors: tuple[str, ...] = ()  # sessions whose reaping broke off (see the log)

    def of(self, outcome: str) -> list[ResourceOutcome]:
        return [o for o in self.outcomes if o.outcome == outcome]

    @property
    def cleaned(self) -> list[ResourceOutcome]:
        return self.of("cleaned")

    @property
    def failed(self) -> list[ResourceOutcome]:
        return self.of("failed")

    @property
    def deferred(self) -> list[ResourceOutcome]:
        return self.of("deferred")


class Reaper:
    """Cleans up after dead workers and wipes that fell short; see the module docstring.

    ``journal`` is either a factory (``lambda: Journal(path)``), opened and closed by the
    reaper on its own database thread, or an open :class:`Journal` together with ``in_db``,
    the function that runs calls on the thread that opened it (the broker's).
    """

    def __init__(
        self,
        journal: Journal | Callable[[], Journal],
        cleaners: Mapping[str, Cleaner],
        audit: AuditLog,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.time,
        in_db: RunInDb | None = None,
        claim_ttl: float = 300.0,
        cleaner_timeout: float = 60.0,
        backoff_base: float = 30.0,
        backoff_max: float = 600.0,
        host_local: Collection[str] = HOST_LOCAL_KINDS,
    ) -> None:
        if isinstance(journal, Journal):
            if in_db is None:
                raise ValueError(
                    "an open Journal may only be used from the thread that opened it: "
                    "pass in_db (which runs calls there) or a factory for the reaper's own"
                )
            self._journal: Journal | None = journal
            self._factory: Callable[[], Journal] | None = None
        else:
            self._journal, self._factory = None, journal
        if not 0 < cleaner_timeout < claim_ttl:
            raise ValueError("cleaner_timeout must be positive and shorter than claim_ttl")
        if interval <= 0 or backoff_base < 0 or backoff_max < backoff_base:
            raise ValueError("interval must be positive and 0 <= backoff_base <= backoff_max")
        self._cleaners = dict(cleaners)
        self._audit = audit
        self.interval = interval
        self._clock = clock
        self._in_db = in_db
        self._thread = None if in_db else ThreadPoolExecutor(1, thread_name_prefix="reaper-db")
        self._claim_ttl = claim_ttl
        self._cleaner_timeout = cleaner_timeout
        self._backoff = (backoff_base, backoff_max)
        self._host_local = frozenset(host_local)
        self._claim: Claim | None = None
        self._replica = ""  # this bastion's replica id, read from the journal at first sweep
        self._sweeping = asyncio.Lock()

    # ------------------------------------------------------------------ the journal's thread
    async def _db(self, call: Callable[[Journal], T]) -> T:
        """Run ``call(journal)`` on the journal's thread, opening the journal first if needed."""
        return await self._on_thread(functools.partial(self._with_journal, call))

    async def _on_thread(self, fn: Callable[[], T]) -> T:
        if self._in_db is not None:
            result: T = await self._in_db(fn)
            return result
        if self._thread is None:  # pragma: no cover - set whenever in_db is not
            raise RuntimeError("the reaper has no database thread")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def _with_journal(self, call: Callable[[Journal], T]) -> T:
        if self._journal is None:
            if self._factory is None:  # pragma: no cover - one of the two is always set
                raise RuntimeError("the reaper has no journal")
            self._journal = self._factory()
        return call(self._journal)

    async def aclose(self) -> None:
        """Close the journal the reaper opened itself, and its thread."""
        if self._factory is not None and self._journal is not None:
            journal, self._journal = self._journal, None
            await self._on_thread(journal.close)
        if self._thread is not None:
            self._thread.shutdown(wait=True)  # idle by now: the close above has run

    # ------------------------------------------------------------------ running
    async def run(self) -> None:
        """Sweep now and then every ``interval`` seconds, until cancelled. A sweep that
        fails is logged and the next one is tried at the next interval."""
        while True:
            try:
                report = await self.sweep()
            except Exception:
                log.exception("reaper sweep failed; trying again in %.0f s", self.interval)
            else:
                if report.orphans:
                    log.info(
                        "reaper: %d sessions to reap, %d resources cleaned, %d failed, "
                        "%d waiting, %d sessions closed",
                        report.orphans,
                        len(report.cleaned),
                        len(report.failed),
                        len(report.deferred),
                        len(report.closed),
                    )
            await asyncio.sleep(self.interval)

    async def sweep(self) -> SweepReport:
        """Clean up every session left to the reaper once (see the module docstring)."""
        return await self._sweep(dead_replicas=False)

    async def sweep_dead_replicas(self) -> SweepReport:
        """Clean up once what dead replicas' sessions left in Vault and Kubernetes, and close
        those sessions (the reaper leader's work; see the module docstring)."""
        return await self._sweep(dead_replicas=True)

    async def _sweep(self, *, dead_replicas: bool) -> SweepReport:
        async with self._sweeping:
            if self._claim is None:
                self._replica = await self._db(lambda j: j.replica)
                self._claim = Claim.new(self._replica)
            found = await self._db(lambda j: j.orphaned(dead_replicas=dead_replicas))
            # A dead replica's session closed already, with only its own host's things left:
            # nothing for this replica to do.
            orphans = [
                (record, pending)
                for record, pending in found
                if not (
                    dead_replicas
                    and record.closed
                    and all(r.kind in self._host_local for r in pending)
                )
            ]
            outcomes: list[ResourceOutcome] = []
            closed: list[str] = []
            busy: list[str] = []
            errors: list[str] = []
            for record, _ in orphans:
                try:
                    reaped = await self._reap(record, self._claim, outcomes, remote=dead_replicas)
                except Exception:
                    log.exception("reaper: cleaning up session %s broke off", record.id)
                    errors.append(record.id)
                    continue
                if reaped is None:
                    busy.append(record.id)
                elif reaped:
                    closed.append(record.id)
            return SweepReport(
                orphans=len(orphans),
                outcomes=tuple(outcomes),
                closed=tuple(closed),
                busy=tuple(busy),
                errors=tuple(errors),
            )

    # ------------------------------------------------------------------ one session
    async def _reap(
        self,
        record: SessionRecord,
        claim: Claim,
        outcomes: list[ResourceOutcome],
        *,
        remote: bool = False,
    ) -> bool | None:
        """Clean one orphan: None when another reaper has it, else whether it was closed.
        ``remote``: a dead replica's session, whose host-local resources are left to it."""
        if not await self._take(record.id, claim):
            return None
        left_to_owner: list[dict[str, Any]] = []
        try:
            # Read after claiming: what another reaper finished before is not pending now.
            pending = await self._db(lambda j: j.pending(record.id))
            # Only a closed session can be claimed while its owner lives (Journal.claim), and
            # a process that died stays dead: checked once per session. A dead replica's
            # processes are dead (its heartbeats stopped with them) and not ours to look at.
            owner_alive = not remote and bool(pending) and record.closed and record.owner.is_alive()
            for resource in reversed(pending):
                if remote and resource.kind in self._host_local:
                    reason = _ON_ITS_HOST.format(replica=record.replica)
                    left_to_owner.append(await self._defer(record, resource, reason))
                    outcomes.append(_outcome(resource, "deferred", reason))
                    continue
                if owner_alive and resource.status == PLANNED:
                    outcomes.append(_outcome(resource, "deferred", _BEING_CREATED))
                    continue
                wait = self._wait(resource)
                if wait > 0:
                    outcomes.append(_outcome(resource, "deferred", f"next attempt in {wait:.0f} s"))
                    continue
                if not await self._take(record.id, claim):
                    log.warning("reaper: lost the claim on session %s; stopping", record.id)
                    return False
                outcomes.append(await self._clean(record, resource))
            now = self._clock()
            finished = await self._db(
                lambda j: j.finish_reaped(record.id, claim, now, deferred_may_stay=remote)
            )
        finally:
            await self._db(lambda j: j.release(record.id, claim))
        if finished:
            await self._record(
                "session.reaped",
                record,
                outcome="closed",
                user=record.user,
                source=record.source,
                previous_state=record.state,
                owner_pid=record.owner_pid,
                opened_at=record.opened_at,
                **({"left_to_owner": left_to_owner} if remote else {}),
            )
        return finished

    async def _defer(
        self, record: SessionRecord, resource: ResourceRecord, reason: str
    ) -> dict[str, Any]:
        """Leave a host-local resource of a dead replica's session to that replica."""
        await self._db(lambda j: j.defer(resource.id, reason))
        await self._record(
            "reaper.deferred", record, outcome="deferred", **_fields(resource), reason=reason
        )
        return {"resource": resource.id, "kind": resource.kind, "ref": resource.ref}

    async def _take(self, session: str, claim: Claim) -> bool:
        now, ttl = self._clock(), self._claim_ttl
        return await self._db(lambda j: j.claim(session, claim, now=now, ttl=ttl))

    def _wait(self, resource: ResourceRecord) -> float:
        """Seconds until a resource that failed before may be tried again (0 or less: now)."""
        if resource.attempts == 0:
            return 0.0
        return resource.updated_at + self._delay(resource.attempts) - self._clock()

    def _delay(self, attempts: int) -> float:
        base, most = self._backoff
        return float(min(base * 2 ** min(attempts - 1, 32), most))

    async def _clean(self, record: SessionRecord, resource: ResourceRecord) -> ResourceOutcome:
        try:
            result = await self._run_cleaner(resource)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
            error = _describe(exc, self._cleaner_timeout)
            await self._db(lambda j: j.failed(resource.id, error))
            attempts = resource.attempts + 1
            log.error(  # noqa: TRY400 - an expected failure, described in one line
                "reaper: session %s: cleaning %s %d failed (attempt %d): %s",
                record.id,
                resource.kind,
                resource.id,
                attempts,
                error,
            )
            await self._record(
                "reaper.failed",
                record,
                outcome="alert",
                **_fields(resource),
                error=error,
                attempts=attempts,
                retry_in_seconds=self._delay(attempts),
            )
            return _outcome(resource, "failed", error)
        await self._db(lambda j: j.removed(resource.id))
        await self._record(
            "reaper.cleaned",
            record,
            outcome="cleaned",
            **_fields(resource),
            result=result,
            attempts=resource.attempts + 1,
        )
        return _outcome(resource, "cleaned", result)

    async def _run_cleaner(self, resource: ResourceRecord) -> str:
        cleaner = self._cleaners.get(resource.kind)
        if cleaner is None:
            raise LookupError(
                f"no cleaner for resource kind {resource.kind!r}: it stays in the journal, "
                "and may still exist, until it is removed by hand"
            )
        async with asyncio.timeout(self._cleaner_timeout):
            return await cleaner(resource)

    async def _record(
        self, event: str, record: SessionRecord, *, outcome: str, **fields: Any
    ) -> None:
        # Who reaped, and for whom when it was another replica's session.
        if record.replica is not None and record.replica != self._replica:
            fields["on_behalf_of"] = record.replica
        try:
            await self._audit.record(
                event,
                actor=ACTOR,
                outcome=outcome,
                session=record.id,
                reaped_by=self._replica,
                **fields,
            )
        except Exception:
            # The cleanup has happened and is in the journal; losing its event is bad, but
            # undoing or skipping cleanups because of it would be worse.
            log.exception("reaper: audit event %s for session %s not written", event, record.id)


def _fields(resource: ResourceRecord) -> dict[str, Any]:
    return {
        "resource": resource.id,
        "kind": resource.kind,
        "ref": resource.ref,
        "status_before": resource.status,
    }


def _outcome(
    resource: ResourceRecord, outcome: Literal["cleaned", "failed", "deferred"], detail: str
) -> ResourceOutcome:
    return ResourceOutcome(resource.session, resource.id, resource.kind, outcome, detail)


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------------------- cleaners
def temp_dir_cleaner(root: Path) -> Cleaner:
    """The cleaner for ``temp_dir`` resources (``ref={"path": ...}``): removes the directory,
    which must be a direct child of ``root`` (the sessions' temp root) and not a symlink, so
    a tampered journal cannot make the reaper delete anything else."""
    base = Path(os.path.abspath(root))  # noqa: PTH100 - no symlink resolution wanted

    def remove(raw: str) -> str:
        path = Path(os.path.normpath(raw))
        if not path.is_absolute() or path.parent != base or path.name in ("", ".", ".."):
            raise ValueError(f"{raw} is not a session directory under {base}")
        if path.is_symlink():
            raise ValueError(f"{path} is a symbolic link, not a session directory")
        if not path.exists():
            return "already gone"
        shutil.rmtree(path)
        return "removed"

    async def clean(resource: ResourceRecord) -> str:
        raw = resource.ref.get("path")
        if not isinstance(raw, str) or not raw:
            raise ValueError("the temp_dir record names no path")
        return await asyncio.to_thread(remove, raw)

    return clean
