"""Starting a debug: the policy decision, the session's Kubernetes credential, and the
check of the target pod with that credential. The debug container itself (issue 6) is made
with what :func:`start_debug` returns.

Order, and why:

1. decide with the labels the console reported (untrusted, but only used to pick the Vault
   role and refuse early), or without pod selectors when no labels are known yet;
2. journal, then ask Vault for a credential for exactly the target namespace, valid for the
   grant's ``max_session`` or the session's time left, whichever is shorter (at least 10
   minutes, Kubernetes' minimum; the session's own deadline ends it sooner when the grant
   says so, and the wipe revokes it);
3. read the pod with that credential and decide again with its real labels: a console that
   lied about labels gets nothing;
4. when a covering grant requires another operator's approval, spend the approval of
   exactly this debug, or leave a request for one (:mod:`bastion.session.approvals`) and
   stop here: ``ApprovalPending``, whose credential is revoked like any other.

Any failure after step 1 revokes the credential at once (no half-started debug is left),
moves the session back to ``browsing`` and raises one sentence for the operator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.approval import ApprovalRequest, DebugKey
from bastion.audit.log import Secret
from bastion.config import Config
from bastion.config.models import Cluster
from bastion.debug_command import DEFAULT_UID
from bastion.debug_container import target_container
from bastion.errors import BackendUnavailable, BastionError, PolicyDenied
from bastion.images import parse_pinned_image
from bastion.kube import KubeApi
from bastion.policy import (
    DebugRequest,
    DebugTarget,
    Decision,
    Limits,
    Principal,
    Scope,
    decide,
)
from bastion.session.approvals import ApprovalDesk, ApprovalPending
from bastion.session.lifecycle import State
from bastion.session.session import Session
from bastion.terminal_text import printable
from bastion.vault import MIN_KUBE_TTL, KubeCredential, VaultClient

__all__ = ["DEBUG_PURPOSE", "DebugAccess", "start_debug"]

log = logging.getLogger(__name__)

# The journal ref's "purpose" of a debug's lease (a session also holds the console's
# "browse" lease, which a debug's end must not revoke).
DEBUG_PURPOSE = "debug"


@dataclass(frozen=True)
class DebugAccess:
    cluster: Cluster
    credential: KubeCredential
    limits: Limits
    pod: dict[str, Any]
    # Where the time went (seconds): reported with the attach, measured by bench/.
    vault_seconds: float = 0.0
    pod_read_seconds: float = 0.0
    # The approval this debug spent, when a grant required one: what a rule that approved
    # sessions must be watched (issue 9, live oversight) will look at before the attach.
    approval: ApprovalRequest | None = None


def _cluster(config: Config, name: str) -> Cluster:
    cluster = config.cluster(name)
    if cluster is None:
        raise PolicyDenied(f"there is no cluster named {name!r} on this bastion")
    return cluster


async def start_debug(
    session: Session,
    *,
    config: Config,
    vault: VaultClient,
    principal: Principal,
    target: DebugTarget,
    request: DebugRequest,
    labels_known: bool = True,
    run_as_user: int = DEFAULT_UID,
    approvals: ApprovalDesk | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DebugAccess:
    """``labels_known=False`` when the operator named the pod without the console's listing
    (``ssh bastion debug NS/POD``): pod selectors wait for the pod's real labels.

    ``run_as_user`` is part of what an approval covers; ``approvals`` takes the requests of
    grants that require approval (without it, such a debug is refused)."""
    policy = config.policy()
    first = decide(policy, principal, target, request, now(), labels_known=labels_known)
    if not first.allowed or first.limits is None:
        await _refused(session, target, first.reason)
        raise PolicyDenied(first.reason)
    cluster = _cluster(config, target.cluster)
    where = {"cluster": target.cluster, "namespace": target.namespace, "pod": target.pod}
    # The operator's reason is part of the record an investigator reads (and a grant may
    # require it): stored as typed, minus what could rewrite a terminal that shows the log.
    fields = {"reason": printable(request.reason)} if request.reason else {}
    await session.move(State.STARTING_DEBUG, target=where, mode=str(request.mode), **fields)
    try:
        return await _credential_and_check(
            session,
            config=config,
            vault=vault,
            principal=principal,
            target=target,
            request=request,
            cluster=cluster,
            limits=first.limits,
            run_as_user=run_as_user,
            approvals=approvals,
            now=now,
        )
    except (BastionError, ValueError) as exc:
        outcomes = await session.release("lease", purpose=DEBUG_PURPOSE)
        reason = exc.message if isinstance(exc, BastionError) else str(exc)
        await _refused(
            session,
            target,
            reason,
            released=outcomes,
            # Not refused: waiting for someone's approval (approval.requested says more).
            outcome="awaiting_approval" if isinstance(exc, ApprovalPending) else "refused",
        )
        if session.ending is None:
            await session.move(State.BROWSING)
        raise


async def _credential_and_check(
    session: Session,
    *,
    config: Config,
    vault: VaultClient,
    principal: Principal,
    target: DebugTarget,
    request: DebugRequest,
    cluster: Cluster,
    limits: Limits,
    run_as_user: int,
    approvals: ApprovalDesk | None,
    now: Callable[[], datetime],
) -> DebugAccess:
    # No longer than the grant allows, nor than the session has left (a break-glass time box
    # half used): the wipe revokes it anyway, and a lease that dies on its own is better.
    left = timedelta(seconds=max(session.deadlines.hard_deadline - session.now(), 0))
    ttl = max(min(limits.max_session, left), MIN_KUBE_TTL)
    mount, role, namespace = cluster.vault_mount, limits.vault_role, target.namespace

    async def revoke(credential: KubeCredential) -> str:
        credential.token.drop()
        await vault.revoke_lease(credential.lease_id)
        return "revoked"

    holder: list[KubeCredential] = []

    async def issue() -> KubeCredential:
        credential = await vault.issue_kube_credential(
            mount, role, namespace, timedelta(seconds=ttl.total_seconds())
        )
        holder.append(credential)
        return credential

    started = time.monotonic()
    credential: KubeCredential = await session.track(
        "lease",
        {
            "cluster": cluster.name,
            "mount": mount,
            "role": role,
            "namespace": namespace,
            "purpose": DEBUG_PURPOSE,
        },
        create=issue,
        cleanup=lambda: revoke(holder[0]),
        created_ref=lambda c: {"lease_id": c.lease_id, "service_account": c.service_account},
    )
    issued = time.monotonic()
    # Recorded before the credential is first used (the pod read), whatever is decided next.
    # The lease id only as its HMAC: enough to match the wipe's record of its revocation.
    await session.record(
        "session.credential_issued",
        outcome="issued",
        cluster=cluster.name,
        namespace=namespace,
        vault_role=role,
        service_account=credential.service_account,
        lease_id=Secret(credential.lease_id),
        lease_seconds=round(credential.lease_duration.total_seconds()),
        token_expires=now() + credential.lease_duration,
    )
    recorded = time.monotonic()
    timeout = config.limits.kubernetes_timeout.total_seconds()
    async with KubeApi(cluster, credential.token, timeout=timeout) as kube:
        pod = await kube.get_pod(target.namespace, target.pod)
    read = time.monotonic()
    labels = (pod.get("metadata") or {}).get("labels") or {}
    checked = DebugTarget(
        target.cluster, target.namespace, target.pod, dict(labels), target.container
    )
    final = decide(config.policy(), principal, checked, request, now())
    if not final.allowed or final.limits is None:
        raise PolicyDenied(final.reason)
    if final.limits.vault_role != limits.vault_role:
        raise PolicyDenied(
            "the pod's labels changed the grant that applies; refresh the list and try again"
        )
    approval = await _approval(
        session,
        approvals,
        principal=principal,
        target=checked,
        request=request,
        pod=pod,
        decision=final,
        run_as_user=run_as_user,
    )
    # What an investigator needs to name exactly what was debugged, by whose grant, with
    # which image: written before anything is made in the pod.
    await session.record(
        "session.debug_allowed",
        outcome="allowed",
        cluster=cluster.name,
        namespace=namespace,
        pod=target.pod,
        pod_uid=(pod.get("metadata") or {}).get("uid"),
        target_container=_target_container(pod, target.container),
        mode=str(request.mode),
        scope=str(request.scope),
        image=request.image,
        image_digest=_digest(request.image),
        grants=list(final.grants),
        vault_role=final.limits.vault_role,
        **({"approval": approval.id, "approved_by": approval.decided_by} if approval else {}),
    )
    return DebugAccess(
        cluster, credential, final.limits, pod, issued - started, read - recorded, approval
    )


async def _approval(
    session: Session,
    approvals: ApprovalDesk | None,
    *,
    principal: Principal,
    target: DebugTarget,
    request: DebugRequest,
    pod: dict[str, Any],
    decision: Decision,
    run_as_user: int,
) -> ApprovalRequest | None:
    """The approval this debug spends; None when no covering grant requires one. Raises
    ApprovalPending when it has none yet (a request waits for it)."""
    limits = decision.limits
    need = limits.approval if limits is not None else None
    if need is None or limits is None:
        return None
    if approvals is None:
        raise PolicyDenied(
            f"grant {need.grants[0]!r} requires another operator's approval, which this "
            "bastion does not take here; ask an administrator"
        )
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    if not uid:
        # The UID tells a pod from its replacement of the same name: without it, no approval.
        raise BackendUnavailable(
            f"the cluster sent pod {target.pod} without a UID, so no approval can name it",
            hint="see the API server's logs",
        )
    key = DebugKey(
        cluster=target.cluster,
        namespace=target.namespace,
        pod=target.pod,
        pod_uid=uid,
        # Resolved, so that "the only container" and its name are one approval.
        container=target_container(pod, target.container),
        # A view's approval names the view: approving one never opens a shell, nor another
        # view (docs/introspection.md).
        mode=_approved_use(request),
        image=request.image,
        run_as_user=run_as_user,
        duration_seconds=round(limits.max_session.total_seconds()),
        approvers=need.canonical(),
    )
    return await approvals.admit(
        session, principal=principal, key=key, reason=request.reason, need=need
    )


def _approved_use(request: DebugRequest) -> str:
    if request.scope is Scope.SHELL:
        return str(request.mode)
    return f"{request.mode} view {request.scope}"


def _target_container(pod: dict[str, Any], requested: str | None) -> str | None:
    """The container the debug is for; None when the pod leaves it open (the debug shell
    then asks the operator to choose, and refuses)."""
    try:
        return target_container(pod, requested)
    except PolicyDenied:
        return None


def _digest(image: str) -> str | None:
    try:
        return parse_pinned_image(image).digest
    except ValueError:
        return None


async def _refused(
    session: Session,
    target: DebugTarget,
    reason: str,
    *,
    released: Any = None,
    outcome: str = "refused",
) -> None:
    await session.record(
        "session.debug_refused",
        outcome=outcome,
        cluster=target.cluster,
        namespace=target.namespace,
        pod=target.pod,
        reason=reason,
        **({"released": released} if released else {}),
    )
