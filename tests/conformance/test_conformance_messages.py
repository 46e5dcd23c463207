"""Conformance suite, steering messages: clients -> the running producer, on every backend.

Uses the fixtures of conftest.py (``store`` runs each test on memory,
redis and redis-cluster; ``make_hub`` makes hubs sharing that store, i.e. "instances").
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson
import pytest
from support.conformance import (
    HubFactory,
    MemoryStore,
    PostgresStore,
    RedisStore,
    Store,
    reclaim,
    start,
)
from support.sse_client import wait_until

from fastapi_streamhub import (
    LimitExceeded,
    Producer,
    SessionFinished,
    SessionNotFound,
    State,
    SteeringMessage,
)

pytestmark = pytest.mark.anyio


class Received:
    """``producer.messages()`` consumed in a background task."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.messages: list[SteeringMessage] = []
        self.ended = anyio.Event()
        self._changed = anyio.Event()

    async def run(self) -> None:
        try:
            async for message in self.producer.messages():
                self.messages.append(message)
                self._changed.set()
                self._changed = anyio.Event()
        finally:
            self.ended.set()
            self._changed.set()

    @property
    def data(self) -> list[Any]:
        return [m.data for m in self.messages]

    async def until(self, count: int, within: float = 10.0) -> None:
        with anyio.fail_after(within):
            while len(self.messages) < count:
                if self.ended.is_set():
                    raise AssertionError(f"messages() ended after {self.data!r}")
                await self._changed.wait()


def receive(tg: anyio.abc.TaskGroup, producer: Producer) -> Received:
    received = Received(producer)
    tg.start_soon(received.run)
    return received


async def store_silently(store: Store, sid: str, data: Any) -> None:
    """Store a message the way the backend does, but without the live signal (a missed one)."""
    blob = orjson.dumps(data)
    if isinstance(store, MemoryStore):
        backend = store.backend
        controls, backend._controls = backend._controls, []
        try:
            assert (await backend.send_message(sid, blob, None)) is not None
        finally:
            backend._controls = controls
        return
    if isinstance(store, PostgresStore):
        # What the backend's message function stores, without its NOTIFY.
        store.sql(
            "WITH s AS (UPDATE streamhub_session SET q = q + 1, qb = qb + %s"
            " WHERE session_id = %s RETURNING generation, q)"
            " INSERT INTO streamhub_message SELECT %s, generation, q, %s FROM s",
            len(blob), sid, sid, blob,
        )  # fmt: skip
        return
    assert isinstance(store, RedisStore)
    meta = store.meta(sid)
    gen = store.execute(sid, "HGET", meta, "gen")
    assert isinstance(gen, bytes)
    seq = store.execute(sid, "HINCRBY", meta, "q", 1)
    assert isinstance(seq, int)
    store.execute(sid, "XADD", f"streamhub:{{{sid}}}:msgs", b"%s-%d" % (gen, seq), "d", blob)


# --------------------------------------------------------------------------- delivery


async def test_messages_from_another_hub_arrive_in_order_exactly_once(
    make_hub: HubFactory,
) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "steer")
    async with anyio.create_task_group() as tg:
        got = receive(tg, p)
        receipts = [await hub_b.send_message("steer", {"n": i}) for i in range(30)]
        await got.until(30)
        await p.close()
    assert got.data == [{"n": i} for i in range(30)]
    assert [m.id for m in got.messages] == [f"{p.generation}-{i}" for i in range(1, 31)]
    assert [r.id for r in receipts] == [m.id for m in got.messages]
    assert {r.generation for r in receipts} == {p.generation}
    assert not any(r.duplicate for r in receipts)


async def test_concurrent_senders_each_message_once_and_each_senders_order_kept(
    make_hub: HubFactory,
) -> None:
    hubs = [await make_hub() for _ in range(3)]
    p = await start(hubs[0], "many")

    async def sender(hub_index: int) -> None:
        for i in range(15):
            await hubs[hub_index].send_message("many", [hub_index, i])

    async with anyio.create_task_group() as tg:
        got = receive(tg, p)
        async with anyio.create_task_group() as senders:
            for h in range(3):
                senders.start_soon(sender, h)
        await got.until(45)
        await p.close()
    assert sorted(map(tuple, got.data)) == [(h, i) for h in range(3) for i in range(15)]
    for h in range(3):
        assert [i for s, i in got.data if s == h] == list(range(15))


