"""Conformance suite: the semantics of DESIGN.md section 4, run on every backend.

Every test gets ``make_hub`` (tests/conformance/conftest.py): a factory of started hubs that share
one store (memory: one ``MemoryBackend``; redis: one server, flushed before the test), so "two
instances" are two hubs from the factory. ``store`` offers the few out-of-band operations a test
needs (tests/support/conformance.py).

Synchronisation is by events and awaits; sleeps appear only where elapsed time is what a test is
about (lease expiry, cancel(wait=...), the idle-subscriber window), with generous slack.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from support.conformance import (
    Follower,
    HubFactory,
    Item,
    Store,
    assert_contiguous,
    chunks_of,
    collect,
    follow,
    reclaim,
    start,
    texts,
    tok,
)
from support.redis_server import RedisServer

from fastapi_streamhub import (
    Batch,
    Chunk,
    Cursor,
    End,
    InvalidCursor,
    Metadata,
    OwnershipLost,
    Producer,
    Reset,
    SessionDeleted,
    SessionNotFound,
    StaleGeneration,
    State,
    StreamHub,
)
from fastapi_streamhub.backends.base import Lost

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- 1. single producer


async def test_exactly_one_created_among_concurrent_registers_on_one_hub(
    make_hub: HubFactory,
) -> None:
    hub = await make_hub()
    regs = []

    async def claim() -> None:
        regs.append(await hub.register("race"))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(claim)

    winners = [r for r in regs if r.created]
    assert len(regs) == 50 and len(winners) == 1
    winner = winners[0]
    assert winner.producer is not None and winner.producer.generation == winner.generation
    for reg in regs:
        assert reg.generation == winner.generation
        assert reg.state is State.ACTIVE
        if not reg.created:
            assert reg.producer is None
    await winner.producer.close()


async def test_exactly_one_created_among_concurrent_registers_across_two_hubs(
    store: Store, make_hub: HubFactory
) -> None:
    hub_a, hub_b = await make_hub(lease_ttl=1.0), await make_hub(lease_ttl=1.0)

    async def race(sid: str) -> list[Any]:
        regs: list[Any] = []

        async def claim(hub: StreamHub) -> None:
            regs.append(await hub.register(sid))

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(claim, hub_a if i % 2 else hub_b)
        assert len(regs) == 50
        return regs

    regs = await race("split")
    winners = [r for r in regs if r.created]
    assert len(winners) == 1
    assert {r.generation for r in regs} == {winners[0].generation}
    first = winners[0].producer
    assert first is not None

    # Reclaiming a session whose lease lapsed is a race too: still exactly one winner, newer.
    (hub_a if first in hub_a._producers.values() else hub_b)._forget(first)
    store.lapse_lease("split")
    regs = await race("split")
    winners = [r for r in regs if r.created]
    assert len(winners) == 1
    assert winners[0].generation > first.generation
    assert {r.generation for r in regs} == {winners[0].generation}
    assert winners[0].producer is not None
    await winners[0].producer.close()


# --------------------------------------------------------------------------- 2. fencing


async def _stale_publish(p: Producer) -> None:
    await p.publish("late")


async def _stale_send_flush(p: Producer) -> None:
    await p.send("late")
    await p.flush()


async def _stale_metadata(p: Producer) -> None:
    await p.set_metadata({"late": True})


async def _stale_close(p: Producer) -> None:
    await p.close()


STALE_WRITES = pytest.mark.parametrize(
    "write",
    [
        pytest.param(_stale_publish, id="publish"),
        pytest.param(_stale_send_flush, id="send_flush"),
        pytest.param(_stale_metadata, id="set_metadata"),
        pytest.param(_stale_close, id="close"),
    ],
)


@STALE_WRITES
async def test_stale_generation_cannot_write(
    store: Store, make_hub: HubFactory, write: Callable[[Producer], Awaitable[None]]
) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    old = await start(hub_a, "fenced")
    await old.publish("before")
    await old.set_metadata({"owner": "old"})
    hub_a._forget(old)  # the old producer stops renewing (e.g. its process hangs)

    new = await reclaim(store, hub_b, "fenced")
    assert new.generation > old.generation

    with pytest.raises(OwnershipLost) as caught:
        await write(old)
    assert isinstance(caught.value, StaleGeneration)
    assert isinstance(old.lost, StaleGeneration)

    # Nothing of the old producer reached the store; the new generation is untouched.
    info = await hub_b.status("fenced")
    assert info is not None
    assert (info.generation, info.state, info.chunks) == (new.generation, State.ACTIVE, 0)
    assert info.metadata is None

    # ... and the new producer works normally.
    assert await new.publish("fresh") == Cursor(new.generation, 1)
    assert await new.close() is State.DONE
    items = await collect(hub_a.subscribe("fenced"))
    assert texts(items) == ["fresh"] and items[-1] == End(State.DONE)

    # Every further write of the old producer is refused too (after its own close: as closed).
    for again in (_stale_publish, _stale_metadata):
        with pytest.raises(OwnershipLost):
            await again(old)


@STALE_WRITES
async def test_stale_generation_refused_write_fires_cancel(
    store: Store, make_hub: HubFactory, write: Callable[[Producer], Awaitable[None]]
) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    told: list[str | None] = []
    old = await start(hub_a, "fenced", on_cancel=lambda p: told.append(p.cancel_reason))
    hub_a._forget(old)
    new = await reclaim(store, hub_b, "fenced")

    with pytest.raises(OwnershipLost):
        await write(old)
    await new.close()
    with anyio.fail_after(1):
        await old.cancelled.wait()
    assert told == [old.cancel_reason] and old.cancel_reason is not None


async def test_stale_generation_learns_from_lease_renewal_without_writing(
    store: Store, make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"lease_ttl": 0.6}  # renewal every 0.2 s
    hub_a, hub_b = await make_hub(**options), await make_hub(**options)
    told: list[str | None] = []
    old = await start(hub_a, "renewed", on_cancel=lambda p: told.append(p.cancel_reason))

    # hub_a's next renewal waits for the claim: one landing between the lapse and the claim
    # would find no lease and end the old producer with LeaseExpired instead.
    parked, claimed = anyio.Event(), anyio.Event()
    renew = hub_a.backend.renew

    async def renew_after_the_claim(
        leases: Sequence[tuple[str, int]], *, retention: bool = False
    ) -> list[bool | Lost]:
        parked.set()
        await claimed.wait()
        return await renew(leases, retention=retention)

    monkeypatch.setattr(hub_a.backend, "renew", renew_after_the_claim)
    with anyio.fail_after(3):  # next renewal of hub_a is at most 0.2 s away
        await parked.wait()  # and none is in flight
    new = await reclaim(store, hub_b, "renewed")  # old still holds the session on hub_a
    claimed.set()  # its parked renewal now meets the new generation

    with anyio.fail_after(3):
        await old.cancelled.wait()
    assert isinstance(old.lost, StaleGeneration)
    assert told == [old.cancel_reason]
    with pytest.raises(StaleGeneration):
        await old.publish("late")
    assert await old.close() is State.FAILED  # nothing written: the session is the new one's
    info = await hub_b.status("renewed")
    assert info is not None and (info.generation, info.state) == (new.generation, State.ACTIVE)
    await new.close()


# --------------------------------------------------------------------------- 3. replay -> live


async def test_replay_then_live_every_chunk_exactly_once_in_order(make_hub: HubFactory) -> None:
    total = 3000
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "long")
    gen = p.generation
    # (join after chunk n, start after offset, buffer)
    plan: list[tuple[int, int, int | None]] = [
        (0, 0, None),  # before the first chunk
        (500, 0, None),  # from the start while live
        (800, 0, None),
        (1500, 1000, None),  # mid-stream cursor
        (2500, 2500, None),  # cursor at the very head
    ]
    followers: list[tuple[int, Follower]] = []
    cursors: dict[int, Cursor] = {}
    async with anyio.create_task_group() as tg:
        for i in range(1, total + 1):
            for join_at, after, buffer in plan:
                if join_at == i - 1:
                    cursor = Cursor(gen, after) if after else None
                    if after:
                        assert cursors[after] == cursor
                    f = follow(tg, hub_b.subscribe("long", after=cursor, buffer=buffer))
                    followers.append((after, f))
                    if after < i - 1:
                        await f.first_chunk()  # it really joined while the stream is live
            if i % 500 == 0:
                cursors[i] = await p.publish(tok(i))
                assert cursors[i] == Cursor(gen, i)
            else:
                await p.send(tok(i))
            if i % 20 == 0:
                await anyio.lowlevel.checkpoint()  # let the writer and the subscribers run
        assert await p.flush() == Cursor(gen, total)
        assert await p.close() is State.DONE
        # After the end: a pure replay from near the end.
        followers.append(
            (total - 1, follow(tg, hub_b.subscribe("long", after=f"{gen}-{total - 1}")))
        )

    for after, f in followers:
        items = await f.result()
        assert items[-1] == End(State.DONE)
        chunks = chunks_of(items)
        assert_contiguous(chunks, gen, after + 1, total)
        assert [c.data for c in chunks] == [tok(i) for i in range(after + 1, total + 1)]
        assert not any(isinstance(i, Reset) for i in items)


async def test_overflowing_subscriber_repairs_from_store_without_losing_chunks(
    request: pytest.FixtureRequest, store: Store, make_hub: HubFactory
) -> None:
    """A subscriber whose buffer overflows on every live batch re-reads the store each time.

    While it re-reads, the producer keeps appending: what was appended after the read must
    still be delivered (live or by the next read), never reported as lost.
    """
    total = 2000
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "slow")
    await p.publish(tok(1))
    async with anyio.create_task_group() as tg:
        f = follow(tg, hub_b.subscribe("slow", buffer=1))  # every live batch overflows it
        await f.first_chunk()
        for i in range(2, total + 1):
            await p.send(tok(i))
            if i % 20 == 0:
                await anyio.lowlevel.checkpoint()
        await p.close()
        items = await f.result()
    assert [i for i in items if isinstance(i, Reset)] == []
    assert_contiguous(chunks_of(items), p.generation, 1, total)
    assert texts(items) == [tok(i) for i in range(1, total + 1)]
    assert items[-1] == End(State.DONE)


# --------------------------------------------------------------------------- 4. finished + batch


async def test_subscribe_to_finished_stream_replays_all_and_ends(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "finished")
    for i in range(1, 11):
        await p.send(tok(i))
    await p.close()

    items = await collect(hub_b.subscribe("finished"))
    assert_contiguous(chunks_of(items), p.generation, 1, 10)
    assert texts(items) == [tok(i) for i in range(1, 11)]
    assert items[-1] == End(State.DONE) and len(items) == 11


def leading_batches(items: Sequence[Item]) -> tuple[list[Batch], list[Item]]:
    """The Batch items a subscription starts with, and what follows them."""
    n = 0
    while n < len(items) and isinstance(items[n], Batch):
        n += 1
    return [i for i in items[:n] if isinstance(i, Batch)], list(items[n:])


async def test_batch_replay_of_finished_stream_is_batches_then_end(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "finished")
    for i in range(1, 11):
        await p.send(tok(i))
    await p.send({"json": True})  # not text: in the batch, not in .text
    await p.close()

    # One Batch per page read (the first page may be small, so the first bytes go out early).
    items = await collect(hub_b.subscribe("finished", batch_replay=True))
    batches, rest = leading_batches(items)
    assert batches and rest == [End(State.DONE)]
    assert "".join(b.text for b in batches) == "".join(tok(i) for i in range(1, 11))
    chunks = [c for b in batches for c in b.chunks]
    assert_contiguous(chunks, p.generation, 1, 11)
    assert all(b.cursor == b.chunks[-1].cursor for b in batches)
    assert batches[-1].cursor == Cursor(p.generation, 11)

    # From a cursor: the batches hold only the suffix.
    items = await collect(
        hub_b.subscribe("finished", after=Cursor(p.generation, 7), batch_replay=True)
    )
    batches, rest = leading_batches(items)
    assert "".join(b.text for b in batches) == tok(8) + tok(9) + tok(10)
    assert rest == [End(State.DONE)]


async def test_batch_replay_of_live_stream_is_batches_then_live_chunks_then_end(
    make_hub: HubFactory,
) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "live")
    for i in range(1, 6):
        await p.publish(tok(i))
    async with anyio.create_task_group() as tg:
        f = follow(tg, hub_b.subscribe("live", batch_replay=True))
        await f.until(lambda items: sum(len(i.chunks) for i in items if isinstance(i, Batch)) >= 5)
        for i in range(6, 9):
            await p.publish(tok(i))
        await p.close()
        items = await f.result()
    batches, rest = leading_batches(items)
    assert "".join(b.text for b in batches) == "".join(tok(i) for i in range(1, 6))
    assert [type(i) for i in rest] == [Chunk, Chunk, Chunk, End]
    assert_contiguous(chunks_of(rest), p.generation, 6, 8)
    assert texts(rest) == [tok(6), tok(7), tok(8)]
    assert rest[-1] == End(State.DONE)


async def test_batch_mode_delivers_live_writes_as_batches(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "batched")
    await p.publish(tok(1))
    async with anyio.create_task_group() as tg:
        f = follow(tg, hub_b.subscribe("batched", batch=True))
        await f.until(lambda items: len(items) >= 1)
        for i in range(2, 40):
            await p.send(tok(i))
        await p.close()
        items = await f.result()
    assert all(isinstance(i, Batch) for i in items[:-1]) and items[-1] == End(State.DONE)
    chunks = [c for i in items if isinstance(i, Batch) for c in i.chunks]
    assert_contiguous(chunks, p.generation, 1, 39)
    assert "".join(i.text for i in items if isinstance(i, Batch)) == "".join(
        tok(i) for i in range(1, 40)
    )


# --------------------------------------------------------------------------- 5. resume


async def test_resume_from_every_cursor_gives_exactly_the_suffix(make_hub: HubFactory) -> None:
    n = 60
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "resume")
    for i in range(1, n + 1):
        await p.send(tok(i))
    await p.close()
    gen = p.generation

    for k in range(n + 1):
        after: Cursor | str = Cursor(gen, k) if k % 2 else f"{gen}-{k}"
        items = await collect(hub_b.subscribe("resume", after=after))
        assert_contiguous(chunks_of(items), gen, k + 1, n)
        assert texts(items) == [tok(i) for i in range(k + 1, n + 1)]
        assert items[-1] == End(State.DONE)
        assert len(items) == n - k + 1  # nothing else: no reset, no metadata


# --------------------------------------------------------------------------- 6. cursors


async def test_cursor_of_earlier_generation_resets_to_new_generation_start(
    make_hub: HubFactory,
) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    first = await start(hub_a, "gens")
    for i in range(1, 4):
        await first.publish(tok(i))
    await first.close()
    second = await start(hub_a, "gens", restart=True)
    assert second.generation > first.generation
    await second.publish("b1")
    await second.publish("b2")
    await second.close()

    items = await collect(hub_b.subscribe("gens", after=Cursor(first.generation, 2)))
    assert isinstance(items[0], Reset) and items[0].generation == second.generation
    assert_contiguous(chunks_of(items), second.generation, 1, 2)
    assert texts(items) == ["b1", "b2"] and items[-1] == End(State.DONE)
    assert len(items) == 4


async def test_cursor_of_earlier_generation_on_live_stream_resets_then_follows(
    make_hub: HubFactory,
) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    first = await start(hub_a, "gens")
    await first.publish("a1")
    await first.close(State.FAILED, "crashed")
    second = await start(hub_a, "gens")  # a failed session is reclaimable without restart
    await second.publish("b1")
    async with anyio.create_task_group() as tg:
        f = follow(tg, hub_b.subscribe("gens", after=Cursor(first.generation, 1)))
        await f.first_chunk()
        await second.publish("b2")
        await second.close()
        items = await f.result()
    assert isinstance(items[0], Reset) and items[0].generation == second.generation
    assert_contiguous(chunks_of(items), second.generation, 1, 2)
    assert items[-1] == End(State.DONE)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "abc",
        "1-",
        "-1",
        "0-1",
        "01-1",
        "1-2-3",
        "1.5-2",
        "1_2",
        " 1-2",
        "99999999999999999999-1",
    ],
)
async def test_malformed_cursor_raises_invalid_cursor(make_hub: HubFactory, cursor: str) -> None:
    hub = await make_hub()
    p = await start(hub, "cur")
    await p.publish("x")
    with pytest.raises(InvalidCursor):
        sub = hub.subscribe("cur", after=cursor)
        await sub.__anext__()
    await p.close()


async def test_cursor_ahead_of_stream_gives_reset_then_stored_stream(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "ahead")
    for i in range(1, 4):
        await p.publish(tok(i))
    await p.close()
    gen = p.generation
    for cursor in (Cursor(gen, 4), Cursor(gen, 99), Cursor(gen + 1_000_000, 1)):
        items = await collect(hub_b.subscribe("ahead", after=cursor))
        assert isinstance(items[0], Reset), cursor
        assert items[0].generation == gen
        assert_contiguous(chunks_of(items), gen, 1, 3)
        assert items[-1] == End(State.DONE)


# --------------------------------------------------------------------------- 7. cancel delivery


async def test_cancel_from_other_hub_reaches_producer_within_100ms(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    latencies = []
    for run in range(5):
        sid = f"fast-cancel-{run}"
        fired: list[float] = []
        p = await start(
            hub_a, sid, on_cancel=lambda _p, fired=fired: fired.append(time.perf_counter())
        )
        await p.publish("x")
        t0 = time.perf_counter()
        assert await hub_b.cancel(sid) is State.ACTIVE  # returns at once
        with anyio.fail_after(5):
            await p.cancelled.wait()
        latencies.append(fired[0] - t0)
        assert p.cancel_reason == "cancelled"
        assert await p.close() is State.CANCELLED
    assert statistics.median(latencies) < 0.1, latencies


@pytest.mark.parametrize("via", ["renewal", "reconnect"])
async def test_cancel_with_missed_live_message_arrives_via_durable_flag(
    store: Store, make_hub: HubFactory, via: str
) -> None:
    # renewal: renewal every 0.2 s reads the flag.
    # reconnect: a long lease, so no renewal is due; the control bus reconnects (its messages
    # may have been missed), which makes the hub renew, and so read the flag, at once.
    if via == "reconnect" and store.kind == "memory":
        pytest.skip("the memory backend has no connection to lose")
    hub = await make_hub(lease_ttl=30.0 if via == "reconnect" else 0.6)
    p = await start(hub, "durable")
    await p.publish("x")
    store.set_cancel_flag("durable")  # the flag only: no live message is ever sent
    assert not p.cancelled.is_set()
    if via == "reconnect":
        store.drop_pubsub()
    with anyio.fail_after(5):
        await p.cancelled.wait()
    assert p.cancel_reason == "cancelled"
    assert p.lost is None
    assert await p.close() is State.CANCELLED
    info = await hub.status("durable")
    assert info is not None and info.state is State.CANCELLED


# --------------------------------------------------------------------------- 8. cancel(wait)


async def test_cancel_wait_returns_final_state_when_producer_stops(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "polite")
    started = anyio.Event()

    async def produce() -> None:
        async with p:
            await p.publish("x")
            started.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        with anyio.fail_after(5):
            await started.wait()
        t0 = time.perf_counter()
        state = await hub_b.cancel("polite", wait=10)
        elapsed = time.perf_counter() - t0
    assert state is State.CANCELLED
    assert elapsed < 2.0
    assert await hub_b.state("polite") is State.CANCELLED


async def test_cancel_wait_returns_the_state_the_producer_chose(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()

    async def finish_as_done(p: Producer) -> None:
        await p.close(State.DONE)

    p = await start(hub_a, "chooser", on_cancel=finish_as_done)
    await p.publish("x")
    assert await hub_b.cancel("chooser", wait=10) is State.DONE
    # Cancelling a finished session is a no-op that reports its state, at once.
    t0 = time.perf_counter()
    assert await hub_b.cancel("chooser", wait=10) is State.DONE
    assert time.perf_counter() - t0 < 1.0


async def test_cancel_wait_gives_up_after_wait_when_producer_ignores_it(
    make_hub: HubFactory,
) -> None:
    hub_a, hub_b = await make_hub(lease_ttl=2.0), await make_hub(lease_ttl=2.0)
    p = await start(hub_a, "stubborn")
    await p.publish("x")
    wait = 0.5
    t0 = time.perf_counter()
    state = await hub_b.cancel("stubborn", wait=wait)
    elapsed = time.perf_counter() - t0
    assert state is State.ACTIVE
    assert wait - 0.05 <= elapsed < wait + 1.0
    assert p.cancelled.is_set()  # it was told, it just did not stop
    assert await hub_b.state("stubborn") is State.ACTIVE
    assert await p.close() is State.CANCELLED


async def test_cancel_of_unknown_session_raises_and_creates_nothing(
    store: Store, make_hub: HubFactory
) -> None:
    hub = await make_hub()
    with pytest.raises(SessionNotFound):
        await hub.cancel("ghost")
    t0 = time.perf_counter()
    with pytest.raises(SessionNotFound):
        await hub.cancel("ghost", wait=5)
    assert time.perf_counter() - t0 < 1.0
    assert store.key_count() == 0
    assert await hub.status("ghost") is None


# --------------------------------------------------------------------------- 9. lease expiry


async def test_vanished_producer_fails_by_lease_expiry_and_is_reclaimable(
    make_hub: HubFactory,
) -> None:
    lease_ttl, renew = 0.5, 0.5 / 3
    hub_a, hub_b = await make_hub(lease_ttl=lease_ttl), await make_hub(lease_ttl=lease_ttl)
    p = await start(hub_a, "vanish")
    other = await start(hub_a, "alive")
    for i in range(1, 6):
        await p.publish(tok(i))
    assert await hub_b.active(["vanish", "alive", "unknown"]) == ["vanish", "alive"]

    async with anyio.create_task_group() as tg:
        f = follow(tg, hub_b.subscribe("vanish"))
        await f.until(lambda items: len(chunks_of(items)) == 5)
        hub_a._forget(p)  # stops renewing, never closes: as if its process died
        t0 = time.perf_counter()
        items = await f.result(within=10)
    elapsed = f.ended_at - t0 if f.ended_at is not None else float("inf")
    assert items[-1] == End(State.FAILED, "lease_expired")
    assert_contiguous(chunks_of(items), p.generation, 1, 5)
    # Within one lease (plus a renewal interval) of the last renewal, with slack for a loaded box.
    assert 0 < elapsed <= lease_ttl + renew + 1.5, elapsed

    # Its output stays readable.
    replay = await collect(hub_a.subscribe("vanish"))
    assert texts(replay) == [tok(i) for i in range(1, 6)]
    assert replay[-1] == End(State.FAILED, "lease_expired")
    info = await hub_a.status("vanish")
    assert info is not None and (info.state, info.reason) == (State.FAILED, "lease_expired")
    assert await hub_a.active(["vanish", "alive"]) == ["alive"]

    # Reclaimable, with a higher generation; the old producer is fenced off.
    new = await start(hub_b, "vanish")
    assert new.generation > p.generation
    with pytest.raises(OwnershipLost):
        await p.publish("zombie")
    assert await hub_a.active(["vanish", "alive"]) == ["vanish", "alive"]
    await new.close()
    await other.close()


async def test_lapsed_lease_is_noticed_by_register_and_cancel(
    store: Store, make_hub: HubFactory
) -> None:
    hub_a, hub_b = await make_hub(lease_ttl=0.5), await make_hub(lease_ttl=0.5)
    for sid, notice in (("by-cancel", "cancel"), ("by-register", "register")):
        p = await start(hub_a, sid)
        await p.publish("x")
        hub_a._forget(p)
        store.lapse_lease(sid)
        if notice == "cancel":
            assert await hub_b.cancel(sid) is State.FAILED
            assert (await hub_b.status(sid)).reason == "lease_expired"  # type: ignore[union-attr]
            items = await collect(hub_b.subscribe(sid))
            assert texts(items) == ["x"] and items[-1] == End(State.FAILED, "lease_expired")
        else:
            new = await start(hub_b, sid)
            assert new.generation > p.generation
            await new.close()
        with pytest.raises(OwnershipLost):
            await p.publish("zombie")
        assert await hub_b.active([sid]) == []


# --------------------------------------------------------------------------- 10. retention


async def test_every_key_has_a_ttl_within_retention(store: Store, make_hub: HubFactory) -> None:
    retention = 120.0
    hub_a, hub_b = (
        await make_hub(retention=retention, lease_ttl=0.5),
        await make_hub(retention=retention, lease_ttl=0.5),
    )

    def check(expected_keys: int) -> None:
        ttls = store.ttls()
        assert len(ttls) == expected_keys, ttls
        for key, ttl in ttls.items():
            assert 0 < ttl <= retention, (key, ttl)

    # Redis: a hash, a stream (from the claim: its start marker) and, while active, a lease key;
    # memory and PostgreSQL: one record (row) per session.
    rows = store.kind in ("memory", "postgres")
    p = await start(hub_a, "kept", metadata={"m": 1})
    check(1 if rows else 3)
    await p.publish("x")
    await p.set_metadata({"m": 2})
    check(1 if rows else 3)
    await p.close()
    check(1 if rows else 2)

    c = await start(hub_a, "cancelled")
    await c.publish("x")
    await hub_b.cancel("cancelled")
    with anyio.fail_after(5):
        await c.cancelled.wait()
    await c.close()
    f = await start(hub_a, "failed")
    await f.publish("x")
    hub_a._forget(f)
    store.lapse_lease("failed")
    assert await hub_b.cancel("failed") is State.FAILED
    r = await start(hub_b, "kept", restart=True)
    await r.publish("y")
    check(3 if rows else 7)
    await r.close()
    check(3 if rows else 6)


# --------------------------------------------------------------------------- 11. delete


async def test_delete_ends_subscribers_and_stops_producer(
    store: Store, make_hub: HubFactory
) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    told: list[str | None] = []
    p = await start(hub_a, "doomed", on_cancel=lambda p: told.append(p.cancel_reason))
    await p.publish("x")
    async with anyio.create_task_group() as tg:
        remote = follow(tg, hub_b.subscribe("doomed"))
        local = follow(tg, hub_a.subscribe("doomed"))
        await remote.first_chunk()
        await local.first_chunk()
        assert await hub_b.delete("doomed") is True
        for f in (remote, local):
            items = await f.result()
            assert texts(items) == ["x"]
            assert items[-1] == End(State.CANCELLED, "deleted")

    with anyio.fail_after(5):
        await p.cancelled.wait()
    assert told == ["deleted"]
    assert isinstance(p.lost, SessionDeleted)
    with pytest.raises(SessionDeleted):
        await p.publish("late")
    with pytest.raises(OwnershipLost):
        await p.set_metadata({"late": True})
    await p.close()
    assert await hub_a.status("doomed") is None
    assert await hub_b.delete("doomed") is False
    with pytest.raises(SessionNotFound):
        await hub_b.subscribe("doomed").__anext__()
    assert store.key_count() == 0  # nothing was recreated by the stopped producer


# --------------------------------------------------------------------------- 12. isolation


async def test_concurrent_sessions_never_mix(make_hub: HubFactory) -> None:
    n_sessions, n_chunks = 20, 200
    hub_a, hub_b = await make_hub(), await make_hub()
    sids = [f"s{j}" for j in range(n_sessions)]
    producers = {sid: await start(hub_a, sid) for sid in sids}
    async with anyio.create_task_group() as tg:
        followers = {
            sid: follow(tg, (hub_b if j % 2 else hub_a).subscribe(sid))
            for j, sid in enumerate(sids)
        }
        for sid in sids:
            await producers[sid].publish(f"{sid}/1")
        for sid in sids:
            await followers[sid].first_chunk()
        for i in range(2, n_chunks + 1):
            for sid in sids:
                await producers[sid].send(f"{sid}/{i}")
            await anyio.lowlevel.checkpoint()
        for sid in sids:
            await producers[sid].close()

        for sid in sids:
            items = await followers[sid].result()
            assert_contiguous(chunks_of(items), producers[sid].generation, 1, n_chunks)
            assert texts(items) == [f"{sid}/{i}" for i in range(1, n_chunks + 1)]
            assert items[-1] == End(State.DONE)


# --------------------------------------------------------------------------- 13. idle is silent


async def test_idle_subscriber_issues_no_redis_commands(
    redis_server: RedisServer, make_redis_hub: HubFactory
) -> None:
    # lease_ttl=30: no renewal (every 10 s) and no expiry check falls into the window below.
    hub_a, hub_b = await make_redis_hub(lease_ttl=30.0), await make_redis_hub(lease_ttl=30.0)
    p = await start(hub_a, "idle")
    async with anyio.create_task_group() as tg:
        f = follow(tg, hub_b.subscribe("idle"))
        await p.publish("first")
        await f.first_chunk()
        # A chunk received live: the replay (and its last page read) is over.
        await p.publish("live")
        await f.until(lambda items: len(chunks_of(items)) >= 2)
        before = redis_server.command_stats()
        await anyio.sleep(1.5)  # elapsed time is the subject here
        after = redis_server.command_stats()
        ignored = {"info", "config|resetstat"}
        diff = {
            name: after.get(name, 0) - before.get(name, 0)
            for name in set(before) | set(after)
            if name not in ignored and after.get(name, 0) != before.get(name, 0)
        }
        assert diff == {}, f"commands issued while idle: {diff}"
        await p.publish("second")
        await p.close()
        items = await f.result()
    assert texts(items) == ["first", "live", "second"]


# --------------------------------------------------------------------------- 14. metadata


async def test_metadata_on_subscribe_and_live_in_order(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "meta", metadata={"v": 1})
    assert await hub_b.metadata("meta") == {"v": 1}
    async with anyio.create_task_group() as tg:
        f = follow(tg, hub_b.subscribe("meta"))
        await f.until(lambda items: len(items) >= 1)
        assert f.items[0] == Metadata({"v": 1})  # current value first
        await p.publish("c1")
        await p.set_metadata({"v": 2})
        await p.send("c2")
        await p.set_metadata({"v": 3})  # flushes c2 first: order is kept
        await p.close()
        items = await f.result()
    assert items[1:] == [
        Chunk(Cursor(p.generation, 1), "c1"),
        Metadata({"v": 2}),
        Chunk(Cursor(p.generation, 2), "c2"),
        Metadata({"v": 3}),
        End(State.DONE),
    ]
    # A later subscriber gets the current value first, then the replay.
    items = await collect(hub_b.subscribe("meta"))
    assert items[0] == Metadata({"v": 3}) and texts(items) == ["c1", "c2"]
    session = await hub_b.get("meta")
    assert session is not None and await session.metadata() == {"v": 3}
    info = await hub_b.status("meta")
    assert info is not None and info.metadata == {"v": 3}


async def test_metadata_is_fenced_by_generation(store: Store, make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    old = await start(hub_a, "meta", metadata={"owner": "old"})
    hub_a._forget(old)
    new = await reclaim(store, hub_b, "meta", metadata={"owner": "new"})
    async with anyio.create_task_group() as tg:
        f = follow(tg, hub_b.subscribe("meta"))
        await f.until(lambda items: len(items) >= 1)
        assert f.items[0] == Metadata({"owner": "new"})
        with pytest.raises(StaleGeneration):
            await old.set_metadata({"owner": "old, again"})
        await new.set_metadata({"owner": "new", "step": 2})
        await new.close()
        items = await f.result()
    assert [i for i in items if isinstance(i, Metadata)] == [
        Metadata({"owner": "new"}),
        Metadata({"owner": "new", "step": 2}),
    ]
    assert await hub_a.metadata("meta") == {"owner": "new", "step": 2}


# --------------------------------------------------------------------------- 15. async with


async def test_async_with_normal_exit_is_done(make_hub: HubFactory) -> None:
    hub = await make_hub()
    p = await start(hub, "ctx")
    async with p:
        await p.publish("x")
    assert p.closed
    assert await hub.state("ctx") is State.DONE
    items = await collect(hub.subscribe("ctx"))
    assert texts(items) == ["x"] and items[-1] == End(State.DONE)


async def test_async_with_exception_is_failed_with_exception_type(make_hub: HubFactory) -> None:
    hub = await make_hub()
    p = await start(hub, "ctx")

    class ModelBlewUp(RuntimeError):
        pass

    with pytest.raises(ModelBlewUp):
        async with p:
            await p.publish("x")
            raise ModelBlewUp("out of tokens")
    info = await hub.status("ctx")
    assert info is not None and info.state is State.FAILED
    assert info.reason is not None and "ModelBlewUp" in info.reason
    items = await collect(hub.subscribe("ctx"))
    end = items[-1]
    assert isinstance(end, End) and end.state is State.FAILED
    assert end.reason is not None and "ModelBlewUp" in end.reason


async def test_async_with_cancel_request_cancels_body(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "ctx")
    reached_end_of_body = False
    started = anyio.Event()
    body_done = anyio.Event()

    async def produce() -> None:
        nonlocal reached_end_of_body
        try:
            async with p:
                await p.publish("x")
                started.set()
                await anyio.sleep_forever()
                reached_end_of_body = True
        finally:
            body_done.set()

    async with anyio.create_task_group() as tg:
        f = follow(tg, hub_b.subscribe("ctx"))
        tg.start_soon(produce)
        with anyio.fail_after(5):
            await started.wait()
        await hub_b.cancel("ctx")
        with anyio.fail_after(5):
            await body_done.wait()
        items = await f.result()
    assert not reached_end_of_body
    assert p.closed
    assert await hub_a.state("ctx") is State.CANCELLED
    assert texts(items) == ["x"]
    assert isinstance(items[-1], End) and items[-1].state is State.CANCELLED


# --------------------------------------------------------------------------- 16. maxlen


async def test_maxlen_trims_log_and_from_start_subscriber_gets_reset_then_tail(
    make_hub: HubFactory,
) -> None:
    total, maxlen = 1000, 50
    hub_a, hub_b = await make_hub(maxlen=maxlen), await make_hub(maxlen=maxlen)
    p = await start(hub_a, "capped")
    for i in range(1, total + 1):
        await p.send(tok(i))
        if i % 50 == 0:
            await p.flush()  # many appends, so trimming happens as the stream grows
    await p.close()
    gen = p.generation

    for after in (None, Cursor(gen, 10)):
        items = await collect(hub_b.subscribe("capped", after=after))
        assert isinstance(items[0], Reset), items[:2]
        assert items[0].generation == gen
        chunks = chunks_of(items)
        first = chunks[0].cursor.offset
        assert first > 1 and total - first + 1 >= maxlen  # trimmed, but at least maxlen kept
        assert_contiguous(chunks, gen, first, total)
        assert texts(items) == [tok(i) for i in range(first, total + 1)]
        assert items[-1] == End(State.DONE)
        assert sum(isinstance(i, Reset) for i in items) == 1

    # A cursor inside the stored tail resumes without a reset.
    items = await collect(hub_b.subscribe("capped", after=Cursor(gen, total - 5)))
    assert not any(isinstance(i, Reset) for i in items)
    assert_contiguous(chunks_of(items), gen, total - 4, total)
