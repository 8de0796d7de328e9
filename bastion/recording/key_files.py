"""Recording keys on disk: the auditors' key pair, and the bastion's signing key.

* ``bastion recordings keygen NAME`` (on an auditor's machine) writes ``NAME.key``, the
  auditors' X25519 private key (PKCS#8 PEM, mode 0600, optionally under a passphrase), and
  ``NAME.pub``, the line for the bastion's config (``x25519:<base64>``). It never overwrites.
* The bastion's Ed25519 signing key lives at ``<state_dir>/recording-signing.key`` (the raw
  32-byte seed, 0600, like the audit HMAC key next to it), created on first use; its public
  half is written beside it as ``recording-signing.pub`` for auditors to pin (``--signer``).
  It is checked like every secret file (``bastion.config.loader.secret_file_problem``: a
  regular file, not a link, no group or other bits, owned by the service user) each time
  it is read, on the open descriptor.

The audit log's checkpoint key (``audit-signing.key``/``.pub``) is kept the same way: the
functions for the bastion's key take a :class:`SigningKeyFile` saying which key, its name in
messages and the error that stops what needs it; the recording key is the default.

Rotating one of these keys stages the new key first as ``<name>.next.key`` (complete or
absent, like the key itself), then installs it by renaming it over ``<name>.key``: whoever
reads the key sees the old one or the new one, never a mix (``bastion keys rotate``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from bastion.config.loader import secret_file_problem
from bastion.durable import fsync_dir, write_all
from bastion.errors import BastionError
from bastion.recording.errors import RecordingUnavailable
from bastion.recording.keys import (
    fingerprint,
    parse_signer_public_key,
    public_key_line,
    raw_public,
    read_auditor_private_key,
)

__all__ = [
    "RECORDING_SIGNING_KEY",
    "SIGNING_KEY_NAME",
    "SigningKeyFile",
    "discard_staged_signing_key",
    "generate_auditor_keys",
    "install_staged_signing_key",
    "load_auditor_private_key",
    "load_or_create_signing_key",
    "needs_passphrase",
    "read_signer_public_key",
    "read_signing_key",
    "read_signing_public_key",
    "read_staged_signing_key",
    "signing_key_path",
    "signing_public_key_path",
    "stage_signing_key",
    "staged_signing_key_path",
]


@dataclass(frozen=True)
class SigningKeyFile:
    """One of the bastion's Ed25519 keys in its state directory: ``<name>.key`` and
    ``<name>.pub``; ``what`` names it in messages, ``error`` is raised when it is unusable."""

    name: str
    what: str
    error: type[BastionError]


RECORDING_SIGNING_KEY = SigningKeyFile(
    "recording-signing", "the recording signing key", RecordingUnavailable
)
SIGNING_KEY_NAME = "recording-signing.key"


def signing_key_path(state_dir: Path, kind: SigningKeyFile = RECORDING_SIGNING_KEY) -> Path:
    return state_dir / f"{kind.name}.key"


def signing_public_key_path(state_dir: Path, kind: SigningKeyFile = RECORDING_SIGNING_KEY) -> Path:
    return state_dir / f"{kind.name}.pub"


def staged_signing_key_path(state_dir: Path, kind: SigningKeyFile = RECORDING_SIGNING_KEY) -> Path:
    """Where a rotation puts the new key until it is installed."""
    return state_dir / f"{kind.name}.next.key"


# ------------------------------------------------------------------------------ auditors
def generate_auditor_keys(
    private_path: Path, public_path: Path, *, passphrase: bytes | None = None
) -> str:
    """Write a new auditors' key pair; returns the public key line for the config."""
    key = X25519PrivateKey.generate()
    encryption = BestAvailableEncryption(passphrase) if passphrase else NoEncryption()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)
    line = public_key_line(key.public_key())
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise BastionError(
                f"{path} already exists; keygen never overwrites a key",
                hint="choose another name, or move the old key away if it is really unused "
                "(recordings made with it need it to be read)",
            )
    _write_new(private_path, pem, 0o600)
    try:
        comment = f"# bastion recordings: auditors' key {fingerprint(raw_public(key.public_key()))}"
        _write_new(public_path, f"{comment}\n{line}\n".encode(), 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return line


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, mode)
    except OSError as exc:
        raise BastionError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)  # whatever the umask
        write_all(fd, data)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise BastionError(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)


