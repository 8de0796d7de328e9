"""kubesim's store: a watcher that falls behind is cut off and told so, not left hanging."""

from __future__ import annotations

from bastion.devstack.kubesim.store import RESOURCES, Store

NAMESPACES = RESOURCES[("", "namespaces")]


async def test_a_watch_that_falls_behind_is_ended() -> None:
    store = Store()
    store.WATCH_BUFFER = 3
    watch = store.watch(NAMESPACES, None, lambda _obj: True, None)
    for i in range(5):
        store.create(NAMESPACES, "", {"metadata": {"name": f"ns-{i}"}})
    assert watch.overflowed
    assert await watch.queue.get() is None  # the stream ends instead of waiting forever
    store.create(NAMESPACES, "", {"metadata": {"name": "later"}})
    assert watch.queue.empty()


async def test_a_watch_that_keeps_up_sees_every_event() -> None:
    store = Store()
    store.WATCH_BUFFER = 3
    watch = store.watch(NAMESPACES, None, lambda _obj: True, None)
    for i in range(5):
        store.create(NAMESPACES, "", {"metadata": {"name": f"ns-{i}"}})
        event = await watch.queue.get()
        assert event is not None
        assert event.type == "ADDED"
    assert not watch.overflowed
