"""Conformance of fan-in (several named producers in one session) on every backend.

Same fixtures as ``tests/conformance/test_conformance.py`` (memory, redis, redis-cluster; hubs that share one
store): the owner admits sub-producers, which join on the same or another hub; every chunk of
every producer is totally ordered by the session's cursor and read identically by every
subscriber; sub-producers are fenced by the owner's generation.
"""

from __future__ import annotations

import itertools

import anyio
import anyio.lowlevel
import pytest
from support.conformance import (
    HubFactory,
    Store,
    chunks_of,
    collect,
    follow,
    reclaim,
    start,
    until_compacted,
)

from fastapi_streamhub import (
    Chunk,
    Cursor,
    End,
    Event,
    Grant,
    LeaseExpired,
    OwnershipLost,
    SessionDeleted,
    StaleGeneration,
    State,
    StreamClosed,
    StreamHub,
    SubProducer,
)
from fastapi_streamhub._producer import Producer
from fastapi_streamhub.backends.base import Lost, SharedAppend

pytestmark = pytest.mark.anyio


def signature(chunks: list[Chunk]) -> list[tuple[str, str | None, object]]:
    return [(str(c.cursor), c.producer, c.data) for c in chunks]


async def write(producer: Producer, label: str, n: int, *, every: int = 3) -> None:
    """``n`` chunks ``<label><i>``, some published (awaited), some sent, yielding in between."""
    for i in range(n):
        if i % every == 0:
            await producer.publish(f"{label}{i}")
        else:
            await producer.send(f"{label}{i}")
        await anyio.lowlevel.checkpoint()
    await producer.flush()


async def owner_with_subs(
    hub_a: StreamHub, hub_b: StreamHub, sid: str
) -> tuple[Producer, SubProducer, SubProducer]:
    """The owner on A, "planner" joined on A, "coder" joined on B from the grant's text."""
    owner = await start(hub_a, sid)
    planner = await hub_a.join(await owner.admit("planner"))
    coder = await hub_b.join(str(await owner.admit("coder")))
    return owner, planner, coder


# --------------------------------------------------------------------------- order


async def test_producers_interleave_in_one_total_order_read_alike_everywhere(
    make_hub: HubFactory,
) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    n = 40
    async with anyio.create_task_group() as tg:
        # Followers from before the first chunk, on both hubs.
        owner = await start(hub_a, "fan")
        early = [follow(tg, hub.subscribe("fan")) for hub in (hub_a, hub_b)]
        await owner.publish("intro")  # written on the single-producer path
        planner = await hub_a.join(await owner.admit("planner"))
        coder = await hub_b.join(str(await owner.admit("coder")))
        assert isinstance(planner, SubProducer) and planner.name == "planner"
        late: list[object] = []
        async with anyio.create_task_group() as writers:
            writers.start_soon(write, owner, "o", n)
            writers.start_soon(write, planner, "p", n)
            writers.start_soon(write, coder, "c", n)
            # Joins while the writers run, live, from the start and batched.
            late.append(follow(tg, hub_b.subscribe("fan", batch=True)))
        assert await planner.close() is State.DONE
        assert await coder.close() is State.DONE
        await owner.publish(Event({"summary": True}, "summary"))
        assert await owner.close() is State.DONE

    total = 1 + 3 * n + 1
    reference = chunks_of(await early[0].result())
    assert [c.cursor for c in reference] == [
        Cursor(owner.generation, o) for o in range(1, total + 1)
    ]
    for f in early[1:]:
        assert signature(chunks_of(await f.result())) == signature(reference)
    replay = await collect(hub_b.subscribe("fan"))
    assert replay[-1] == End(State.DONE)
    assert signature(chunks_of(replay)) == signature(reference)
    batched = await late[0].result()  # type: ignore[attr-defined]
    flat = [c for item in batched for c in getattr(item, "chunks", [item]) if isinstance(c, Chunk)]
    assert signature(flat) == signature(reference)

    # Names on chunks; each producer's own order kept; every chunk exactly once.
    by_name = {
        name: [c.data for c in group]
        for name, group in itertools.groupby(
            sorted(reference, key=lambda c: str(c.producer)), key=lambda c: c.producer
        )
    }
    assert by_name["planner"] == [f"p{i}" for i in range(n)]
    assert by_name["coder"] == [f"c{i}" for i in range(n)]
    assert by_name[None] == ["intro", *(f"o{i}" for i in range(n)), {"summary": True}]
    assert reference[-1].event == "summary" and reference[-1].producer is None
    # The writers really interleaved (not one after the other).
    switches = sum(1 for a, b in itertools.pairwise(reference) if a.producer != b.producer)
    assert switches > 6, switches


