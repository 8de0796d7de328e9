"""``ssh bastion view VIEW NAMESPACE/POD``: one read-only view, printed for a script.

No terminal is needed (nothing interactive happens): the table goes to stdout as
tab-separated lines and the exit status is 0; a refusal or a failure is one sentence on
stderr and exit status 1. The session is opened, audited and wiped as any other.
"""

from __future__ import annotations

from collections.abc import Callable

from bastion.config import Config
from bastion.errors import BackendUnavailable, BastionError
from bastion.introspect.command import ViewCommand, format_table
from bastion.policy import Principal
from bastion.session.approvals import ApprovalDesk
from bastion.session.introspect import ViewRequest, open_view
from bastion.session.lifecycle import State
from bastion.session.session import Session
from bastion.terminal_text import printable
from bastion.vault import VaultClient

__all__ = ["run_view_command"]


async def run_view_command(
    session: Session,
    command: ViewCommand,
    *,
    config: Config,
    vault: VaultClient | None,
    principal: Principal,
    approvals: ApprovalDesk | None,
    out: Callable[[bytes], None],
    err: Callable[[bytes], None],
) -> int:
    await session.move(State.BROWSING, command="view")
    try:
        if vault is None:
            raise BackendUnavailable("views need Vault, which this bastion does not use")
        table = await open_view(
            session,
            ViewRequest(
                cluster=command.cluster,
                namespace=command.namespace,
                pod=command.pod,
                view=command.view.value,
                container=command.container,
                path=command.path,
                image=command.image,
                reason=command.reason,
            ),
            config=config,
            vault=vault,
            principal=principal,
            approvals=approvals,
        )
    except BastionError as exc:
        err(f"bastion: {printable(exc.message)}\n".encode())
        return 1
    out(format_table(table).encode())
    return 0
