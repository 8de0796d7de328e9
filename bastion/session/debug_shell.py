"""A debug shell, from the operator's request to the end of the shell.

Steps (each failure is one sentence for the operator, and nothing of the attempt is left):

1. refuse privileges beyond the restricted profile, before anything else;
2. pick the cluster and image when the operator named none (only when there is one choice);
3. :func:`bastion.session.debug.start_debug`: policy, a Vault credential for exactly the
   namespace (journalled), the pod re-read with it and the policy decided again (and, when
   a grant requires it, another operator's approval spent, or asked for);
4. reattach to this session's running debug container in the pod, or journal and create
   one (an ephemeral container, a copy of the pod, or a toolbox pod);
5. wait for it to run, attach (websocket), hand the terminal over, state ``attached``;
6. when the shell ends: end the container (ephemeral: its stdin closes and the bastion checks
   it is ``Terminated``; pods: deleted) and revoke the credential, state back to ``browsing``.

If the session ends meanwhile (idle, hard limit, an administrator's kill, SIGTERM), the wipe
does step 6 for every resource, newest first: the container before the credential that lets
the bastion check on it. The container's own watchdog ends it even if the bastion cannot.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.attach_bridge import EXIT_DETACHED, AttachBridge
from bastion.breakglass.alerts import AlertDispatcher
from bastion.command_marker import new_nonce
from bastion.config import Config
from bastion.config.models import Cluster
from bastion.debug_command import DebugCommand
from bastion.debug_container import (
    DebugPlan,
    Privileges,
    check_privileges,
    container_state,
    copy_pod,
    ephemeral_container,
    find_reattachable,
    next_ordinal,
    target_container,
    toolbox_pod,
    watchdog_seconds_for,
)
from bastion.errors import BackendUnavailable, BastionError, PolicyDenied, SessionExpired
from bastion.kube import KubeApi
from bastion.kube_attach import open_attach
from bastion.oversight.admission import moderation_for
from bastion.oversight.gate import await_watcher, watch_point
from bastion.oversight.roles import Moderation
from bastion.oversight.watch_point import WatchPoint
from bastion.policy import (
    DebugRequest,
    DebugTarget,
    Mode,
    Principal,
    Scope,
    approved_images,
    decide,
)
from bastion.recording.asciicast import title_for
from bastion.recording.errors import RecordingUnavailable
from bastion.recording.recorder import Recorder, open_recorder
from bastion.session.approvals import ApprovalDesk
from bastion.session.command_audit import WatchedStream
from bastion.session.debug import DEBUG_PURPOSE, DebugAccess, start_debug
from bastion.session.guard import SessionGuard
from bastion.session.lifecycle import Ending, State
from bastion.session.session import Session
from bastion.vault import KubeToken, VaultClient

__all__ = [
    "DebugOutcome",
    "Terminal",
    "close_recording",
    "cluster_named",
    "end_debug_container",
    "only_image",
    "recording_failed",
    "run_debug_shell",
]

log = logging.getLogger(__name__)

CONTAINER = "debug_container"  # journal kinds
POD = "debug_pod"
# How long the end of a debug waits for the container to reach Terminated once its stdin is
# closed; a shell that ignores the hang-up is still ended by its watchdog.
END_GRACE = 10.0


@dataclass(frozen=True)
class Terminal:
    """What the SSH side gives a debug shell: progress lines, the size, and the handover.

    ``attach(bridge)`` must stop the console (its process is not in the byte path), connect
    the channel to ``bridge`` and return ``await bridge.run()``: the container's exit status.
    """

    progress: Callable[[str], None]
    size: Callable[[], tuple[int, int]]
    attach: Callable[[AttachBridge], Awaitable[int]]
    write: Callable[[bytes], None]
    pause_input: Callable[[bool], None]
    # Ctrl-C while waiting (for a watcher): the operator stops waiting.
    give_up: Callable[[], bool] = lambda: False


@dataclass(frozen=True)
class DebugOutcome:
    target: str
    exit_status: int
    message: str


async def run_debug_shell(
    session: Session,
    command: DebugCommand,
    *,
    config: Config,
    vault: VaultClient,
    principal: Principal,
    terminal: Terminal,
    approvals: ApprovalDesk | None = None,
    alerts: AlertDispatcher | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DebugOutcome:
    """Run one debug shell for ``session``; raises BastionError (one sentence) when it could
    not start, with everything it had made removed.

    No labels are taken from the console: the first decision skips pod selectors and only
    picks the Vault role; the pod read with the new credential decides (see debug.py)."""
    started = time.monotonic()
    cluster = cluster_named(config, command.cluster)
    where = f"{cluster.name}/{command.namespace}/{command.pod}"
    try:
        check_privileges(
            Privileges(command.run_as_user, command.privileged, command.add_capabilities)
        )
        target = DebugTarget(
            cluster.name, command.namespace, command.pod, {}, command.container or None
        )
        image = command.image or only_image(config, principal, target, command.mode, now())
    except PolicyDenied as exc:
        await _refused(session, where, exc.message)
        raise
    terminal.progress(f"checking policy and asking Vault for a credential for {where}")
    access = await start_debug(
        session,
        config=config,
        vault=vault,
        principal=principal,
        target=target,
        request=DebugRequest(command.mode, image, command.reason),
        labels_known=False,
        run_as_user=command.run_as_user,
        approvals=approvals,
        now=now,
    )
    try:
        _still_open(session)
        await session.narrow_deadlines(
            idle_timeout=access.limits.idle_timeout.total_seconds(),
            hard_deadline=session.now() + access.limits.max_session.total_seconds(),
        )
        moderation = moderation_for(config, principal, access)
        async with watch_point(
            session,
            config,
            target=where,
            moderation=moderation,
            progress=terminal.progress,
            write=terminal.write,
        ) as point:
            return await _attached(
                session,
                access=access,
                command=command,
                image=image,
                config=config,
                terminal=terminal,
                where=where,
                clock=_Clock(started, access),
                point=point,
                moderation=moderation,
                alerts=alerts,
            )
    except BaseException as exc:
        # Whatever was made for this debug goes now, newest first; the session goes on.
        released = await session.release(CONTAINER) + await session.release(POD)
        released += await session.release("lease", purpose=DEBUG_PURPOSE)
        if isinstance(exc, BastionError):
            await _refused(session, where, exc.message, released=released)
        if session.ending is None and session.state is not State.BROWSING:
            await session.move(State.BROWSING)
        raise


def _plan(session: Session, access: DebugAccess, command: DebugCommand, image: str) -> DebugPlan:
    left = timedelta(seconds=max(session.deadlines.hard_deadline - session.now(), 0))
    # Copy and toolbox pods run their own debug container; the target is for ephemeral mode
    # (process namespace) and for naming what was debugged.
    wanted = target_container(access.pod, command.container or None)
    return DebugPlan(
        session_id=session.id,
        user=session.info.user,
        mode=command.mode,
        image=image,
        namespace=command.namespace,
        pod=command.pod,
        target_container=wanted,
        watchdog_seconds=watchdog_seconds_for(left),
        run_as_user=command.run_as_user,
        ordinal=next_ordinal(access.pod, session.id),
        command_nonce=new_nonce(),
    )


async def _attached(
    session: Session,
    *,
    access: DebugAccess,
    command: DebugCommand,
    image: str,
    config: Config,
    terminal: Terminal,
    where: str,
    clock: _Clock,
    point: WatchPoint,
    moderation: Moderation | None,
    alerts: AlertDispatcher | None = None,
) -> DebugOutcome:
    # The moderated-session gate: before anything of the shell exists in the cluster, for
    # every way in (console, direct command, reattach). Nothing is created until it passes.
    await await_watcher(
        session, point, moderation, progress=terminal.progress, give_up=terminal.give_up
    )
    _still_open(session)
    if moderation is not None:
        clock.mark("watcher")  # the wait is the auditor's time, not the bastion's
    plan = _plan(session, access, command, image)
    token = access.credential.token
    timeouts = config.limits
    # The bridge, once attached: the container's cleanup closes it first, whoever runs it.
    bridges: list[AttachBridge] = []
    async with KubeApi(
        access.cluster, token, timeout=timeouts.kubernetes_timeout.total_seconds()
    ) as kube:
        clock.mark("before_create")
        pod_name, container = await _container_for(
            session, kube=kube, access=access, plan=plan, terminal=terminal, bridges=bridges
        )
        clock.mark("create")
        terminal.progress(f"waiting for {container} to start")
        await kube.wait_for_container(
            command.namespace,
            pod_name,
            container,
            until="running",
            timeout=timeouts.debug_start_timeout.total_seconds(),
        )
        clock.mark("running")
        _still_open(session)
        terminal.progress(f"attaching to {container}")
        cols, rows = terminal.size()
        stream = await open_attach(
            kube.http,
            token,
            namespace=command.namespace,
            pod=pod_name,
            container=container,
            cols=cols,
            rows=rows,
            timeout=timeouts.kubernetes_timeout.total_seconds(),
        )
        clock.mark("attach")
        # Nothing reaches the operator unrecorded: no recording, no shell (DESIGN.md).
        try:
            recorder = await open_recorder(
                config,
                session_id=session.id,
                title=title_for(
                    session_id=session.id,
                    user=session.info.user,
                    cluster=access.cluster.name,
                    namespace=command.namespace,
                    pod=pod_name,
                    container=container,
                ),
                width=cols,
                height=rows,
                secrets=[token.reveal(), access.credential.lease_id],
                record_input=access.limits.record_input,
                pause=lambda held: bridges[-1].hold_output(held) if bridges else None,
                on_failure=lambda exc: recording_failed(session, exc),
            )
        except BaseException:
            await stream.aclose()
            raise
        point.attach(recorder)
        secrets = [token.reveal(), access.credential.lease_id]
        watched = WatchedStream(
            stream,
            session=session,
            nonce=plan.command_nonce,
            guard=SessionGuard(session, config.guard, alerts=alerts, secrets=secrets),
            secrets=secrets,
        )
        bridge = AttachBridge(
            watched,
            write=terminal.write,
            pause_input=terminal.pause_input,
            on_output=recorder.append,
            on_input=recorder.input,
            on_resize=recorder.resize,
        )
        bridges.append(bridge)
        try:
            _still_open(session)
            await session.move(
                State.ATTACHED,
                container=container,
                pod=pod_name,
                mode=str(command.mode),
                image=image,
                protocol=stream.protocol,
                recording=recorder.recording_id,
                startup_ms=clock.report(),
            )
            try:
                status = await terminal.attach(bridge)
            except RecordingUnavailable as exc:
                recording_failed(session, exc)
                status = EXIT_DETACHED
            if session.ending is None:
                # The kubelet ends an attach with Success however the shell ended: the exit
                # status is the container's, as kubectl reads it after `run -it`.
                status = await _exit_code(kube, command.namespace, pod_name, container, status)
        finally:
            await bridge.stop()
            point.detach()
            recording = await close_recording(session, recorder)
    if session.ending is not None:
        # The wipe owns the container and the credential now (it checks, then revokes).
        return DebugOutcome(where, status, f"the debug shell in {where} was ended")
    ended = await session.release(CONTAINER) + await session.release(POD)
    revoked = await session.release("lease", purpose=DEBUG_PURPOSE)
    await session.record(
        "session.debug_ended",
        outcome="ended",
        target=where,
        container=container,
        exit_status=status,
        commands=watched.commands,
        forged_command_reports=watched.forged_reports,
        resources=ended + revoked,
        **recording,
    )
    await session.move(State.BROWSING)
    return DebugOutcome(
        where, status, f"the debug shell in {where} ended with exit status {status}"
    )


def recording_failed(session: Session, exc: RecordingUnavailable) -> None:
    """A recording cannot be written: the session ends (its wipe stops the shell first)."""
    log.error("session %s: %s", session.id, exc.message)
    session.end_soon(Ending.ERROR)


async def close_recording(session: Session, recorder: Recorder) -> dict[str, Any]:
    """Write a recording's end; its id, digest and redaction counts for the session's event
    (``recording_complete`` false if it failed: that is an alert in the audit log, with how
    far it got)."""
    try:
        summary = await recorder.aclose()
    except RecordingUnavailable as exc:
        summary = recorder.summary()
        await session.record(
            "session.recording_failed",
            outcome="alert",
            recording=summary.recording_id,
            error=exc.message,
            complete=summary.complete,
        )
        return {"recording": summary.recording_id, "recording_complete": False}
    return {
        "recording": summary.recording_id,
        "recording_digest": summary.digest,
        "recording_complete": summary.complete,
        "redactions": summary.redactions,
    }


async def _container_for(
    session: Session,
    *,
    kube: KubeApi,
    access: DebugAccess,
    plan: DebugPlan,
    terminal: Terminal,
    bridges: list[AttachBridge],
) -> tuple[str, str]:
    """The pod and container to attach to: this session's running one, or a new one."""
    namespace = plan.namespace
    ref: dict[str, Any] = {
        "cluster": access.cluster.name,
        "mount": access.cluster.vault_mount,
        "role": access.limits.vault_role,
        "namespace": namespace,
        "mode": str(plan.mode),
    }
    credential = access.credential
    if plan.mode is Mode.EPHEMERAL:
        existing = find_reattachable(access.pod, session.id)
        body = ephemeral_container(plan)
        name = existing or str(body["name"])

        async def create() -> Any:
            if existing is not None:
                return None  # it runs already; journalled all the same, so it is ended too
            return await kube.add_ephemeral_container(namespace, plan.pod, body)

        if existing is not None:
            terminal.progress(f"reattaching to {existing}, still running in {plan.pod}")
            await session.record(
                "session.debug_reattached", outcome="reattached", pod=plan.pod, container=existing
            )
        else:
            terminal.progress(f"adding debug container {name} to {namespace}/{plan.pod}")
        await session.track(
            CONTAINER,
            {**ref, "pod": plan.pod, "container": name},
            create=create,
            cleanup=lambda: end_debug_container(
                access.cluster,
                credential.token,
                namespace,
                plan.pod,
                name,
                bridge=bridges[-1] if bridges else None,
            ),
        )
        return plan.pod, name
    pod_body = copy_pod(plan, access.pod) if plan.mode is Mode.COPY else toolbox_pod(plan)
    pod_name = str(pod_body["metadata"]["name"])
    name = str(pod_body["spec"]["containers"][-1]["name"])
    terminal.progress(f"creating pod {namespace}/{pod_name} ({plan.mode} mode)")
    await session.track(
        POD,
        {**ref, "pod": pod_name, "container": name},
        create=lambda: kube.create_pod(namespace, pod_body),
        cleanup=lambda: delete_debug_pod(
            access.cluster,
            credential.token,
            namespace,
            pod_name,
            bridge=bridges[-1] if bridges else None,
        ),
    )
    return pod_name, name