async def test_publish_returns_the_cursor_the_store_assigned(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    owner, planner, coder = await owner_with_subs(hub_a, hub_b, "cursors")
    gen = owner.generation
    assert await owner.publish("a") == Cursor(gen, 1)
    assert await coder.publish("b") == Cursor(gen, 2)
    assert await planner.publish("c") == Cursor(gen, 3)
    await planner.send("d")
    await owner.send("e")
    assert await planner.flush() == Cursor(gen, 4)
    assert await owner.flush() == Cursor(gen, 5)
    assert owner.cursor == Cursor(gen, 5) and coder.cursor == Cursor(gen, 2)
    info = await hub_b.status("cursors")
    assert info is not None and info.chunks == 5 and info.last_event_id == f"{gen}-5"
    await owner.close()


async def test_resume_mid_stream_is_exact(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    owner, planner, coder = await owner_with_subs(hub_a, hub_b, "resume-fan")
    async with anyio.create_task_group() as writers:
        writers.start_soon(write, owner, "o", 12)
        writers.start_soon(write, planner, "p", 12)
        writers.start_soon(write, coder, "c", 12)
    await planner.close()
    await coder.close()
    await owner.close()
    full = chunks_of(await collect(hub_a.subscribe("resume-fan")))
    assert len(full) == 36
    for k in range(0, 37, 5):
        after = full[k - 1].cursor if k else None
        items = await collect(hub_b.subscribe("resume-fan", after=after))
        assert signature(chunks_of(items)) == signature(full[k:])
        assert items[-1] == End(State.DONE)


# --------------------------------------------------------------------------- parts


async def test_sub_producer_ends_its_part_while_the_others_go_on(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    owner, planner, coder = await owner_with_subs(hub_a, hub_b, "parts")
    grant = coder.grant
    await coder.publish("c0")
    async with coder:
        await coder.publish("c1")
    assert coder.closed
    with pytest.raises(StreamClosed):
        await coder.publish("late")
    with pytest.raises(StreamClosed):
        await hub_b.join(grant)  # that part is over

    await planner.publish("p0")
    await owner.publish("o0")
    assert await hub_a.state("parts") is State.ACTIVE
    await planner.close()
    await owner.close()
    items = await collect(hub_b.subscribe("parts"))
    assert [(c.producer, c.data) for c in chunks_of(items)] == [
        ("coder", "c0"),
        ("coder", "c1"),
        ("planner", "p0"),
        (None, "o0"),
    ]
    assert items[-1] == End(State.DONE)


async def test_owner_close_ends_the_session_and_refuses_its_sub_producers(
    make_hub: HubFactory,
) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    owner, planner, coder = await owner_with_subs(hub_a, hub_b, "owner-close")
    await coder.publish("c0")
    async with anyio.create_task_group() as tg:
        f = follow(tg, hub_b.subscribe("owner-close"))
        await owner.close()
        items = await f.result()
    assert items[-1] == End(State.DONE)
    with pytest.raises(OwnershipLost):
        await coder.publish("too late")
    assert coder.cancelled.is_set()
    # The other one learns without writing, from its hub's round.
    with anyio.fail_after(10):
        await planner.cancelled.wait()
    with pytest.raises(OwnershipLost):
        await planner.publish("too late")
    with pytest.raises(OwnershipLost):
        await hub_b.join(Grant("owner-close", owner.generation, "planner"))
    assert await planner.close() is State.FAILED  # its part ended with the session


@pytest.mark.parametrize("how", ["reclaimed", "lapsed", "deleted"])
async def test_sub_producers_lose_the_session_with_their_owner(
    store: Store, make_hub: HubFactory, how: str
) -> None:
    options = {"lease_ttl": 0.6}
    hub_a, hub_b, hub_c = [await make_hub(**options) for _ in range(3)]
    owner, planner, coder = await owner_with_subs(hub_a, hub_b, "fenced")
    await coder.publish("c0")
    expected: type[OwnershipLost]
    if how == "reclaimed":
        hub_a._forget(owner)  # the owner's process stops renewing...
        new = await reclaim(store, hub_c, "fenced")  # ...and another instance claims again
        assert new.generation > owner.generation
        expected = StaleGeneration
    elif how == "lapsed":
        hub_a._forget(owner)  # its lease runs out; nobody claims again
        expected = LeaseExpired
    else:
        assert await hub_c.delete("fenced")
        expected = SessionDeleted
    with anyio.fail_after(10):
        await coder.cancelled.wait()
        await planner.cancelled.wait()
    for sub in (coder, planner):
        with pytest.raises(expected):
            await sub.publish("zombie")
    with pytest.raises(OwnershipLost):
        await hub_b.join(coder.grant)
    if how == "reclaimed":
        await new.close()
    if how != "deleted":
        items = await collect(hub_b.subscribe("fenced"))
        assert "zombie" not in [c.data for c in chunks_of(items)]


async def test_cancel_reaches_every_producer_of_the_session(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    owner, planner, coder = await owner_with_subs(hub_a, hub_b, "cancel-fan")
    await hub_b.cancel("cancel-fan")
    with anyio.fail_after(5):
        for p in (owner, planner, coder):
            await p.cancelled.wait()
    assert coder.cancel_reason == "cancelled"
    await coder.close()
    await planner.close()
    assert await owner.close() is State.CANCELLED


async def test_a_later_join_takes_the_part_over(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    owner = await start(hub_a, "takeover")
    grant = await owner.admit("worker")
    first = await hub_a.join(grant)
    await first.publish("w0")
    second = await hub_b.join(grant)  # e.g. the worker restarted elsewhere
    await second.publish("w1")
    with pytest.raises(StaleGeneration):
        await first.publish("from the old handle")
    assert first.cancelled.is_set()
    await second.close()
    await owner.close()
    items = await collect(hub_a.subscribe("takeover"))
    assert [c.data for c in chunks_of(items)] == ["w0", "w1"]


# --------------------------------------------------------------------------- exactly once


async def test_a_retried_shared_batch_is_applied_once(make_hub: HubFactory) -> None:
    """What a lost reply looks like to the store: the same batch (same part, token and
    sequence number) arrives twice; the second is answered with the first's offset."""
    hub = await make_hub()
    owner = await start(hub, "retry")
    sub = await hub.join(await owner.admit("worker"))
    await owner.publish("o0")
    backend = hub.backend
    name, token = "worker", sub._buffer.part[1] if sub._buffer.part else ""
    sid, gen = "retry", owner.generation

    def batch(seq: int, *texts: str) -> SharedAppend:
        payloads = [b"x" + f'["t","{t}",null,"worker"]'.encode() for t in texts]
        return SharedAppend(sid, gen, 0, payloads, name, token, seq)

    assert await backend.append_shared([batch(1, "a", "b")]) == [2]
    assert await backend.append_shared([batch(1, "a", "b")]) == [2]  # the retry
    assert await backend.append_shared([batch(2, "c")]) == [4]
    assert await backend.append_shared([batch(2, "c"), batch(3, "d")]) == [4, 5]
    stale = SharedAppend(sid, gen, 0, [b"tz"], name, "another-token", 4)
    assert await backend.append_shared([stale]) == [Lost("stale", reason="replaced")]
    unknown = SharedAppend(sid, gen, 0, [b"tz"], "nobody", token, 1)
    assert await backend.append_shared([unknown]) == [Lost("gone", reason="not_admitted")]
    await owner.close()
    items = await collect(hub.subscribe("retry"))
    assert [(c.cursor.offset, c.producer, c.data) for c in chunks_of(items)] == [
        (1, None, "o0"),
        (2, "worker", "a"),
        (3, "worker", "b"),
        (4, "worker", "c"),
        (5, "worker", "d"),
    ]


# --------------------------------------------------------------------------- API edges


async def test_grants_and_names_are_checked(make_hub: HubFactory) -> None:
    hub = await make_hub()
    owner = await start(hub, "edges")
    for bad in ("", "has space", "a:b", "x" * 65, "-lead"):
        with pytest.raises(ValueError):
            await owner.admit(bad)
    grant = await owner.admit("ok_name-1.2")
    assert Grant.parse(str(grant)) == grant == Grant("edges", owner.generation, "ok_name-1.2")
    assert str(Grant("a:b.c", 7, "n")) == "7:n:a:b.c"
    assert Grant.parse("7:n:a:b.c") == Grant("a:b.c", 7, "n")
    for bad in ("", "x:n:sid", "7:n", "7::sid", "7:n:bad sid"):
        with pytest.raises(ValueError):
            Grant.parse(bad)
    with pytest.raises(OwnershipLost):  # never admitted
        await hub.join(Grant("edges", owner.generation, "stranger"))
    with pytest.raises(StaleGeneration):  # another generation
        await hub.join(Grant("edges", owner.generation - 1, "ok_name-1.2"))
    await owner.close()
    with pytest.raises(OwnershipLost):
        await hub.join(grant)


async def test_a_compacted_fan_in_stream_keeps_every_producer_and_cursor(
    store: Store, make_hub: HubFactory
) -> None:
    """Fan-in and compaction together: the folded log keeps each chunk's producer, and a resume
    from every cursor gives the exact suffix."""
    hub_a, hub_b = await make_hub(), await make_hub()
    owner, planner, coder = await owner_with_subs(hub_a, hub_b, "fanin-compact")
    async with anyio.create_task_group() as tg:
        tg.start_soon(write, owner, "o", 15)
        tg.start_soon(write, planner, "p", 15)
        tg.start_soon(write, coder, "c", 15)
    await planner.close()
    await coder.close()
    await owner.close()
    await until_compacted(store, "fanin-compact")
    whole = chunks_of(await collect(hub_a.subscribe("fanin-compact")))
    assert [c.cursor.offset for c in whole] == list(range(1, 46))
    for name, label in ((None, "o"), ("planner", "p"), ("coder", "c")):
        assert [c.data for c in whole if c.producer == name] == [f"{label}{i}" for i in range(15)]
    for i, c in enumerate(whole):
        rest = chunks_of(await collect(hub_b.subscribe("fanin-compact", after=c.cursor)))
        assert signature(rest) == signature(whole[i + 1 :])
