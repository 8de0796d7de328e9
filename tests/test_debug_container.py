"""The debug container and its pods as objects: exact security context, names, the watchdog
command, every body valid against the official OpenAPI schema and the Pod Security
Standards restricted profile, refusals before any API call, and reading pod status."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from kube_contract import validate
from pss_restricted import check_container, violations

from bastion.debug_container import (
    DEBUG_UID,
    LIMITS,
    SESSION_LABEL,
    SOURCE_ANNOTATION,
    USER_ANNOTATION,
    ContainerState,
    DebugPlan,
    Privileges,
    check_privileges,
    container_name,
    container_state,
    copy_pod,
    copy_pod_name,
    ephemeral_container,
    find_reattachable,
    next_ordinal,
    security_context,
    target_container,
    toolbox_pod,
    toolbox_pod_name,
    watchdog_command,
    watchdog_seconds_for,
)
from bastion.errors import PolicyDenied
from bastion.policy import Mode

IMAGE = "registry.example.com/debug-toolbox@sha256:" + "ab" * 32
SESSION = "3f9c2a7b1d4e5f60"
OTHER_SESSION = "3f9c2a7b99999999"  # the same 8-character prefix
EPHEMERAL_CONTAINER = "io.k8s.api.core.v1.EphemeralContainer"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def plan(mode: Mode = Mode.EPHEMERAL, **changes: Any) -> DebugPlan:
    fields: dict[str, Any] = {
        "session_id": SESSION,
        "user": "alice",
        "mode": mode,
        "image": IMAGE,
        "namespace": "payments",
        "pod": "api-1",
        "target_container": "app" if mode is Mode.EPHEMERAL else None,
        "watchdog_seconds": 2100,
    }
    fields.update(changes)
    return DebugPlan(**fields)


def source_pod() -> dict[str, Any]:
    """A pod as the API server returns it: restricted-compliant, with what a copy must drop."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "api-1",
            "generateName": "api-",
            "namespace": "payments",
            "uid": "0b7f7d4e-0000-4000-8000-000000000001",
            "resourceVersion": "1234",
            "creationTimestamp": "2026-11-28T14:00:00Z",
            "labels": {"app": "api", "pod-template-hash": "7d4b9c"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-28T13:00:00Z"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "api-7d4b9c",
                    "uid": "5e1c0a2b-0000-4000-8000-000000000001",
                    "controller": True,
                }
            ],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/api@sha256:" + "cd" * 32,
                    "env": [{"name": "MODE", "value": "prod"}],
                    "livenessProbe": {"httpGet": {"path": "/live", "port": 8080}},
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                    "startupProbe": {"tcpSocket": {"port": 8080}},
                    "volumeMounts": [
                        {
                            "name": "kube-api-access-x7k2p",
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                            "readOnly": True,
                        },
                        {"name": "config", "mountPath": "/etc/api"},
                    ],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "runAsUser": 1000,
                    },
                },
                {
                    "name": "proxy",
                    "image": "registry.example.com/proxy@sha256:" + "ef" * 32,
                    "volumeMounts": [
                        {
                            "name": "kube-api-access-x7k2p",
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                            "readOnly": True,
                        }
                    ],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                },
            ],
            "ephemeralContainers": [
                {"name": "debugger-abc", "image": "busybox@sha256:" + "00" * 32}
            ],
            "volumes": [
                {
                    "name": "kube-api-access-x7k2p",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                            {"configMap": {"name": "kube-root-ca.crt"}},
                        ]
                    },
                },
                {"name": "config", "configMap": {"name": "api-config"}},
            ],
            "nodeName": "node-2",
            "priority": 1000,
            "priorityClassName": "high",
            "preemptionPolicy": "PreemptLowerPriority",
            "serviceAccountName": "api",
            "restartPolicy": "Always",
            "securityContext": {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        },
        "status": {"phase": "Running", "podIP": "10.244.0.7"},
    }


