"""kubesim through the official ``kubernetes`` Python client: the parts the bastion relies on."""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

import pytest
import yaml
from kube_contract import validate
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from bastion.devstack.kubesim.fixture import load_fixture, seed
from bastion.devstack.kubesim.store import RESOURCES, Store
from devstack.kubesim_harness import TOOLBOX, ThreadedKubeSim

# The official client's websocket sessions leave their SSL sockets for the garbage collector.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


# ------------------------------------------------------------------------- reading
def test_namespaces_and_pods(core: client.CoreV1Api) -> None:
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"payments", "big", "default", "kube-system"} <= names
    pods = core.list_namespaced_pod("payments")
    assert [p.metadata.name for p in pods.items] == ["api-1", "api-2", "db-0", "two"]
    pod = core.read_namespaced_pod("api-1", "payments")
    assert pod.status.phase == "Running"
    assert pod.spec.containers[0].name == "app"


def test_selectors(core: client.CoreV1Api) -> None:
    by_label = core.list_namespaced_pod("payments", label_selector="app=api,tier in (web)")
    assert [p.metadata.name for p in by_label.items] == ["api-1", "api-2"]
    by_phase = core.list_namespaced_pod("payments", field_selector="status.phase=Pending")
    assert [p.metadata.name for p in by_phase.items] == ["api-2"]
    by_name = core.list_namespaced_pod("payments", field_selector="metadata.name!=db-0")
    assert len(by_name.items) == 3
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_pod("payments", field_selector="spec.bogus=1")
    assert caught.value.status == 400
    assert status_of(caught.value)["message"] == "field label not supported: spec.bogus"


def test_pagination_with_limit_and_continue(core: client.CoreV1Api) -> None:
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = core.list_namespaced_pod("big", limit=1200, _continue=token)
        seen += [p.metadata.name for p in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 5000 - len(seen)
    assert pages == 5
    assert seen == sorted(seen)
    assert len(set(seen)) == 5000


def test_full_list_as_raw_json(core: client.CoreV1Api) -> None:
    response = core.list_namespaced_pod("big", _preload_content=False)
    body = json.loads(response.data)
    assert body["kind"] == "PodList"
    assert len(body["items"]) == 5000


def test_not_found_is_a_status(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_pod("nope", "payments")
    assert caught.value.status == 404
    body = status_of(caught.value)
    assert (body["kind"], body["reason"], body["message"]) == (
        "Status",
        "NotFound",
        'pods "nope" not found',
    )


def test_bad_token_is_401(kubesim: ThreadedKubeSim) -> None:
    with kubesim.api_client("not-a-token") as api, pytest.raises(ApiException) as caught:
        client.CoreV1Api(api).list_namespace()
    assert caught.value.status == 401
    assert status_of(caught.value)["reason"] == "Unauthorized"


# ------------------------------------------------------------------------- writing
def test_create_watch_and_delete_pod(core: client.CoreV1Api) -> None:
    events = watch.Watch()
    start_rv = core.list_namespaced_pod("payments").metadata.resource_version
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "made-here", "labels": {"app": "made"}},
        "spec": {"containers": [{"name": "main", "image": "busybox@sha256:" + "1" * 64}]},
    }
    created = core.create_namespaced_pod("payments", body)
    assert created.metadata.uid
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod("payments", body)
    assert caught.value.status == 409
    core.delete_namespaced_pod("made-here", "payments", grace_period_seconds=0)
    seen = []
    for event in events.stream(
        core.list_namespaced_pod,
        "payments",
        label_selector="app=made",
        resource_version=start_rv,
        timeout_seconds=2,
    ):
        seen.append(event["type"])
        if event["type"] == "DELETED":
            events.stop()
    assert seen[0] == "ADDED"
    assert seen[-1] == "DELETED"


def test_invalid_pod_is_422(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(
            "payments", {"metadata": {"name": "Bad_Name"}, "spec": {"containers": []}}
        )
    assert caught.value.status == 422
    causes = status_of(caught.value)["details"]["causes"]
    assert causes[0]["field"] == "metadata.name"
    assert causes[1] == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.containers",
    }


