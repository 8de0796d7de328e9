"""The command-report filter: reports out, everything else through, however the stream is cut."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pexpect
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.command_marker import (
    MAX_COMMAND,
    PREFIX,
    CommandReport,
    MarkerFilter,
    encode_report,
    shell_setup,
)

NONCE = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"


def run(stream: bytes, cuts: list[int], nonce: str = NONCE) -> tuple[bytes, list[CommandReport]]:
    """Feed ``stream`` cut at ``cuts``; the output and reports of the whole stream."""
    f = MarkerFilter(nonce)
    out: list[bytes] = []
    reports: list[CommandReport] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        clean, found = f.feed(stream[last:cut])
        out.append(clean)
        reports += found
        last = cut
    rest, _ = f.flush()
    out.append(rest)
    return b"".join(out), reports


def test_report_is_removed_and_parsed() -> None:
    stream = b"$ ls\r\nfile\r\n" + encode_report(NONCE, 2, b"   12  ls -l /tmp") + b"$ "
    out, reports = run(stream, [])
    assert out == b"$ ls\r\nfile\r\n$ "
    assert reports == [CommandReport(12, "ls -l /tmp", 2)]
    assert reports[0].at == len(b"$ ls\r\nfile\r\n")  # where the prompt starts


def test_empty_history_is_a_prompt_without_a_command() -> None:
    assert run(encode_report(NONCE, 0, b""), []) == (b"", [CommandReport(None, "", 0)])


def test_command_may_hold_bel_and_escapes() -> None:
    line = b"    3  printf '\x07\x1b]7770;x\x07'"
    out, reports = run(b"a" + encode_report(NONCE, 0, line) + b"b", [])
    assert out == b"ab"
    assert reports == [CommandReport(3, "printf '\x07\x1b]7770;x\x07'", 0)]


def test_forged_nonce_passes_through_and_is_counted() -> None:
    forged = encode_report(OTHER, 0, b"    1  rm -rf /")
    f = MarkerFilter(NONCE)
    out, reports = f.feed(b"x" + forged + b"y")
    assert out == b"x" + forged + b"y"
    assert reports == []
    assert f.forged == 1


def test_forged_header_cannot_swallow_a_real_report() -> None:
    real = encode_report(NONCE, 0, b"    7  cat notes")
    # A forged header whose length would end exactly on the real report's BEL.
    body = b"x" + real[:-1]
    forged = PREFIX + f"{OTHER};0;{len(body)};".encode()
    out, reports = run(forged + body + b"\x07", [])
    assert reports == [CommandReport(7, "cat notes", 0)]
    assert real not in out


def test_malformed_and_overlong_pass_through() -> None:
    bad = [
        PREFIX + b"zz;0;1;a\x07",
        PREFIX + NONCE.encode() + b";0;3;ab",  # the BEL is missing: wrong length
        PREFIX + NONCE.encode() + f";0;{MAX_COMMAND + 1};".encode() + b"a" * (MAX_COMMAND + 1),
    ]
    for start in bad:
        stream = start + b"\x07tail"
        out, reports = run(stream, [])
        assert reports == [], stream[:40]
        assert out == stream


def test_unfinished_report_is_released_at_the_end() -> None:
    partial = encode_report(NONCE, 0, b"    1  ls")[:-3]
    f = MarkerFilter(NONCE)
    assert f.feed(b"out" + partial) == (b"out", [])
    assert f.held == len(partial)
    assert f.flush() == (partial, [])


def test_hot_path_holds_nothing() -> None:
    f = MarkerFilter(NONCE)
    chunk = b"x" * 32768
    assert f.feed(chunk) == (chunk, [])
    assert f.feed(b"colour \x1b[31mred\x1b[0m") == (b"colour \x1b[31mred\x1b[0m", [])
    assert f.held == 0


def test_shell_setup_refuses_a_bad_nonce() -> None:
    for nonce in ("", "abc", NONCE.upper(), NONCE + "'"):
        try:
            shell_setup(nonce)
        except ValueError:
            continue
        raise AssertionError(f"{nonce!r} accepted")


printable = st.binary(max_size=200).filter(lambda b: PREFIX not in b)
history = st.builds(
    lambda n, cmd: f"{n:5d}  ".encode() + cmd,
    st.integers(1, 99999),
    st.binary(min_size=1, max_size=300).filter(lambda b: b.strip() == b),
)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.one_of(
            printable.map(lambda b: ("out", b, 0)),
            st.tuples(st.just("report"), history, st.integers(0, 255)),
            st.just(("forged", encode_report(OTHER, 1, b"    1  id"), 0)),
        ),
        max_size=12,
    ),
    cut_seeds=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_any_cut_gives_the_whole_streams_result(
    parts: list[tuple[str, bytes, int]], cut_seeds: list[int]
) -> None:
    stream = b""
    expected_out = b""
    expected: list[tuple[int, int]] = []
    expected_at: list[int] = []  # where each report was, in the output without them
    for kind, value, status in parts:
        if kind == "report":
            stream += encode_report(NONCE, status, value)
            expected.append((int(value.split()[0]), status))
            expected_at.append(len(expected_out))
        else:
            stream += value
            expected_out += value
    cuts = [seed % (len(stream) + 1) for seed in cut_seeds]
    out, reports = run(stream, cuts)
    whole_out, whole_reports = run(stream, [])
    assert (out, reports) == (whole_out, whole_reports)
    assert out == expected_out
    assert [(r.number, r.exit_status) for r in reports] == expected
    assert [r.at for r in whole_reports] == expected_at  # one feed: positions in the whole


@settings(max_examples=100, deadline=None)
@given(noise=st.binary(max_size=2000), cut=st.integers(0, 2000))
def test_arbitrary_bytes_never_lose_output(noise: bytes, cut: int) -> None:
    """Without this session's nonce nothing is removed, whatever the bytes."""
    stream = noise + PREFIX + noise[:50] + b"\x07" + noise
    out, reports = run(stream, [cut % (len(stream) + 1)])
    assert reports == []
    assert out == stream


