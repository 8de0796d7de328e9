"""``bastion user add|enroll|unlock|allow-source|list``: the operators of the SSH front door.

* ``add`` writes ``<users_dir>/NAME.yaml`` (the running server picks it up without restart);
* ``enroll`` makes a new TOTP secret and ten scratch codes, and shows them once;
* ``unlock`` clears a user's failed-login counter (back-off and hard lock);
* ``allow-source`` remembers an address as one the user logs in from, so that the guard's
  ``new_source`` rule (docs/guardrails.md) does not trip, or end, their next login from it;
* ``list`` shows every user, where it is defined, and its login state.

Whatever these commands write under ``state_dir`` and the audit log must belong to the
service user, or the server could not use it: run as root, they act as the service user
(effective uid and gid) for those files, and as root only to write the user file of
``add``. Each change is recorded in the audit log (never the secret or the codes), and the
log is opened before the change, so a log that cannot be written refuses the change.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import pwd
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import segno
import yaml
from pydantic import TypeAdapter, ValidationError

from bastion import totp
from bastion.audit.log import AuditLog, load_or_create_hmac_key
from bastion.config import Config, load_config
from bastion.config.loader import parse_user_file, secret_file_problem, service_owner
from bastion.config.models import User, UserName
from bastion.durable import fsync_dir, write_all
from bastion.enrolment import (
    new_scratch_codes,
    new_totp_secret,
    otpauth_uri,
    scratch_code_digest,
)
from bastion.errors import AuditUnavailable, BastionError, ConfigError
from bastion.sshkeys import PublicKey, parse_public_key

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_ISSUER",
    "add",
    "allow_source",
    "enroll",
    "list_users",
    "unlock",
]

DEFAULT_CONFIG = Path("/etc/bastion/bastion.yaml")
DEFAULT_ISSUER = "k8s-debug-bastion"
_KEY_POLICY = (
    "accepted: ssh-ed25519, FIDO security keys (sk-ssh-ed25519@openssh.com, "
    "sk-ecdsa-sha2-nistp256@openssh.com) and ssh-rsa of at least 3072 bits; "
    "create one with: ssh-keygen -t ed25519"
)


# ---------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class ServiceIdentity:
    """The service user, and whether this process must take its identity for state files."""

    name: str
    uid: int
    gid: int
    switch: bool


def service_identity(config: Config) -> ServiceIdentity:
    owner = service_owner(config)
    if owner is None:
        raise ConfigError(
            f"service user {config.service_user!r} does not exist on this host",
            hint="create it, or fix service_user in the config",
        )
    name, uid = owner
    try:
        gid = pwd.getpwuid(uid).pw_gid
    except KeyError:
        gid = os.getegid()
    euid = os.geteuid()
    if euid == uid:
        return ServiceIdentity(name, uid, gid, switch=False)
    if euid == 0:
        return ServiceIdentity(name, uid, gid, switch=True)
    raise BastionError(
        f"the bastion's state and audit log belong to the service user {name}, and you are "
        f"{_user_name(euid)}",
        hint=f"run this command as root (sudo) or as {name} (sudo -u {name} bastion user ...)",
    )


@contextlib.contextmanager
def as_service_user(service: ServiceIdentity) -> Iterator[None]:
    """Create and open state files as the service user, so the server can use them."""
    if not service.switch:
        yield
        return
    groups, egid = os.getgroups(), os.getegid()
    os.setgroups([service.gid])
    os.setegid(service.gid)
    os.seteuid(service.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)
        os.setgroups(groups)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def invoking_actor() -> tuple[str, dict[str, Any]]:
    """The invoking OS user (the real uid), and who ran sudo, if anyone did."""
    uid = os.getuid()
    extra: dict[str, Any] = {}
    sudo_user = os.environ.get("SUDO_USER")
    if uid == 0 and sudo_user:
        extra["sudo_user"] = sudo_user
    return _user_name(uid), extra


def open_audit(config: Config) -> AuditLog:
    """The audit log, opened (so an unwritable log refuses the change before it is made)."""
    try:
        config.paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = load_or_create_hmac_key(config.audit_hmac_key_path())
    except OSError as exc:
        raise AuditUnavailable(
            f"cannot prepare the audit log: {exc.strerror or exc} ({exc.filename})",
            hint="state_dir must be writable by the service user",
        ) from None
    log = AuditLog(
        config.paths.audit_log,
        hmac_key=key,
        fsync="event",
        replica=config.state.replica_id,
        genesis=config.state.replica_named,
    )
    log.open()
    return log


def _find_user(config: Config, name: str) -> User:
    for user in config.users:
        if user.name == name:
            return user
    where = f"{config.source}" + (f" or {config.paths.users_dir}" if config.paths.users_dir else "")
    raise BastionError(
        f"no user named {name!r} in {where}",
        hint=f"add it first: bastion user add {name} --key FILE.pub (bastion user list shows "
        "the users)",
    )


def _source(config: Config, user: User) -> str:
    found = config.user_file(user.name)
    return str(found) if found else f"{config.source} (config)"


# ---------------------------------------------------------------------------- add
def _read_keys(files: Sequence[Path]) -> list[PublicKey]:
    keys: list[PublicKey] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BastionError(
                f"key file {file} does not exist", hint="pass the user's public key (.pub) file"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BastionError(f"key file {file} cannot be read: {exc}") from None
        if "PRIVATE KEY" in text:
            raise BastionError(
                f"key file {file} holds a private key; the bastion needs only the public key",
                hint=f"pass the .pub file, and treat {file} as exposed if it was copied around",
            )
        found = 0
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                keys.append(parse_public_key(line))
            except ValueError as exc:
                raise BastionError(
                    f"key file {file}:{number}: {exc}; the key was not added", hint=_KEY_POLICY
                ) from None
            found += 1
        if not found:
            raise BastionError(
                f"key file {file} holds no public key",
                hint="pass the user's public key file, e.g. ~/.ssh/id_ed25519.pub",
            )
    return keys


def _check_name(name: str) -> None:
    try:
        TypeAdapter(UserName).validate_python(name)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise BastionError(str((error.get("ctx") or {}).get("error", error["msg"]))) from None


def _publish_user_file(directory: Path, name: str, text: str) -> Path:
    """Write ``<directory>/<name>.yaml`` atomically, mode 0644, never replacing a file.

    The temporary file is fsynced and then hard-linked to its final name: like a rename the
    new file appears whole or not at all, and unlike a rename the link fails if someone
    added the same name meanwhile.
    """
    target = directory / f"{name}.yaml"
    try:
        if not directory.exists():
            directory.mkdir(mode=0o755)
            directory.chmod(0o755)  # whatever the umask: the service user must read it
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise BastionError(
            f"cannot write in users_dir {directory}: {exc.strerror}",
            hint="run as a user who may write there (usually root)",
        ) from None
    try:
        os.fchmod(fd, 0o644)
        write_all(fd, text.encode())
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.link(tmp, target)
        fsync_dir(directory)
    except FileExistsError:
        raise BastionError(
            f"{target} already exists", hint=f"choose another name, or remove {target} first"
        ) from None
    except OSError as exc:
        raise BastionError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
    return target


def add(
    config_path: Path,
    name: str,
    key_files: Sequence[Path],
    groups: Sequence[str],
    *,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    config = load_config(config_path, check_files=False)
    directory = config.paths.users_dir
    if directory is None:
        raise BastionError(
            f"{config_path}: paths.users_dir is not set, so there is nowhere to add a user",
            hint="set paths.users_dir (e.g. /etc/bastion/users.d) in the config, or add the "
            "user to its users: list by hand",
        )
    _check_name(name)
    for user in config.users:
        if user.name == name:
            raise BastionError(
                f"user {name!r} already exists (in {_source(config, user)})",
                hint=f"to give {name} a new second factor: bastion user enroll {name}",
            )
    keys = _read_keys(key_files)
    data = {
        "name": name,
        "groups": list(groups),
        "public_keys": [key.openssh() for key in keys],
    }
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"# Written by 'bastion user add' at {stamp}. Keys: see docs/configuration.md\n"
    text += yaml.safe_dump(data, sort_keys=False, width=100_000)
    target = directory / f"{name}.yaml"
    parse_user_file(target, text)  # the server's own parser: what it would refuse, we do
    service = service_identity(config)
    actor, extra = invoking_actor()
    with as_service_user(service):
        audit = open_audit(config)
    try:
        _publish_user_file(directory, name, text)
        try:
            with as_service_user(service):
                audit.record_now(
                    "user.added",
                    actor=actor,
                    outcome="ok",
                    user=name,
                    groups=list(groups),
                    keys=[key.fingerprint for key in keys],
                    file=target,
                    **extra,
                )
        except AuditUnavailable:
            target.unlink()  # not recorded, so not done
            raise
    finally:
        audit.close()
    print(f"added user {name} to {target}", file=out)
    print(f"  groups: {', '.join(groups) if groups else '(none)'}", file=out)
    for key in keys:
        print(f"  key:    {key.key_type} {key.fingerprint} {key.comment}".rstrip(), file=out)
    print(
        "The running server picks the file up at the next login; no restart is needed.",
        file=out,
    )
    option = "" if config_path == DEFAULT_CONFIG else f" --config {config_path}"
    print(f"Next step: enrol the second factor: bastion user enroll {name}{option}", file=out)
    return 0


# ---------------------------------------------------------------------------- enroll
def _write_secret(path: Path, secret: str, before_publish: Callable[[], None]) -> None:
    """Replace the secret file atomically (mode 0600); ``before_publish`` runs just before.

    The directory is locked meanwhile, so two enrolments of one user cannot interleave
    (one's secret with the other's scratch codes).
    """
    parent = path.parent
    try:
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o700)
            parent.chmod(0o700)
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise BastionError(
            f"cannot prepare the directory {parent} of the secret file: {exc.strerror}",
            hint="it must be writable by the service user",
        ) from None
    tmp = parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            os.fchmod(fd, 0o600)
            write_all(fd, f"{secret}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        before_publish()
        tmp.replace(path)
        os.fsync(dir_fd)
    except OSError as exc:
        raise BastionError(
            f"cannot write the secret file {path}: {exc.strerror}",
            hint="its directory must be writable by the service user; nothing was changed "
            "for the user's login unless this says otherwise: run the command again",
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.close(dir_fd)


def draw_qr(uri: str, out: TextIO) -> None:
    qr = segno.make_qr(uri, error="m")
    encoding = getattr(out, "encoding", None) or "utf-8"
    try:
        "█▀▄".encode(encoding)
        compact = True
    except (UnicodeEncodeError, LookupError):
        compact = False  # ANSI colours instead of Unicode half blocks
    qr.terminal(out=out, compact=compact)


def _check_issuer(issuer: str) -> None:
    if not issuer.strip() or len(issuer) > 64 or not issuer.isprintable():
        raise BastionError(
            f"issuer {issuer!r} is not usable: expected 1 to 64 printable characters",
            hint=f"it is the name authenticator apps show; the default is {DEFAULT_ISSUER}",
        )


def enroll(config_path: Path, name: str, issuer: str, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = load_config(config_path, check_files=False)
    user = _find_user(config, name)
    _check_issuer(issuer)
    service = service_identity(config)
    actor, extra = invoking_actor()
    secret = new_totp_secret()
    codes = new_scratch_codes()
    path = config.totp_secret_path(user)

    with as_service_user(service):
        audit = open_audit(config)

        def store_codes_and_record() -> None:
            # Recorded before the new secret replaces the old one: no unrecorded enrolment.
            guard = config.state_stores().login_guard()
            try:
                guard.replace_scratch_codes(name, [scratch_code_digest(name, c) for c in codes])
            finally:
                guard.close()
            audit.record_now(
                "user.enrolled",
                actor=actor,
                outcome="ok",
                user=name,
                issuer=issuer,
                totp_file=path,
                scratch_codes=len(codes),
                **extra,
            )

        try:
            _write_secret(path, secret, store_codes_and_record)
        finally:
            audit.close()
    uri = otpauth_uri(name, secret, issuer)
    print(f"Enrolled {name}: a new TOTP secret is in {path} (mode 0600).", file=out)
    print(
        "The previous secret and scratch codes, if any, no longer work. Scan this QR code "
        "with an authenticator app:",
        file=out,
    )
    print(file=out)
    draw_qr(uri, out)
    print(file=out)
    print(f"otpauth URI: {uri}", file=out)
    print(f"Secret for manual entry (base32, SHA1, 6 digits, 30 s): {secret}", file=out)
    print(file=out)
    print("Scratch codes: each works once, in place of a verification code:", file=out)
    for code in codes:
        print(f"  {code}", file=out)
    print(file=out)
    print(
        "The secret and these codes will not be shown again: hand them to "
        f"{name} over a safe channel now; the bastion keeps only hashes of the codes.",
        file=out,
    )
    return 0


# ---------------------------------------------------------------------------- unlock
def _lock_state(config: Config, failures: int, last_failure: float | None) -> str:
    limits = config.limits
    state = totp.lockout(
        failures,
        last_failure,
        time.time(),
        lockout_after=limits.lockout_after_failures,
        hard_lock_after=limits.hard_lock_after_failures,
    )
    if state.hard:
        return "hard lock"
    if state.locked:
        return f"back-off {int(state.seconds_left) + 1} s"
    return "-"


def unlock(config_path: Path, name: str, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = load_config(config_path, check_files=False)
    _find_user(config, name)
    service = service_identity(config)
    actor, extra = invoking_actor()
    with as_service_user(service):
        audit = open_audit(config)
        try:
            guard = config.state_stores().login_guard()
            try:
                before = guard.unlock(name)
            finally:
                guard.close()
            audit.record_now(
                "user.unlocked",
                actor=actor,
                outcome="ok",
                user=name,
                previous_failures=before.failures,
                **extra,
            )
        finally:
            audit.close()
    if before.failures == 0:
        print(
            f"{name} had no failed logins (previous failure count: 0); nothing to clear", file=out
        )
    else:
        was = _lock_state(config, before.failures, before.last_failure)
        print(
            f"unlocked {name}: previous failure count {before.failures} cleared "
            f"(lock before: {'none' if was == '-' else was})",
            file=out,
        )
    return 0


# ---------------------------------------------------------------------------- allow-source
def allow_source(config_path: Path, name: str, address: str, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        source = str(ipaddress.ip_address(address))
    except ValueError:
        raise BastionError(
            f"{address!r} is not an IP address",
            hint="give one address, e.g. 192.0.2.7 or 2001:db8::7",
        ) from None
    config = load_config(config_path, check_files=False)
    _find_user(config, name)
    actor, extra = invoking_actor()
    with as_service_user(service_identity(config)):
        audit = open_audit(config)
        try:
            history = config.state_stores().login_sources()
            try:
                added = history.allow(name, source, time.time())
            finally:
                history.close()
            audit.record_now(
                "user.source_allowed",
                actor=actor,
                outcome="ok" if added else "unchanged",
                user=name,
                source=source,
                **extra,
            )
        finally:
            audit.close()
    if added:
        print(f"{name} may now log in from {source} without the guard's new_source rule", file=out)
    else:
        print(f"{source} was already a known address of {name}; nothing to change", file=out)
    return 0


# ---------------------------------------------------------------------------- list
def _enrolled(config: Config, user: User) -> str:
    path = config.totp_secret_path(user)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return "missing" if user.totp_secret_file is not None else "no"
    owner = service_owner(config)
    problem = secret_file_problem(st, path, *owner) if owner else "cannot be checked"
    return f"unsafe: {path} {problem}" if problem else "yes"


def list_users(config_path: Path, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = load_config(config_path, check_files=False)
    service = service_identity(config)
    rows = [("NAME", "GROUPS", "SOURCE", "ENROLLED", "SCRATCH", "FAILURES", "LOCK")]
    notes: list[str] = []
    with as_service_user(service):
        # Listing creates no SQLite file.
        exists = config.state.postgres is not None or config.login_db_path().exists()
        guard = config.state_stores().login_guard() if exists else None
        try:
            for user in config.users:
                enrolled = _enrolled(config, user)
                if enrolled.startswith("unsafe: "):
                    notes.append(f"{user.name}: secret file {enrolled.removeprefix('unsafe: ')}")
                    enrolled = "UNSAFE"
                if guard is None:
                    left, failures, last = 0, 0, None
                else:
                    left = guard.scratch_codes_left(user.name)
                    record = guard.failures(user.name)
                    failures, last = record.failures, record.last_failure
                rows.append(
                    (
                        user.name,
                        ",".join(user.groups) or "-",
                        _source(config, user),
                        enrolled,
                        str(left),
                        str(failures),
                        _lock_state(config, failures, last),
                    )
                )
        finally:
            if guard is not None:
                guard.close()
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )
    for note in notes:
        print(f"warning: {note}", file=out)
    return 0
