"""Live oversight's pure rules, its configuration, and one session's watch point (issue 9):
who may watch, which shells wait for a watcher, and what the socket lets in."""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import WriteConfig
from test_config import problems as numbered

from bastion.config import load_config
from bastion.errors import PolicyDenied
from bastion.oversight.roles import Auditors, is_auditor, moderation
from bastion.oversight.watch_point import Watcher, WatchPoint, short_path
from bastion.session.lifecycle import Ending


# ---------------------------------------------------------------------------- pure rules
def test_an_auditor_is_named_or_in_a_named_group_and_nobody_without_the_section() -> None:
    auditors = Auditors(users=frozenset({"carol"}), groups=frozenset({"audit"}))
    assert is_auditor(auditors, "carol", [])
    assert is_auditor(auditors, "dave", ["oncall", "audit"])
    assert not is_auditor(auditors, "alice", ["oncall"])
    assert not is_auditor(None, "carol", ["audit"])


def test_which_shells_must_be_watched() -> None:
    def need(**given: Any) -> str | None:
        base: dict[str, Any] = {
            "break_glass": False,
            "break_glass_moderated": False,
            "approved_grants": (),
            "moderated_grants": ("prod",),
            "wait_seconds": 60.0,
        }
        found = moderation(**{**base, **given})
        return None if found is None else found.reason

    assert need() is None
    assert need(break_glass=True) is None  # break-glass, but its section does not moderate
    assert need(break_glass=True, break_glass_moderated=True) == (
        "break-glass shells on this bastion must be watched"
    )
    assert need(approved_grants=("staging",)) is None  # approved under an unmoderated grant
    assert need(approved_grants=("staging", "prod")) == "grant 'prod' requires an auditor to watch"
    assert need(break_glass_moderated=True) is None  # an ordinary shell is never moderated


# ---------------------------------------------------------------------------- config
def problems(path: Path) -> list[str]:
    """The config's problems without the line numbers in front."""
    return [re.sub(r"^\d+: ", "", line) for line in numbered(path)]


def moderated(data: dict[str, Any]) -> None:
    data["grants"][0]["approval"] = {"approvers": {"users": ["bob"]}, "moderated": True}


