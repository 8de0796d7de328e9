"""The ``debug`` command line: what an operator types to ask for a debug shell. Pure.

The same words work as the SSH command (``ssh -t alice@bastion debug shop/web-1``, which
goes straight to the shell and returns its exit status) and at the line console's prompt::

    debug NAMESPACE/POD [-c CONTAINER] [--cluster NAME] [--mode ephemeral|copy|pod]
          [--image REF] [--reason TEXT] [--uid N] [--privileged] [--cap-add CAP]

``--privileged``, ``--uid 0`` and ``--cap-add`` are understood only so that the bastion can
refuse them by name (before any API call) instead of calling them unknown options.
The text is untrusted: it is parsed strictly, every value is checked against the shape of a
Kubernetes name, and anything else is an error that says what was expected.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from bastion.policy import Mode
from bastion.terminal_text import printable

__all__ = [
    "DEFAULT_UID",
    "MAX_COMMAND",
    "USAGE",
    "DebugCommand",
    "parse_debug_command",
    "target_names",
]

DEFAULT_UID = 65532
USAGE = (
    "usage: debug NAMESPACE/POD [-c CONTAINER] [--cluster NAME] [--mode ephemeral|copy|pod] "
    "[--image REF] [--reason TEXT] [--uid N]"
)
MAX_COMMAND = 4096
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # namespace, container (DNS label)
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # pod (DNS subdomain)
_CAPABILITY = re.compile(r"(CAP_)?[A-Z_]{2,32}")


@dataclass(frozen=True)
class DebugCommand:
    namespace: str
    pod: str
    container: str = ""  # "" = the pod's only container
    cluster: str = ""  # "" = the bastion's only cluster
    mode: Mode = Mode.EPHEMERAL
    image: str = ""  # "" = the one image policy approves there
    reason: str = ""
    run_as_user: int = DEFAULT_UID
    privileged: bool = False
    add_capabilities: tuple[str, ...] = ()


def parse_debug_command(text: str) -> DebugCommand:
    """Parse ``debug ...``; ValueError with what was wrong and the usage line."""
    if len(text) > MAX_COMMAND:
        raise ValueError(f"the command is longer than {MAX_COMMAND} characters")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"the command could not be split into words ({exc}); {USAGE}") from None
    if not words or words[0] != "debug":
        raise ValueError(f"the only command is 'debug'; {USAGE}")
    target, options, privileged, caps = _words(words[1:])
    if target is None:
        raise ValueError(f"which pod? {USAGE}")
    namespace, pod, container, cluster = target_names(target, options, "debug NAMESPACE/POD")
    mode_text = options.get("--mode", Mode.EPHEMERAL.value)
    try:
        mode = Mode(mode_text)
    except ValueError:
        modes = ", ".join(m.value for m in Mode)
        raise ValueError(f"--mode {mode_text[:40]!r} is not a mode; use one of {modes}") from None
    uid_text = options.get("--uid", str(DEFAULT_UID))
    if not uid_text.isdigit() or len(uid_text) > 10:
        raise ValueError(f"--uid takes a number, got {uid_text[:20]!r}")
    return DebugCommand(
        namespace=namespace,
        pod=pod,
        container=container,
        cluster=cluster,
        mode=mode,
        image=options.get("--image", ""),
        reason=options.get("--reason", ""),
        run_as_user=int(uid_text),
        privileged=privileged,
        add_capabilities=caps,
    )


def _words(words: list[str]) -> tuple[str | None, dict[str, str], bool, tuple[str, ...]]:
    """The target, the options with values, ``--privileged``, and the ``--cap-add`` list."""
    target: str | None = None
    options: dict[str, str] = {}
    privileged = False
    caps: list[str] = []
    rest = iter(words)
    for word in rest:
        if word == "--privileged":
            privileged = True
        elif word in ("-c", "--container", "--cluster", "--mode", "--image", "--reason", "--uid"):
            value = next(rest, None)
            if value is None:
                raise ValueError(f"{word} needs a value; {USAGE}")
            key = "--container" if word == "-c" else word
            if key in options:
                raise ValueError(f"{word} is given twice")
            options[key] = value
        elif word == "--cap-add":
            value = next(rest, None)
            if value is None or not _CAPABILITY.fullmatch(value):
                raise ValueError("--cap-add needs a capability name, such as SYS_PTRACE")
            caps.append(value)
        elif word.startswith("-"):
            raise ValueError(f"unknown option {word[:40]!r}; {USAGE}")
        elif target is None:
            target = word
        else:
            raise ValueError(f"one target only, got {target[:80]!r} and {word[:80]!r}; {USAGE}")
    return target, options, privileged, tuple(caps)


def target_names(target: str, options: Mapping[str, str], usage: str) -> tuple[str, str, str, str]:
    """The namespace, pod, container and cluster of a ``NAMESPACE/POD`` target and its
    ``--container``/``--cluster`` options (empty when not given), each checked; ValueError
    naming the one that is wrong (``usage``: how the target is written in this command)."""
    namespace, _, pod = target.partition("/")
    _check_name(namespace, _LABEL, "namespace", usage)
    _check_name(pod, _SUBDOMAIN, "pod", usage)
    container = options.get("--container", "")
    if container:
        _check_name(container, _LABEL, "container", usage)
    cluster = options.get("--cluster", "")
    if cluster:
        _check_name(cluster, _SUBDOMAIN, "cluster", usage)
    return namespace, pod, container, cluster


def _check_name(value: str, shape: re.Pattern[str], what: str, usage: str) -> None:
    """ValueError saying what was wrong when ``value`` is no valid ``what`` name."""
    if not value:
        raise ValueError(f"the target needs a {what}: {usage}")
    if not shape.fullmatch(value):
        raise ValueError(
            f"{printable(value[:80])!r} is not a valid {what} name "
            "(lower-case letters, digits and '-')"
        )
