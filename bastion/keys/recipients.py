"""Which auditors' public key new recordings are encrypted to.

The config names one (``recording.auditor_public_key``). ``bastion keys rotate --kind
recording-recipient --recipient KEY`` hands over to a new one without a restart: the
registry records the configured key as retired and replaced by KEY, and every recording
started after that (in any worker: the registry is read at each recording's start) is
encrypted to KEY. Old recordings are not touched: each names the key it was sealed to,
and only that key's private half opens it.

The rule, so that a compromised recipient is never used again by mistake: the configured
key is followed through every rotation the registry records. A key the registry does not
know (the administrator put a new one in the config) is used as it is.
"""

from __future__ import annotations

from pathlib import Path

from bastion.errors import BastionError
from bastion.keys.model import KeyKind
from bastion.keys.registry import KeyStore
from bastion.recording.errors import RecordingUnavailable
from bastion.recording.keys import fingerprint, parse_auditor_public_key, raw_public

__all__ = ["current_recipient", "read_recipient", "recipient_fingerprint"]


def recipient_fingerprint(line: str) -> str:
    return fingerprint(raw_public(parse_auditor_public_key(line)))


def current_recipient(state_dir: Path, configured: str) -> str:
    """The ``x25519:...`` line new recordings go to, given the configured one.

    Raises RecordingUnavailable when the registry cannot be read: whether the configured
    key was retired cannot be known then, and a recording must not go to a retired key.
    """
    try:
        registry = KeyStore(state_dir).read()
        configured_id = recipient_fingerprint(configured)
        successor = registry.successor(KeyKind.RECORDING_RECIPIENT, configured_id)
    except (BastionError, ValueError) as exc:
        raise RecordingUnavailable(
            f"cannot tell which auditors' key new recordings go to: {exc}",
            hint="fix or restore the key registry; recordings are refused until then",
        ) from None
    return successor.public if successor is not None else configured


def read_recipient(text: str) -> str:
    """An auditors' public key given on the command line: the ``x25519:...`` line itself,
    or the path of the ``.pub`` file ``bastion recordings keygen`` wrote."""
    candidate = text.strip()
    if not candidate.startswith("x25519:"):
        path = Path(candidate)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BastionError(
                f"{text!r} is neither an x25519:... key nor a readable key file ({exc})",
                hint="give the line 'bastion recordings keygen' printed, or its NAME.pub",
            ) from None
        keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if len(keys) != 1:
            raise BastionError(f"{path} holds {len(keys)} key lines; expected one x25519:... line")
        candidate = keys[0]
    try:
        parse_auditor_public_key(candidate)
    except ValueError as exc:
        raise BastionError(f"the new auditors' key: {exc}") from None
    return candidate