# ------------------------------------------------------------------------- security context
def test_security_context_is_exactly_the_restricted_one() -> None:
    assert security_context(DEBUG_UID) == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_a_target_uid_replaces_the_default_one() -> None:
    context = security_context(1000)
    assert (context["runAsUser"], context["runAsGroup"]) == (1000, 1000)
    assert context["runAsNonRoot"] is True


@pytest.mark.parametrize(
    ("asked", "words"),
    [
        (Privileges(privileged=True), "privileged debug containers are not allowed"),
        (Privileges(run_as_user=0), "never run as root (uid 0)"),
        (Privileges(add_capabilities=("SYS_PTRACE",)), "no added Linux capabilities"),
        (Privileges(add_capabilities=("NET_ADMIN", "SYS_ADMIN")), "NET_ADMIN, SYS_ADMIN"),
        (Privileges(run_as_user=-1), "-1 is not a valid user id"),
    ],
)
def test_more_privilege_is_refused_with_the_reason(asked: Privileges, words: str) -> None:
    with pytest.raises(PolicyDenied, match=re.escape(words)):
        check_privileges(asked)


@pytest.mark.parametrize("uid", [None, 1, 1000, DEBUG_UID])
def test_non_root_uids_are_allowed(uid: int | None) -> None:
    check_privileges(Privileges(run_as_user=uid))


def test_a_plan_refuses_root_before_anything_is_built() -> None:
    with pytest.raises(PolicyDenied, match="uid 0"):
        plan(run_as_user=0)


@pytest.mark.parametrize(
    ("image", "words"),
    [
        ("registry.example.com/debug-toolbox:1.4", "not pinned by digest"),
        ("registry.example.com/debug-toolbox", "not pinned by digest"),
        ("Registry/Bad Name@sha256:00", "not an image reference"),
    ],
)
def test_an_image_not_pinned_by_digest_is_refused(image: str, words: str) -> None:
    with pytest.raises(PolicyDenied, match=words):
        plan(image=image)


def test_an_ephemeral_plan_needs_a_target_container() -> None:
    with pytest.raises(ValueError, match="needs a target container"):
        plan(target_container=None)


@pytest.mark.parametrize("session", ["short", "3F9C2A7B1D4E5F60", "3f9c2a7b-1d4e"])
def test_session_ids_that_cannot_name_a_container_are_refused(session: str) -> None:
    with pytest.raises(ValueError, match="is not a session id"):
        plan(session_id=session)


# ------------------------------------------------------------------------- names and command
def test_names() -> None:
    assert container_name(SESSION) == "dbg-3f9c2a7b"
    assert container_name(SESSION, 2) == "dbg-3f9c2a7b-2"
    assert container_name(SESSION, 3) == "dbg-3f9c2a7b-3"
    assert toolbox_pod_name(SESSION) == "dbg-3f9c2a7b-toolbox"
    assert toolbox_pod_name(SESSION, 2) == "dbg-3f9c2a7b-toolbox-2"
    assert copy_pod_name("api-1", SESSION) == "api-1-dbg-3f9c2a7b"
    with pytest.raises(ValueError, match="start at 1"):
        container_name(SESSION, 0)


@pytest.mark.parametrize(
    "pod",
    ["x" * 253, "checkout-service-" + "a" * 40 + "-5d8f9c7b6-abcde", "a" * 49 + "-" + "b" * 20],
)
def test_a_long_pod_name_is_cut_so_the_copy_name_stays_valid(pod: str) -> None:
    name = copy_pod_name(pod, SESSION)
    assert name.endswith("-dbg-3f9c2a7b")
    assert len(name) <= 63
    assert _DNS_LABEL.fullmatch(name), name
    assert pod.startswith(name.removesuffix("-dbg-3f9c2a7b"))


def test_watchdog_command_is_exact() -> None:
    assert watchdog_command(SESSION, 2100) == [
        "/bin/sh",
        "-c",
        'exec timeout -s KILL "$1" sh -i',
        "bastion-session=3f9c2a7b1d4e5f60",
        "2100",
    ]
    with pytest.raises(ValueError, match="at least 1 second"):
        watchdog_command(SESSION, 0)