async def test_messages_sent_before_listening_are_kept(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "early")
    for text in ("one", "two", "three"):
        await hub_b.send_message("early", text)
    async with anyio.create_task_group() as tg:
        got = receive(tg, p)
        await got.until(3)
        await hub_b.send_message("early", "four")
        await got.until(4)
        await p.close()
    assert got.data == ["one", "two", "three", "four"]


async def test_messages_nowait_takes_what_arrived_and_shares_the_cursor(
    make_hub: HubFactory,
) -> None:
    hub = await make_hub()
    p = await start(hub, "nowait")
    assert p.messages_nowait() == []  # starts listening
    await hub.send_message("nowait", 1)
    await hub.send_message("nowait", 2)
    taken: list[Any] = []

    def both() -> bool:
        taken.extend(m.data for m in p.messages_nowait())
        return len(taken) >= 2

    await wait_until(both, within=5, interval=0.01, what="the two messages")
    assert taken == [1, 2]
    await hub.send_message("nowait", 3)
    async with anyio.create_task_group() as tg:
        got = receive(tg, p)
        await got.until(1)
        await p.close()
    assert got.data == [3]  # what messages_nowait took is not delivered again


@pytest.mark.parametrize("via", ["renewal", "reconnect"])
async def test_missed_signal_is_still_delivered(
    store: Store, make_hub: HubFactory, via: str
) -> None:
    # renewal: the inbox reads the store again every renew_interval (0.2 s here).
    # reconnect: no read is due for 10 s; a control-bus reconnect makes the inbox read at once.
    if via == "reconnect" and store.kind == "memory":
        pytest.skip("the memory backend has no connection to lose")
    hub = await make_hub(lease_ttl=30.0 if via == "reconnect" else 0.6)
    p = await start(hub, "missed")
    async with anyio.create_task_group() as tg:
        got = receive(tg, p)
        await hub.send_message("missed", "signalled")
        await got.until(1)
        await store_silently(store, "missed", "silent")
        if via == "reconnect":
            store.drop_pubsub()
        await got.until(2, within=5)
        await hub.send_message("missed", "after")
        await got.until(3)
        await p.close()
    assert got.data == ["signalled", "silent", "after"]


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("how", ["done", "cancelled", "lapsed"])
async def test_message_for_a_finished_session_is_refused(
    store: Store, make_hub: HubFactory, how: str
) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "over")
    if how == "done":
        await p.close()
    elif how == "cancelled":
        await hub_b.cancel("over")
        with anyio.fail_after(5):
            await p.cancelled.wait()
        await p.close()
    else:
        hub_a._forget(p)  # stops renewing, as a crashed instance would
        store.lapse_lease("over")
    with pytest.raises(SessionFinished):
        await hub_b.send_message("over", "too late")
    info = await hub_b.status("over")
    assert info is not None
    assert info.state is {"done": State.DONE, "cancelled": State.CANCELLED}.get(how, State.FAILED)


async def test_message_for_an_unknown_session_raises_and_creates_nothing(
    store: Store, make_hub: HubFactory
) -> None:
    hub = await make_hub()
    with pytest.raises(SessionNotFound):
        await hub.send_message("ghost", "hello", key="k1")
    assert store.key_count() == 0


async def test_message_over_the_size_limit_is_refused(make_hub: HubFactory) -> None:
    hub = await make_hub(max_message_bytes=100)
    await start(hub, "big")
    with pytest.raises(LimitExceeded):
        await hub.send_message("big", "x" * 100)
    with pytest.raises(ValueError):
        await hub.send_message("big", "x", key="no spaces")