# ------------------------------------------------------------------------- ephemeral containers
def debug_container(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": TOOLBOX,
        "command": ["/bin/sh"],
        "stdin": True,
        "stdinOnce": True,
        "tty": True,
        "targetContainerName": "app",
        **extra,
    }


def wait_for_state(core: client.CoreV1Api, pod: str, name: str, state: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        current = core.read_namespaced_pod(pod, "payments")
        for status in current.status.ephemeral_container_statuses or []:
            if status.name == name and getattr(status.state, state):
                return status
        time.sleep(0.05)
    raise AssertionError(f"{name} never reached {state}")


def test_ephemeral_container_lifecycle_attach_resize_and_exit(core: client.CoreV1Api) -> None:
    patched = core.patch_namespaced_pod_ephemeralcontainers(
        "db-0", "payments", {"spec": {"ephemeralContainers": [debug_container("dbg-1")]}}
    )
    assert [c.name for c in patched.spec.ephemeral_containers] == ["dbg-1"]
    assert patched.status.ephemeral_container_statuses[0].state.waiting.reason == (
        "ContainerCreating"
    )
    wait_for_state(core, "db-0", "dbg-1", "running")
    session = stream(
        core.connect_get_namespaced_pod_attach,
        "db-0",
        "payments",
        container="dbg-1",
        stdin=True,
        stdout=True,
        tty=True,
        _preload_content=False,
    )
    session.write_channel(4, json.dumps({"Width": 123, "Height": 45}))
    session.write_stdin("stty size; exit 3\n")
    output = ""
    deadline = time.monotonic() + 10
    while session.is_open() and time.monotonic() < deadline:
        session.update(timeout=1)
        output += session.read_stdout() or ""
    session.close()
    assert "45 123" in output
    terminated = wait_for_state(core, "db-0", "dbg-1", "terminated")
    assert terminated.state.terminated.exit_code == 3


def test_ephemeral_containers_are_validated(core: client.CoreV1Api) -> None:
    core.patch_namespaced_pod_ephemeralcontainers(
        "api-1", "payments", {"spec": {"ephemeralContainers": [debug_container("dbg-a")]}}
    )
    cases = [
        (
            [debug_container("dbg-a", image=TOOLBOX.rsplit(":", 1)[0] + ":" + "f" * 64)],
            "spec.ephemeralContainers[0]",
            'Forbidden: existing ephemeral containers "dbg-a" may not be changed',
        ),
        (
            [debug_container("dbg-a"), debug_container("app")],
            "spec.ephemeralContainers[1].name",
            'Duplicate value: "app"',
        ),
        (
            [debug_container("dbg-a"), debug_container("dbg-b", ports=[{"containerPort": 80}])],
            "spec.ephemeralContainers[1].ports",
            "Forbidden: cannot be set for an Ephemeral Container",
        ),
        (
            [debug_container("dbg-a"), debug_container("dbg-c", targetContainerName="nope")],
            "spec.ephemeralContainers[1].targetContainerName",
            'Not found: "nope"',
        ),
    ]
    for containers, field, message in cases:
        with pytest.raises(ApiException) as caught:
            core.replace_namespaced_pod_ephemeralcontainers(
                "api-1",
                "payments",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "api-1", "namespace": "payments"},
                    "spec": {"containers": [], "ephemeralContainers": containers},
                },
            )
        assert caught.value.status == 422
        causes = status_of(caught.value)["details"]["causes"]
        assert {"field": field, "message": message} in [
            {"field": c["field"], "message": c["message"]} for c in causes
        ]


def test_exec_with_exit_code(core: client.CoreV1Api) -> None:
    session = stream(
        core.connect_get_namespaced_pod_exec,
        "db-0",
        "payments",
        command=["/bin/sh", "-c", "echo out; echo err >&2; exit 7"],
        stderr=True,
        stdout=True,
        _preload_content=False,
    )
    session.run_forever(timeout=10)
    assert session.read_stdout().strip() == "out"
    assert session.read_stderr().strip() == "err"
    assert session.returncode == 7
    session.close()