def test_huge_stream_with_many_reports() -> None:
    report = encode_report(NONCE, 0, b"    9  " + b"y" * 1000)
    stream = (b"z" * 7000 + report) * 200
    out, reports = run(stream, list(range(0, len(stream), 4093)))
    assert out == b"z" * 7000 * 200
    assert len(reports) == 200


# ----------------------------------------------------------------------- the real shells
SHELLS = {"bash": shutil.which("bash"), "busybox ash": shutil.which("busybox")}


@pytest.mark.parametrize("name", sorted(SHELLS))
def test_the_shell_setup_reports_what_was_typed(name: str, tmp_path: Path) -> None:
    """The container's script on a PTY, with ``sh`` being bash or busybox ash (the image's:
    install Debian's busybox 1.35, the version the image builds, to run it)."""
    program = SHELLS[name]
    if program is None:
        pytest.skip(f"{name} is not installed")
    (tmp_path / "sh").symlink_to(program)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "xterm", "HOME": "/"}
    shell = pexpect.spawn(
        "/bin/sh", ["-c", shell_setup(NONCE), "bastion-session=x", "30"], env=env, timeout=10
    )
    shell.logfile_read = seen = io.BytesIO()
    lines = ["echo 'a\\tb \\033[31m %s'", "false", "", "x=$(printf 'é'); echo \"$x\"", "exit"]
    for line in lines:
        shell.expect("[$#] ")  # the prompt: one line at a time, as typed
        shell.sendline(line)
    shell.expect(pexpect.EOF)
    clean, reports = MarkerFilter(NONCE).feed(seen.getvalue())
    assert PREFIX not in clean
    typed = [(r.command, r.exit_status) for r in reports if r.number is not None]
    assert typed == [
        ("echo 'a\\tb \\033[31m %s'", 0),
        ("false", 1),
        ("false", 1),  # the empty line: the same entry again
        ("x=$(printf 'é'); echo \"$x\"", 0),
    ]
    assert b"ENV" not in clean
    assert b"__bastion" not in clean


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_a_bare_exit_right_away_ends_with_status_0(shell: str, tmp_path: Path) -> None:
    """The prompt hook leaves no failed status behind, with a history or without (dash)."""
    program = shutil.which(shell)
    assert program is not None
    (tmp_path / "sh").symlink_to(program)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "xterm", "HOME": "/"}
    child = pexpect.spawn(
        "/bin/sh", ["-c", shell_setup(NONCE), "bastion-session=x", "30"], env=env, timeout=10
    )
    child.expect("[$#] ")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
