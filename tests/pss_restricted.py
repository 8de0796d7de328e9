"""A checker for the Pod Security Standards *restricted* profile, for tests.

Written from the profile's definition (kubernetes.io/docs/concepts/security/
pod-security-standards, "latest" version): every Baseline control, then the Restricted ones.
Each control names the fields it restricts and the values it allows; the checker reports
every field holding another value, with its path and the control's name::

    from pss_restricted import violations
    assert violations(pod) == []

Containers are checked in all three lists (``containers``, ``initContainers``,
``ephemeralContainers``); where the profile lets a container inherit a pod-level value
(``runAsNonRoot``, ``seccompProfile``), the inherited value counts. Windows pods (where
some controls do not apply) are out of scope: the bastion only debugs Linux pods.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["check_container", "violations"]

Obj = Mapping[str, Any]

_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
# Baseline "Capabilities": the runtime's default set, which may be added back.
_BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
_SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
_APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
_SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
# Restricted "Volume Types": core volume types and those backed by PersistentVolumes.
_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_HOOKS = ("postStart", "preStop")


def violations(pod: Obj) -> list[str]:
    """Every field of ``pod`` that the restricted profile does not allow, as
    ``"<path>: <what is wrong> (<control>)"``; empty when the pod passes."""
    spec: Obj = pod.get("spec") or {}
    found = list(_pod_level(pod, spec))
    for key in _CONTAINER_LISTS:
        for i, container in enumerate(spec.get(key) or []):
            found += check_container(container, f"spec.{key}[{i}]", spec.get("securityContext"))
    return found


def check_container(
    container: Obj, path: str = "container", pod_context: Obj | None = None
) -> list[str]:
    """The restricted profile's container controls for one container; ``pod_context`` is
    the pod's ``securityContext`` (None: a container checked on its own, inheriting
    nothing)."""
    return list(_container(container, path, pod_context or {}))


def _pod_level(pod: Obj, spec: Obj) -> Iterator[str]:
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            yield f"spec.{field}: must be false or unset (Host Namespaces)"
    context: Obj = spec.get("securityContext") or {}
    yield from _context_baseline(context, "spec.securityContext")
    for i, sysctl in enumerate(context.get("sysctls") or []):
        if sysctl.get("name") not in _SAFE_SYSCTLS:
            yield (
                f"spec.securityContext.sysctls[{i}].name: {sysctl.get('name')!r} is not a "
                "safe sysctl (Sysctls)"
            )
    if context.get("runAsNonRoot") is False:
        yield "spec.securityContext.runAsNonRoot: must be true or unset (Running as Non-root)"
    if context.get("runAsUser") == 0:
        yield "spec.securityContext.runAsUser: must not be 0 (Running as Non-root user)"
    for name, value in (pod.get("metadata", {}).get("annotations") or {}).items():
        if name.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            yield f"metadata.annotations[{name}]: {value!r} is not allowed (AppArmor)"
    for i, volume in enumerate(spec.get("volumes") or []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            yield f"spec.volumes[{i}].hostPath: must be unset (HostPath Volumes)"
        for kind in sorted(kinds - _VOLUME_TYPES - {"hostPath"}):
            yield f"spec.volumes[{i}].{kind}: volume type not allowed (Volume Types)"


def _context_baseline(context: Obj, path: str) -> Iterator[str]:
    """Baseline controls that read the same fields at pod and container level."""
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        yield f"{path}.windowsOptions.hostProcess: must be false or unset (HostProcess)"
    selinux: Obj = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in _SELINUX_TYPES:
        yield f"{path}.seLinuxOptions.type: {selinux['type']!r} is not allowed (SELinux)"
    for field in ("user", "role"):
        if selinux.get(field):
            yield f"{path}.seLinuxOptions.{field}: must be unset (SELinux)"
    apparmor = (context.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in _APPARMOR_TYPES:
        yield f"{path}.appArmorProfile.type: {apparmor!r} is not allowed (AppArmor)"
    seccomp = (context.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in _SECCOMP_TYPES:
        yield f"{path}.seccompProfile.type: {seccomp!r} is not allowed (Seccomp)"


def _container(container: Obj, path: str, pod_context: Obj) -> Iterator[str]:
    context: Obj = container.get("securityContext") or {}
    where = f"{path}.securityContext"
    yield from _context_baseline(context, where)
    if context.get("privileged"):
        yield f"{where}.privileged: must be false or unset (Privileged Containers)"
    if context.get("procMount", "Default") != "Default":
        yield f"{where}.procMount: must be Default or unset (/proc Mount Type)"
    for i, port in enumerate(container.get("ports") or []):
        if port.get("hostPort"):
            yield f"{path}.ports[{i}].hostPort: must be 0 or unset (Host Ports)"
    yield from _host_handlers(container, path)
    if context.get("allowPrivilegeEscalation") is not False:
        yield f"{where}.allowPrivilegeEscalation: must be false (Privilege Escalation)"
    non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
    if non_root is not True:
        yield f"{where}.runAsNonRoot: must be true here or on the pod (Running as Non-root)"
    if context.get("runAsUser") == 0:
        yield f"{where}.runAsUser: must not be 0 (Running as Non-root user)"
    seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
    if seccomp.get("type") not in _SECCOMP_TYPES:
        yield (
            f"{where}.seccompProfile.type: must be RuntimeDefault or Localhost here or on the "
            "pod (Seccomp)"
        )
    capabilities: Obj = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        yield f"{where}.capabilities.drop: must include ALL (Capabilities)"
    for cap in capabilities.get("add") or []:
        if cap not in _BASELINE_CAPABILITIES:
            yield f"{where}.capabilities.add: {cap} is beyond the default set (Capabilities)"
        elif cap != "NET_BIND_SERVICE":
            yield f"{where}.capabilities.add: only NET_BIND_SERVICE may be added (Capabilities)"


def _host_handlers(container: Obj, path: str) -> Iterator[str]:
    """Baseline "Host Probes / Lifecycle Hooks": no handler may name a host."""
    handlers = [(f"{path}.{p}", container.get(p)) for p in _PROBES]
    lifecycle: Obj = container.get("lifecycle") or {}
    handlers += [(f"{path}.lifecycle.{h}", lifecycle.get(h)) for h in _HOOKS]
    for where, handler in handlers:
        for kind in ("httpGet", "tcpSocket"):
            if ((handler or {}).get(kind) or {}).get("host"):
                yield f"{where}.{kind}.host: must be unset (Host Probes / Lifecycle Hooks)"
