"""A read-only view of a pod (docs/introspection.md), for a grant's view scopes.

Order, and why:

1. decide with the view's scope before anything else, and for the files view check the
   operator's path against the grant's prefixes: a request outside the grant is refused and
   audited (``introspect.view``, outcome ``refused``) with no call to Vault or the cluster;
2. :func:`bastion.session.debug.start_debug`, as for a shell: a journalled credential for
   the namespace, the pod re-read and the policy decided again with its real labels (and a
   required approval spent), ``session.debug_allowed`` written before anything is made;
3. the view itself: ``env`` from the pod just read (masked as the console masks it), ``logs``
   from the API (redacted as recordings are), and the others as one fixed command exec'd in a
   journalled debug container, made and ended exactly as a shell's;
4. the container ended and the credential revoked at once, ``introspect.view`` written with
   the row count, the session back to ``browsing``.

A failure at any step is one sentence for the operator and leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.config import Config
from bastion.config.models import Cluster
from bastion.console_protocol import ProtocolError, ViewResult, ViewRow, encode
from bastion.debug_command import DEFAULT_UID
from bastion.debug_container import (
    DebugPlan,
    ephemeral_container,
    next_ordinal,
    target_container,
    watchdog_seconds_for,
)
from bastion.errors import BackendUnavailable, BastionError, PolicyDenied
from bastion.introspect.paths import check_path
from bastion.introspect.views import (
    ENV_COLUMNS,
    FILE_COLUMNS,
    LOG_COLUMNS,
    MAX_OUTPUT,
    MAX_ROWS,
    PROCESS_COLUMNS,
    SOCKET_COLUMNS,
    VIEW_SCOPES,
    ViewTable,
    command_for,
    parse_files,
    parse_logs,
    parse_processes,
    parse_sockets,
)
from bastion.kube import KubeApi
from bastion.kube_attach import run_exec
from bastion.policy import (
    DebugRequest,
    DebugTarget,
    Mode,
    Policy,
    Principal,
    Scope,
    approved_images,
    decide,
)
from bastion.session.approvals import ApprovalDesk, ApprovalPending
from bastion.session.debug import DEBUG_PURPOSE, DebugAccess, start_debug
from bastion.session.debug_shell import CONTAINER, cluster_named, end_debug_container, only_image
from bastion.session.lifecycle import State
from bastion.session.pod_view import masked_env
from bastion.session.session import Session
from bastion.terminal_text import printable
from bastion.vault import VaultClient

__all__ = ["ViewRequest", "allowed_views", "open_view", "view_message"]

log = logging.getLogger(__name__)

# A view's command is short: ps, ss or one ls.
_COMMAND_TIMEOUT = 20.0


@dataclass(frozen=True)
class ViewRequest:
    cluster: str
    namespace: str
    pod: str
    view: str  # a Scope's value other than "shell"; checked here
    container: str = ""  # "" = the pod's only container
    path: str = ""  # the files view's directory
    image: str = ""  # "" = the one toolbox image policy approves there
    reason: str = ""


async def open_view(
    session: Session,
    request: ViewRequest,
    *,
    config: Config,
    vault: VaultClient,
    principal: Principal,
    approvals: ApprovalDesk | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ViewTable:
    """The view as rows; PolicyDenied (one sentence, audited) when it is outside the grant,
    and BastionError when it could not be shown, with everything made for it removed."""
    where = f"{request.cluster or '?'}/{request.namespace}/{request.pod}"
    audit: dict[str, Any] = {"view": request.view[:40], "target": where}
    if request.path:
        audit["path"] = printable(request.path[:1100])
    try:
        scope, cluster, target, image = _checked(config, principal, request, now())
    except PolicyDenied as exc:
        await session.record("introspect.view", outcome="refused", reason=exc.message, **audit)
        raise
    audit["target"] = f"{cluster.name}/{request.namespace}/{request.pod}"
    try:
        access = await start_debug(
            session,
            config=config,
            vault=vault,
            principal=principal,
            target=target,
            request=DebugRequest(Mode.EPHEMERAL, image, request.reason, scope=scope),
            labels_known=False,
            run_as_user=DEFAULT_UID,
            approvals=approvals,
            now=now,
        )
    except BastionError as exc:
        # start_debug recorded why and released its credential; the view's own record says
        # which view it was (refused with the pod's real labels, or waiting for approval).
        outcome = "awaiting_approval" if isinstance(exc, ApprovalPending) else "refused"
        await session.record("introspect.view", outcome=outcome, reason=exc.message, **audit)
        raise
    try:
        table = await _view(session, access, scope, request, config=config, image=image)
    except BaseException as exc:
        released = await session.release(CONTAINER)
        released += await session.release("lease", purpose=DEBUG_PURPOSE)
        if isinstance(exc, BastionError):
            await session.record(
                "introspect.view",
                outcome="failed",
                reason=exc.message,
                released=released,
                **audit,
            )
        if session.ending is None and session.state is not State.BROWSING:
            await session.move(State.BROWSING)
        raise
    released = await session.release(CONTAINER)
    released += await session.release("lease", purpose=DEBUG_PURPOSE)
    await session.record(
        "introspect.view",
        outcome="shown",
        rows=len(table.rows),
        truncated=table.truncated,
        resources=released,
        **audit,
    )
    if session.ending is None:
        await session.move(State.BROWSING)
    return table


def _checked(
    config: Config, principal: Principal, request: ViewRequest, now: datetime
) -> tuple[Scope, Cluster, DebugTarget, str]:
    """Everything decided before any call: the view exists, the grant allows it there, the
    path is within the grant's prefixes. PolicyDenied otherwise."""
    names = ", ".join(s.value for s in VIEW_SCOPES)
    try:
        scope = Scope(request.view)
    except ValueError:
        raise PolicyDenied(f"{request.view[:40]!r} is not a view; the views are {names}") from None
    if scope not in VIEW_SCOPES:
        raise PolicyDenied(f"{scope.value!r} is not a view; the views are {names}")
    cluster = cluster_named(config, request.cluster)
    target = DebugTarget(
        cluster.name, request.namespace, request.pod, {}, request.container or None
    )
    image = request.image or only_image(config, principal, target, Mode.EPHEMERAL, now, scope=scope)
    probe = DebugRequest(Mode.EPHEMERAL, image, request.reason, scope=scope)
    decision = decide(config.policy(), principal, target, probe, now, labels_known=False)
    if not decision.allowed or decision.limits is None:
        raise PolicyDenied(decision.reason)
    if scope is Scope.FILES:
        try:
            check_path(request.path, decision.limits.path_prefixes)
        except ValueError as exc:
            raise PolicyDenied(str(exc)) from None
    elif request.path:
        raise PolicyDenied(f"only the files view takes a path, not the {scope.value} view")
    return scope, cluster, target, image


