"""The bastion's errors, each with a message an operator can act on.

Every foreseeable failure is one of these; the CLI and the SSH front door print
``str(error)`` (the message plus what to do next) and never a traceback.

    BastionError
     ├── ConfigError            the YAML file or a file it names is wrong
     │    └── SecretFileError   a secret file is missing, too open or wrongly owned
     ├── AuthFailed             a login factor was wrong, missing or locked out
     ├── PolicyDenied           no grant allows what was asked
     ├── BackendUnavailable     Vault or a Kubernetes API did not answer as needed
     ├── SessionExpired         a deadline of the session has passed
     └── AuditUnavailable       the audit log (or a recording) cannot be written,
                                so the action that needed it is refused
"""

from __future__ import annotations

__all__ = [
    "AuditUnavailable",
    "AuthFailed",
    "BackendUnavailable",
    "BastionError",
    "ConfigError",
    "PolicyDenied",
    "SecretFileError",
    "SessionExpired",
]


class BastionError(Exception):
    """Base of every error the bastion expects; ``hint`` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  → {self.hint}"
        return self.message


class ConfigError(BastionError):
    """The configuration is invalid; the message names the file and the key."""

    exit_code = 2


class SecretFileError(ConfigError):
    """A secret file named by the configuration is unsafe or unreadable."""


class AuthFailed(BastionError):
    """Authentication failed; the message never says which factor was wrong."""


class PolicyDenied(BastionError):
    """Policy does not allow the request; the message says which rule stopped it."""


class BackendUnavailable(BastionError):
    """Vault or a Kubernetes API failed or timed out."""


class SessionExpired(BastionError):
    """The session's idle or hard deadline has passed."""


class AuditUnavailable(BastionError):
    """The audit trail cannot be written, so the action it would record is refused."""
