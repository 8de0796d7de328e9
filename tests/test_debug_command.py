"""The `debug` command line: what it accepts, and the sentence for what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.debug_command import DEFAULT_UID, DebugCommand, parse_debug_command
from bastion.policy import Mode


def test_the_shortest_form_takes_every_default() -> None:
    assert parse_debug_command("debug shop/web-1") == DebugCommand("shop", "web-1")
    assert DebugCommand("shop", "web-1").run_as_user == DEFAULT_UID


def test_every_option() -> None:
    command = parse_debug_command(
        "debug shop/web-1.a -c app --cluster prod-eu --mode copy "
        "--image 'r.example/t@sha256:" + "a" * 64 + "' --reason 'INC-7: 500s on checkout' "
        "--uid 1000 --privileged --cap-add SYS_PTRACE --cap-add NET_ADMIN"
    )
    assert command == DebugCommand(
        namespace="shop",
        pod="web-1.a",
        container="app",
        cluster="prod-eu",
        mode=Mode.COPY,
        image="r.example/t@sha256:" + "a" * 64,
        reason="INC-7: 500s on checkout",
        run_as_user=1000,
        privileged=True,
        add_capabilities=("SYS_PTRACE", "NET_ADMIN"),
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "the only command is 'debug'"),
        ("bash", "the only command is 'debug'"),
        ("debug", "which pod"),
        ("debug shop", "the target needs a pod"),
        ("debug /web-1", "the target needs a namespace"),
        ("debug Shop/web-1", "'Shop' is not a valid namespace name"),
        ("debug shop/web_1", "'web_1' is not a valid pod name"),
        ("debug shop/web-1 -c A", "'A' is not a valid container name"),
        ("debug shop/web-1 other/pod", "one target only"),
        ("debug shop/web-1 --mode host", "--mode 'host' is not a mode; use one of ephemeral"),
        ("debug shop/web-1 --uid -1", "--uid takes a number"),
        ("debug shop/web-1 --uid", "--uid needs a value"),
        ("debug shop/web-1 --cap-add 'x; rm'", "--cap-add needs a capability name"),
        ("debug shop/web-1 --mode copy --mode pod", "--mode is given twice"),
        ("debug shop/web-1 --exec-as root", "unknown option '--exec-as'"),
        ("debug 'shop/web-1", "could not be split into words"),
        ("debug " + "a" * 5000, "longer than 4096"),
        ("debug shop/web-1$(id)", "is not a valid pod name"),
        ("debug shop/web-1\x1b[2J", "is not a valid pod name"),
    ],
)
def test_refusals_say_what_was_wrong(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace("$", r"\$")):
        parse_debug_command(text)


@given(st.text(max_size=300))
def test_any_text_either_parses_to_valid_names_or_raises_value_error(text: str) -> None:
    try:
        command = parse_debug_command(text)
    except ValueError:
        return
    for name in (command.namespace, command.pod, command.container, command.cluster):
        assert all(c.islower() or c.isdigit() or c in "-." for c in name)