async def _view(
    session: Session,
    access: DebugAccess,
    scope: Scope,
    request: ViewRequest,
    *,
    config: Config,
    image: str,
) -> ViewTable:
    where = f"{access.cluster.name}/{request.namespace}/{request.pod}"
    container = target_container(access.pod, request.container or None)
    timeout = config.limits.kubernetes_timeout.total_seconds()
    if scope is Scope.ENV:
        spec = access.pod.get("spec") or {}
        found: dict[str, Any] = next(
            (c for c in spec.get("containers") or [] if c.get("name") == container), {}
        )
        rows = tuple((printable(v.name), printable(v.value), v.source) for v in masked_env(found))
        return ViewTable(scope.value, f"{where} {container}", ENV_COLUMNS, rows[:MAX_ROWS])
    async with KubeApi(access.cluster, access.credential.token, timeout=timeout) as kube:
        if scope is Scope.LOGS:
            text = await kube.read_log(
                request.namespace,
                request.pod,
                container,
                tail_lines=MAX_ROWS,
                limit_bytes=MAX_OUTPUT,
            )
            log_rows, redactions, cut = parse_logs(text)
            note = f"{redactions} secrets redacted" if redactions else ""
            return ViewTable(scope.value, f"{where} {container}", LOG_COLUMNS, log_rows, cut, note)
        if scope is Scope.FILES:
            # The prefixes may differ once the pod's labels are known: checked again.
            check_path(request.path, access.limits.path_prefixes)
        argv = command_for(scope, request.path)
        debug = await _debug_container(
            session, kube, access, request, target=container, image=image
        )
        await kube.wait_for_container(
            request.namespace,
            request.pod,
            debug,
            until="running",
            timeout=config.limits.debug_start_timeout.total_seconds(),
        )
        result = await run_exec(
            kube.http,
            access.credential.token,
            namespace=request.namespace,
            pod=request.pod,
            container=debug,
            argv=argv,
            timeout=_COMMAND_TIMEOUT,
            max_output=MAX_OUTPUT,
        )
    if result.failure is not None or result.exit_status is None:
        raise BackendUnavailable(
            f"the {scope.value} view of {where} could not run its command"
            + (f" ({result.failure})" if result.failure else ""),
            hint="see the pod's events",
        )
    shown = request.path if scope is Scope.FILES else ""
    if result.exit_status != 0:
        # ls says why on stderr, which is not collected: no untrusted text to show.
        raise PolicyDenied(
            f"the {scope.value} view of {where} failed (exit status {result.exit_status})"
            + (f": {shown} does not exist or the debug container may not read it" if shown else "")
        )
    output = result.output.decode("utf-8", errors="replace")
    parse, columns = {
        Scope.PROCESSES: (parse_processes, PROCESS_COLUMNS),
        Scope.SOCKETS: (parse_sockets, SOCKET_COLUMNS),
        Scope.FILES: (parse_files, FILE_COLUMNS),
    }[scope]
    rows_, cut = parse(output)
    label = f"{where} {container}" + (f" {shown}" if shown else "")
    return ViewTable(scope.value, label, columns, rows_, cut or result.truncated)


