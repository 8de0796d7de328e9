"""Failover between bastion replicas: heartbeats, reaper leadership, reaping for the dead.

Each worker runs one :class:`ReplicaWatch`. Every ``state.heartbeat_interval`` it

1. beats for its replica in the journal (:meth:`bastion.state.journal.Journal.heartbeat`);
2. on PostgreSQL, holds or tries to take the reaper leadership
   (:class:`bastion.state.liveness.ReaperLeadership`: an advisory lock that dies with its
   connection, so with its process);
3. when it leads, sweeps the sessions of replicas dead for ``state.replica_dead_after``
   (:meth:`bastion.session.reaper.Reaper.sweep_dead_replicas`).

With the defaults (5 s, 15 s) a dead replica's sessions are reaped about 20 s after its last
heartbeat: 15 s to be dead, at most 5 s to the leader's next look, then the cleaning itself.
Why two leaders at once would still be safe is in :mod:`bastion.state.liveness`.

On SQLite there is one host and no leadership: this only beats (``bastion sessions list``
shows whether a session's replica is alive), and the reaper of every worker sweeps the host's
sessions as before.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from bastion.audit.log import AuditLog
from bastion.session.reaper import Reaper, RunInDb
from bastion.state.journal import Journal
from bastion.state.liveness import ReaperLeadership

__all__ = ["ReplicaWatch"]

log = logging.getLogger(__name__)


class ReplicaWatch:
    """One worker's heartbeat and its bid for the reaper leadership (see the module)."""

    def __init__(
        self,
        journal: Journal,
        in_db: RunInDb,
        reaper: Reaper,
        audit: AuditLog,
        *,
        interval: float,
        leadership: ReaperLeadership | None = None,
    ) -> None:
        """``journal`` is used through ``in_db`` (the broker's database thread);
        ``leadership`` None: SQLite, nothing to lead."""
        self._journal = journal
        self._in_db = in_db
        self._reaper = reaper
        self._audit = audit
        self.interval = interval
        self._leadership = leadership
        # The advisory lock's connection, like every store's, stays on one thread.
        self._lock_thread = (
            ThreadPoolExecutor(1, thread_name_prefix="reaper-lead") if leadership else None
        )
        self.leading = False

    async def beat(self) -> None:
        """One heartbeat. At start, its ReplicaIdInUse stops the worker before it listens."""
        await self._in_db(self._journal.heartbeat)

    async def run(self) -> None:
        """Beat, and lead and reap, every ``interval`` until cancelled; failures are logged
        and the next round tries again. Two loops: a long sweep (a cleaner may take a
        minute) must not stop the heartbeat, or this replica would look dead."""
        async with asyncio.TaskGroup() as loops:
            loops.create_task(self._beating(), name="replica-heartbeat")
            if self._leadership is not None:
                loops.create_task(self._leading(), name="reaper-leadership")

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception:
                log.exception("replica heartbeat failed; trying again in %.0f s", self.interval)

    async def _leading(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._lead()
            if not self.leading:
                continue
            try:
                report = await self._reaper.sweep_dead_replicas()
            except Exception:
                log.exception("reaping dead replicas' sessions failed")
                continue
            if report.orphans:
                log.info(
                    "reaper leader: %d sessions of dead replicas, %d resources cleaned, "
                    "%d left to their hosts, %d failed, %d sessions closed",
                    report.orphans,
                    len(report.cleaned),
                    len(report.deferred),
                    len(report.failed),
                    len(report.closed),
                )

    async def _lead(self) -> None:
        leadership = self._leadership
        if leadership is None:  # pragma: no cover - run() leads only with one
            return
        try:
            leading = await asyncio.get_running_loop().run_in_executor(
                self._lock_thread, leadership.hold
            )
        except Exception as exc:  # noqa: BLE001 - not leading is the safe answer
            log.warning("reaper leadership unknown, so not leading: %s", exc)
            leading = False
        if leading == self.leading:
            return
        self.leading = leading
        replica = self._journal.replica
        log.info("replica %s %s the reaper leadership", replica, "took" if leading else "lost")
        try:
            await self._audit.record(
                "reaper.leadership",
                actor="reaper",
                outcome="acquired" if leading else "lost",
                leader=replica,
            )
        except Exception:
            log.exception("audit event reaper.leadership not written")

    async def aclose(self) -> None:
        """Give the leadership up (its connection closes) and stop the lock's thread."""
        if self._leadership is not None and self._lock_thread is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._lock_thread, self._leadership.close
            )
            self._lock_thread.shutdown(wait=True)
        self.leading = False
