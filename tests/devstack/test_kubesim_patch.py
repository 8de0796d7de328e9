"""PATCH semantics: RFC 6902, RFC 7386 and strategic merge with the pod's merge keys."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.devstack.kubesim.errors import ApiError
from bastion.devstack.kubesim.patch import JSON_MERGE, JSON_PATCH, STRATEGIC, apply_patch

POD: dict[str, Any] = {
    "metadata": {"name": "p", "labels": {"app": "a", "tier": "web"}},
    "spec": {
        "containers": [
            {"name": "main", "image": "x", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "y"},
        ]
    },
}


def test_strategic_merge_merges_lists_by_key() -> None:
    patched = apply_patch(
        POD,
        STRATEGIC,
        {"spec": {"containers": [{"name": "main", "env": [{"name": "B", "value": "2"}]}]}},
    )
    main, side = patched["spec"]["containers"]
    assert main["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert main["image"] == "x"
    assert side == {"name": "side", "image": "y"}
    assert POD["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]  # untouched


def test_strategic_merge_directives() -> None:
    deleted = apply_patch(
        POD, STRATEGIC, {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}
    )
    assert [c["name"] for c in deleted["spec"]["containers"]] == ["main"]
    replaced = apply_patch(
        POD, STRATEGIC, {"metadata": {"labels": {"$patch": "replace", "x": "1"}}}
    )
    assert replaced["metadata"]["labels"] == {"x": "1"}
    removed = apply_patch(POD, STRATEGIC, {"metadata": {"labels": {"tier": None}}})
    assert removed["metadata"]["labels"] == {"app": "a"}
    with pytest.raises(ApiError, match="does not contain declared merge key: name"):
        apply_patch(POD, STRATEGIC, {"spec": {"containers": [{"image": "z"}]}})


def test_json_merge_replaces_lists() -> None:
    patched = apply_patch(POD, JSON_MERGE, {"spec": {"containers": [{"name": "only"}]}})
    assert patched["spec"]["containers"] == [{"name": "only"}]


def test_json_patch_operations() -> None:
    patched = apply_patch(
        POD,
        JSON_PATCH,
        [
            {"op": "add", "path": "/metadata/labels/new", "value": "v"},
            {"op": "replace", "path": "/spec/containers/1/image", "value": "z"},
            {"op": "remove", "path": "/metadata/labels/tier"},
            {"op": "test", "path": "/metadata/name", "value": "p"},
            {"op": "add", "path": "/spec/containers/-", "value": {"name": "third"}},
        ],
    )
    assert patched["metadata"]["labels"] == {"app": "a", "new": "v"}
    assert [c["name"] for c in patched["spec"]["containers"]] == ["main", "side", "third"]
    assert patched["spec"]["containers"][1]["image"] == "z"
    with pytest.raises(ApiError) as caught:
        apply_patch(POD, JSON_PATCH, [{"op": "test", "path": "/metadata/name", "value": "q"}])
    assert caught.value.code == 422
    with pytest.raises(ApiError) as caught:
        apply_patch(POD, JSON_PATCH, [{"op": "remove", "path": "/nope"}])
    assert caught.value.code == 422
    with pytest.raises(ApiError) as caught:
        apply_patch(POD, "application/apply-patch+yaml", {})
    assert caught.value.code == 415
