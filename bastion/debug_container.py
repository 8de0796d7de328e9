"""The debug container and the pods that carry it, as Kubernetes objects. Pure.

Three modes (:class:`bastion.policy.Mode`):

* **ephemeral** (default): an ``EphemeralContainer`` added to the target pod, in the target
  container's process namespace (``targetContainerName``);
* **copy**: a copy of the target pod with the debug container appended, as
  ``kubectl debug --copy-to`` makes it, labelled with the session and deleted at the end;
* **pod**: a standalone toolbox pod in the namespace, labelled and deleted likewise.

Whatever the mode, the debug container passes the Pod Security Standards *restricted*
profile (non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp, a
read-only root filesystem), carries no environment values and no service-account token, and
ends by itself: its command exits when the attached terminal closes stdin (``stdinOnce``)
and, at the latest, when its watchdog deadline passes (the session's hard limit plus
:data:`WATCHDOG_MARGIN`), even if the bastion is gone by then.

The command's ``$0`` names the session (``bastion-session=<id>``): in ephemeral mode that is
the only mark the bastion can leave on the pod, since annotating it would need
``pods: patch``, which would also let the credential change container images. Copy and
toolbox pods get labels and annotations when they are created.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from bastion.command_marker import shell_setup
from bastion.errors import PolicyDenied
from bastion.images import parse_pinned_image
from bastion.policy import Mode

__all__ = [
    "DEBUG_UID",
    "LIMITS",
    "MANAGED_BY_LABEL",
    "REQUESTS",
    "SESSION_LABEL",
    "SOURCE_ANNOTATION",
    "USER_ANNOTATION",
    "WATCHDOG_MARGIN",
    "ContainerState",
    "DebugPlan",
    "Privileges",
    "check_privileges",
    "container_name",
    "container_names",
    "container_state",
    "copy_pod",
    "copy_pod_name",
    "ephemeral_container",
    "find_reattachable",
    "next_ordinal",
    "security_context",
    "session_marker",
    "target_container",
    "toolbox_pod",
    "toolbox_pod_name",
    "watchdog_command",
    "watchdog_seconds_for",
]

SESSION_LABEL = "bastion.k8s-debug/session"
USER_ANNOTATION = "bastion.k8s-debug/user"
SOURCE_ANNOTATION = "bastion.k8s-debug/copy-of"
MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", "k8s-debug-bastion")
DEBUG_UID = 65532  # "nonroot" in distroless and Chainguard images
WATCHDOG_MARGIN = timedelta(minutes=5)
# Set on the debug container of copy and toolbox pods; the API refuses resources on
# ephemeral containers, which share the target pod's.
LIMITS = {"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "256Mi"}
REQUESTS = {"cpu": "50m", "memory": "64Mi", "ephemeral-storage": "64Mi"}
TMP_SIZE = "128Mi"

_SESSION_ID = re.compile(r"[a-z0-9]{8,63}")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_MAX_POD_NAME = 63  # a pod's name is its hostname, and a hostname label stops at 63
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_SECTIONS = (
    ("containers", "containerStatuses"),
    ("initContainers", "initContainerStatuses"),
    ("ephemeralContainers", "ephemeralContainerStatuses"),
)
# Waiting reasons after which a container will not start without someone changing something.
_BLOCKED = frozenset(
    {
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImageNeverPull",
        "ErrImagePull",
        "ImageInspectError",
        "ImagePullBackOff",
        "InvalidImageName",
        "RegistryUnavailable",
        "RunContainerError",
    }
)


# ---------------------------------------------------------------------------- privileges
@dataclass(frozen=True)
class Privileges:
    """What an operator asked for beyond the defaults; anything more than a uid is refused."""

    run_as_user: int | None = None
    privileged: bool = False
    add_capabilities: tuple[str, ...] = ()


def check_privileges(p: Privileges) -> None:
    """Refuse, before any API call, what the restricted profile forbids. A non-zero uid other
    than :data:`DEBUG_UID` is allowed: matching the target's uid is what lets the debugger
    read its processes' ``/proc`` entries without capabilities."""
    if p.privileged:
        raise PolicyDenied(
            "privileged debug containers are not allowed; start the debug without privileged mode"
        )
    if p.add_capabilities:
        names = ", ".join(p.add_capabilities)
        raise PolicyDenied(
            f"debug containers get no added Linux capabilities (asked for {names}); start the "
            "debug without them"
        )
    if p.run_as_user is not None and p.run_as_user == 0:
        raise PolicyDenied(
            f"debug containers never run as root (uid 0); leave the uid out for {DEBUG_UID} "
            "or give the target's non-zero uid"
        )
    if p.run_as_user is not None and not 0 < p.run_as_user < 2**31:
        raise PolicyDenied(
            f"{p.run_as_user} is not a valid user id; give a uid between 1 and {2**31 - 1}"
        )


