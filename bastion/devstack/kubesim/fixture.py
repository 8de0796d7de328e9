"""Seed kubesim from a YAML fixture: namespaces, pods (hand-written and generated), images.

Fixture format::

    images:                      # image reference -> the local command its containers run
      "registry.example.com/debug-toolbox@sha256:...": {command: ["/bin/sh"], shell: bash}
      default: {command: ["/bin/sh", "-c", "exec sleep 86400"]}
    namespaces:
      - name: payments
        labels: {team: payments}
        pods:
          - name: api-7f9c
            labels: {app: api}
            annotations: {owner: "payments"}
            phase: Running            # Pending, Running, Succeeded, Failed, Unknown
            restarts: 2
            node: node-a
            age: 3h                    # how long ago it was created
            containers:
              - name: api
                image: registry.example.com/payments/api@sha256:...
                env:
                  - {name: LOG_LEVEL, value: info}
                  - {name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}
            events:                    # besides those the phase implies (see pod_events)
              - {type: Warning, reason: Unhealthy, message: "Readiness probe failed", count: 3,
                 age: 2m}
        generate:                      # many similar pods, e.g. to test a 50,000-pod list
          count: 50000
          prefix: load-
          labels: {app: load}
          image: registry.example.com/load@sha256:...

Pods are stored complete (spec defaults, status with conditions and container statuses) so
what clients read looks like a real cluster's; their containers only become processes when
someone attaches or execs (a fixture of 50,000 pods must not start 50,000 shells). Each
hand-written pod also gets the core/v1 Events a cluster would have recorded for it (see
:func:`pod_events`); generated pods get none.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from bastion.devstack.kubesim.store import RESOURCES, Store
from bastion.durations import parse_duration

__all__ = ["Fixture", "ImageSpec", "build_pod", "load_fixture", "pod_events", "seed"]

DEFAULT_COMMAND = ("/bin/sh", "-c", "exec sleep 86400")


@dataclass(frozen=True)
class ImageSpec:
    command: tuple[str, ...]
    # The program the image's `sh` is, when it matters: the toolbox's busybox ash keeps a
    # command history that its prompt reports, and the local dash has none, so kubesim puts
    # a shell that has one (bash, as `sh`: its POSIX mode) first on the container's PATH.
    shell: str | None = None


@dataclass(frozen=True)
class Fixture:
    namespaces: list[dict[str, Any]]
    images: dict[str, ImageSpec]
    default_image: ImageSpec


def load_fixture(source: Path | dict[str, Any]) -> Fixture:
    data = yaml.safe_load(source.read_text()) if isinstance(source, Path) else source
    if not isinstance(data, dict):
        raise TypeError(f"{source}: a kubesim fixture is a mapping with 'namespaces'")
    images: dict[str, ImageSpec] = {}
    default = ImageSpec(DEFAULT_COMMAND)
    for ref, spec in (data.get("images") or {}).items():
        command = tuple(str(part) for part in spec["command"])
        shell = str(spec["shell"]) if spec.get("shell") else None
        if ref == "default":
            default = ImageSpec(command, shell)
        else:
            images[str(ref)] = ImageSpec(command, shell)
    return Fixture(list(data.get("namespaces") or []), images, default)


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _container(spec: dict[str, Any], default_image: str) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": spec["name"],
        "image": spec.get("image", default_image),
        "resources": spec.get("resources", {}),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }
    for key in ("command", "args", "env", "ports", "stdin", "tty", "securityContext"):
        if key in spec:
            container[key] = spec[key]
    return container


def build_pod(
    namespace: str, spec: dict[str, Any], *, now: datetime, index: int = 0
) -> dict[str, Any]:
    """A complete Pod object (spec and status) from a fixture entry."""
    name = str(spec["name"])
    phase = spec.get("phase", "Running")
    age = parse_duration(spec["age"]) if "age" in spec else timedelta(minutes=5 + index % 600)
    created = now - age
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()
    default_image = f"registry.example.com/{namespace}/app@sha256:{digest}"
    containers = [
        _container(c, default_image)
        for c in spec.get("containers") or [{"name": "app", "image": default_image}]
    ]
    running = phase == "Running"
    restarts = int(spec.get("restarts", 0))
    statuses = []
    for container in containers:
        state: dict[str, Any]
        if running:
            state = {"running": {"startedAt": _timestamp(created + timedelta(seconds=3))}}
        elif phase == "Pending":
            state = {"waiting": {"reason": spec.get("waiting_reason", "ContainerCreating")}}
        else:
            code = 0 if phase == "Succeeded" else 1
            state = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": _timestamp(created + timedelta(seconds=3)),
                    "finishedAt": _timestamp(created + timedelta(seconds=60)),
                    "containerID": f"kubesim://{digest[:24]}",
                }
            }
        statuses.append(
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": container["image"],
                "containerID": f"kubesim://{digest[:24]}-{container['name']}",
                "ready": running,
                "restartCount": restarts,
                "started": running,
                "state": state,
            }
        )
    ready = "True" if running else "False"
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {str(k): str(v) for k, v in (spec.get("labels") or {}).items()},
            "annotations": {str(k): str(v) for k, v in (spec.get("annotations") or {}).items()},
            "creationTimestamp": _timestamp(created),
        },
        "spec": {
            "containers": containers,
            "restartPolicy": spec.get("restartPolicy", "Always"),
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "nodeName": spec.get("node", f"node-{index % 3 + 1}"),
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "enableServiceLinks": True,
        },
        "status": {
            "phase": phase,
            "conditions": [
                {"type": t, "status": s, "lastTransitionTime": _timestamp(created)}
                for t, s in (
                    ("Initialized", "True"),
                    ("Ready", ready),
                    ("ContainersReady", ready),
                    ("PodScheduled", "True"),
                )
            ],
            "hostIP": f"10.0.0.{index % 3 + 1}",
            "podIP": f"10.{(index >> 16) % 256}.{(index >> 8) % 256}.{index % 256}",
            "startTime": _timestamp(created),
            "containerStatuses": statuses,
            "qosClass": "BestEffort",
        },
    }
    if not pod["metadata"]["labels"]:
        del pod["metadata"]["labels"]
    if not pod["metadata"]["annotations"]:
        del pod["metadata"]["annotations"]
    return pod


class _Recorded(NamedTuple):
    """One event as a cluster would have recorded it for a pod."""

    type: str
    reason: str
    message: str
    first: datetime
    last: datetime
    times: int = 1  # the count field
    field_path: str = ""  # spec.containers{NAME} for a container's events
    component: str = "kubelet"


def pod_events(pod: dict[str, Any], spec: dict[str, Any], *, now: datetime) -> list[dict[str, Any]]:
    """The Events a cluster would hold for a stored ``pod`` (its uid set): the scheduler's
    and the kubelet's for its phase (an image that cannot be pulled, restarts as back-off
    warnings), then the fixture entry's own ``events``. Oldest first."""
    meta = pod["metadata"]
    namespace, name, node = meta["namespace"], meta["name"], pod["spec"]["nodeName"]
    created = datetime.fromisoformat(meta["creationTimestamp"])
    assigned = f"Successfully assigned {namespace}/{name} to {node}"
    recorded = [
        _Recorded("Normal", "Scheduled", assigned, created, created, component="default-scheduler")
    ]
    pulled, started = created + timedelta(seconds=1), created + timedelta(seconds=3)
    for container in pod["spec"]["containers"]:
        image, where = container["image"], f"spec.containers{{{container['name']}}}"
        if pod["status"]["phase"] == "Pending":
            if spec.get("waiting_reason") == "ImagePullBackOff":
                recorded += [
                    _Recorded("Normal", "Pulling", f'Pulling image "{image}"', pulled, pulled,
                              field_path=where),
                    _Recorded("Warning", "Failed", f'Failed to pull image "{image}": not found',
                              pulled, now - timedelta(seconds=90), 4, where),
                    _Recorded("Warning", "BackOff", f'Back-off pulling image "{image}"', pulled,
                              now - timedelta(seconds=20), 11, where),
                ]  # fmt: skip
            continue
        recorded += [
            _Recorded("Normal", "Pulled", f'Container image "{image}" already present on machine',
                      pulled, pulled, field_path=where),
            _Recorded("Normal", "Created", f"Created container: {container['name']}", pulled,
                      pulled, field_path=where),
            _Recorded("Normal", "Started", f"Started container {container['name']}", started,
                      started, field_path=where),
        ]  # fmt: skip
        restarts = int(spec.get("restarts", 0))
        if restarts:
            message = (
                f"Back-off restarting failed container {container['name']} in pod "
                f"{name}_{namespace}({meta['uid']})"
            )
            last = now - timedelta(minutes=1)
            recorded.append(
                _Recorded("Warning", "BackOff", message, started, last, restarts, where)
            )
    for extra in spec.get("events") or []:
        last = now - parse_duration(str(extra.get("age", "1m")))
        recorded.append(
            _Recorded(
                str(extra.get("type", "Normal")),
                str(extra["reason"]),
                str(extra.get("message", "")),
                min(created, last),
                last,
                int(extra.get("count", 1)),
                str(extra.get("fieldPath", "")),
                str(extra.get("component", "kubelet")),
            )
        )
    return [_event(pod, r, index) for index, r in enumerate(recorded)]


