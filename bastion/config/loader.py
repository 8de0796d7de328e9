"""Read, validate and cross-check the configuration file; explain every problem precisely.

Every problem is reported as ``FILE:LINE: KEY.PATH: what was expected``, all problems at
once, so an administrator fixes the file in one pass. YAML duplicate keys are errors (a
later key silently winning is how a reviewed config ends up meaning something else).

Users may also live one per file in ``paths.users_dir`` (``NAME.yaml``, the schema of one
entry of ``users``). Those files go through the same parser, so their problems are reported
the same way, with their own file name and line; a name defined twice is an error that names
both places.
"""

from __future__ import annotations

import os
import pwd
import stat
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, SequenceNode

from bastion.config.approval_checks import approval_problems
from bastion.config.models import Config, User
from bastion.config.oversight_checks import oversight_problems
from bastion.errors import ConfigError, SecretFileError
from bastion.globs import compile_glob
from bastion.guard_rules import Action

__all__ = [
    "ConfigIssue",
    "format_loc",
    "load_config",
    "parse_user_file",
    "read_users_dir",
    "secret_file_problem",
    "service_owner",
    "summary",
]

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ConfigIssue:
    loc: Loc
    message: str
    secret_file: bool = False
    file: Path | None = None  # the file ``loc`` is in; None: the config file being loaded


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