# ---------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class DebugPlan:
    """Everything the debug objects are built from, checked when it is made."""

    session_id: str
    user: str
    mode: Mode
    image: str
    namespace: str
    pod: str  # the target pod (in pod mode: the pod the operator started from)
    target_container: str | None
    watchdog_seconds: int
    run_as_user: int = DEBUG_UID
    ordinal: int = 1
    # The shell's command reports carry it (bastion.command_marker); "" for a plain shell.
    command_nonce: str = ""

    def __post_init__(self) -> None:
        _check_session_id(self.session_id)
        if not _LABEL.fullmatch(self.namespace):
            raise PolicyDenied(f"{self.namespace!r} is not a valid namespace name")
        if not _SUBDOMAIN.fullmatch(self.pod):
            raise PolicyDenied(f"{self.pod!r} is not a valid pod name")
        try:
            # Policy approved the image already; checked again because a tag can move.
            parse_pinned_image(self.image)
        except ValueError as exc:
            raise PolicyDenied(str(exc)) from None
        check_privileges(Privileges(run_as_user=self.run_as_user))
        if self.watchdog_seconds < 1:
            raise ValueError(f"the watchdog needs at least 1 second, not {self.watchdog_seconds}")
        if self.ordinal < 1:
            raise ValueError(f"debug container ordinals start at 1, not {self.ordinal}")
        if self.mode is Mode.EPHEMERAL and not self.target_container:
            raise ValueError("an ephemeral debug container needs a target container")
        if self.target_container is not None and not _LABEL.fullmatch(self.target_container):
            raise PolicyDenied(f"{self.target_container!r} is not a valid container name")

    @property
    def container(self) -> str:
        return container_name(self.session_id, self.ordinal)


def _check_session_id(session_id: str) -> None:
    # Lowercase alphanumerics only: it becomes part of container names and a label value.
    if not _SESSION_ID.fullmatch(session_id):
        raise ValueError(f"{session_id!r} is not a session id (8 to 63 of [a-z0-9])")


def watchdog_seconds_for(hard_limit: timedelta) -> int:
    """The watchdog for a session with ``hard_limit`` left: the limit plus the margin, so the
    bastion's own wipe comes first and the watchdog only covers a bastion that died."""
    return math.ceil((hard_limit + WATCHDOG_MARGIN).total_seconds())


def session_marker(session_id: str) -> str:
    """The command's ``$0``: ``bastion-session=<id>``, visible in ``kubectl get pod -o yaml``."""
    _check_session_id(session_id)
    return f"bastion-session={session_id}"


def container_name(session_id: str, ordinal: int = 1) -> str:
    """``dbg-<first 8 of the session id>``, then ``-2``, ``-3``... for later ones."""
    _check_session_id(session_id)
    if ordinal < 1:
        raise ValueError(f"debug container ordinals start at 1, not {ordinal}")
    base = f"dbg-{session_id[:8]}"
    return base if ordinal == 1 else f"{base}-{ordinal}"