def _event(pod: dict[str, Any], recorded: _Recorded, index: int) -> dict[str, Any]:
    meta, node = pod["metadata"], pod["spec"]["nodeName"]
    namespace, name = meta["namespace"], meta["name"]
    suffix = hashlib.sha256(f"{namespace}/{name}/{index}".encode()).hexdigest()[:16]
    involved = {
        "kind": "Pod",
        "namespace": namespace,
        "name": name,
        "uid": meta["uid"],
        "apiVersion": "v1",
        "resourceVersion": meta["resourceVersion"],
    }
    if recorded.field_path:
        involved["fieldPath"] = recorded.field_path
    kubelet = recorded.component == "kubelet"
    source = {"component": recorded.component, **({"host": node} if kubelet else {})}
    return {
        "metadata": {
            "name": f"{name}.{suffix}",
            "namespace": namespace,
            "creationTimestamp": _timestamp(recorded.first),
        },
        "involvedObject": involved,
        "reason": recorded.reason,
        "message": recorded.message,
        "source": source,
        "firstTimestamp": _timestamp(recorded.first),
        "lastTimestamp": _timestamp(recorded.last),
        "count": recorded.times,
        "type": recorded.type,
        # Events recorded by the legacy (core/v1) recorder carry a null eventTime.
        "eventTime": None,
        "reportingComponent": recorded.component,
        "reportingInstance": node if kubelet else "",
    }


