"""The console's broker client over a real socketpair: answers by id, watches, events, and
a broker that hangs up, talks nonsense or goes silent."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bastion.console_protocol import (
    Failed,
    Message,
    Namespaces,
    Notice,
    PodsPage,
    Welcome,
    decode,
    encode,
)
from tests.tui.rows import pod
from tui.broker import BrokerClient, BrokerGone, RequestFailed, SocketTransport

WELCOME = Welcome("alice", ["oncall"], ["prod"], 2e9, 900.0)


async def pair(
    answer_within: float = 2.0,
) -> tuple[BrokerClient, asyncio.StreamReader, asyncio.StreamWriter, list[Message], list[str]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    events: list[Message] = []
    gone: list[str] = []
    client = BrokerClient(
        SocketTransport(theirs.detach()), on_event=events.append, on_gone=gone.append,
        timeout=answer_within,
    )  # fmt: skip
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    return client, reader, writer, events, gone


async def test_requests_watches_and_events_over_a_socket() -> None:
    client, reader, writer, events, gone = await pair()
    writer.write(encode(WELCOME))
    assert await client.start() == WELCOME
    asking = asyncio.ensure_future(client.namespaces("prod"))
    request = decode((await reader.readline()).rstrip())
    writer.write(encode(Notice("idle", 60.0, "idle soon")))
    writer.write(encode(Namespaces(request.id, "prod", ["shop"], [])))  # type: ignore[attr-defined]
    assert (await asking).allowed == ["shop"]
    assert events == [Notice("idle", 60.0, "idle soon")]

    watch = await client.watch_pods("prod", "shop")
    watch_request = decode((await reader.readline()).rstrip())
    writer.write(encode(PodsPage(watch_request.id, [pod("a")], True, 0, "")))  # type: ignore[attr-defined]
    writer.write(encode(Failed(watch_request.id, "the watch ended; reopen the list")))  # type: ignore[attr-defined]
    received: list[Message] = []

    async def follow() -> None:
        async for message in watch:
            received.append(message)  # noqa: PERF401 - kept when the watch fails

    with pytest.raises(RequestFailed, match="reopen the list"):
        await follow()
    assert [type(m) for m in received] == [PodsPage]
    await watch.close()
    assert b'"stop_watch"' in await reader.readline()

    writer.close()
    with pytest.raises(BrokerGone):
        await client.pod("prod", "shop", "a")
    assert gone == ["the session broker stopped answering; this session ends, log in again"]
    await client.close()


async def test_a_broker_that_talks_nonsense_is_gone() -> None:
    client, _reader, writer, _events, gone = await pair()
    writer.write(encode(WELCOME) + b'{"type":"bogus"}\n')
    await client.start()
    await asyncio.sleep(0.05)
    assert gone == ["the session broker sent something this console cannot read; log in again"]
    writer.close()
    await client.close()


async def test_a_silent_broker_is_gone_after_the_timeout() -> None:
    client, _reader, writer, _events, gone = await pair(answer_within=0.1)
    with pytest.raises(BrokerGone):
        await client.start()
    assert len(gone) == 1
    writer.close()
    await client.close()


async def test_the_first_message_must_be_the_welcome() -> None:
    client, _reader, writer, _events, gone = await pair()
    writer.write(encode(Notice("idle", 1.0, "x")))
    with pytest.raises(BrokerGone):
        await client.start()
    assert gone == ["the session broker did not greet this console; log in again"]
    writer.close()
    await client.close()


def test_main_needs_its_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    from tui.app import main  # noqa: PLC0415 - imported where the behaviour is tested

    monkeypatch.delenv("BASTION_BROKER_FD", raising=False)
    assert main(["alice"]) == 1
    assert main([]) == 2
