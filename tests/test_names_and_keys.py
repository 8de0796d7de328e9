"""The small pure parsers the config relies on: selectors, globs, durations, images, keys."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.durations import format_duration, parse_duration
from bastion.globs import compile_glob
from bastion.images import parse_pinned_image
from bastion.labels import Operator, SelectorError, parse_selector
from bastion.sshkeys import parse_public_key


# ------------------------------------------------------------------------- label selectors
@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("", {}, True),
        ("app=api", {"app": "api"}, True),
        ("app==api", {"app": "web"}, False),
        ("app!=api", {}, True),  # != matches a pod without the key, as in Kubernetes
        ("app!=api", {"app": "api"}, False),
        ("app in (api, worker)", {"app": "worker"}, True),
        ("app notin (api,worker)", {}, True),
        ("app notin (api,worker)", {"app": "api"}, False),
        ("canary", {"canary": ""}, True),
        ("!canary", {"canary": "true"}, False),
        ("app=api,tier in (web),!canary", {"app": "api", "tier": "web"}, True),
        ("app=", {"app": ""}, True),
        ("example.com/team=core", {"example.com/team": "core"}, True),
    ],
)
def test_selector_matching(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_selector(selector).matches(labels) is matches


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("app in api", "selector 'app in api': expected '(' after in/notin"),
        ("app in ()", "selector 'app in ()': expected a value in the set, got ')'"),
        ("app=api,", "selector 'app=api,': ends with ','"),
        ("app api", "selector 'app api': after 'app' expected =, ==, !=, in, notin or ','"),
        (
            "-app=x",
            "label key '-app' is not valid: at most 63 characters, alphanumeric at both ends, "
            "'-', '_' and '.' inside",
        ),
        ("=x", "selector '=x': unexpected '=', expected a label key"),
        ("app in (a", "selector 'app in (a': ends too early"),
        (
            "Example.COM/x=y",
            "label key 'Example.COM/x' has an invalid prefix (a lower-case DNS name)",
        ),
    ],
)
def test_selector_errors(selector: str, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector(selector)
    assert str(caught.value) == message


def test_selector_structure_and_rendering() -> None:
    parsed = parse_selector("app in (b,a), !canary ,tier")
    assert [r.operator for r in parsed.requirements] == [
        Operator.IN,
        Operator.NOT_EXISTS,
        Operator.EXISTS,
    ]
    assert str(parsed) == "app in (a,b),!canary,tier"


value_st = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,5}[a-z0-9])?", fullmatch=True)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["app", "tier", "example.com/team"]),
            st.sampled_from(["=", "!=", "in", "notin", "exists", "!"]),
            st.lists(value_st, min_size=1, max_size=3),
        ),
        max_size=4,
    ),
    st.dictionaries(st.sampled_from(["app", "tier", "example.com/team"]), value_st),
)
def test_rendered_selector_parses_back_to_the_same_meaning(
    parts: list[tuple[str, str, list[str]]], labels: dict[str, str]
) -> None:
    rendered = []
    for key, op, values in parts:
        if op in {"=", "!="}:
            rendered.append(f"{key}{op}{values[0]}")
        elif op in {"in", "notin"}:
            rendered.append(f"{key} {op} ({','.join(values)})")
        else:
            rendered.append(key if op == "exists" else f"!{key}")
    first = parse_selector(",".join(rendered))
    again = parse_selector(str(first))
    assert again == first
    assert again.matches(labels) == first.matches(labels)


# ------------------------------------------------------------------------- globs
@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("prod-*", "prod-eu", True),
        ("prod-*", "staging", False),
        ("team-?", "team-a", True),
        ("team-?", "team-ab", False),
        ("payments-[ab]", "payments-b", True),
        ("[!k]*", "kube-system", False),
        ("[!k]*", "web", True),
        ("a.b", "axb", False),  # '.' is literal
        ("*", "anything-at-all", True),
    ],
)
def test_globs(pattern: str, name: str, matches: bool) -> None:
    assert (compile_glob(pattern).fullmatch(name) is not None) is matches


# ------------------------------------------------------------------------- durations
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("600", timedelta(minutes=10)),
        (45, timedelta(seconds=45)),
    ],
)
def test_durations(text: str | int, value: timedelta) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["", "1x", "m10", "0s", "-5m", True, "1.5h"])
def test_bad_durations(text: str | int) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10**8))
def test_duration_round_trip(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


# ------------------------------------------------------------------------- images
def test_pinned_images() -> None:
    digest = "sha256:" + "0f" * 32
    ref = parse_pinned_image(f"registry.example.com:5000/team/toolbox:1.2@{digest}")
    assert (ref.repository, ref.tag, ref.digest) == (
        "registry.example.com:5000/team/toolbox",
        "1.2",
        digest,
    )
    assert str(ref) == f"registry.example.com:5000/team/toolbox@{digest}"
    with pytest.raises(ValueError, match="is not pinned by digest"):
        parse_pinned_image("busybox:latest")
    with pytest.raises(ValueError, match="is not an image reference"):
        parse_pinned_image("Busybox@sha256:short")


# ------------------------------------------------------------------------- SSH keys
def keygen(tmp_path: Path, kind: str, bits: int | None = None) -> tuple[str, str]:
    """A real key from OpenSSH's ssh-keygen, and the fingerprint ssh-keygen prints for it."""
    key = tmp_path / f"id_{kind}_{bits}"
    args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "test@example", "-f", str(key)]
    if bits:
        args += ["-b", str(bits)]
    subprocess.run(args, check=True)
    line = key.with_suffix(".pub").read_text().strip()
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(key.with_suffix(".pub"))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[1]
    return line, printed


def test_ed25519_key_and_fingerprint_match_ssh_keygen(tmp_path: Path) -> None:
    line, fingerprint = keygen(tmp_path, "ed25519")
    key = parse_public_key(line)
    assert key.fingerprint == fingerprint
    assert key.comment == "test@example"
    assert key.openssh() == line


def test_rsa_needs_3072_bits(tmp_path: Path) -> None:
    line, fingerprint = keygen(tmp_path, "rsa", 3072)
    assert parse_public_key(line).fingerprint == fingerprint
    assert parse_public_key(line).bits == 3072
    weak, _ = keygen(tmp_path, "rsa", 2048)
    with pytest.raises(ValueError, match="RSA key has 2048 bits; at least 3072 are required"):
        parse_public_key(weak)


def test_ecdsa_without_security_key_refused(tmp_path: Path) -> None:
    line, _ = keygen(tmp_path, "ecdsa", 256)
    with pytest.raises(ValueError, match="key type 'ecdsa-sha2-nistp256' is not accepted"):
        parse_public_key(line)


def test_mislabelled_key_refused(tmp_path: Path) -> None:
    line, _ = keygen(tmp_path, "ed25519")
    _, blob, *_ = line.split()
    with pytest.raises(ValueError, match="the key says 'ssh-rsa' but its data is a 'ssh-ed25519'"):
        parse_public_key(f"ssh-rsa {blob}")
