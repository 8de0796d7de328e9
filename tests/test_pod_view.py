"""What the console may see of a pod (bastion.session.pod_view) and how the broker sends it
(bastion.session.browse: the fast encoding, splitting, batching of changes)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from bastion.console_protocol import (
    MAX_LINE,
    DebugOptions,
    EventRow,
    Failed,
    HiddenItem,
    Namespaces,
    PodRow,
    PodsChanged,
    PodsPage,
    Welcome,
    decode,
    encode,
)
from bastion.devstack.kubesim.fixture import build_pod
from bastion.session import browse
from bastion.session.pod_view import (
    REDACTED,
    config_maps,
    container_infos,
    event_rows,
    list_row,
    masked_env,
    pod_row,
    pod_status,
    read_pod_list,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJkZW1vIn0.c2lnbmF0dXJlLWRlbW8"


def pod(**spec: Any) -> dict[str, Any]:
    return build_pod("shop", {"name": "web-1", **spec}, now=NOW)


def test_a_row_has_what_the_list_shows() -> None:
    row = pod_row(pod(labels={"app": "web"}, restarts=2, containers=[{"name": "a"}, {"name": "b"}]))
    assert row == PodRow(
        name="web-1",
        ready="2/2",
        status="Running",
        restarts=4,
        created=row.created,
        node="node-1",
        labels=("app=web",),
        containers=("a", "b"),
    )
    assert row.created.endswith("Z")


def page(items: list[dict[str, Any]], token: str = "", version: str = "42") -> bytes:
    meta = {"resourceVersion": version, **({"continue": token} if token else {})}
    return orjson.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items})


def test_a_listed_page_gives_the_same_rows_as_each_pod_alone() -> None:
    pods = [
        pod(name="web-1", labels={"app": "web", "tier": "front"}, restarts=1),
        pod(name="web-2", phase="Pending", waiting_reason="ImagePullBackOff"),
        pod(name="job-1", phase="Succeeded", containers=[{"name": "a"}, {"name": "b"}]),
    ]
    pods[0]["metadata"]["deletionTimestamp"] = "2026-11-28T12:00:00Z"
    listed = read_pod_list(page(pods, token="next-one"))
    assert [list_row(p) for p in listed.pods] == [pod_row(p) for p in pods]
    assert [list_row(p).status for p in listed.pods] == [
        "Terminating",
        "ImagePullBackOff",
        "Completed",
    ]
    assert (listed.version, listed.token) == ("42", "next-one")
    assert listed.pods[0].labels == {"app": "web", "tier": "front"}
    head = read_pod_list(page(pods, token="next-one"), head_only=True)
    assert (head.pods, head.version, head.token) == ([], "42", "next-one")


def test_missing_and_null_fields_still_make_rows() -> None:
    raw = b'{"metadata":null,"items":[{},{"metadata":{"name":"x","labels":null},"status":null}]}'
    listed = read_pod_list(raw)
    assert (listed.version, listed.token) == ("", "")
    assert [(r.name, r.ready, r.status, r.labels) for r in map(list_row, listed.pods)] == [
        ("", "0/0", "Unknown", ()),
        ("x", "0/0", "Unknown", ()),
    ]
    assert read_pod_list(b'{"kind":"PodList"}').pods == []


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'{"items":[{"status":{"containerStatuses":[{"restartCount":"3"}]}}]}',
     b'{"items":{}}', b'{"metadata":{"continue":7}}'],
)  # fmt: skip
def test_a_body_that_is_no_pod_list_is_one_sentence(raw: bytes) -> None:
    for head_only in (False, True):
        if head_only and b"items" in raw:
            continue  # the skim does not look at the items
        with pytest.raises(ValueError, match="sent a pod list this bastion cannot read") as caught:
            read_pod_list(raw, head_only=head_only)
        assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="sent a pod this bastion cannot read"):
        pod_row({"status": {"containerStatuses": [{"restartCount": "3"}]}})


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        ({}, "Running"),
        ({"phase": "Succeeded"}, "Completed"),
        ({"phase": "Failed"}, "Failed"),
        ({"phase": "Pending", "waiting_reason": "ImagePullBackOff"}, "ImagePullBackOff"),
    ],
)
def test_the_status_word_is_kubectls(change: dict[str, Any], shown: str) -> None:
    assert pod_status(pod(**change)) == shown


def test_crash_loops_evictions_and_deletions_are_named() -> None:
    crashing = pod()
    crashing["status"]["containerStatuses"][0]["state"] = {
        "waiting": {"reason": "CrashLoopBackOff"}
    }
    assert pod_status(crashing) == "CrashLoopBackOff"
    evicted = pod(phase="Failed")
    evicted["status"]["reason"] = "Evicted"
    assert pod_status(evicted) == "Evicted"
    leaving = pod()
    leaving["metadata"]["deletionTimestamp"] = "2026-11-28T12:00:00Z"
    assert pod_status(leaving) == "Terminating"
    assert pod_row({})  # nothing at all still makes a row
    assert pod_row({}).ready == "0/0"


def test_env_is_masked_before_it_leaves_the_broker() -> None:
    container = {
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "API_TOKEN", "value": JWT},
            {"name": "DB_PASSWORD", "value": "hunter2"},
            {"name": "DSN", "value": "postgres://u@db/x?password=hunter2"},
            {"name": "VAULT", "value": "hvs." + "a" * 24},
            {"name": "EMPTY", "value": ""},
            {"name": "DB_PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
            {"name": "FLAGS", "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "f"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {
                "name": "MEM",
                "valueFrom": {
                    "resourceFieldRef": {"resource": "limits.memory", "containerName": "app"}
                },
            },
            {"name": "NEW", "valueFrom": {"fileKeyRef": {"path": "x"}}},
        ],
        "envFrom": [
            {"secretRef": {"name": "all-secrets"}, "prefix": "S_"},
            {"configMapRef": {"name": "settings"}},
        ],
    }
    shown = {v.name: (v.value, v.source) for v in masked_env(container)}
    assert shown == {
        "LOG_LEVEL": ("info", "value"),
        "API_TOKEN": (REDACTED, "redacted"),
        "DB_PASSWORD": (REDACTED, "redacted"),
        "DSN": (REDACTED, "redacted"),
        "VAULT": (REDACTED, "redacted"),
        "EMPTY": ("", "value"),
        "DB_PASS": ("<secret db/pw>", "secret"),
        "FLAGS": ("<configmap flags/f>", "configmap"),
        "NODE": ("<field spec.nodeName>", "field"),
        "MEM": ("<resource limits.memory of app>", "resource"),
        "NEW": (REDACTED, "redacted"),
        "S_*": ("<every key of secret all-secrets>", "secret"),
        "*": ("<every key of configmap settings>", "configmap"),
    }
    assert "hunter2" not in repr(masked_env(container))
    assert JWT not in repr(masked_env(container))


def test_configmaps_read_by_env_envfrom_and_mounted_volumes_only() -> None:
    whole = pod()
    whole["spec"]["volumes"] = [
        {"name": "conf", "configMap": {"name": "web-conf"}},
        {"name": "unmounted", "configMap": {"name": "other"}},
        {
            "name": "proj",
            "projected": {"sources": [{"configMap": {"name": "proj-a"}}, {"secret": {}}]},
        },
    ]
    container = {
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "k"}}}],
        "envFrom": [{"configMapRef": {"name": "flags"}}, {"configMapRef": {"name": "env"}}],
        "volumeMounts": [{"name": "conf"}, {"name": "proj"}],
    }
    assert config_maps(whole, container) == ["flags", "env", "web-conf", "proj-a"]


def test_containers_carry_state_and_the_policys_answer() -> None:
    whole = pod(containers=[{"name": "a"}, {"name": "b"}], restarts=1)
    whole["status"]["containerStatuses"][1]["state"] = {
        "terminated": {"reason": "Error", "exitCode": 2}
    }
    infos = container_infos(whole, lambda name: name == "a")
    assert [(i.name, i.state, i.debuggable, i.restarts) for i in infos] == [
        ("a", "running", True, 1),
        ("b", "terminated (Error, exit 2)", False, 1),
    ]


def test_events_newest_first_at_most_twenty_and_masked() -> None:
    events = [
        {
            "type": "Normal",
            "reason": f"R{i}",
            "message": f"token={i}secret" if i == 29 else "fine",
            "count": i,
            "lastTimestamp": f"2026-11-28T11:{i:02d}:00Z",
        }
        for i in range(30)
    ]
    events.append({"type": "Warning", "reason": "New", "eventTime": "2026-11-28T11:59:00.5Z"})
    rows = event_rows(events)
    assert len(rows) == 20
    assert rows[0] == EventRow("Warning", "New", "", 1, "2026-11-28T11:59:00.5Z")
    assert rows[1].reason == "R29"
    assert "secret" not in rows[1].message
    assert [r.reason for r in rows[2:4]] == ["R28", "R27"]


def row(name: str, labels: int = 0) -> PodRow:
    return PodRow(
        name, "1/1", "Running", 0, "2026-11-28T12:00:00Z", "n", ("k=" + "v" * labels,), ("a",)
    )


@pytest.mark.parametrize(
    "message",
    [
        Welcome("op", ["g"], ["local"], 1.5, 900.0),
        Namespaces(1, "local", ["a"], [HiddenItem("b", "no grant")]),
        PodsPage(2, [row("x"), row("é\x1b[0m")], True, 3, "why"),
        PodsChanged(3, [], ["gone"]),
        DebugOptions(4, ["img@sha256:" + "a" * 64], ["ephemeral"], "app", 1800.0, False, True),
        Failed(5, "no"),
    ],
)
def test_what_the_broker_sends_decodes_as_sent(message: Any) -> None:
    (line,) = browse._lines(message)
    assert line == encode(message)
    assert decode(line[:-1]) == message


def test_a_page_longer_than_a_line_is_split_and_keeps_its_counts() -> None:
    page = PodsPage(7, [row(f"p{i}", labels=3000) for i in range(1000)], True, 5, "why")
    lines = list(browse._lines(page))
    assert len(lines) > 1
    assert all(len(line) <= MAX_LINE for line in lines)
    pages = [decode(line[:-1]) for line in lines]
    assert all(isinstance(p, PodsPage) for p in pages)
    assert [r.name for p in pages for r in p.rows] == [r.name for r in page.rows]  # type: ignore[attr-defined]
    assert [p.complete for p in pages] == [False] * (len(pages) - 1) + [True]  # type: ignore[attr-defined]
    assert sum(p.hidden for p in pages) == 5  # type: ignore[attr-defined]


async def test_changes_are_batched_and_the_latest_state_wins() -> None:
    sent: list[bytes] = []

    async def reply(line: bytes) -> None:
        sent.append(line)

    batch = browse._Batch(9, reply, browse.Browser.send)
    batch.upsert(row("a"))
    batch.upsert(row("b"))
    batch.delete("b")
    batch.upsert(row("c"))
    batch.upsert(PodRow("c", "0/1", "Terminating", 0, "t", "n", (), ("a",)))
    await asyncio.sleep(browse.COALESCE * 3)
    (line,) = sent
    changed = decode(line[:-1])
    assert isinstance(changed, PodsChanged)
    assert [(r.name, r.status) for r in changed.upserts] == [("a", "Running"), ("c", "Terminating")]
    assert changed.deletes == ["b"]
    batch.cancel()
