"""Durations as operators write them in the config: ``90s``, ``10m``, ``1h30m``, ``90d``."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([dhms])")
_WHOLE = re.compile(r"(?:\d+[dhms])+")


def parse_duration(text: str | int) -> timedelta:
    """Parse ``"1h30m"`` (or a whole number of seconds) into a positive timedelta.

    Raises ValueError with the expected form when the text is not a duration.
    """
    if text is True or text is False:  # YAML yes/no reach us as bools
        raise ValueError("expected a duration such as 90s, 10m, 1h30m or 7d, not a boolean")
    if isinstance(text, int):
        seconds = text
    else:
        compact = text.strip().replace(" ", "")
        if compact.isdigit():
            seconds = int(compact)
        elif _WHOLE.fullmatch(compact):
            seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
        else:
            raise ValueError(f"expected a duration such as 90s, 10m, 1h30m or 7d, got {text!r}")
    if seconds <= 0:
        raise ValueError(f"expected a duration greater than zero, got {text!r}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way :func:`parse_duration` reads it (``1h30m``)."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in _UNITS.items():
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