async def end_debug_container(
    cluster: Cluster,
    token: KubeToken,
    namespace: str,
    pod: str,
    container: str,
    *,
    bridge: AttachBridge | None = None,
    request_timeout: float = 10.0,
) -> str:
    """End an ephemeral debug container and check it reached Terminated; the outcome as the
    wipe event reports it. Kubernetes cannot delete an ephemeral container: closing its
    attach stdin (``stdinOnce``) ends the shell, and its watchdog ends it otherwise."""
    if bridge is not None:
        await bridge.stop()
    where = f"debug container {container} in {namespace}/{pod}"
    async with KubeApi(cluster, token, timeout=request_timeout) as kube:
        try:
            pod_object = await kube.get_pod(namespace, pod)
        except PolicyDenied:
            return "already gone (the pod no longer exists)"
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"{where} could not be checked ({exc.message})") from None
        if bridge is None and container_state(pod_object, container).state == "running":
            # Never attached, or attached by a bastion that died: attach once and close
            # stdin, which ends it at once (stdinOnce) instead of at its watchdog. It may end
            # on its own meanwhile, and then the attach is refused: the wait below decides.
            with contextlib.suppress(BastionError):
                await _close_stdin(kube, token, namespace, pod, container, wait=request_timeout)
        try:
            state = await kube.wait_for_container(
                namespace, pod, container, until="terminated", timeout=END_GRACE
            )
        except BastionError as exc:
            raise BackendUnavailable(
                f"{where} was not seen Terminated ({exc.message}); its watchdog ends it"
            ) from None
    return f"terminated (exit {state.exit_code})"


