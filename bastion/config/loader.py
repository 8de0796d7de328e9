"""Read, validate and cross-check the configuration file; explain every problem precisely.

Every problem is reported as ``FILE:LINE: KEY.PATH: what was expected``, all problems at
once, so an administrator fixes the file in one pass. YAML duplicate keys are errors (a
later key silently winning is how a reviewed config ends up meaning something else).
"""

from __future__ import annotations

import os
import pwd
import stat
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, SequenceNode

from bastion.config.models import Config
from bastion.errors import ConfigError, SecretFileError
from bastion.globs import compile_glob

__all__ = ["ConfigIssue", "format_loc", "load_config", "summary"]

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ConfigIssue:
    loc: Loc
    message: str
    secret_file: bool = False


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
def _model_at(loc: Loc) -> type[BaseModel] | None:
    annotation: Any = Config
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


def _explain(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    given = error.get("input")
    if kind == "extra_forbidden":
        model = _model_at(tuple(error["loc"][:-1]))
        allowed = ", ".join(model.model_fields) if model else "see docs/configuration.md"
        return f"unknown key {error['loc'][-1]!r}; allowed keys here: {allowed}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    template = _PLAIN.get(kind)
    if template is None:
        return str(error["msg"])
    shown = type(given).__name__ if isinstance(given, dict | list) else repr(given)
    return template.format(given=shown, **ctx)


# ---------------------------------------------------------------------------- cross-checks
def _cross_check(config: Config) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    names = {
        "users": [u.name for u in config.users],
        "clusters": [c.name for c in config.clusters],
        "grants": [g.name for g in config.grants],
    }
    for key, listed in names.items():
        for i, name in enumerate(listed):
            if name in listed[:i]:
                issues.append(ConfigIssue((key, i, "name"), f"duplicate name {name!r}"))
    user_names = set(names["users"])
    cluster_names = names["clusters"]
    for i, grant in enumerate(config.grants):
        for j, user in enumerate(grant.users):
            if user not in user_names:
                issues.append(
                    ConfigIssue(("grants", i, "users", j), f"no user named {user!r} in users")
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
    return issues


# ---------------------------------------------------------------------------- files on disk
def _owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _check_secret_file(path: Path, loc: Loc, owner: str, owner_uid: int) -> ConfigIssue | None:
    def issue(message: str) -> ConfigIssue:
        return ConfigIssue(loc, f"secret file {path} {message}", secret_file=True)

    try:
        st = path.lstat()
    except FileNotFoundError:
        return issue("does not exist")
    except OSError as exc:
        return issue(f"cannot be inspected: {exc.strerror}")
    if stat.S_ISLNK(st.st_mode):
        return issue("is a symbolic link; secret files must be regular files")
    if not stat.S_ISREG(st.st_mode):
        return issue("is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return issue(f"has mode {mode:04o}; expected 0600 (run: chmod 600 {path})")
    if st.st_uid != owner_uid:
        return issue(
            f"is owned by {_owner_name(st.st_uid)}; expected the service user {owner} "
            f"(run: chown {owner} {path})"
        )
    if not os.access(path, os.R_OK):
        return issue("is not readable")
    return None


def _check_ca_file(path: Path, loc: Loc) -> ConfigIssue | None:
    try:
        head = path.read_bytes()[:65536]
    except FileNotFoundError:
        return ConfigIssue(loc, f"CA file {path} does not exist")
    except OSError as exc:
        return ConfigIssue(loc, f"CA file {path} cannot be read: {exc.strerror}")
    if b"-----BEGIN CERTIFICATE-----" not in head:
        return ConfigIssue(loc, f"CA file {path} holds no PEM certificate")
    return None


def _check_files(config: Config) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    if config.service_user is None:
        owner_uid = os.geteuid()
        owner = pwd.getpwuid(owner_uid).pw_name
    else:
        owner = config.service_user
        try:
            owner_uid = pwd.getpwnam(owner).pw_uid
        except KeyError:
            return [ConfigIssue(("service_user",), f"no user {owner!r} on this host")]
    secret_files: list[tuple[Path, Loc]] = [
        (u.totp_secret_file, ("users", i, "totp_secret_file")) for i, u in enumerate(config.users)
    ]
    secret_files.append(
        (config.vault.approle.secret_id_file, ("vault", "approle", "secret_id_file"))
    )
    if config.listener.host_key.exists():
        secret_files.append((config.listener.host_key, ("listener", "host_key")))
    for path, loc in secret_files:
        found = _check_secret_file(path, loc, owner, owner_uid)
        if found:
            issues.append(found)
    ca_files: list[tuple[Path, Loc]] = [
        (c.ca_file, ("clusters", i, "ca_file")) for i, c in enumerate(config.clusters)
    ]
    ca_files.append((config.vault.ca_file, ("vault", "ca_file")))
    for path, loc in ca_files:
        found = _check_ca_file(path, loc)
        if found:
            issues.append(found)
    return issues


# ---------------------------------------------------------------------------- entry points
def load_config(path: Path, *, check_files: bool = True) -> Config:
    """Load and validate the config file; ConfigError lists every problem found.

    With ``check_files`` (what the server does before it starts), the secret files must be
    regular files of mode 0600 owned by the service user, and CA files must hold a PEM
    certificate.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file", hint="pass the path of the bastion's YAML config"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    data, root = _parse_yaml(path, text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (listener, users, ...) at the top")
    try:
        config = Config.model_validate(data, context={"base_dir": path.parent.absolute()})
    except ValidationError as exc:
        issues = [
            ConfigIssue(tuple(err["loc"]), _explain(err)) for err in exc.errors(include_url=False)
        ]
        raise _as_error(path, root, issues) from None
    issues = _cross_check(config)
    if check_files and not issues:
        issues = _check_files(config)
    if issues:
        raise _as_error(path, root, issues)
    return config


def _as_error(path: Path, root: Node | None, issues: Sequence[ConfigIssue]) -> ConfigError:
    lines = []
    for issue in issues:
        line = _line_of(root, issue.loc)
        where = f"{path}:{line}" if line else str(path)
        lines.append(f"{where}: {format_loc(issue.loc)}: {issue.message}")
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