def test_exec_needs_a_container_name_when_there_are_several(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        stream(
            core.connect_get_namespaced_pod_exec,
            "two",
            "payments",
            command=["true"],
            stdout=True,
        )
    assert "a container name must be specified for pod two, choose one of: [main sidecar]" in str(
        caught.value
    )


# ------------------------------------------------------------------------- identity and RBAC
def test_service_account_tokens_rbac_and_revocation(
    kubesim: ThreadedKubeSim, core: client.CoreV1Api
) -> None:
    core.create_namespaced_service_account("payments", {"metadata": {"name": "reader"}})
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_service_account_token(
            "reader", "payments", {"spec": {"expirationSeconds": 599}}
        )
    assert caught.value.status == 422
    assert status_of(caught.value)["details"]["causes"][0]["message"] == (
        "Invalid value: 599: may not specify a duration less than 10 minutes"
    )
    issued = core.create_namespaced_service_account_token(
        "reader", "payments", {"spec": {"expirationSeconds": 600}}
    )
    token = issued.status.token
    with kubesim.api_client() as admin:
        rbac = client.RbacAuthorizationV1Api(admin)
        rbac.create_namespaced_role(
            "payments",
            {
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            "payments",
            {
                "metadata": {"name": "reader"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "pod-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader"}],
            },
        )
    with kubesim.api_client(token) as as_reader:
        reader = client.CoreV1Api(as_reader)
        assert len(reader.list_namespaced_pod("payments").items) >= 4
        with pytest.raises(ApiException) as caught:
            reader.delete_namespaced_pod("db-0", "payments")
        assert caught.value.status == 403
        assert status_of(caught.value)["message"] == (
            'pods "db-0" is forbidden: User "system:serviceaccount:payments:reader" cannot '
            'delete resource "pods" in API group "" in the namespace "payments"'
        )
        with pytest.raises(ApiException) as caught:
            reader.list_namespaced_pod("big")
        assert caught.value.status == 403
        review = client.AuthorizationV1Api(as_reader).create_self_subject_access_review(
            {
                "spec": {
                    "resourceAttributes": {
                        "namespace": "payments",
                        "verb": "list",
                        "resource": "pods",
                    }
                }
            }
        )
        assert review.status.allowed
        core.delete_namespaced_service_account("reader", "payments")
        with pytest.raises(ApiException) as caught:
            reader.list_namespaced_pod("payments")
        assert caught.value.status == 401


def test_escalation_is_prevented(kubesim: ThreadedKubeSim, core: client.CoreV1Api) -> None:
    core.create_namespaced_service_account("payments", {"metadata": {"name": "role-maker"}})
    with kubesim.api_client() as admin:
        rbac = client.RbacAuthorizationV1Api(admin)
        rbac.create_namespaced_role(
            "payments",
            {
                "metadata": {"name": "role-maker"},
                "rules": [
                    {
                        "apiGroups": ["rbac.authorization.k8s.io"],
                        "resources": ["roles"],
                        "verbs": ["create"],
                    },
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                ],
            },
        )
        rbac.create_namespaced_role_binding(
            "payments",
            {
                "metadata": {"name": "role-maker"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "role-maker",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "role-maker"}],
            },
        )
    token = core.create_namespaced_service_account_token(
        "role-maker", "payments", {"spec": {}}
    ).status.token
    with kubesim.api_client(token) as as_maker:
        maker = client.RbacAuthorizationV1Api(as_maker)
        held = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
        maker.create_namespaced_role("payments", {"metadata": {"name": "ok"}, "rules": [held]})
        more = {"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create"]}
        with pytest.raises(ApiException) as caught:
            maker.create_namespaced_role("payments", {"metadata": {"name": "no"}, "rules": [more]})
    assert caught.value.status == 403
    assert (
        "is attempting to grant RBAC permissions not currently held"
        in status_of(caught.value)["message"]
    )


def test_demo_fixture_keeps_hostile_strings_verbatim() -> None:
    """The console's tests need the cluster's hostile strings exactly as an attacker wrote them."""
    text = (resources.files("bastion.devstack") / "fixtures" / "demo.yaml").read_text()
    store = Store()
    assert seed(store, load_fixture(yaml.safe_load(text))) > 20_000
    pod = json.loads(store.get_raw(RESOURCES[("", "pods")], "hostile", "evil-escapes"))
    validate(pod)
    annotations = pod["metadata"]["annotations"]
    assert annotations["title"] == "\x1b]0;pwned\x07\x1b[2J\x1b[31mRED"
    assert annotations["markup"] == "[@click=app.quit]click me[/] [bold red]boom[/]"
    assert annotations["bidi"] == "\u202eevil\u202c.sh"
    assert annotations["c1"] == "\x9b31mC1-CSI"