async def _close_stdin(
    kube: KubeApi, token: KubeToken, namespace: str, pod: str, container: str, *, wait: float
) -> None:
    stream = await open_attach(
        kube.http,
        token,
        namespace=namespace,
        pod=pod,
        container=container,
        cols=80,
        rows=24,
        timeout=wait,
    )
    try:
        await stream.close_stdin()
    finally:
        await stream.aclose()


async def delete_debug_pod(
    cluster: Cluster,
    token: KubeToken,
    namespace: str,
    pod: str,
    *,
    bridge: AttachBridge | None = None,
    request_timeout: float = 10.0,
) -> str:
    """Delete a copy or toolbox pod; "deleted" or "already gone"."""
    if bridge is not None:
        await bridge.stop()
    async with KubeApi(cluster, token, timeout=request_timeout) as kube:
        return await kube.delete_pod(namespace, pod)


def _still_open(session: Session) -> None:
    """The session may end (disconnect, kill, deadline) while a debug starts: its wipe owns
    what was made, and nothing more is attached or created."""
    if session.ending is not None:
        raise SessionExpired(f"the session ended ({session.ending}) while the debug was starting")


class _Clock:
    """Where a debug's start-up time went, for the ``attached`` event and bench/: Vault, the
    Kubernetes API (read, create, start, attach) and the rest, the bastion's own work."""

    def __init__(self, started: float, access: DebugAccess) -> None:
        self._last = self._started = started
        self._spent = {"vault": access.vault_seconds, "pod_read": access.pod_read_seconds}

    def mark(self, step: str) -> None:
        now = time.monotonic()
        if step != "before_create":
            self._spent[step] = now - self._last
        self._last = now

    def report(self) -> dict[str, float]:
        total = time.monotonic() - self._started
        spent = {step: round(seconds * 1000, 1) for step, seconds in self._spent.items()}
        spent["bastion"] = round((total - sum(self._spent.values())) * 1000, 1)
        spent["total"] = round(total * 1000, 1)
        return spent