def toolbox_pod_name(session_id: str, ordinal: int = 1) -> str:
    base = f"{container_name(session_id)}-toolbox"
    return base if ordinal == 1 else f"{base}-{ordinal}"


def copy_pod_name(pod: str, session_id: str, ordinal: int = 1) -> str:
    """``<pod>-dbg-<short>``, the pod's part cut so the whole stays a valid name."""
    suffix = "-" + container_name(session_id, ordinal)
    head = pod[: _MAX_POD_NAME - len(suffix)].rstrip("-.")
    return head + suffix


def security_context(run_as_user: int) -> dict[str, Any]:
    """The debug container's security context: the restricted profile, and read-only."""
    check_privileges(Privileges(run_as_user=run_as_user))
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        # Without it the image's primary group applies, often 0 (root's group).
        "runAsGroup": run_as_user,
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def watchdog_command(session_id: str, seconds: int, command_nonce: str = "") -> list[str]:
    """An interactive shell that ends when stdin closes or after ``seconds``, whichever is
    first: ``timeout`` kills it with SIGKILL (exit code 137), which no shell can ignore.
    With ``command_nonce`` its prompt reports each command (:func:`shell_setup`)."""
    if seconds < 1:
        raise ValueError(f"the watchdog needs at least 1 second, not {seconds}")
    return [
        "/bin/sh",
        "-c",
        shell_setup(command_nonce) if command_nonce else 'exec timeout -s KILL "$1" sh -i',
        session_marker(session_id),
        str(seconds),
    ]


def _debug_container(plan: DebugPlan) -> dict[str, Any]:
    # No env, envFrom or volumeMounts: nothing of the pod's configuration or identity.
    return {
        "name": plan.container,
        "image": plan.image,
        "imagePullPolicy": "IfNotPresent",  # pinned by digest: the cached copy is the same
        "command": watchdog_command(plan.session_id, plan.watchdog_seconds, plan.command_nonce),
        "stdin": True,
        "stdinOnce": True,
        "tty": True,
        "securityContext": security_context(plan.run_as_user),
    }


def ephemeral_container(plan: DebugPlan) -> dict[str, Any]:
    """The ``EphemeralContainer`` for ``pods/ephemeralcontainers``, in the target container's
    process namespace.

    It has no ``resources``: the API refuses them on ephemeral containers (they run within
    the pod's existing allocation). No service-account token is mounted either: ephemeral
    containers get only the volume mounts they list, and this one lists none. With a
    read-only root filesystem and no volumes of its own, the shell has nowhere to write.
    """
    if plan.mode is not Mode.EPHEMERAL:
        raise ValueError(f"an ephemeral container is for ephemeral mode, not {plan.mode}")
    container = _debug_container(plan)
    container["targetContainerName"] = plan.target_container
    return container


def _metadata(plan: DebugPlan, name: str, **annotations: str) -> dict[str, Any]:
    key, value = MANAGED_BY_LABEL
    return {
        "name": name,
        "namespace": plan.namespace,
        "labels": {SESSION_LABEL: plan.session_id, key: value},
        "annotations": {USER_ANNOTATION: plan.user, **annotations},
    }


def _with_limits_and_tmp(container: dict[str, Any], volume: str) -> dict[str, Any]:
    container["resources"] = {"limits": dict(LIMITS), "requests": dict(REQUESTS)}
    container["volumeMounts"] = [{"name": volume, "mountPath": "/tmp"}]  # noqa: S108
    return container


def _tmp_volume(name: str) -> dict[str, Any]:
    # The root filesystem is read-only; shells and tools still want a scratch /tmp.
    return {"name": name, "emptyDir": {"sizeLimit": TMP_SIZE}}