async def test_messages_per_generation_are_capped_and_each_generation_has_its_own(
    store: Store, make_hub: HubFactory
) -> None:
    """``max_messages`` and ``max_messages_bytes`` count a generation's messages in the store,
    across instances; a refused message is not stored, a retried key still gets its receipt,
    and a new generation starts with a fresh budget."""
    a = await make_hub(max_messages=3, max_messages_bytes=1000)
    b = await make_hub(max_messages=3, max_messages_bytes=1000)
    await start(a, "cap")
    await a.send_message("cap", 1, key="k1")
    await b.send_message("cap", 2)
    await a.send_message("cap", 3)
    with pytest.raises(LimitExceeded, match="max_messages"):
        await b.send_message("cap", 4)
    assert (await b.send_message("cap", 1, key="k1")).duplicate
    second = await reclaim(store, b, "cap")
    receipt = await a.send_message("cap", "x" * 900)  # 902 bytes of JSON
    assert receipt.generation == second.generation
    with pytest.raises(LimitExceeded, match="max_messages_bytes"):
        await a.send_message("cap", "x" * 97)  # 99 more: 1001 > 1000
    await a.send_message("cap", "x" * 96)  # exactly 1000
    async with anyio.create_task_group() as tg:
        received = receive(tg, second)
        await received.until(2)
        tg.cancel_scope.cancel()
    assert [len(d) for d in received.data] == [900, 96]


# --------------------------------------------------------------------------- generations


async def test_a_stale_generation_does_not_receive_the_new_ones_messages(
    store: Store, make_hub: HubFactory
) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    old = await start(hub_a, "gens")
    async with anyio.create_task_group() as tg:
        got_old = receive(tg, old)
        await hub_b.send_message("gens", "for the old one")
        await got_old.until(1)
        new = await reclaim(store, hub_b, "gens")
        assert new.generation > old.generation
        got_new = receive(tg, new)
        receipt = await hub_a.send_message("gens", "for the new one")
        assert receipt.generation == new.generation
        await got_new.until(1)
        with anyio.fail_after(5):
            await got_old.ended.wait()  # the old producer learnt it lost the session
        await new.close()
    assert got_old.data == ["for the old one"]
    assert got_new.data == ["for the new one"]  # a new generation starts with no message
    assert got_new.messages[0].id == f"{new.generation}-1"


async def test_cancel_and_close_end_messages(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    c = await start(hub_a, "to-cancel")
    d = await start(hub_a, "to-close")
    async with anyio.create_task_group() as tg:
        got_c, got_d = receive(tg, c), receive(tg, d)
        await hub_b.send_message("to-cancel", "x")
        await got_c.until(1)
        await hub_b.cancel("to-cancel")
        await d.close()
        with anyio.fail_after(5):
            await got_c.ended.wait()
            await got_d.ended.wait()
    await c.close()
    # A producer that stopped yields nothing more, and no iterator waits forever.
    with anyio.fail_after(5):
        assert [m async for m in d.messages()] == []


# --------------------------------------------------------------------------- idempotency


async def test_a_retried_key_is_stored_once_and_answers_the_first_receipt(
    make_hub: HubFactory,
) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "retry")
    first = await hub_b.send_message("retry", "once", key="client-1")
    again = await hub_a.send_message("retry", "once", key="client-1")
    assert again.id == first.id and again.duplicate and not first.duplicate
    other = await hub_b.send_message("retry", "twice", key="client-2")
    async with anyio.create_task_group() as tg:
        got = receive(tg, p)
        await got.until(2)
        await p.close()
    assert got.data == ["once", "twice"]
    assert [m.id for m in got.messages] == [first.id, other.id]
    # The answer to a retry after the generation ended is still the first receipt.
    late = await hub_b.send_message("retry", "once", key="client-1")
    assert late.id == first.id and late.duplicate
    with pytest.raises(SessionFinished):
        await hub_b.send_message("retry", "new", key="client-3")


# --------------------------------------------------------------------------- keys


async def test_message_keys_have_a_ttl_and_delete_removes_them(
    store: Store, make_hub: HubFactory
) -> None:
    retention = 120.0
    hub = await make_hub(retention=retention)
    p = await start(hub, "kept")
    await hub.send_message("kept", "m", key="k")
    ttls = store.ttls()
    # Redis: meta, log, lease, msgs, msgkeys; PostgreSQL: the session row and the key's row.
    assert len(ttls) == {"memory": 1, "postgres": 2}.get(store.kind, 5), ttls
    for key, ttl in ttls.items():
        assert 0 < ttl <= retention, (key, ttl)
    await hub.delete("kept")
    assert store.key_count() == 0
    with anyio.fail_after(5):
        await p.cancelled.wait()  # the deletion reached the producer
    # A new session under the same id starts without the old messages or keys.
    q = await start(hub, "kept")
    fresh = await hub.send_message("kept", "new", key="k")
    assert not fresh.duplicate and fresh.id == f"{q.generation}-1"
    await q.close()