# ---------------------------------------------------------------------------- YAML
class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(path: Path, text: str) -> tuple[Any, Node | None]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(
            f"{where}: not valid YAML: {exc.problem or exc.context}",
            hint="fix the syntax at that position",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    return data, node


def _line_of(root: Node | None, loc: Loc) -> int | None:
    """The line of the deepest YAML node the key path reaches (1-based)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child: Node | None = None
        if isinstance(node, MappingNode) and isinstance(part, str):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    child = value_node
                    line = key_node.start_mark.line + 1
                    break
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


# ---------------------------------------------------------------------------- pydantic errors
def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    annotation: Any = root
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        field = annotation.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is list:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
        elif origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation


_PLAIN = {
    "missing": "required key is missing",
    "int_parsing": "expected a whole number, got {given}",
    "int_type": "expected a whole number, got {given}",
    "int_from_float": "expected a whole number, got {given}",
    "bool_parsing": "expected true or false, got {given}",
    "bool_type": "expected true or false, got {given}",
    "string_type": "expected a string, got {given}",
    "list_type": "expected a list, got {given}",
    "model_type": "expected a mapping of keys to values, got {given}",
    "model_attributes_type": "expected a mapping of keys to values, got {given}",
    "dict_type": "expected a mapping of keys to values, got {given}",
    "enum": "expected one of {expected}, got {given}",
    "too_short": "expected at least {min_length} item(s)",
    "greater_than_equal": "expected a number of at least {ge}, got {given}",
    "less_than_equal": "expected a number of at most {le}, got {given}",
    "datetime_parsing": "expected a time such as 2026-12-01T00:00:00Z, got {given}",
    "datetime_type": "expected a time such as 2026-12-01T00:00:00Z, got {given}",
    "datetime_from_date_parsing": "expected a time such as 2026-12-01T00:00:00Z, got {given}",
}


def _explain(root: type[BaseModel], error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    given = error.get("input")
    if kind == "extra_forbidden":
        model = _model_at(root, tuple(error["loc"][:-1]))
        allowed = ", ".join(model.model_fields) if model else "see docs/configuration.md"
        return f"unknown key {error['loc'][-1]!r}; allowed keys here: {allowed}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    template = _PLAIN.get(kind)
    if template is None:
        return str(error["msg"])
    shown = type(given).__name__ if isinstance(given, dict | list) else repr(given)
    return template.format(given=shown, **ctx)


# ---------------------------------------------------------------------------- one YAML file
@dataclass(frozen=True)
class _Parsed(Generic[M]):
    path: Path
    root: Node | None
    model: M | None  # None exactly when there are issues
    issues: list[ConfigIssue]


def _read_text(path: Path, hint: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", hint=hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None


def _parse_file(
    path: Path, model: type[M], *, expected: str, hint: str, text: str | None = None
) -> _Parsed[M]:
    """Parse one YAML file into ``model``: the one parser of the config and of user files.

    A file that cannot be read, is not YAML, or has no mapping at the top raises ConfigError
    at once (nothing in it can be trusted). Validation problems come back as issues located
    in ``path``, so they are reported together with the problems of other files. Relative
    paths in the file are resolved against its directory.
    """
    if text is None:
        text = _read_text(path, hint)
    data, root = _parse_yaml(path, text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys ({expected}) at the top")
    try:
        parsed = model.model_validate(data, context={"base_dir": path.parent.absolute()})
    except ValidationError as exc:
        issues = [
            ConfigIssue(tuple(err["loc"]), _explain(model, err), file=path)
            for err in exc.errors(include_url=False)
        ]
        return _Parsed(path, root, None, issues)
    return _Parsed(path, root, parsed, [])


def parse_user_file(path: Path, text: str | None = None) -> User:
    """One user file of ``paths.users_dir`` (``text``: its content, when not read from disk).

    Raises ConfigError with every problem as ``FILE:LINE: key.path: message``; does not
    check the file name against the user name (:func:`read_users_dir` does).
    """
    parsed = _parse_file(path, User, expected=_USER_KEYS, hint=_USER_HINT, text=text)
    if parsed.model is None:
        raise _as_error(path, {path: parsed.root}, parsed.issues)
    return parsed.model


_USER_KEYS = "name, public_keys, ..."
_USER_HINT = "a user file holds one user: name, public_keys, groups (docs/configuration.md)"


# ---------------------------------------------------------------------------- cross-checks
def _cross_check(config: Config) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    names = {
        # Users of the config file come first in config.users, at their index in the file;
        # the users_dir loader has already refused duplicates of those.
        "users": [u.name for u in config.users if config.user_file(u.name) is None],
        "clusters": [c.name for c in config.clusters],
        "grants": [g.name for g in config.grants],
    }
    for key, listed in names.items():
        for i, name in enumerate(listed):
            if name in listed[:i]:
                issues.append(ConfigIssue((key, i, "name"), f"duplicate name {name!r}"))
    user_names = {u.name for u in config.users}
    where_users = "in users or in paths.users_dir" if config.paths.users_dir else "in users"
    cluster_names = names["clusters"]
    for i, grant in enumerate(config.grants):
        for j, user in enumerate(grant.users):
            if user not in user_names:
                issues.append(
                    ConfigIssue(("grants", i, "users", j), f"no user named {user!r} {where_users}")
                )
        for j, pattern in enumerate(grant.clusters):
            regex = compile_glob(pattern)
            if not any(regex.fullmatch(name) for name in cluster_names):
                issues.append(
                    ConfigIssue(
                        ("grants", i, "clusters", j),
                        f"{pattern!r} matches no cluster; configured: {', '.join(cluster_names)}",
                    )
                )
    issues.extend(ConfigIssue(loc, message) for loc, message in approval_problems(config))
    issues.extend(ConfigIssue(loc, message) for loc, message in oversight_problems(config))
    if Action.ALERT in config.guard.actions() and config.break_glass is None:
        issues.append(
            ConfigIssue(
                ("guard",),
                "a guard rule has action 'alert', but alerts go to break_glass.alerts and "
                "the config has no break_glass section: add one or use 'warn' or 'end'",
            )
        )
    return issues + _break_glass_issues(config, cluster_names)


def _break_glass_issues(config: Config, cluster_names: list[str]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    section = config.break_glass
    if section is None:
        for i, user in enumerate(config.users):
            if user.break_glass:
                file = config.user_file(user.name)
                issues.append(
                    ConfigIssue(
                        ("break_glass",) if file else ("users", i, "break_glass"),
                        f"user {user.name!r} is a break-glass account but the config has no "
                        "break_glass section (its grant, time box and alert destinations)",
                        file=file,
                    )
                )
        return issues
    for j, pattern in enumerate(section.grant.clusters):
        regex = compile_glob(pattern)
        if not any(regex.fullmatch(name) for name in cluster_names):
            issues.append(
                ConfigIssue(
                    ("break_glass", "grant", "clusters", j),
                    f"{pattern!r} matches no cluster; configured: {', '.join(cluster_names)}",
                )
            )
    return issues


# ---------------------------------------------------------------------------- files on disk
def _owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def service_owner(config: Config) -> tuple[str, int] | None:
    """Name and uid every secret file must belong to: ``service_user``, else the current
    effective user. None when ``service_user`` names no user on this host."""
    if config.service_user is None:
        uid = os.geteuid()
        try:
            return pwd.getpwuid(uid).pw_name, uid
        except KeyError:
            return f"uid {uid}", uid
    try:
        return config.service_user, pwd.getpwnam(config.service_user).pw_uid
    except KeyError:
        return None


def secret_file_problem(st: os.stat_result, path: Path, owner: str, owner_uid: int) -> str | None:
    """What is unsafe about a secret file with status ``st`` (from lstat or fstat), or None.

    The one rule for secret files, at start-up and whenever the server reads one: a regular
    file, not a symbolic link, no group or other permission bits, owned by the service user.
    """
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link; secret files must be regular files"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return f"has mode {mode:04o}; expected 0600 (run: chmod 600 {path})"
    if st.st_uid != owner_uid:
        return (
            f"is owned by {_owner_name(st.st_uid)}; expected the service user {owner} "
            f"(run: chown {owner} {path})"
        )
    return None


def _check_secret_file(
    path: Path, loc: Loc, owner: str, owner_uid: int, file: Path | None = None
) -> ConfigIssue | None:
    def issue(message: str) -> ConfigIssue:
        return ConfigIssue(loc, f"secret file {path} {message}", secret_file=True, file=file)

    try:
        st = path.lstat()
    except FileNotFoundError:
        return issue("does not exist")
    except OSError as exc:
        return issue(f"cannot be inspected: {exc.strerror}")
    problem = secret_file_problem(st, path, owner, owner_uid)
    if problem:
        return issue(problem)
    if not os.access(path, os.R_OK):
        return issue("is not readable")
    return None


def _check_ca_file(path: Path, loc: Loc, what: str = "CA file") -> ConfigIssue | None:
    try:
        head = path.read_bytes()[:65536]
    except FileNotFoundError:
        return ConfigIssue(loc, f"{what} {path} does not exist")
    except OSError as exc:
        return ConfigIssue(loc, f"{what} {path} cannot be read: {exc.strerror}")
    if b"-----BEGIN CERTIFICATE-----" not in head:
        return ConfigIssue(loc, f"{what} {path} holds no PEM certificate")
    return None


def _check_files(config: Config, owner: str, owner_uid: int) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    secret_files: list[tuple[Path, Loc, Path | None]] = []
    for i, user in enumerate(config.users):
        path = config.totp_secret_path(user)
        # A defaulted seed that does not exist yet is a user not enrolled yet; once it
        # exists it is held to the same rules as a named one.
        if user.totp_secret_file is None and not os.path.lexists(path):
            continue
        file = config.user_file(user.name)
        loc: Loc = ("totp_secret_file",) if file else ("users", i, "totp_secret_file")
        secret_files.append((path, loc, file))
    vault = config.vault
    if vault.approle is not None:
        secret_files.append(
            (vault.approle.secret_id_file, ("vault", "approle", "secret_id_file"), None)
        )
    if vault.tls_client is not None:
        secret_files.append((vault.tls_client.key_file, ("vault", "tls_client", "key_file"), None))
    if config.listener.host_key.exists():
        secret_files.append((config.listener.host_key, ("listener", "host_key"), None))
    ship = config.audit.ship
    hook = ship.webhook if ship is not None else None
    if hook is not None and hook.token_file is not None:
        secret_files.append((hook.token_file, ("audit", "ship", "webhook", "token_file"), None))
    alert_files, alert_cas = _break_glass_files(config)
    secret_files += alert_files
    secret_files += [(path, loc, None) for path, loc in config.state.secret_files()]
    for path, loc, file in secret_files:
        found = _check_secret_file(path, loc, owner, owner_uid, file)
        if found:
            issues.append(found)
    ca_files: list[tuple[Path, Loc]] = [
        (c.ca_file, ("clusters", i, "ca_file")) for i, c in enumerate(config.clusters)
    ]
    ca_files.append((config.vault.ca_file, ("vault", "ca_file")))
    if ship is not None and ship.syslog is not None:
        ca_files.append((ship.syslog.ca_file, ("audit", "ship", "syslog", "ca_file")))
    if hook is not None:
        ca_files.append((hook.ca_file, ("audit", "ship", "webhook", "ca_file")))
    ca_files += alert_cas
    ca_files += config.state.ca_files()
    for path, loc in ca_files:
        found = _check_ca_file(path, loc)
        if found:
            issues.append(found)
    if vault.tls_client is not None:
        where: Loc = ("vault", "tls_client", "cert_file")
        found = _check_ca_file(vault.tls_client.cert_file, where, "certificate file")
        if found:
            issues.append(found)
    return issues


def _break_glass_files(
    config: Config,
) -> tuple[list[tuple[Path, Loc, Path | None]], list[tuple[Path, Loc]]]:
    """The break-glass alerts' secret file (a webhook token) and CA files."""
    alerts = config.break_glass.alerts if config.break_glass is not None else None
    secrets: list[tuple[Path, Loc, Path | None]] = []
    cas: list[tuple[Path, Loc]] = []
    if alerts is not None and alerts.syslog is not None:
        cas.append((alerts.syslog.ca_file, ("break_glass", "alerts", "syslog", "ca_file")))
    if alerts is not None and alerts.webhook is not None:
        hook = alerts.webhook
        cas.append((hook.ca_file, ("break_glass", "alerts", "webhook", "ca_file")))
        if hook.token_file is not None:
            where: Loc = ("break_glass", "alerts", "webhook", "token_file")
            secrets.append((hook.token_file, where, None))
    return secrets, cas


# ---------------------------------------------------------------------------- users_dir
@dataclass
class _DirectoryUsers:
    users: list[User] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    roots: dict[Path, Node | None] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)