def _carries_token(volume: dict[str, Any]) -> bool:
    sources = (volume.get("projected") or {}).get("sources") or []
    return any(isinstance(s, dict) and "serviceAccountToken" in s for s in sources)


def copy_pod(plan: DebugPlan, source: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``source`` with the debug container appended, as ``kubectl debug --copy-to``
    makes it by default, and stricter where the debugger's identity is concerned:

    * no original labels (Services and controllers must not pick the copy up), no probes
      (a paused process must not get the copy restarted), no ``nodeName`` (it is scheduled
      afresh), no ephemeral containers, status or server-managed metadata;
    * one process namespace for all containers, so the debugger sees the app's processes;
    * no service-account token: automounting is off and projected token volumes (the
      admission-added ``kube-api-access-*`` among them) and their mounts are dropped, so
      the copy does not carry the app's identity to the debugger;
    * ``restartPolicy: Never`` and ``activeDeadlineSeconds`` at the watchdog, so the copy
      ends with the session even if the bastion does not come back to delete it;
    * the session's labels and annotations.
    """
    if plan.mode is not Mode.COPY:
        raise ValueError(f"a copy pod is for copy mode, not {plan.mode}")
    spec = copy.deepcopy(source.get("spec") or {})
    # Admission computes priority from priorityClassName and refuses a copied value that
    # differs; nodeName would bypass the scheduler.
    for key in ("nodeName", "ephemeralContainers", "priority", "preemptionPolicy"):
        spec.pop(key, None)
    tokens = {v.get("name") for v in spec.get("volumes") or [] if _carries_token(v)}
    spec["volumes"] = [v for v in spec.get("volumes") or [] if v.get("name") not in tokens]
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            for probe in _PROBES:
                container.pop(probe, None)
            mounts = [m for m in container.get("volumeMounts") or [] if m["name"] not in tokens]
            if mounts:
                container["volumeMounts"] = mounts
            else:
                container.pop("volumeMounts", None)
    volume = f"{plan.container}-tmp"
    spec["volumes"].append(_tmp_volume(volume))
    spec["containers"] = [
        *(spec.get("containers") or []),
        _with_limits_and_tmp(_debug_container(plan), volume),
    ]
    spec["shareProcessNamespace"] = True
    spec["automountServiceAccountToken"] = False
    spec["restartPolicy"] = "Never"
    spec["activeDeadlineSeconds"] = plan.watchdog_seconds
    source_name = (source.get("metadata") or {}).get("name", plan.pod)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(
            plan,
            copy_pod_name(source_name, plan.session_id, plan.ordinal),
            **{SOURCE_ANNOTATION: source_name},
        ),
        "spec": spec,
    }


def toolbox_pod(plan: DebugPlan) -> dict[str, Any]:
    """A standalone pod for network debugging: nothing of the target but its namespace."""
    if plan.mode is not Mode.POD:
        raise ValueError(f"a toolbox pod is for pod mode, not {plan.mode}")
    volume = "tmp"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(plan, toolbox_pod_name(plan.session_id, plan.ordinal)),
        "spec": {
            "containers": [_with_limits_and_tmp(_debug_container(plan), volume)],
            "volumes": [_tmp_volume(volume)],
            "restartPolicy": "Never",
            "activeDeadlineSeconds": plan.watchdog_seconds,
            "automountServiceAccountToken": False,
            # Service environment variables would leak the namespace's service map into env.
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        },
    }


# ---------------------------------------------------------------------------- reading pods
def _containers(pod: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    spec = pod.get("spec") or {}
    for key, _ in _SECTIONS:
        for container in spec.get(key) or []:
            if isinstance(container, dict) and isinstance(container.get("name"), str):
                yield key, container


def container_names(pod: dict[str, Any]) -> list[str]:
    """Every container's name: regular, init and ephemeral."""
    return [c["name"] for _, c in _containers(pod)]


def target_container(pod: dict[str, Any], requested: str | None) -> str:
    """The container to debug: ``requested`` if the pod has it, else the pod's only one."""
    name = (pod.get("metadata") or {}).get("name", "?")
    regular = [c["name"] for key, c in _containers(pod) if key == "containers"]
    listing = ", ".join(regular)
    if requested:
        if requested not in regular:
            raise PolicyDenied(
                f"pod {name} has no container {requested!r}; choose one of: {listing}"
            )
        return requested
    if len(regular) != 1:
        raise PolicyDenied(f"pod {name} has {len(regular)} containers; choose one of: {listing}")
    return str(regular[0])


def _ordinal(name: str, session_id: str) -> int | None:
    match = re.fullmatch(rf"dbg-{re.escape(session_id[:8])}(?:-([1-9][0-9]*))?", name)
    if match is None:
        return None
    return int(match.group(1) or 1)


def next_ordinal(pod: dict[str, Any], session_id: str) -> int:
    """The ordinal of the session's next debug container in ``pod``: one past the highest
    name of its shape already there, whoever made it, so the name is free."""
    _check_session_id(session_id)
    taken = [_ordinal(n, session_id) for n in container_names(pod)]
    return max((o for o in taken if o is not None), default=0) + 1


def find_reattachable(pod: dict[str, Any], session_id: str) -> str | None:
    """The name of a running ephemeral debug container of this session in ``pod``, the
    latest if several. The name's prefix is only 8 characters, so the command's session
    marker decides whose it is."""
    marker = session_marker(session_id)
    found: list[tuple[int, str]] = []
    for key, container in _containers(pod):
        ordinal = _ordinal(container["name"], session_id)
        if key != "ephemeralContainers" or ordinal is None:
            continue
        command = container.get("command") or []
        if len(command) < 4 or command[3] != marker:
            continue
        if container_state(pod, container["name"]).state == "running":
            found.append((ordinal, container["name"]))
    return max(found)[1] if found else None


# ---------------------------------------------------------------------------- states
@dataclass(frozen=True)
class ContainerState:
    """A container's state as its pod's status reports it."""

    name: str
    state: Literal["waiting", "running", "terminated", "unknown"]
    reason: str = ""
    message: str = ""
    exit_code: int | None = None

    @property
    def blocked(self) -> bool:
        """Waiting for a reason that will not clear by itself (image pull, crash loop)."""
        return self.state == "waiting" and self.reason in _BLOCKED

    def describe(self) -> str:
        """A phrase for the operator: ``terminated with exit code 137 (Error)``."""
        if self.state == "terminated":
            text = f"terminated with exit code {self.exit_code}"
            return f"{text} ({self.reason})" if self.reason else text
        if self.state == "waiting":
            detail = "; ".join(filter(None, (self.reason, self.message[:200])))
            return f"waiting ({detail})" if detail else "waiting"
        if self.state == "unknown":
            return "not reported by the cluster yet"
        return self.state


def container_state(pod: dict[str, Any], name: str) -> ContainerState:
    """``name``'s state from ``status.(init|ephemeral)containerStatuses``; ``unknown`` when
    the status has no entry for it (yet)."""
    status = pod.get("status") or {}
    for _, section in _SECTIONS:
        for entry in status.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                return _state_of(name, entry.get("state") or {})
    return ContainerState(name, "unknown")


def _state_of(name: str, state: dict[str, Any]) -> ContainerState:
    if "terminated" in state:
        ended = state["terminated"] or {}
        return ContainerState(
            name,
            "terminated",
            str(ended.get("reason") or ""),
            str(ended.get("message") or ""),
            int(ended.get("exitCode", 0)),
        )
    if "running" in state:
        return ContainerState(name, "running")
    if "waiting" in state:
        waiting = state["waiting"] or {}
        return ContainerState(
            name, "waiting", str(waiting.get("reason") or ""), str(waiting.get("message") or "")
        )
    return ContainerState(name, "unknown")