def load_auditor_private_key(path: Path, passphrase: bytes | None = None) -> X25519PrivateKey:
    """The auditors' private key; refuses a file that others can read."""
    data = _read_private(path, "the auditors' private key")
    try:
        return read_auditor_private_key(data, passphrase)
    except ValueError as exc:
        raise BastionError(f"key file {path}: {exc}") from None


def needs_passphrase(path: Path) -> bool:
    """Whether the auditors' key file is encrypted (PKCS#8 ``ENCRYPTED PRIVATE KEY``)."""
    return b"ENCRYPTED PRIVATE KEY" in _read_private(path, "the auditors' private key")


def _read_private(path: Path, what: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BastionError(
            f"key file {path} does not exist", hint=f"give the path of {what}"
        ) from None
    except OSError as exc:
        raise BastionError(f"key file {path} cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        # The owner is whoever runs the command (an auditor, or root for them): a private key
        # of theirs, kept from everyone else.
        problem = secret_file_problem(st, path, _user(st.st_uid), st.st_uid)
        if problem is None and st.st_uid not in (os.getuid(), os.geteuid(), 0):
            problem = f"is owned by {_user(st.st_uid)}, not by you"
        if problem:
            raise BastionError(f"key file {path} {problem}", hint=f"{what} must be yours alone")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(1 << 16)
    finally:
        os.close(fd)


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


# ------------------------------------------------------------------------------ the bastion
def load_or_create_signing_key(
    state_dir: Path, kind: SigningKeyFile = RECORDING_SIGNING_KEY
) -> Ed25519PrivateKey:
    """The bastion's signing key of ``kind`` (by default the recording key), made on first use.

    Raises ``kind.error`` (RecordingUnavailable for the recording key) when it cannot be read
    or made, or is not a safe secret file: what needs it must not run without it.
    """
    path = signing_key_path(state_dir, kind)
    try:
        seed = _read_seed(path, kind)
    except FileNotFoundError:
        seed = _create_seed(state_dir, path, kind)
    except OSError as exc:
        raise kind.error(
            f"cannot read {kind.what} {path}: {exc.strerror or exc}",
            hint="it must be readable by the service user",
        ) from None
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = signing_public_key_path(state_dir, kind)
    if not public.exists():
        with contextlib.suppress(OSError):  # a convenience copy; the key itself is what counts
            _write_public(public, public_key_line(key.public_key()), kind)
    return key


def read_signing_public_key(
    state_dir: Path, kind: SigningKeyFile = RECORDING_SIGNING_KEY
) -> bytes | None:
    """This bastion's signing public key (raw), from its private key; None if it has none."""
    try:
        seed = _read_seed(signing_key_path(state_dir, kind), kind)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BastionError(f"cannot read {kind.what} in {state_dir}: {exc.strerror}") from None
    return raw_public(Ed25519PrivateKey.from_private_bytes(seed).public_key())


def _read_seed(path: Path, kind: SigningKeyFile) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        problem = secret_file_problem(st, path, _user(os.geteuid()), os.geteuid())
        if problem:
            raise kind.error(f"{kind.what} {path} {problem}")
        seed = os.read(fd, 64)
    finally:
        os.close(fd)
    if len(seed) != 32:
        raise kind.error(
            f"{kind.what} {path} is not a 32-byte Ed25519 key",
            hint="restore it from backup, or remove it to make a new one (then give auditors "
            f"the new {kind.name}.pub)",
        )
    return seed


def _new_seed() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )


def _create_seed(state_dir: Path, path: Path, kind: SigningKeyFile) -> bytes:
    """Write a new seed atomically: a complete file appears under its name, or none. When
    another worker wins the race, its key is used."""
    seed = _new_seed()
    try:
        _link_new(state_dir, path, seed, kind)
    except FileExistsError:
        return _read_seed(path, kind)
    return seed


def _link_new(state_dir: Path, path: Path, seed: bytes, kind: SigningKeyFile) -> None:
    """Make ``path`` a complete 0600 file holding ``seed``; FileExistsError if it exists."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(dir=state_dir, prefix=f".{kind.name}.")
        try:
            os.fchmod(fd, 0o600)
            write_all(fd, seed)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)
        finally:
            Path(temp).unlink()
        fsync_dir(state_dir)
    except FileExistsError:
        raise
    except OSError as exc:
        raise kind.error(
            f"cannot create {kind.what} in {state_dir}: {exc.strerror or exc}",
            hint="state_dir must be writable by the service user",
        ) from None


def read_signing_key(
    state_dir: Path, kind: SigningKeyFile = RECORDING_SIGNING_KEY
) -> Ed25519PrivateKey:
    """The key in use, checked as a secret file; ``kind.error`` when missing or unsafe."""
    path = signing_key_path(state_dir, kind)
    try:
        return Ed25519PrivateKey.from_private_bytes(_read_seed(path, kind))
    except FileNotFoundError:
        raise kind.error(
            f"{kind.what} {path} does not exist",
            hint="restore it from backup, or rotate it with 'bastion keys rotate'",
        ) from None
    except OSError as exc:
        raise kind.error(f"cannot read {kind.what} {path}: {exc.strerror or exc}") from None


def stage_signing_key(
    state_dir: Path, kind: SigningKeyFile = RECORDING_SIGNING_KEY
) -> Ed25519PrivateKey:
    """A new key, written (complete, 0600) as ``<name>.next.key``; the key in use stays.
    ``kind.error`` when a staged key is already there (a rotation under way)."""
    seed = _new_seed()
    path = staged_signing_key_path(state_dir, kind)
    try:
        _link_new(state_dir, path, seed, kind)
    except FileExistsError:
        raise kind.error(
            f"a new {kind.what} is already staged at {path}",
            hint="another rotation is under way, or one was interrupted: run the rotation "
            "again once the other has finished",
        ) from None
    return Ed25519PrivateKey.from_private_bytes(seed)


def read_staged_signing_key(
    state_dir: Path, kind: SigningKeyFile = RECORDING_SIGNING_KEY
) -> Ed25519PrivateKey | None:
    """The staged key, if there is one (checked like the key in use)."""
    try:
        seed = _read_seed(staged_signing_key_path(state_dir, kind), kind)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise kind.error(f"cannot read the staged {kind.what}: {exc.strerror or exc}") from None
    return Ed25519PrivateKey.from_private_bytes(seed)


def install_staged_signing_key(
    state_dir: Path, kind: SigningKeyFile = RECORDING_SIGNING_KEY
) -> Ed25519PrivateKey:
    """Make the staged key the key in use (one rename) and publish its ``.pub``."""
    key = read_staged_signing_key(state_dir, kind)
    if key is None:
        raise kind.error(f"there is no staged {kind.what} to install in {state_dir}")
    try:
        staged_signing_key_path(state_dir, kind).replace(signing_key_path(state_dir, kind))
        fsync_dir(state_dir)
        _write_public(
            signing_public_key_path(state_dir, kind), public_key_line(key.public_key()), kind
        )
    except OSError as exc:
        raise kind.error(
            f"cannot install the new {kind.what} in {state_dir}: {exc.strerror or exc}"
        ) from None
    return key


def discard_staged_signing_key(
    state_dir: Path, kind: SigningKeyFile = RECORDING_SIGNING_KEY
) -> None:
    """Remove a staged key that will not be used (a rotation that did not happen)."""
    staged_signing_key_path(state_dir, kind).unlink(missing_ok=True)


def _write_public(path: Path, line: str, kind: SigningKeyFile) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{kind.name}-pub.")
    try:
        os.fchmod(fd, 0o644)
        write_all(fd, f"{line}\n".encode())
    finally:
        os.close(fd)
    Path(temp).replace(path)


def read_signer_public_key(path: Path) -> bytes:
    """A bastion's signing public key (``ed25519:...``, as in recording-signing.pub), raw."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BastionError(f"signer key file {path} cannot be read: {exc}") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    try:
        return raw_public(parse_signer_public_key(lines[0] if len(lines) == 1 else ""))
    except ValueError as exc:
        raise BastionError(f"signer key file {path}: {exc}") from None
