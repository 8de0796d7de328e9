"""Cleaners the reaper uses for resources that need a backend (the temp directory's is in
:mod:`bastion.session.reaper`). Each is idempotent: "already gone" counts as done.

These are the *remote* kinds: a lease lives in Vault, a debug container or pod in Kubernetes,
so any replica's reaper can clean them, including the reaper leader cleaning after a dead
replica. A *host-local* kind (``temp_dir``, listed in
:data:`bastion.session.reaper.HOST_LOCAL_KINDS`) can only be cleaned on the host that made
it, and is left deferred for that host's reaper."""

from __future__ import annotations

from collections.abc import Sequence

from bastion.config.models import Cluster
from bastion.errors import BackendUnavailable
from bastion.session.debug_shell import delete_debug_pod, end_debug_container
from bastion.session.reaper import Cleaner
from bastion.state.journal import ResourceRecord
from bastion.vault import MIN_KUBE_TTL, VaultClient

__all__ = ["debug_cleaner", "lease_cleaner"]


def lease_cleaner(vault: VaultClient, *, attempts: int = 3) -> Cleaner:
    """Revokes a Vault lease (``ref={"lease_id": ...}``); Vault deletes the service account
    with it, so the session's token is dead. A lease Vault no longer knows counts as revoked;
    a Vault that does not answer fails the attempt, and the reaper retries later."""

    async def clean(resource: ResourceRecord) -> str:
        lease_id = resource.ref.get("lease_id")
        if not isinstance(lease_id, str) or not lease_id:
            # Planned, never confirmed: if Vault issued it at all, the answer was lost with
            # the worker, and the credential ends at its own TTL. Nothing to revoke by id.
            return "never confirmed as issued; any credential ends at its TTL"
        await vault.revoke_lease(lease_id, attempts=attempts)
        return "revoked"

    return clean


def debug_cleaner(vault: VaultClient, clusters: Sequence[Cluster]) -> Cleaner:
    """Ends a debug container (``debug_container``: checked Terminated) or deletes a debug pod
    (``debug_pod``) of a session whose worker died, with a credential of its own.

    The session's credential lived only in the dead worker's memory, so the reaper asks Vault
    for a new one, for the same role and namespace, with the shortest TTL Kubernetes allows,
    and revokes it as soon as the work is done. It is not journalled (a closed session cannot
    plan more): if this reaper dies in between, it ends at its TTL (10 minutes).
    """
    by_name = {cluster.name: cluster for cluster in clusters}

    async def clean(resource: ResourceRecord) -> str:
        ref = resource.ref
        cluster = by_name.get(str(ref.get("cluster")))
        if cluster is None:
            raise BackendUnavailable(
                f"cluster {ref.get('cluster')!r} is no longer configured; remove the "
                f"{resource.kind} {ref.get('namespace')}/{ref.get('pod')} by hand"
            )
        namespace, pod = str(ref["namespace"]), str(ref["pod"])
        credential = await vault.issue_kube_credential(
            str(ref["mount"]), str(ref["role"]), namespace, MIN_KUBE_TTL
        )
        try:
            if resource.kind == "debug_pod":
                return await delete_debug_pod(cluster, credential.token, namespace, pod)
            return await end_debug_container(
                cluster, credential.token, namespace, pod, str(ref["container"])
            )
        finally:
            credential.token.drop()
            await vault.revoke_lease(credential.lease_id)

    return clean
