"""The files view's path check: strict, by whole components, no traversal."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.introspect.paths import check_path, within

PREFIXES = ("/etc", "/app/config")


@pytest.mark.parametrize("path", ["/etc", "/etc/nginx", "/app/config/a b.yaml", "/etc/.hidden"])
def test_paths_under_a_prefix_pass_unchanged(path: str) -> None:
    assert check_path(path, PREFIXES) == path


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/etc/../root", "contains '..'"),
        ("/etc/..", "contains '..'"),
        ("..", "is not absolute"),
        ("etc", "is not absolute"),
        ("", "is empty"),
        ("/etc/./x", "is not normalised"),
        ("/etc//x", "is not normalised"),
        ("/etc/", "is not normalised"),
        ("//etc", "starts with '//'"),
        ("/etcetera", "is outside the paths your grant lets you list"),
        ("/app", "is outside"),
        ("/", "is outside"),
        ("/etc/\x1b[2Jx", "control or invisible"),
        ("/etc/\u202ex", "control or invisible"),
        ("/etc/x\x00", "control or invisible"),
        ("-la", "is not absolute"),
        ("/" + "a" * 1100, "longer than 1024"),
    ],
)
def test_bad_paths_are_refused_with_the_reason(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        check_path(path, PREFIXES)


def test_root_prefix_allows_everything_absolute() -> None:
    assert within("/proc", ("/",))


@given(st.lists(st.sampled_from(["etc", "..", ".", "", "app", "config", "x"]), max_size=6))
def test_nothing_accepted_escapes_the_prefixes(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    try:
        accepted = check_path(path, PREFIXES)
    except ValueError:
        return

    resolved = posixpath.normpath(accepted)
    assert resolved == accepted
    assert any(resolved == p or resolved.startswith(p + "/") for p in PREFIXES)
