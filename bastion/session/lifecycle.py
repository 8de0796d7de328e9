"""A session's states and the only transitions between them. Pure.

    authenticated ─► browsing ─► starting_debug ─► attached
                        ▲              │              │
                        └──────────────┴──────────────┘   (debug failed / shell ended)
    any state but closed ─► wiping ─► closed

Every ending (shell exit then logout, disconnect, idle, hard limit, admin kill, SIGTERM)
goes through ``wiping``: that is where everything the session created is removed, so no
path to ``closed`` can skip the wipe. Nothing leaves ``closed``.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Ending", "IllegalTransition", "State", "can_move", "check_move"]


class State(StrEnum):
    AUTHENTICATED = "authenticated"
    BROWSING = "browsing"
    STARTING_DEBUG = "starting_debug"
    ATTACHED = "attached"
    WIPING = "wiping"
    CLOSED = "closed"


class Ending(StrEnum):
    """Why a session ended; recorded in ``session.wiped``."""

    LOGOUT = "logout"  # the console (and any shell) ended normally
    DISCONNECT = "disconnect"
    IDLE = "idle_timeout"
    HARD_LIMIT = "hard_limit"
    ADMIN_KILL = "admin_kill"
    SHUTDOWN = "shutdown"  # the bastion is stopping (SIGTERM)
    ERROR = "error"  # something the session needs (audit log, console) failed
    GUARD = "guard"  # a guard rule with action "end" tripped (bastion.session.guard)


_MOVES: dict[State, frozenset[State]] = {
    State.AUTHENTICATED: frozenset({State.BROWSING, State.WIPING}),
    State.BROWSING: frozenset({State.STARTING_DEBUG, State.WIPING}),
    State.STARTING_DEBUG: frozenset({State.ATTACHED, State.BROWSING, State.WIPING}),
    State.ATTACHED: frozenset({State.BROWSING, State.WIPING}),
    State.WIPING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class IllegalTransition(ValueError):
    def __init__(self, current: State, wanted: State) -> None:
        super().__init__(f"a session cannot go from {current} to {wanted}")
        self.current = current
        self.wanted = wanted


def can_move(current: State, wanted: State) -> bool:
    return wanted in _MOVES[current]


def check_move(current: State, wanted: State) -> None:
    if not can_move(current, wanted):
        raise IllegalTransition(current, wanted)