def test_json_merge_patch_of_ephemeral_containers(core: client.CoreV1Api) -> None:
    first = debug_container("dbg-m1", command=["/bin/sh", "-c", "exit 0"])
    core.patch_namespaced_pod_ephemeralcontainers(
        "db-0", "payments", {"spec": {"ephemeralContainers": [first]}}
    )
    current = core.read_namespaced_pod_ephemeralcontainers("db-0", "payments")
    existing = client.ApiClient().sanitize_for_serialization(current.spec.ephemeral_containers)
    second = debug_container("dbg-m2", command=["/bin/sh", "-c", "exit 0"])
    merged = core.patch_namespaced_pod_ephemeralcontainers(
        "db-0",
        "payments",
        {"spec": {"ephemeralContainers": [*existing, second]}},
        _content_type="application/merge-patch+json",
    )
    names = [c.name for c in merged.spec.ephemeral_containers]
    assert names[-2:] == ["dbg-m1", "dbg-m2"]
    # A merge patch replaces the list: leaving an existing container out removes it, refused.
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_pod_ephemeralcontainers(
            "db-0",
            "payments",
            {"spec": {"ephemeralContainers": [second]}},
            _content_type="application/merge-patch+json",
        )
    assert caught.value.status == 422
    assert "may not be removed" in status_of(caught.value)["message"]


def test_graceful_delete_marks_then_removes(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(
        "payments",
        {
            "metadata": {"name": "graceful"},
            "spec": {"containers": [{"name": "main", "image": "busybox@sha256:" + "2" * 64}]},
        },
    )
    deleted = core.delete_namespaced_pod("graceful", "payments", grace_period_seconds=5)
    assert deleted.metadata.deletion_timestamp is not None
    assert deleted.metadata.deletion_grace_period_seconds == 5
    deadline = time.monotonic() + 10
    names = ["graceful"]
    while "graceful" in names and time.monotonic() < deadline:
        time.sleep(0.05)
        names = [p.metadata.name for p in core.list_namespaced_pod("payments").items]
    assert "graceful" not in names
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_pod("graceful", "payments")
    assert caught.value.status == 404


def test_deleting_a_namespace_ends_its_pods_processes(
    kubesim: ThreadedKubeSim, core: client.CoreV1Api
) -> None:
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_pod(
        "doomed",
        {
            "metadata": {"name": "runner"},
            "spec": {"containers": [{"name": "main", "image": "busybox@sha256:" + "3" * 64}]},
        },
    )
    processes = kubesim.sim.pods.processes
    deadline = time.monotonic() + 10
    while ("doomed", "runner", "main") not in processes and time.monotonic() < deadline:
        time.sleep(0.05)
    process = processes[("doomed", "runner", "main")]
    assert process.returncode is None
    core.delete_namespace("doomed")
    assert process.returncode is not None
    assert ("doomed", "runner", "main") not in processes
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_pod("runner", "doomed")
    assert caught.value.status == 404


def test_an_existing_ephemeral_container_sent_back_without_defaults_is_unchanged(
    core: client.CoreV1Api,
) -> None:
    core.patch_namespaced_pod_ephemeralcontainers(
        "db-0", "payments", {"spec": {"ephemeralContainers": [debug_container("dbg-d")]}}
    )
    pod = core.read_namespaced_pod("db-0", "payments")
    # The whole list back, dbg-d as the client first sent it (the server added defaults).
    others = [c for c in pod.spec.ephemeral_containers if c.name != "dbg-d"]
    pod.spec.ephemeral_containers = [*others, debug_container("dbg-d"), debug_container("dbg-e")]
    updated = core.replace_namespaced_pod_ephemeralcontainers("db-0", "payments", pod)
    by_name = {c.name: c for c in updated.spec.ephemeral_containers}
    assert {"dbg-d", "dbg-e"} <= set(by_name)
    assert by_name["dbg-d"].termination_message_path == "/dev/termination-log"