def _generated(namespace: str, spec: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    rng = random.Random(f"{namespace}-{spec.get('prefix', 'pod-')}")  # noqa: S311 - not crypto
    phases = ["Running"] * 90 + ["Pending"] * 4 + ["Succeeded"] * 3 + ["Failed"] * 3
    pods = []
    for i in range(int(spec["count"])):
        entry: dict[str, Any] = {
            "name": f"{spec.get('prefix', 'pod-')}{i:05d}",
            "labels": dict(spec.get("labels") or {}),
            "phase": rng.choice(phases),
            "restarts": rng.choice([0, 0, 0, 0, 1, 2, 5]),
            "age": f"{rng.randint(60, 86400 * 30)}s",
        }
        if "image" in spec:
            entry["containers"] = [{"name": "app", "image": spec["image"]}]
        pods.append(build_pod(namespace, entry, now=now, index=i))
    return pods


def seed(store: Store, fixture: Fixture, *, now: datetime | None = None) -> int:
    """Create the fixture's namespaces and pods (without watch events); returns pod count."""
    moment = now or datetime.now(UTC)
    ns_type = RESOURCES[("", "namespaces")]
    pod_type = RESOURCES[("", "pods")]
    sa_type = RESOURCES[("", "serviceaccounts")]
    count = 0
    names = {str(ns["name"]) for ns in fixture.namespaces} | {"default", "kube-system"}
    for name in sorted(names):
        if store.exists(ns_type, "", name):
            continue
        spec = next((ns for ns in fixture.namespaces if ns["name"] == name), {})
        namespace: dict[str, Any] = {
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        namespace["metadata"]["labels"].update(
            {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
        )
        store.create(ns_type, "", namespace, silent=True)
        store.create(sa_type, name, {"metadata": {"name": "default"}}, silent=True)
    event_type = RESOURCES[("", "events")]
    for ns in fixture.namespaces:
        name = str(ns["name"])
        written = list(ns.get("pods") or [])
        pods = [build_pod(name, pod, now=moment, index=i) for i, pod in enumerate(written)]
        if ns.get("generate"):
            pods += _generated(name, ns["generate"], moment)
        for pod in pods:
            store.create(pod_type, name, pod, silent=True)
        for pod, spec in zip(pods, written, strict=False):
            for event in pod_events(pod, spec, now=moment):
                store.create(event_type, name, event, silent=True)
        count += len(pods)
    # Serialise now, at start-up, so the first list of a big namespace is as fast as the next.
    store.encode_all(pod_type)
    return count