def test_watchdog_command_with_command_reports_keeps_the_nonce_out_of_argv() -> None:
    nonce = "0123456789abcdef0123456789abcdef"
    shell, flag, script, marker, seconds = watchdog_command(SESSION, 2100, nonce)
    assert (shell, flag, marker, seconds) == (
        "/bin/sh",
        "-c",
        "bastion-session=3f9c2a7b1d4e5f60",
        "2100",
    )
    # In the script (the container spec), not in an argument the shell's `ps` line shows.
    assert nonce in script
    assert script.endswith('exec timeout -s KILL "$1" sh -i')
    added = ephemeral_container(plan(command_nonce=nonce))
    assert added["command"] == watchdog_command(SESSION, 2100, nonce)
    assert "env" not in added


def test_the_watchdog_is_the_hard_limit_plus_the_margin() -> None:
    assert watchdog_seconds_for(timedelta(minutes=30)) == 35 * 60
    assert watchdog_seconds_for(timedelta(seconds=0.2)) == 301


# ------------------------------------------------------------------------- ephemeral mode
def test_the_ephemeral_container_is_exact_and_valid() -> None:
    body = ephemeral_container(plan())
    assert body == {
        "name": "dbg-3f9c2a7b",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": watchdog_command(SESSION, 2100),
        "stdin": True,
        "stdinOnce": True,
        "tty": True,
        "securityContext": security_context(DEBUG_UID),
        "targetContainerName": "app",
    }
    assert "resources" not in body  # the API forbids them on ephemeral containers
    assert not {"env", "envFrom", "volumeMounts"} & set(body)
    validate(body, EPHEMERAL_CONTAINER)
    assert check_container(body) == []


def test_the_target_pod_with_the_debug_container_stays_valid_and_restricted() -> None:
    pod = source_pod()
    pod["spec"]["ephemeralContainers"].append(ephemeral_container(plan(ordinal=2)))
    validate(pod)
    assert [v for v in violations(pod) if "ephemeralContainers[1]" in v] == []


def test_an_ephemeral_container_is_only_for_ephemeral_mode() -> None:
    with pytest.raises(ValueError, match="not pod"):
        ephemeral_container(plan(Mode.POD))


# ------------------------------------------------------------------------- copy mode
def test_the_copy_drops_labels_probes_node_and_the_service_account_token() -> None:
    source = source_pod()
    copied = copy_pod(plan(Mode.COPY), source)
    validate(copied)
    assert violations(copied) == []
    assert copied["metadata"] == {
        "name": "api-1-dbg-3f9c2a7b",
        "namespace": "payments",
        "labels": {SESSION_LABEL: SESSION, "app.kubernetes.io/managed-by": "k8s-debug-bastion"},
        "annotations": {USER_ANNOTATION: "alice", SOURCE_ANNOTATION: "api-1"},
    }
    assert "status" not in copied
    spec = copied["spec"]
    assert not {"nodeName", "ephemeralContainers", "priority", "preemptionPolicy"} & set(spec)
    assert spec["priorityClassName"] == "high"  # admission computes the priority from it
    assert spec["shareProcessNamespace"] is True
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 2100
    assert [v["name"] for v in spec["volumes"]] == ["config", "dbg-3f9c2a7b-tmp"]
    app, proxy, debug = spec["containers"]
    for container in (app, proxy):
        assert not {"livenessProbe", "readinessProbe", "startupProbe"} & set(container)
    assert app["volumeMounts"] == [{"name": "config", "mountPath": "/etc/api"}]
    assert "volumeMounts" not in proxy
    assert app["env"] == [{"name": "MODE", "value": "prod"}]  # the app itself is unchanged
    assert debug["name"] == "dbg-3f9c2a7b"
    assert debug["command"] == watchdog_command(SESSION, 2100)
    assert debug["securityContext"] == security_context(DEBUG_UID)
    assert debug["resources"]["limits"] == LIMITS
    assert debug["volumeMounts"] == [{"name": "dbg-3f9c2a7b-tmp", "mountPath": "/tmp"}]
    assert "env" not in debug
    assert "targetContainerName" not in debug
    assert source == source_pod()  # the source is not modified


