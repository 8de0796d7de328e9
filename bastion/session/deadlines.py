"""A session's two deadlines and the warnings before them. Pure: the caller passes the time.

* **idle**: no input for ``idle_timeout`` seconds; every keystroke moves it.
* **hard**: an absolute end, whatever the operator does.

Warnings are due ``WARN_BEFORE`` seconds before each deadline (2 minutes and 30 seconds),
once per deadline value: input that moves the idle deadline re-arms its warnings. A warning
whose moment has passed without being given (the deadline was already that close when it
was set) is given at once, but only the nearest one: an operator is not told "2 minutes
left" and "30 seconds left" in the same breath.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["WARN_BEFORE", "Deadlines", "Kind", "Notice"]

WARN_BEFORE = (120.0, 30.0)


class Kind(StrEnum):
    IDLE = "idle"
    HARD = "hard"


@dataclass(frozen=True)
class Notice:
    kind: Kind
    seconds_left: float  # 0 or less: the deadline has passed
    deadline: float

    @property
    def expired(self) -> bool:
        return self.seconds_left <= 0

    def message(self) -> str:
        if self.kind is Kind.IDLE:
            if self.expired:
                return "the session has been idle too long and ends now"
            return (
                f"no input: the session ends in {_human(self.seconds_left)} "
                "unless you type something"
            )
        if self.expired:
            return "the session has reached its time limit and ends now"
        return f"the session reaches its time limit in {_human(self.seconds_left)}"


def _human(seconds: float) -> str:
    whole = max(round(seconds), 1)
    if whole >= 90:
        return f"{round(whole / 60)} minutes"
    return f"{whole} seconds"


@dataclass(frozen=True)
class Deadlines:
    idle_timeout: float
    hard_deadline: float

    def idle_deadline(self, last_input: float) -> float:
        return last_input + self.idle_timeout

    def _deadlines(self, last_input: float) -> tuple[tuple[Kind, float], ...]:
        return ((Kind.IDLE, self.idle_deadline(last_input)), (Kind.HARD, self.hard_deadline))

    def due(
        self, now: float, last_input: float, given: frozenset[tuple[Kind, float, float]]
    ) -> list[tuple[Notice, tuple[Kind, float, float]]]:
        """Notices to give now, each with the key to add to ``given`` once it is given."""
        out: list[tuple[Notice, tuple[Kind, float, float]]] = []
        for kind, deadline in self._deadlines(last_input):
            left = deadline - now
            if left <= 0:
                out.append((Notice(kind, left, deadline), (kind, 0.0, deadline)))
                continue
            # The nearest warning whose moment has come; earlier ones are skipped with it.
            passed = [w for w in WARN_BEFORE if left <= w]
            if not passed:
                continue
            nearest = min(passed)
            keys = [(kind, w, deadline) for w in passed]
            if any(key in given for key in keys if key[1] <= nearest):
                continue
            out.append((Notice(kind, left, deadline), (kind, nearest, deadline)))
        return out

    def next_wakeup(
        self, now: float, last_input: float, given: frozenset[tuple[Kind, float, float]]
    ) -> float:
        """The next moment something may be due (a warning or a deadline)."""
        moments: list[float] = []
        for kind, deadline in self._deadlines(last_input):
            moments.append(deadline)
            moments += [
                deadline - w
                for w in WARN_BEFORE
                if deadline - w > now and (kind, w, deadline) not in given
            ]
        future = [m for m in moments if m > now]
        return min(future) if future else now