def _writable_by_others(st: os.stat_result, path: Path, what: str, owner_uid: int) -> str | None:
    """Who can write a users_dir entry can add a user: only root or the service user may."""
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        fix = "go-w" if stat.S_ISDIR(st.st_mode) else "644"
        return (
            f"{what} {path} is writable by group or others (mode {mode:04o}), so anyone "
            f"able to write it could add a user (run: chmod {fix} {path})"
        )
    if st.st_uid not in (0, owner_uid):
        return (
            f"{what} {path} is owned by {_owner_name(st.st_uid)}; expected root or the "
            f"service user {_owner_name(owner_uid)} (run: chown root {path})"
        )
    return None


def _load_users_dir(
    directory: Path,
    taken: Mapping[str, str],
    *,
    owner_uid: int | None,
    config_file: Path | None,
) -> _DirectoryUsers:
    """Every ``*.yaml`` file of ``directory`` as one user (dot files are ignored).

    ``taken`` maps the names already defined to where they are; ``owner_uid`` (None: skip
    the checks) is the service user's uid, for the safety checks of the start-up.
    """
    found = _DirectoryUsers()
    where: Loc = ("paths", "users_dir")

    def dir_issue(message: str) -> _DirectoryUsers:
        found.issues.append(ConfigIssue(where, message, file=config_file))
        return found

    try:
        st = directory.stat()
    except FileNotFoundError:
        if owner_uid is None:  # offline validation: nothing added yet
            return found
        return dir_issue(
            f"directory {directory} does not exist (create it: install -d -m 0755 {directory})"
        )
    except OSError as exc:
        return dir_issue(f"directory {directory} cannot be inspected: {exc.strerror}")
    if not stat.S_ISDIR(st.st_mode):
        return dir_issue(f"{directory} is not a directory")
    if owner_uid is not None:
        problem = _writable_by_others(st, directory, "directory", owner_uid)
        if problem:
            return dir_issue(problem)
    try:
        names = sorted(
            entry.name
            for entry in os.scandir(directory)
            if entry.name.endswith(".yaml") and not entry.name.startswith(".")
        )
    except OSError as exc:
        return dir_issue(f"directory {directory} cannot be listed: {exc.strerror}")
    claimed = dict(taken)
    for name in names:
        path = directory / name
        if owner_uid is not None:
            problem = _user_file_problem(path, owner_uid)
            if problem:
                found.issues.append(ConfigIssue((), problem, file=path))
                continue
        parsed = _parse_file(path, User, expected=_USER_KEYS, hint=_USER_HINT)
        found.roots[path] = parsed.root
        found.issues.extend(parsed.issues)
        user = parsed.model
        if user is None:
            continue
        if path.stem != user.name:
            found.issues.append(
                ConfigIssue(
                    ("name",),
                    f"the file is named {path.name} but holds user {user.name!r}: a user "
                    f"file must be named after its user (rename it to {user.name}.yaml)",
                    file=path,
                )
            )
        elif user.name in claimed:
            found.issues.append(
                ConfigIssue(
                    ("name",),
                    f"duplicate name {user.name!r}: also defined in {claimed[user.name]}",
                    file=path,
                )
            )
        else:
            claimed[user.name] = str(path)
            found.users.append(user)
            found.files[user.name] = path
    return found