def test_a_copy_for_a_second_debug_gets_the_next_names() -> None:
    copied = copy_pod(plan(Mode.COPY, ordinal=2), source_pod())
    assert copied["metadata"]["name"] == "api-1-dbg-3f9c2a7b-2"
    assert copied["spec"]["containers"][-1]["name"] == "dbg-3f9c2a7b-2"


# ------------------------------------------------------------------------- toolbox mode
def test_the_toolbox_pod_is_standalone_valid_and_restricted() -> None:
    pod = toolbox_pod(plan(Mode.POD))
    validate(pod)
    assert violations(pod) == []
    assert pod["metadata"]["name"] == "dbg-3f9c2a7b-toolbox"
    assert pod["metadata"]["labels"][SESSION_LABEL] == SESSION
    assert pod["metadata"]["annotations"] == {USER_ANNOTATION: "alice"}
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "128Mi"}}]
    (container,) = spec["containers"]
    assert container["resources"]["limits"] == LIMITS
    assert set(container["resources"]["requests"]) == set(LIMITS)
    assert container["securityContext"] == security_context(DEBUG_UID)
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert (container["stdin"], container["stdinOnce"], container["tty"]) == (True, True, True)
    assert "env" not in container


# ------------------------------------------------------------------------- the PSS checker
Mutation = Callable[[dict[str, Any]], None]


