"""Recording signing keys this bastion used before a rotation, for playback on the bastion.

``bastion play`` and ``export`` check a recording's signer against the bastion's own key
when no ``--signer`` is given. After ``bastion keys rotate --kind recording-signing``,
recordings made before are signed by the retired key: it is still trusted, for recordings
whose signed creation time is before it was retired (a recording that claims a later time
and carries the old key's signature was not made by this bastion's key in use then). A key
retired as compromised is trusted the same way, with a warning: whoever stole it can sign
a recording dated before its retirement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bastion.errors import BastionError
from bastion.keys.model import KeyKind, KeyState
from bastion.keys.registry import KeyStore
from bastion.recording.errors import RecordingInvalid
from bastion.recording.keys import parse_signer_public_key, raw_public
from bastion.recording.sealed import SealedHeader

__all__ = ["RetiredSigner", "check_retired_signer", "retired_recording_signers"]


@dataclass(frozen=True)
class RetiredSigner:
    fingerprint: str
    retired_at: float
    compromised: bool


def retired_recording_signers(state_dir: Path) -> dict[bytes, RetiredSigner]:
    """The bastion's retired recording signing keys (raw public key to its record)."""
    found: dict[bytes, RetiredSigner] = {}
    for record in KeyStore(state_dir).read().of(KeyKind.RECORDING_SIGNING, KeyState.RETIRED):
        if record.retired_at is None:
            continue
        try:
            raw = raw_public(parse_signer_public_key(record.public))
        except ValueError as exc:
            raise BastionError(
                f"the key registry's record of {record.fingerprint} holds no usable key: {exc}"
            ) from None
        found[raw] = RetiredSigner(record.fingerprint, record.retired_at, record.compromised)
    return found


def check_retired_signer(header: SealedHeader, signer: RetiredSigner, name: str) -> str:
    """A note for a recording signed by a retired key, or RecordingInvalid when it claims
    to have been made after that key was retired."""
    try:
        created = datetime.fromisoformat(header.created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise RecordingInvalid(f"{name} has an unreadable creation time") from None
    retired = datetime.fromtimestamp(signer.retired_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    # Creation times are whole seconds: the second of the retirement is given the benefit
    # of the doubt, any later one is not.
    if created >= math.floor(signer.retired_at) + 1:
        raise RecordingInvalid(
            f"{name} is signed by {signer.fingerprint}, which this bastion retired at "
            f"{retired}, but says it was made after that",
            hint="treat the recording as forged",
        )
    note = f"signed by {signer.fingerprint}, this bastion's recording signing key until {retired}"
    if signer.compromised:
        note += (
            "; that key was retired as compromised, so whoever held it could have signed "
            "this recording too"
        )
    return note