def _user_file_problem(path: Path, owner_uid: int) -> str | None:
    try:
        st = path.lstat()
    except OSError as exc:
        return f"user file {path} cannot be inspected: {exc.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return f"user file {path} is a symbolic link; user files must be regular files"
    if not stat.S_ISREG(st.st_mode):
        return f"user file {path} is not a regular file"
    return _writable_by_others(st, path, "user file", owner_uid)


def _defined_in(config: Config, config_file: Path | None) -> dict[str, str]:
    """Where each user of the config file itself is defined, for duplicate messages."""
    shown = str(config_file) if config_file else "the config file"
    taken: dict[str, str] = {}
    for i, user in enumerate(config.users):
        if config.user_file(user.name) is None:
            taken.setdefault(user.name, f"{shown} (users[{i}])")
    return taken


def _with_directory_users(config: Config, found: _DirectoryUsers) -> Config:
    base = [u for u in config.users if config.user_file(u.name) is None]
    merged = config.model_copy(update={"users": [*base, *found.users]})
    merged._source = config._source
    merged._user_files = dict(found.files)
    return merged


def read_users_dir(config: Config) -> tuple[list[User], dict[str, Path]]:
    """Read ``paths.users_dir`` again, checked as at start-up: its users and their files.

    The running server calls this when the directory changes. Raises ConfigError naming
    every problem (``FILE:LINE: key.path: message``); a name already used in the config
    file, or a file not named after its user, is a problem.
    """
    directory = config.paths.users_dir
    if directory is None:
        return [], {}
    owner = service_owner(config)
    if owner is None:
        raise ConfigError(
            f"service user {config.service_user!r} does not exist on this host, so the "
            f"files of {directory} cannot be checked",
            hint="create the service user or fix service_user in the config",
        )
    found = _load_users_dir(
        directory,
        _defined_in(config, config.source),
        owner_uid=owner[1],
        config_file=config.source,
    )
    if found.issues:
        raise _as_error(directory, found.roots, found.issues)
    return found.users, found.files


