"""The console ⇄ broker wire format: what it accepts and what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.console_protocol import (
    CONSOLE_SENDS,
    MAX_LINE,
    ApprovalDecided,
    ApprovalItem,
    Approvals,
    AwaitsApproval,
    ContainerInfo,
    DebugEnded,
    DebugProgress,
    DebugRefused,
    DebugRequest,
    DecideApproval,
    EnvVar,
    EventRow,
    GetView,
    Handover,
    HiddenItem,
    KeyValue,
    ListApprovals,
    Namespaces,
    Notice,
    NoticeItem,
    NoticesChanged,
    PodDetail,
    PodRow,
    PodsChanged,
    PodsPage,
    ProtocolError,
    ViewResult,
    ViewRow,
    WatchNotices,
    Welcome,
    decode,
    encode,
)


@given(
    kind=st.sampled_from(["idle", "hard"]),
    seconds=st.floats(-1e6, 1e6, allow_nan=False),
    message=st.text(max_size=200),
)
def test_notices_round_trip(kind: str, seconds: float, message: str) -> None:
    notice = Notice(kind, seconds, message)
    line = encode(notice)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1  # one message, one line, whatever the text holds
    assert decode(line) == notice


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"not json", "not a JSON line"),
        (b"[1]", "a JSON object with a string 'type'"),
        (b'{"type": 3}', "a JSON object with a string 'type'"),
        (
            b'{"type": "launch"}',
            "unknown message type; known: approval_decided, approvals, awaits_approval, "
            "deadlines, debug, debug_options",
        ),
        (b'{"type": "notice", "kind": "idle"}', "takes exactly the fields"),
        (
            b'{"type": "notice", "kind": "idle", "seconds_left": 1, "message": "m", "x": 1}',
            "takes exactly the fields",
        ),
        (
            b'{"type": "notice", "kind": "idle", "seconds_left": "1", "message": "m"}',
            "notice.seconds_left has the wrong type",
        ),
        (
            b'{"type": "notice", "kind": "idle", "seconds_left": true, "message": "m"}',
            "notice.seconds_left has the wrong type",
        ),
        (b"\xff\xfe", "not a JSON line"),
    ],
)
def test_malformed_lines_are_refused_with_the_reason(line: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode(line)


def test_oversized_lines_are_refused_both_ways() -> None:
    with pytest.raises(ProtocolError, match="longer than"):
        decode(b" " * (MAX_LINE + 1))
    with pytest.raises(ProtocolError, match="too long"):
        encode(Notice("idle", 1.0, "x" * MAX_LINE))


ROW = PodRow("api-1", "1/1", "Running", 0, "2026-11-29T01:00:00Z", "node-1", ("app=api",), ("app",))
WIRE_ROW = ["api-1", "1/1", "Running", 0, "2026-11-29T01:00:00Z", "node-1", ["app=api"], ["app"]]


def test_records_nest_and_round_trip() -> None:
    detail = PodDetail(
        id=7,
        name="api-1",
        namespace="shop",
        node="node-1",
        status="Running",
        created="2026-11-29T01:00:00Z",
        labels=[KeyValue("app", "api")],
        annotations=[KeyValue("note", "[@click=app.quit]x[/]")],
        containers=[
            ContainerInfo(
                name="app",
                image="r.example/app@sha256:" + "a" * 64,
                state="running",
                ready=True,
                restarts=2,
                env=[EnvVar("DB_PASSWORD", "<secret db/password>", "secret")],
                config_maps=["flags"],
                debuggable=True,
            )
        ],
        events=[EventRow("Warning", "BackOff", "restarting", 3, "2026-11-29T01:05:00Z")],
    )
    for message in (
        detail,
        PodsPage(1, [ROW] * 3, complete=False, hidden=2, hidden_reason="app=db is not granted"),
        Namespaces(2, "prod", ["shop"], [HiddenItem("kube-system", "no grant covers it")]),
        Welcome("alice", ["oncall"], ["prod"], 1.8e9, 900.0),
    ):
        assert decode(encode(message)) == message


def test_a_pod_row_is_an_array_of_its_fields_in_order() -> None:
    import json  # noqa: PLC0415 - raw lines only here

    line = encode(PodsPage(1, [ROW], complete=True, hidden=0, hidden_reason=""))
    assert json.loads(line)["rows"] == [WIRE_ROW]
    changed = PodsChanged(2, [ROW], ["gone"])
    assert json.loads(encode(changed))["upserts"] == [WIRE_ROW]
    assert decode(encode(changed)) == changed


def _with(position: int, value: object) -> list[object]:
    row = list(WIRE_ROW)
    row[position] = value
    return row


@pytest.mark.parametrize(
    ("row", "error"),
    [
        (_with(3, "0"), r"^pods.rows\[0\].restarts: expected `int`, got `str`$"),
        (_with(3, True), r"^pods.rows\[0\].restarts: expected `int`, got `bool`$"),
        (_with(0, None), r"^pods.rows\[0\].name: expected `str`, got `null`$"),
        ([*WIRE_ROW, 1], "expected `array` of at most length 8"),
        (WIRE_ROW[:7], r"pods.rows\[0\]: expected `array` of at least length 8, got 7"),
        ({"name": "api-1"}, r"pods.rows\[0\]: expected `array`, got `object`"),
        ("api-1", r"pods.rows\[0\]: expected `array`, got `str`"),
        (_with(6, [["a"]]), r"pods.rows\[0\].labels\[0\]: expected `str`, got `array`"),
        (
            _with(7, ["x"] * 20_001),
            r"pods.rows\[0\].containers: expected `array` of length <= 20000",
        ),
    ],
)
def test_pod_rows_are_checked_field_by_field(row: object, error: str) -> None:
    import json  # noqa: PLC0415 - raw lines only here

    line = json.dumps(
        {"type": "pods", "id": 1, "rows": [row], "complete": True, "hidden": 0, "hidden_reason": ""}
    ).encode()
    with pytest.raises(ProtocolError, match=error) as caught:
        decode(line)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"complete": 1}, r"^pods.complete: expected `bool`, got `int`$"),
        ({"extra": 1}, r"^pods: object contains unknown field `extra`$"),
        ({"hidden": None}, r"^pods.hidden: expected `int`, got `null`$"),
        (
            {"rows": [["", "", "", 0, "", "", [], []]] * 20_001},
            r"^pods.rows: expected `array` of length <= 20000$",
        ),
    ],
)
def test_pod_pages_take_exactly_their_fields(fields: dict[str, object], error: str) -> None:
    import json  # noqa: PLC0415 - raw lines only here

    page = {"type": "pods", "id": 1, "rows": [], "complete": True, "hidden": 0, "hidden_reason": ""}
    with pytest.raises(ProtocolError, match=error):
        decode(json.dumps({**page, **fields}).encode())
    missing = {k: v for k, v in page.items() if k != "hidden_reason"}
    with pytest.raises(
        ProtocolError, match=r"^pods: object missing required field `hidden_reason`$"
    ):
        decode(json.dumps(missing).encode())
    with pytest.raises(ProtocolError, match=r"^pods_changed.deletes\[1\]: expected `str`"):
        decode(b'{"type":"pods_changed","id":1,"upserts":[],"deletes":["a",2]}')


def test_a_console_may_send_only_requests() -> None:
    names = sorted(cls.type for cls in CONSOLE_SENDS)
    assert names == [
        "debug", "decide_approval", "get_debug_options", "get_pod", "get_view",
        "list_approvals", "list_namespaces", "list_sessions", "stop_watch", "watch_notices",
        "watch_pods", "watch_session",
    ]  # fmt: skip


def test_view_messages_round_trip_and_are_checked() -> None:
    request = GetView(4, "prod", "shop", "web-1", "app", "files", "/etc")
    assert decode(encode(request)) == request
    result = ViewResult(
        4, "files", "prod/shop/web-1 app /etc", ["NAME"], [ViewRow(["a\x1b"])], True, ""
    )
    assert decode(encode(result)) == result
    with pytest.raises(ProtocolError, match="must be a list of strings"):
        decode(b'{"type":"view","id":1,"view":"env","target":"t","columns":["A"],'
               b'"rows":[{"cells":[1]}],"truncated":false,"note":""}')  # fmt: skip


def _approval_item(**overrides: object) -> ApprovalItem:
    fields: dict[str, object] = {
        "id": "3f2a9c0d81e4", "requester": "alice", "cluster": "prod", "namespace": "shop",
        "pod": "web-1", "container": "app", "mode": "ephemeral", "image": "img@sha256:" + "a" * 64,
        "run_as_user": 65532, "duration_seconds": 1800.0, "reason": "INC-7 \x1b[2J",
        "status": "pending",
        "expires_at": 1_795_867_200.0, "approvers": "groups leads", "decided_by": "",
        "decision_reason": "", "mine": False, "can_decide": True,
    }  # fmt: skip
    fields.update(overrides)
    return ApprovalItem(**fields)  # type: ignore[arg-type]


def test_approval_messages_round_trip() -> None:
    for message in (
        ListApprovals(7),
        Approvals(7, [_approval_item(), _approval_item(id="b", mine=True, can_decide=False)]),
        Approvals(8, []),
        DecideApproval(9, "3f2a9c0d81e4", True, ""),
        DecideApproval(10, "3f2a9c0d81e4", False, "not during the freeze"),
        ApprovalDecided(9, "3f2a9c0d81e4", "approved", "request 3f2a9c0d81e4 of alice approved"),
        AwaitsApproval("3f2a9c0d81e4", "this debug needs the approval of another operator"),
    ):
        assert decode(encode(message)) == message


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("can_decide", 1, r"approvals.items\[\].can_decide has the wrong type"),
        ("run_as_user", "0", r"approvals.items\[\].run_as_user has the wrong type"),
        ("expires_at", None, r"approvals.items\[\].expires_at has the wrong type"),
    ],
)
def test_approval_items_with_wrong_shapes_are_refused(
    field: str, value: object, error: str
) -> None:
    import json  # noqa: PLC0415 - only this test builds raw lines

    line = json.loads(encode(Approvals(1, [_approval_item()])))
    line["items"][0][field] = value
    with pytest.raises(ProtocolError, match=error):
        decode(json.dumps(line).encode())


def test_a_decision_must_say_approve_or_deny_as_a_boolean() -> None:
    line = b'{"type":"decide_approval","id":1,"request_id":"x","approve":"yes","reason":""}'
    with pytest.raises(ProtocolError, match=r"decide_approval\.approve has the wrong type"):
        decode(line)


def test_debug_messages_round_trip() -> None:
    request = DebugRequest(
        cluster="",
        namespace="shop",
        pod="web-1",
        container="",
        mode="ephemeral",
        image="",
        reason="incident 42",
        run_as_user=65532,
        privileged=False,
        add_capabilities=["SYS_PTRACE"],
    )
    for message in (
        request,
        DebugProgress("asking Vault for a credential"),
        DebugRefused("no grant allows this"),
        Handover("attaching"),
        DebugEnded("prod/shop/web-1", 3, "the shell ended with exit status 3"),
    ):
        assert decode(encode(message)) == message


def _request_line(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "type": "debug", "cluster": "", "namespace": "shop", "pod": "web-1", "container": "",
        "mode": "ephemeral", "image": "", "reason": "", "run_as_user": 65532,
        "privileged": False, "add_capabilities": [],
    }  # fmt: skip
    fields.update(overrides)
    import json  # noqa: PLC0415 - only this helper builds raw lines

    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"add_capabilities": "SYS_ADMIN"}, "debug.add_capabilities has the wrong type"),
        ({"add_capabilities": [1]}, "must be a list of strings"),
        ({"add_capabilities": ["X"] * 20_001}, "has more than 20000 items"),
        ({"privileged": 1}, "debug.privileged has the wrong type"),
        ({"run_as_user": True}, "debug.run_as_user has the wrong type"),
    ],
)
def test_debug_requests_with_wrong_shapes_are_refused(
    overrides: dict[str, object], error: str
) -> None:
    assert isinstance(decode(_request_line()), DebugRequest)
    with pytest.raises(ProtocolError, match=error):
        decode(_request_line(**overrides))


@given(
    user=st.text(max_size=64),
    text=st.text(max_size=1000),
    since=st.floats(0, 4e9, allow_nan=False),
)
def test_notice_feed_messages_round_trip(user: str, text: str, since: float) -> None:
    changed = NoticesChanged(7, [NoticeItem("n1", "break_glass", user, since, text)])
    line = encode(changed)
    assert line.count(b"\n") == 1  # a reason with line breaks is still one message
    assert decode(line) == changed
    assert decode(encode(NoticesChanged(8, []))) == NoticesChanged(8, [])
    assert decode(encode(WatchNotices(3))) == WatchNotices(3)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b'{"type":"notices","id":1,"notices":[{"id":"n"}]}', "notices.notices\\[\\].*exactly"),
        (
            b'{"type":"notices","id":1,"notices":[{"id":"n","kind":"break_glass","user":"a",'
            b'"since":"now","text":"t"}]}',
            "notices.notices\\[\\].since has the wrong type",
        ),
        (b'{"type":"watch_notices"}', "takes exactly the fields id"),
    ],
)
def test_malformed_notices_are_refused(line: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode(line)