async def _exit_code(kube: KubeApi, namespace: str, pod: str, container: str, reported: int) -> int:
    try:
        state = await kube.wait_for_container(
            namespace, pod, container, until="terminated", timeout=END_GRACE
        )
    except BastionError as exc:
        log.warning("%s/%s %s: exit status not read: %s", namespace, pod, container, exc)
        return reported
    return reported if state.exit_code is None else state.exit_code


def cluster_named(config: Config, name: str) -> Cluster:
    """The cluster an operator named, or the only one; PolicyDenied saying which exist."""
    if name:
        cluster = config.cluster(name)
        if cluster is not None:
            return cluster
        names = ", ".join(c.name for c in config.clusters)
        raise PolicyDenied(f"there is no cluster named {name[:80]!r} here; clusters: {names}")
    if len(config.clusters) == 1:
        return config.clusters[0]
    names = ", ".join(c.name for c in config.clusters)
    raise PolicyDenied(f"this bastion serves several clusters ({names}): name one with --cluster")


def only_image(
    config: Config,
    principal: Principal,
    target: DebugTarget,
    mode: Mode,
    now: datetime,
    *,
    scope: Scope = Scope.SHELL,
) -> str:
    """The one image approved for ``scope`` there; PolicyDenied (saying what a grant there
    does allow, if one does) when none is, or asking for --image when several are."""
    images = approved_images(config.policy(), principal, target, mode, now, scope=scope)
    if len(images) == 1:
        return images[0]
    if not images:
        for other in Scope:
            # A grant there with other scopes: its refusal says which ones it allows.
            found = approved_images(config.policy(), principal, target, mode, now, scope=other)
            if found:
                probe = DebugRequest(mode, found[0], scope=scope)
                decision = decide(
                    config.policy(), principal, target, probe, now, labels_known=False
                )
                raise PolicyDenied(decision.reason)
        where = f"{target.cluster}/{target.namespace}"
        if scope is Scope.SHELL:
            raise PolicyDenied(
                f"no image is approved for you in {where} in {mode} mode; ask an administrator "
                "for a grant"
            )
        raise PolicyDenied(
            f"no grant lets you open the {scope.value} view in {where}; ask an administrator "
            "for a grant"
        )
    raise PolicyDenied(
        "several images are approved there; name one with --image: " + ", ".join(images[:5])
    )


async def _refused(
    session: Session, where: str, reason: str, *, released: list[dict[str, str]] | None = None
) -> None:
    await session.record(
        "session.debug_refused",
        outcome="refused",
        target=where,
        reason=reason,
        **({"released": released} if released else {}),
    )
