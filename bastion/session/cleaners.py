"""Cleaners the reaper uses for resources that need a backend (the temp directory's is in
:mod:`bastion.session.reaper`). Each is idempotent: "already gone" counts as done."""

from __future__ import annotations

from bastion.session.reaper import Cleaner
from bastion.state.journal import ResourceRecord
from bastion.vault import VaultClient

__all__ = ["lease_cleaner"]


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