# ---------------------------------------------------------------------------- entry points
def load_config(path: Path, *, check_files: bool = True) -> Config:
    """Load and validate the config file; ConfigError lists every problem found.

    Users of ``paths.users_dir`` are merged into ``users`` (``Config.user_file`` tells
    where each came from). With ``check_files`` (what the server does before it starts),
    the secret files must be regular files of mode 0600 owned by the service user, CA files
    must hold a PEM certificate, and users_dir and its files must exist and be writable by
    root or the service user only.
    """
    parsed = _parse_file(
        path,
        Config,
        expected="listener, users, ...",
        hint="pass the path of the bastion's YAML config",
    )
    roots: dict[Path, Node | None] = {path: parsed.root}
    if parsed.model is None:
        raise _as_error(path, roots, parsed.issues)
    config = parsed.model
    config._source = path
    issues: list[ConfigIssue] = []
    owner = service_owner(config) if check_files else None
    directory = config.paths.users_dir
    if directory is not None:
        found = _load_users_dir(
            directory,
            _defined_in(config, path),
            owner_uid=owner[1] if owner else None,
            config_file=None,
        )
        roots.update(found.roots)
        issues.extend(found.issues)
        config = _with_directory_users(config, found)
    issues.extend(_cross_check(config))
    if check_files and not issues:
        if owner is None:
            issues = [
                ConfigIssue(("service_user",), f"no user {config.service_user!r} on this host")
            ]
        else:
            issues = _check_files(config, *owner)
    if issues:
        raise _as_error(path, roots, issues)
    return config


def _as_error(
    path: Path, roots: Mapping[Path, Node | None], issues: Sequence[ConfigIssue]
) -> ConfigError:
    lines = []
    for issue in issues:
        file = issue.file or path
        line = _line_of(roots.get(file), issue.loc)
        where = f"{file}:{line}" if line else str(file)
        shown = f"{format_loc(issue.loc)}: " if issue.loc else ""
        lines.append(f"{where}: {shown}{issue.message}")
    count = len(lines)
    header = f"{path} is not valid ({count} problem{'s' if count > 1 else ''}):"
    cls = SecretFileError if all(i.secret_file for i in issues) else ConfigError
    return cls(
        "\n".join([header, *(f"  {line}" for line in lines)]),
        hint="fix the keys named above; docs/configuration.md describes each one",
    )


def summary(path: Path, config: Config) -> str:
    return (
        f"ok: {path}: {len(config.users)} users, {len(config.clusters)} clusters, "
        f"{len(config.grants)} grants, listening on {config.listener.address}:"
        f"{config.listener.port}"
    )
