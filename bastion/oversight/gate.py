"""The moderated-session gate and each debug shell's watch point.

:func:`watch_point` opens the session's watch socket for the length of one debug shell (any
auditor may watch any shell). :func:`await_watcher` is the gate: called by the debug shell
right before its container is created or reattached (``bastion.session.debug_shell``), the
one place every entry path (the console's ``d``, ``ssh -t ... debug NS/POD``, a reattach)
goes through, so no ephemeral-container patch, pod creation or attach happens before an
auditor watches a shell that policy says must be watched.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

from bastion.config import Config
from bastion.oversight.admission import verifier
from bastion.oversight.roles import Moderation
from bastion.oversight.watch_point import WatchPoint, tell_operator
from bastion.session.lifecycle import State
from bastion.session.session import Session

__all__ = ["await_watcher", "watch_point"]


@contextlib.asynccontextmanager
async def watch_point(
    session: Session,
    config: Config,
    *,
    target: str,
    moderation: Moderation | None,
    progress: Callable[[str], None],
    write: Callable[[bytes], None],
) -> AsyncIterator[WatchPoint]:
    attached = tell_operator(write)

    def tell(message: str) -> None:
        # Attached: a line in the shell's terminal; before: a progress line (or the console's).
        (attached if session.state is State.ATTACHED else progress)(message)

    point = WatchPoint(
        session,
        state_dir=config.paths.state_dir,
        verify=verifier(session, config),
        tell=tell,
        target=target,
        moderated=moderation is not None,
    )
    await point.start()
    try:
        yield point
    finally:
        await point.close()


async def await_watcher(
    session: Session,
    point: WatchPoint,
    moderation: Moderation | None,
    *,
    progress: Callable[[str], None],
    give_up: Callable[[], bool],
) -> None:
    """Return at once for a shell no policy moderates; else once an auditor watches.
    PolicyDenied (one sentence) when none came in time or the operator gave up."""
    if moderation is not None:
        until = datetime.now(UTC) + timedelta(seconds=moderation.wait_seconds)
        await session.record(
            "session.awaiting_watcher",
            outcome="waiting",
            reason=moderation.reason,
            until=until.isoformat(timespec="seconds"),
        )
        progress(
            f"waiting for a watcher: {moderation.reason}; an auditor can run "
            f"'watch {session.id}' (until {until:%H:%M:%S} UTC; Ctrl-C gives up)"
        )
        await point.wait_for_watcher(
            moderation.wait_seconds, reason=moderation.reason, give_up=give_up
        )
        await session.record("session.watcher_joined", outcome="watched", watchers=point.watchers)
    point.running()