def _first(pod: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = pod["spec"]["containers"][0]["securityContext"]
    return context


MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "privileged": (lambda p: _first(p).update(privileged=True), "Privileged Containers"),
    "root uid": (lambda p: _first(p).update(runAsUser=0), "Running as Non-root user"),
    "root uid on the pod": (
        lambda p: p["spec"]["securityContext"].update(runAsUser=0),
        "Running as Non-root user",
    ),
    "runAsNonRoot false": (lambda p: _first(p).update(runAsNonRoot=False), "(Running as Non-root)"),
    "runAsNonRoot unset everywhere": (
        lambda p: (_first(p).pop("runAsNonRoot"), p["spec"]["securityContext"].clear()),
        "(Running as Non-root)",
    ),
    "escalation allowed": (
        lambda p: _first(p).update(allowPrivilegeEscalation=True),
        "Privilege Escalation",
    ),
    "escalation unset": (
        lambda p: _first(p).pop("allowPrivilegeEscalation"),
        "Privilege Escalation",
    ),
    "capability added": (
        lambda p: _first(p)["capabilities"].update(add=["SYS_ADMIN"]),
        "beyond the default set (Capabilities)",
    ),
    "default capability added": (
        lambda p: _first(p)["capabilities"].update(add=["CHOWN"]),
        "only NET_BIND_SERVICE may be added (Capabilities)",
    ),
    "ALL not dropped": (
        lambda p: _first(p)["capabilities"].update(drop=["NET_RAW"]),
        "must include ALL (Capabilities)",
    ),
    "seccomp unconfined": (
        lambda p: _first(p).update(seccompProfile={"type": "Unconfined"}),
        "(Seccomp)",
    ),
    "seccomp unset everywhere": (
        lambda p: (_first(p).pop("seccompProfile"), p["spec"]["securityContext"].clear()),
        "(Seccomp)",
    ),
    "host network": (lambda p: p["spec"].update(hostNetwork=True), "Host Namespaces"),
    "host pid": (lambda p: p["spec"].update(hostPID=True), "Host Namespaces"),
    "host ipc": (lambda p: p["spec"].update(hostIPC=True), "Host Namespaces"),
    "host path": (
        lambda p: p["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "HostPath Volumes",
    ),
    "nfs volume": (
        lambda p: p["spec"]["volumes"].append(
            {"name": "n", "nfs": {"server": "nfs.example", "path": "/"}}
        ),
        "Volume Types",
    ),
    "host port": (
        lambda p: p["spec"]["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
        "Host Ports",
    ),
    "unmasked proc": (lambda p: _first(p).update(procMount="Unmasked"), "/proc Mount Type"),
    "unsafe sysctl": (
        lambda p: p["spec"]["securityContext"].update(
            sysctls=[{"name": "kernel.msgmax", "value": "1"}]
        ),
        "Sysctls",
    ),
    "selinux type": (
        lambda p: _first(p).update(seLinuxOptions={"type": "spc_t"}),
        "(SELinux)",
    ),
    "selinux user": (
        lambda p: p["spec"]["securityContext"].update(seLinuxOptions={"user": "system_u"}),
        "(SELinux)",
    ),
    "apparmor unconfined": (
        lambda p: _first(p).update(appArmorProfile={"type": "Unconfined"}),
        "(AppArmor)",
    ),
    "apparmor annotation": (
        lambda p: p["metadata"]["annotations"].update(
            {"container.apparmor.security.beta.kubernetes.io/dbg-3f9c2a7b-toolbox": "unconfined"}
        ),
        "(AppArmor)",
    ),
    "host process": (
        lambda p: _first(p).update(windowsOptions={"hostProcess": True}),
        "(HostProcess)",
    ),
    "probe on a host": (
        lambda p: p["spec"]["containers"][0].update(
            livenessProbe={"httpGet": {"host": "10.0.0.1", "port": 80}}
        ),
        "Host Probes / Lifecycle Hooks",
    ),
    "hook on a host": (
        lambda p: p["spec"]["containers"][0].update(
            lifecycle={"preStop": {"tcpSocket": {"host": "10.0.0.1", "port": 80}}}
        ),
        "Host Probes / Lifecycle Hooks",
    ),
    "privileged ephemeral container": (
        lambda p: p["spec"].update(
            ephemeralContainers=[
                {
                    **copy.deepcopy(p["spec"]["containers"][0]),
                    "name": "e",
                    "securityContext": {"privileged": True},
                }
            ]
        ),
        "spec.ephemeralContainers[0].securityContext.privileged",
    ),
}


@pytest.mark.parametrize("case", MUTATIONS)
def test_the_pss_checker_rejects_each_violation(case: str) -> None:
    pod = toolbox_pod(plan(Mode.POD))
    assert violations(pod) == []
    mutate, expected = MUTATIONS[case]
    mutate(pod)
    found = violations(pod)
    assert any(expected in v for v in found), found


def test_the_pss_checker_allows_what_the_profile_allows() -> None:
    pod = toolbox_pod(plan(Mode.POD))
    _first(pod)["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    _first(pod).pop("seccompProfile")  # inherited from the pod
    pod["spec"]["securityContext"]["sysctls"] = [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]
    pod["spec"]["volumes"].append({"name": "c", "configMap": {"name": "x"}})
    assert violations(pod) == []


# ------------------------------------------------------------------------- reading pods
def _with_ephemeral(*entries: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """A pod with ephemeral containers (name, session, state) and their statuses."""
    pod = source_pod()
    pod["spec"]["ephemeralContainers"] = [
        {"name": name, "image": IMAGE, "command": watchdog_command(session, 60)}
        for name, session, _ in entries
    ]
    pod["status"]["ephemeralContainerStatuses"] = [
        {"name": name, "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0, "state": s}
        for name, _, s in entries
    ]
    return pod


RUNNING = {"running": {"startedAt": "2026-11-28T14:00:00Z"}}
ENDED = {"terminated": {"exitCode": 137, "reason": "Error"}}


def test_reattach_finds_the_sessions_running_debug_container() -> None:
    pod = _with_ephemeral(("dbg-3f9c2a7b", SESSION, RUNNING))
    assert find_reattachable(pod, SESSION) == "dbg-3f9c2a7b"


def test_reattach_ignores_ended_containers_and_other_sessions_with_the_same_prefix() -> None:
    pod = _with_ephemeral(
        ("dbg-3f9c2a7b", SESSION, ENDED),
        ("dbg-3f9c2a7b-2", OTHER_SESSION, RUNNING),
        ("debugger-abc", SESSION, RUNNING),
    )
    assert find_reattachable(pod, SESSION) is None
    assert find_reattachable(pod, OTHER_SESSION) == "dbg-3f9c2a7b-2"


def test_reattach_picks_the_latest_of_several_running() -> None:
    pod = _with_ephemeral(
        ("dbg-3f9c2a7b-3", SESSION, RUNNING),
        ("dbg-3f9c2a7b", SESSION, RUNNING),
        ("dbg-3f9c2a7b-2", SESSION, ENDED),
    )
    assert find_reattachable(pod, SESSION) == "dbg-3f9c2a7b-3"


def test_next_ordinal_is_one_past_every_taken_name() -> None:
    assert next_ordinal(source_pod(), SESSION) == 1
    assert next_ordinal(_with_ephemeral(("dbg-3f9c2a7b", SESSION, ENDED)), SESSION) == 2
    taken = _with_ephemeral(
        ("dbg-3f9c2a7b", SESSION, ENDED), ("dbg-3f9c2a7b-3", OTHER_SESSION, RUNNING)
    )
    assert next_ordinal(taken, SESSION) == 4
    assert next_ordinal(_with_ephemeral(("dbg-3f9c2a7bx", SESSION, ENDED)), SESSION) == 1


@pytest.mark.parametrize(
    ("state", "expected", "described"),
    [
        (RUNNING, ContainerState("c", "running"), "running"),
        (
            {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
            ContainerState("c", "waiting", "ImagePullBackOff", "Back-off pulling image"),
            "waiting (ImagePullBackOff; Back-off pulling image)",
        ),
        (
            {"terminated": {"exitCode": 137, "reason": "Error", "startedAt": "x"}},
            ContainerState("c", "terminated", "Error", "", 137),
            "terminated with exit code 137 (Error)",
        ),
        ({}, ContainerState("c", "unknown"), "not reported by the cluster yet"),
    ],
)
def test_container_state(state: dict[str, Any], expected: ContainerState, described: str) -> None:
    pod = _with_ephemeral(("c", SESSION, state))
    found = container_state(pod, "c")
    assert found == expected
    assert found.describe() == described


def test_container_state_reads_every_status_list_and_knows_blocked_reasons() -> None:
    pod = source_pod()
    pod["status"]["containerStatuses"] = [
        {"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    ]
    pod["status"]["initContainerStatuses"] = [
        {"name": "init", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    ]
    assert container_state(pod, "app").blocked
    assert container_state(pod, "init") == ContainerState("init", "terminated", "Completed", "", 0)
    assert not ContainerState("c", "waiting", "ContainerCreating").blocked
    assert container_state(pod, "nobody") == ContainerState("nobody", "unknown")


def test_the_target_container_defaults_to_the_only_one() -> None:
    pod = source_pod()
    pod["spec"]["containers"].pop()
    assert target_container(pod, None) == "app"
    assert target_container(pod, "app") == "app"


def test_a_pod_with_several_containers_needs_a_choice() -> None:
    with pytest.raises(PolicyDenied, match="pod api-1 has 2 containers; choose one of: app, proxy"):
        target_container(source_pod(), None)
    assert target_container(source_pod(), "proxy") == "proxy"


def test_a_missing_target_container_is_refused_with_the_choices() -> None:
    with pytest.raises(PolicyDenied, match="pod api-1 has no container 'db'; choose one of: app"):
        target_container(source_pod(), "db")
    # An ephemeral container is not a target: it has its own process namespace.
    with pytest.raises(PolicyDenied, match="no container 'debugger-abc'"):
        target_container(source_pod(), "debugger-abc")
