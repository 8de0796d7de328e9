"""The recordings directory: finding a recording, listing them, pruning old ones.

Recordings are ``<recordings_dir>/<id>.rec``, the id being 16 hex digits. Everything here
reads only what is in clear (the header) and checks signatures; nothing needs the auditors'
key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bastion.errors import BastionError
from bastion.recording.errors import RecordingInvalid
from bastion.recording.recorder import recording_path
from bastion.recording.sealed import SealedReader, Verdict

__all__ = ["Entry", "PrunePlan", "inspect", "list_recordings", "plan_prune", "resolve"]

_ID = re.compile(r"[0-9a-f]{16}")


def resolve(recordings_dir: Path, ref: str) -> Path:
    """A recording id (in ``recordings_dir``) or a path, as a path to an existing file."""
    if _ID.fullmatch(ref):
        path = recording_path(recordings_dir, ref)
        if not path.is_file():
            raise BastionError(
                f"there is no recording {ref} in {recordings_dir}",
                hint="bastion recordings list shows the recordings and their ids",
            )
        return path
    path = Path(ref)
    if not path.is_file():
        raise BastionError(
            f"{ref} is neither a recording id (16 hex digits) nor a file",
            hint="give an id from 'bastion recordings list', or the path of a .rec file",
        )
    return path


@dataclass(frozen=True)
class Entry:
    path: Path
    size: int
    modified: datetime
    recording_id: str | None = None
    session_id: str | None = None
    created: datetime | None = None
    verdict: Verdict | None = None
    problem: str | None = None  # why it could not be read as a recording

    @property
    def state(self) -> str:
        if self.problem is not None:
            return "invalid"
        if self.verdict is None:
            return "unknown"
        return "complete" if self.verdict.complete else "incomplete"

    @property
    def age_from(self) -> datetime:
        """When it was made: the signed header's time, or the file's for unreadable ones."""
        return self.created or self.modified


def inspect(path: Path) -> Entry:
    """A recording's header and state; its signatures are checked (no key needed)."""
    st = path.stat()
    modified = datetime.fromtimestamp(st.st_mtime, UTC)
    try:
        with path.open("rb") as stream:
            reader = SealedReader(stream, str(path))
            verdict = reader.scan()
    except RecordingInvalid as exc:
        return Entry(path, st.st_size, modified, problem=exc.message)
    except OSError as exc:
        return Entry(path, st.st_size, modified, problem=f"cannot be read: {exc.strerror}")
    header = reader.header
    try:
        created: datetime | None = datetime.fromisoformat(header.created)
    except ValueError:
        created = None
    return Entry(
        path,
        st.st_size,
        modified,
        recording_id=header.recording_id,
        session_id=header.session_id,
        created=created,
        verdict=verdict,
    )


def _files(recordings_dir: Path) -> Iterator[Path]:
    try:
        paths = sorted(recordings_dir.iterdir())
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BastionError(
            f"cannot list the recordings directory {recordings_dir}: {exc.strerror}",
            hint="run this as root or as the service user",
        ) from None
    for path in paths:
        if path.suffix == ".rec" and not path.name.startswith(".") and path.is_file():
            yield path


def list_recordings(recordings_dir: Path) -> list[Entry]:
    """Every recording, oldest first."""
    return sorted((inspect(p) for p in _files(recordings_dir)), key=lambda e: e.age_from)


@dataclass(frozen=True)
class PrunePlan:
    remove: list[Entry]
    kept_live: list[Entry]  # old enough, but maybe still being written
    kept_invalid: list[Entry]  # not readable as recordings: left for a person to look at


def plan_prune(
    recordings_dir: Path, *, older_than: timedelta, now: datetime, live_for: timedelta
) -> PrunePlan:
    """What ``prune --older-than`` removes: recordings made before ``now - older_than``.

    An incomplete recording written to within ``live_for`` (the longest a session can last)
    may belong to a session still running, and is kept; so is a file that is not a valid
    recording (it may be evidence of tampering).
    """
    cutoff = now - older_than
    remove: list[Entry] = []
    live: list[Entry] = []
    invalid: list[Entry] = []
    for entry in list_recordings(recordings_dir):
        if entry.age_from >= cutoff:
            continue
        if entry.problem is not None:
            invalid.append(entry)
        elif entry.state == "incomplete" and entry.modified > now - live_for:
            live.append(entry)
        else:
            remove.append(entry)
    return PrunePlan(remove, live, invalid)
