"""What can go wrong with a recording, each an error with one sentence and what to do next.

AuditUnavailable                 (bastion.errors)
 └── RecordingUnavailable        a recording cannot be started or written: the session
                                 must not start, or must end (fail closed)
BastionError
 └── RecordingInvalid            a recording cannot be read as what it claims to be:
      │                          damaged, altered, or not a recording at all
      └── WrongRecordingKey      the private key given is not the one it was sealed to
"""

from __future__ import annotations

from bastion.errors import AuditUnavailable, BastionError

__all__ = ["RecordingInvalid", "RecordingUnavailable", "WrongRecordingKey"]


class RecordingUnavailable(AuditUnavailable):
    """The session's recording cannot be written, so the session is refused or ended."""


class RecordingInvalid(BastionError):
    """A recording file failed verification; the message says where and how."""


class WrongRecordingKey(RecordingInvalid):
    """The auditor key given does not open this recording."""