def test_oversight_names_auditors_and_reaches_the_rules(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        moderated(data)
        data["oversight"] = {"auditors": {"users": ["bob"]}, "watcher_wait": "30s"}

    config = load_config(write_config(edit))
    assert config.oversight is not None
    assert config.oversight.watcher_wait.total_seconds() == 30
    assert config.grants[0].approval is not None
    assert config.grants[0].approval.moderated


def test_a_moderated_grant_without_auditors_is_an_error(write_config: WriteConfig) -> None:
    assert problems(write_config(moderated)) == [
        "grants[0].approval.moderated: a moderated shell needs a watcher, but the config has "
        "no oversight section naming the auditors who may watch"
    ]


def test_auditors_must_exist(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        moderated(data)
        data["oversight"] = {"auditors": {"users": ["mallory"], "groups": ["nobody-here"]}}

    found = problems(write_config(edit))
    assert "oversight.auditors.users[0]: no user named 'mallory'" in found
    assert (
        "oversight.auditors: no configured user is an auditor (no user is in nobody-here): "
        "name existing users, or groups that have members"
    ) in found


def test_the_watcher_wait_is_bounded(write_config: WriteConfig) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["oversight"] = {"auditors": {"users": ["bob"]}, "watcher_wait": "2h"}

    (problem,) = problems(write_config(edit))
    assert problem.startswith("oversight.watcher_wait: ")
    assert "expected a duration from 5s to 1h" in problem


# ---------------------------------------------------------------------------- the point
@dataclass
class _Info:
    user: str = "alice"


@dataclass
class FakeSession:
    id: str = "0123456789abcdef"
    info: _Info = field(default_factory=_Info)
    ending: Ending | None = None
    ending_note: str | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def record(self, event: str, *, outcome: str, **fields: Any) -> None:
        self.events.append((event, {"outcome": outcome, **fields}))

    def end_soon(self, ending: Ending) -> None:
        self.ending = ending


class Point:
    """A watch point of a fake session, whose verify admits only ``admit`` (pid, session)."""

    def __init__(self, tmp_path: Path, *, moderated: bool = False) -> None:
        self.session = FakeSession()
        self.told: list[str] = []
        self.asked: list[tuple[int, str]] = []

        async def verify(pid: int, named: str) -> Watcher | str:
            self.asked.append((pid, named))
            return Watcher("carol", named) if named == "feedfacefeedface" else "not an auditor"

        self.point = WatchPoint(
            self.session,  # type: ignore[arg-type]
            state_dir=tmp_path,
            verify=verify,
            tell=self.told.append,
            target="local/shop/web-1",
            moderated=moderated,
        )

    async def join(self, session: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Any]:
        with short_path(self.point.path) as short:
            reader, writer = await asyncio.open_unix_connection(short)
        writer.write(json.dumps({"session": session}).encode() + b"\n")
        return reader, writer, json.loads(await reader.readline())


async def test_the_socket_is_private_and_lets_in_only_what_verify_admits(tmp_path: Path) -> None:
    made = Point(tmp_path)
    await made.point.start()
    try:
        assert made.point.path.stat().st_mode & 0o777 == 0o600
        assert made.point.path.parent.stat().st_mode & 0o777 == 0o700
        _, writer, answer = await made.join("0000000000000000")
        assert answer == {"ok": False, "error": "not an auditor"}
        writer.close()
        assert made.asked == [(os.getpid(), "0000000000000000")]  # the peer's pid, from the kernel
        assert made.point.watchers == []
        _, writer, answer = await made.join("feedfacefeedface")
        assert answer == {"ok": True, "watched": "alice", "target": "local/shop/web-1"}
        assert made.point.watchers == ["carol"]
        assert made.told == ["auditor carol is watching this session"]
        writer.close()
        await _until(lambda: not made.point.watchers)
        assert made.told[-1] == "auditor carol stopped watching this session"
        assert made.session.ending is None  # not moderated: the shell goes on unwatched
    finally:
        await made.point.close()
    assert not made.point.path.exists()


async def test_a_moderated_shell_waits_then_ends_when_its_last_watcher_leaves(
    tmp_path: Path,
) -> None:
    made = Point(tmp_path, moderated=True)
    await made.point.start()
    try:
        with pytest.raises(PolicyDenied, match="no auditor joined within 0 s"):
            await made.point.wait_for_watcher(0.2, reason="r")
        with pytest.raises(PolicyDenied, match="you stopped waiting for a watcher"):
            await made.point.wait_for_watcher(30, reason="r", give_up=lambda: True)
        waiting = asyncio.ensure_future(made.point.wait_for_watcher(30, reason="r"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        _, writer, answer = await made.join("feedfacefeedface")
        assert answer["ok"]
        await asyncio.wait_for(waiting, 5)
        made.point.running()
        writer.close()
        await _until(lambda: made.session.ending is not None)
        assert made.session.ending is Ending.ADMIN_KILL
        assert made.session.ending_note == (
            "this session must be watched and its last watcher left, so it has ended"
        )
    finally:
        await made.point.close()


async def test_terminate_is_recorded_then_ends_the_session_and_other_lines_do_nothing(
    tmp_path: Path,
) -> None:
    made = Point(tmp_path)
    await made.point.start()
    try:
        _, writer, _ = await made.join("feedfacefeedface")
        writer.write(b'ls -la\n{"terminate": "  "}\nnot json\n')
        writer.write(json.dumps({"terminate": "INC-9 stop now"}).encode() + b"\n")
        await _until(lambda: made.session.ending is not None)
        assert made.session.events == [
            (
                "session.terminated",
                {
                    "outcome": "terminated",
                    "by": "carol",
                    "by_session": "feedfacefeedface",
                    "reason": "INC-9 stop now",
                },
            )
        ]
        assert made.session.ending_note == "auditor carol ended this session: INC-9 stop now"
        writer.close()
        await writer.wait_closed()
    finally:
        await made.point.close()


async def _until(condition: Any, seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_watcher_who_left_before_the_shell_starts_does_not_let_it_start(
    tmp_path: Path,
) -> None:
    made = Point(tmp_path, moderated=True)
    await made.point.start()
    try:
        _, writer, _ = await made.join("feedfacefeedface")
        await made.point.wait_for_watcher(5, reason="r")
        writer.close()
        await _until(lambda: not made.point.watchers)
        with pytest.raises(PolicyDenied, match="the watcher left before the debug shell started"):
            made.point.running()
        assert made.session.ending is None  # nothing ran: the debug is refused, not the session
    finally:
        await made.point.close()