async def _debug_container(
    session: Session,
    kube: KubeApi,
    access: DebugAccess,
    request: ViewRequest,
    *,
    target: str,
    image: str,
) -> str:
    """A debug container for the view's command, journalled and ended as a shell's is: in the
    target's process namespace, restricted, under its watchdog."""
    left = timedelta(seconds=max(session.deadlines.hard_deadline - session.now(), 0))
    plan = DebugPlan(
        session_id=session.id,
        user=session.info.user,
        mode=Mode.EPHEMERAL,
        image=image,
        namespace=request.namespace,
        pod=request.pod,
        target_container=target,
        watchdog_seconds=watchdog_seconds_for(left),
        run_as_user=DEFAULT_UID,
        ordinal=next_ordinal(access.pod, session.id),
    )
    body = ephemeral_container(plan)
    name = str(body["name"])
    credential = access.credential
    await session.track(
        CONTAINER,
        {
            "cluster": access.cluster.name,
            "mount": access.cluster.vault_mount,
            "role": access.limits.vault_role,
            "namespace": request.namespace,
            "mode": str(Mode.EPHEMERAL),
            "pod": request.pod,
            "container": name,
        },
        create=lambda: kube.add_ephemeral_container(request.namespace, request.pod, body),
        cleanup=lambda: end_debug_container(
            access.cluster, credential.token, request.namespace, request.pod, name
        ),
    )
    return name


def allowed_views(
    policy: Policy, principal: Principal, target: DebugTarget, now: datetime
) -> list[str]:
    """The views policy allows on ``target`` (its labels known) without more input from the
    operator: what the console offers keys for. A grant that wants a reason first leaves its
    views to ``ssh bastion view ... --reason``."""
    shown = []
    for scope in VIEW_SCOPES:
        images = approved_images(policy, principal, target, Mode.EPHEMERAL, now, scope=scope)
        probe = DebugRequest(Mode.EPHEMERAL, images[0] if images else "", scope=scope)
        if images and decide(policy, principal, target, probe, now).allowed:
            shown.append(scope.value)
    return shown


def view_message(request_id: int, table: ViewTable) -> ViewResult:
    """The console's message for ``table``, with rows dropped from the end (and said so)
    until it fits one protocol line."""
    rows = [ViewRow(list(row)) for row in table.rows]
    truncated = table.truncated
    while True:
        message = ViewResult(
            request_id, table.view, table.target, list(table.columns), rows, truncated, table.note
        )
        try:
            encode(message)
        except ProtocolError:
            if not rows:
                raise
            rows = rows[: len(rows) // 2]
            truncated = True
            continue
        return message
