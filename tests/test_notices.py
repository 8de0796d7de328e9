"""The notice board and the notices feed: a notice reaches the consoles of every worker
(one board in the shared journal), and goes away when it ends, expires, or its session is
closed however it was closed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from state_backends import Backend

from bastion.console_protocol import NoticeItem
from bastion.session.notices import NoticeFeed
from bastion.state.journal import Journal, Owner
from bastion.state.notices import NoticeBoard, NoticeRecord


def journal_with_session(backend: Backend, session: str = "s1") -> Journal:
    journal = Journal(backend.open("journal.db"))
    journal.open_session(session, user="emergency", source="192.0.2.7:1", owner=Owner.current(),
                         opened_at=0.0)  # fmt: skip
    return journal


def notice(nid: str, *, session: str | None = "s1", **fields: object) -> NoticeRecord:
    base: dict[str, object] = {
        "id": nid,
        "kind": "break_glass",
        "user": "emergency",
        "session": session,
        "text": "INC-9 the payments api is down",
        "audience": None,
        "posted_at": 10.0,
    }
    return NoticeRecord(**(base | fields))  # type: ignore[arg-type]


def test_a_notice_is_in_force_until_ended_expired_or_its_session_closed(
    state_backend: Backend,
) -> None:
    journal = journal_with_session(state_backend)
    journal.open_session("s2", user="x", source="-", owner=Owner.current(), opened_at=0.0)
    board = NoticeBoard(state_backend.open("journal.db"))
    board.post(notice("a"))
    board.post(notice("b", session="s2"))
    board.post(notice("c", session=None, expires_at=50.0))
    board.post(notice("d", session="no-such-session"))  # never shown
    assert [n.id for n in board.in_force(20.0)] == ["a", "b", "c"]
    assert [n.id for n in board.in_force(60.0)] == ["a", "b"]  # c expired
    assert board.end("a", 61.0)
    assert not board.end("a", 62.0)
    journal.close_session("s2", 63.0)  # its wipe, a kill, or the reaper: all close it
    assert board.in_force(64.0) == []
    with pytest.raises(ValueError, match="posted before"):
        board.post(notice("b"))
    board.close()
    journal.close()


def test_tidying_ends_only_what_is_no_longer_in_force(state_backend: Backend) -> None:
    journal = journal_with_session(state_backend)
    journal.open_session("s2", user="x", source="-", owner=Owner.current(), opened_at=0.0)
    board = NoticeBoard(state_backend.open("journal.db"))
    board.post(notice("live"))
    board.post(notice("closed", session="s2"))
    board.post(notice("expired", session=None, expires_at=5.0))
    board.post(notice("lasting", session=None))
    journal.close_session("s2", 6.0)
    before = board.in_force(20.0)
    assert board.tidy(20.0) == 2
    assert board.in_force(20.0) == before
    assert {n.id for n in before} == {"live", "lasting"}
    assert board.tidy(21.0) == 0
    assert not board.end("closed", 22.0)  # tidied: ended already
    board.close()
    journal.close()


def test_an_audience_narrows_who_sees_a_notice(state_backend: Backend) -> None:
    journal = journal_with_session(state_backend)
    board = NoticeBoard(state_backend.open("journal.db"))
    board.post(notice("a", audience=("carol", "dave")))
    (record,) = board.in_force(20.0)
    assert record.audience == ("carol", "dave")
    assert record.visible_to("carol")
    assert not record.visible_to("alice")
    board.close()
    journal.close()


async def next_change(queue: asyncio.Queue[list[NoticeItem]]) -> list[NoticeItem]:
    return await asyncio.wait_for(queue.get(), 5)


async def test_every_workers_consoles_get_the_notices_at_once_and_each_change(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    journal = journal_with_session(Backend("sqlite", tmp_path))
    # Two workers, each with its own feed on the one journal database.
    here, there = NoticeFeed(path, poll=0.05), NoticeFeed(path, poll=0.05)
    alice: asyncio.Queue[list[NoticeItem]] = asyncio.Queue()
    bob: asyncio.Queue[list[NoticeItem]] = asyncio.Queue()
    carol: asyncio.Queue[list[NoticeItem]] = asyncio.Queue()
    stop_alice = here.subscribe("alice", alice.put_nowait)
    there.subscribe("bob", bob.put_nowait)
    there.subscribe("carol", carol.put_nowait)
    try:
        assert await next_change(alice) == []  # at once, even when there is nothing
        assert await next_change(bob) == []
        assert await next_change(carol) == []

        nid = await here.post("break_glass", user="emergency", text="INC-9 why", session="s1")
        (seen,) = await next_change(bob)  # posted by the other worker
        assert (seen.id, seen.kind, seen.user, seen.text) == (nid, "break_glass", "emergency",
                                                              "INC-9 why")  # fmt: skip
        assert (await next_change(alice))[0].id == nid
        assert (await next_change(carol))[0].id == nid

        await there.post("approval", user="x", text="t", audience=("carol",))
        assert len(await next_change(carol)) == 2
        await asyncio.sleep(0.2)
        assert bob.empty()  # bob sees no change: the new one is not for him

        stop_alice()
        journal.close_session("s1", 99.0)
        assert [n.kind for n in await next_change(carol)] == ["approval"]
        assert await next_change(bob) == []
        await asyncio.sleep(0.2)
        assert alice.empty()  # unsubscribed
    finally:
        await here.aclose()
        await there.aclose()
        journal.close()
