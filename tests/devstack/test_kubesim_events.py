"""kubesim's core/v1 events, driven by the official client: what a fixture's pods get, the
API server's event field selectors, watches; every response checked against the OpenAPI
schema when the module ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_contract import SESSION_LOG, response_recorder
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from bastion.devstack.kubesim.fixture import build_pod, pod_events
from devstack.kubesim_harness import ThreadedKubeSim

NOW = datetime(2026, 11, 28, tzinfo=UTC)
HOSTILE = "\x1b]0;pwned\a[@click=app.quit]quit[/] \u202eevil\r"
FIXTURE: dict[str, Any] = {
    "namespaces": [
        {
            "name": "shop",
            "pods": [
                {"name": "web-1", "labels": {"app": "web"}},
                {"name": "flaky", "restarts": 4, "containers": [{"name": "a"}, {"name": "b"}]},
                {"name": "stuck", "phase": "Pending", "waiting_reason": "ImagePullBackOff"},
                {"name": "starting", "phase": "Pending"},
                {
                    "name": "odd",
                    "events": [
                        {"type": "Warning", "reason": "Evil", "message": HOSTILE, "count": 2},
                    ],
                },
            ],
            "generate": {"count": 50, "prefix": "gen-"},
        },
        {"name": "other", "pods": [{"name": "web-1"}]},
    ]
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedKubeSim]:
    running = ThreadedKubeSim(tmp_path_factory.mktemp("kubesim"), FIXTURE)
    response_recorder(running.sim.api)
    running.start()
    yield running
    running.stop()
    SESSION_LOG.validate_all()


@pytest.fixture
def core(sim: ThreadedKubeSim) -> Iterator[client.CoreV1Api]:
    with sim.api_client() as api:
        yield client.CoreV1Api(api)


def events(core: client.CoreV1Api, namespace: str, **query: Any) -> list[dict[str, Any]]:
    answer = core.list_namespaced_event(namespace, _preload_content=False, **query)
    items: list[dict[str, Any]] = json.loads(answer.data)["items"]
    return items


def reasons(items: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(e["type"], e["reason"], e["count"]) for e in items]


def test_each_written_pod_has_the_events_its_phase_implies(core: client.CoreV1Api) -> None:
    def of(pod: str) -> list[dict[str, Any]]:
        found = events(core, "shop", field_selector=f"involvedObject.name={pod}")
        return sorted(found, key=lambda e: (e["firstTimestamp"], e["metadata"]["name"]))

    web = of("web-1")
    assert {r for _, r, _ in reasons(web)} == {"Scheduled", "Pulled", "Created", "Started"}
    uid = core.read_namespaced_pod("web-1", "shop").metadata.uid
    assert {e["involvedObject"]["uid"] for e in web} == {uid}
    assert all(e["involvedObject"]["namespace"] == "shop" for e in web)
    started = next(e for e in web if e["reason"] == "Started")
    assert started["involvedObject"]["fieldPath"] == "spec.containers{app}"
    assert started["source"]["component"] == "kubelet"

    backoff = [e for e in of("flaky") if e["reason"] == "BackOff"]
    assert [(e["type"], e["count"]) for e in backoff] == [("Warning", 4), ("Warning", 4)]
    assert {e["involvedObject"]["fieldPath"] for e in backoff} == {
        "spec.containers{a}",
        "spec.containers{b}",
    }

    assert ("Warning", "BackOff", 11) in reasons(of("stuck"))
    assert [r for _, r, _ in reasons(of("starting"))] == ["Scheduled"]
    (odd,) = [e for e in of("odd") if e["reason"] == "Evil"]
    assert odd["message"] == HOSTILE  # byte for byte
    assert odd["count"] == 2
    assert of("gen-00001") == []  # generated pods have none


def test_event_field_selectors_are_the_api_servers(core: client.CoreV1Api) -> None:
    warnings = events(core, "shop", field_selector="type=Warning")
    assert warnings
    assert {e["type"] for e in warnings} == {"Warning"}
    scheduler = events(core, "shop", field_selector="source=default-scheduler")
    assert {e["reason"] for e in scheduler} == {"Scheduled"}
    both = events(core, "shop", field_selector="involvedObject.name=flaky,reason!=BackOff")
    assert both
    assert all(e["reason"] != "BackOff" for e in both)
    assert events(core, "other", field_selector="involvedObject.name=flaky") == []
    with pytest.raises(ApiException) as caught:
        events(core, "shop", field_selector="message=x")
    assert caught.value.status == 400
    assert "field label not supported: message" in caught.value.body


def test_a_new_event_reaches_a_watch_filtered_by_its_pod(core: client.CoreV1Api) -> None:
    listed = json.loads(core.list_namespaced_event("shop", _preload_content=False).data)
    version = listed["metadata"]["resourceVersion"]
    pod = core.read_namespaced_pod("web-1", "shop")
    for name, involved in (("ignored.1", "flaky"), ("seen.1", "web-1")):
        core.create_namespaced_event(
            "shop",
            {
                "metadata": {"name": name},
                "involvedObject": {
                    "kind": "Pod",
                    "namespace": "shop",
                    "name": involved,
                    "uid": pod.metadata.uid,
                },
                "reason": "Killing",
                "message": "Stopping container app",
                "type": "Normal",
                "count": 1,
            },
        )
    stream = watch.Watch().stream(
        core.list_namespaced_event,
        "shop",
        field_selector="involvedObject.name=web-1",
        resource_version=version,
        timeout_seconds=2,
    )
    seen = [(change["type"], change["object"].metadata.name) for change in stream]
    assert seen == [("ADDED", "seen.1")]


def test_the_demo_fixture_has_warnings_and_hostile_event_strings() -> None:
    root = Path(__file__).parents[2] / "bastion" / "devstack" / "fixtures" / "demo.yaml"
    demo = yaml.safe_load(root.read_text())
    kinds: dict[str, int] = {}
    hostile = ""
    for namespace in demo["namespaces"]:
        for index, spec in enumerate(namespace.get("pods") or []):
            pod = build_pod(namespace["name"], spec, now=NOW, index=index)
            pod["metadata"].update(uid="u", resourceVersion="1")
            for event in pod_events(pod, spec, now=NOW):
                kinds[event["type"]] = kinds.get(event["type"], 0) + 1
                if namespace["name"] == "hostile":
                    hostile += event["reason"] + event["message"]
    assert kinds["Warning"] >= 3
    assert kinds["Normal"] > kinds["Warning"]
    assert "\x1b" in hostile
    assert "[@click=app.quit]" in hostile
