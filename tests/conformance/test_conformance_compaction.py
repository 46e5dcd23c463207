"""Conformance of compaction: a finished generation's log folded into its compact form.

Run on every backend (the ``store`` fixture of tests/conformance/conftest.py). What must hold: a resume
at every cursor of a compacted stream gives exactly the suffix it gave before compaction;
resumes that race with compaction stay exact; every way a generation ends is compacted, with
its TTLs kept and the session still reclaimable; on Redis, a replay costs a constant number of
round trips and the log takes less memory.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from support.conformance import (
    HubFactory,
    Item,
    RedisStore,
    Store,
    chunks_of,
    collect,
    follow,
    is_compacted,
    log_entries,
    start,
    until_compacted,
)
from support.redis_server import RedisServer

from fastapi_streamhub import Batch, Chunk, Cursor, End, Event, Producer, State, StreamHub
from fastapi_streamhub.backends._compact import SLICE_CHUNKS

pytestmark = pytest.mark.anyio

OFF: dict[str, Any] = {"compact_finished": False}


def item(i: int) -> Any:
    """Chunk ``i`` of the mixed streams: text (with characters SSE must keep), JSON, events."""
    kind = i % 6
    if kind == 0:
        return {"i": i, "tool": ["a", None, 1.5]}
    if kind == 1:
        return Event({"step": i}, "tool-call")
    if kind == 2:
        return f"line {i}\r\nnext\x00é"
    return f"tok{i};"


async def write_mixed(p: Producer, n: int) -> None:
    """``n`` chunks: one write per chunk for the first third, then batches of 1 to 9 chunks."""
    i = 1
    while i <= n:
        if i <= n // 3:
            await p.publish(item(i))
            i += 1
            continue
        for _ in range(1 + i % 9):
            if i > n:
                break
            await p.send(item(i))
            i += 1
        await p.flush()


def shape(items: list[Item]) -> list[tuple[Any, ...]]:
    """What a consumer sees of each chunk, and the end."""
    out: list[tuple[Any, ...]] = []
    for it in items:
        if isinstance(it, Chunk):
            out.append((str(it.cursor), it.data, it.kind, it.event))
        elif isinstance(it, End):
            out.append(("end", it.state, it.reason))
        else:
            out.append((type(it).__name__,))
    return out


# --------------------------------------------------------------------------- exact resumes


async def test_resume_at_every_cursor_of_a_compacted_stream_gives_the_exact_suffix(
    store: Store, make_hub: HubFactory
) -> None:
    n = 300
    hub_a, hub_b = await make_hub(**OFF), await make_hub(**OFF)
    p = await start(hub_a, "folded")
    await write_mixed(p, n)
    await p.close()
    gen = p.generation
    before = shape(await collect(hub_b.subscribe("folded")))
    assert len(before) == n + 1
    entries = log_entries(store, "folded")

    assert await hub_b.backend.compact("folded") is True
    assert await hub_b.backend.compact("folded") is False  # once per generation
    assert is_compacted(store, "folded")
    if store.kind != "memory":
        # The start marker, >100 single-chunk entries and the batches, the end marker -> 2.
        assert entries > n // 3 + 2
        assert log_entries(store, "folded") == math.ceil(n / SLICE_CHUNKS) + 1

    assert shape(await collect(hub_b.subscribe("folded"))) == before
    for k in range(n + 1):
        items = await collect(hub_a.subscribe("folded", after=Cursor(gen, k)))
        assert shape(items) == before[k:], k
    # In batches too (one per page): the same chunks.
    for k in (0, 1, 150, n - 1):
        items = await collect(hub_b.subscribe("folded", after=f"{gen}-{k}", batch_replay=True))
        assert isinstance(items[-1], End)
        chunks = [c for b in items if isinstance(b, Batch) for c in b.chunks]
        assert shape([*chunks, items[-1]]) == before[k:], k
    snap = await hub_b.snapshot("folded")
    assert snap["last_event_id"] == f"{gen}-{n}"
    assert snap["text"] == "".join(x for i in range(1, n + 1) if isinstance(x := item(i), str))


async def test_resumes_racing_with_compaction_stay_exact(
    store: Store, make_hub: HubFactory
) -> None:
    """Readers paused mid-replay at many positions (small pages, so several reads remain),
    and readers running freely, while the log is folded under them."""
    n = 240
    hub_a, hub_b = await make_hub(replay_batch=7, **OFF), await make_hub(replay_batch=7, **OFF)
    p = await start(hub_a, "racing")
    await write_mixed(p, n)
    await p.close()
    gen = p.generation
    before = shape(await collect(hub_b.subscribe("racing")))

    # Paused readers: cursors at every kind of place (start, inside multi-chunk entries, near
    # the end), each stopped after a few chunks, i.e. in the middle of a page or between two.
    starts = [None, 0, 1, 50, 81, 83, 100, 157, 200, 233, 238, 239]
    paused = []
    for j, k in enumerate(starts):
        sub = hub_b.subscribe("racing", after=None if k is None else Cursor(gen, k))
        got: list[Item] = []
        async for it in sub:
            got.append(it)
            if len(got) >= 1 + j % 5:
                break
        paused.append((k, sub, got))
    async with anyio.create_task_group() as tg:
        free = [
            follow(tg, hub_a.subscribe("racing", after=Cursor(gen, k))) for k in range(0, n, 15)
        ]
        assert await hub_a.backend.compact("racing") is True
        for k, sub, got in paused:
            with anyio.fail_after(15):
                async with sub:
                    async for it in sub:
                        got.append(it)
            assert shape(got) == before[k or 0 :], k
        for k, f in zip(range(0, n, 15), free, strict=True):
            assert shape(await f.result()) == before[k:], k
    assert is_compacted(store, "racing")


async def test_live_followers_repairing_around_compaction_stay_exact(
    store: Store, make_hub: HubFactory
) -> None:
    """Followers overflow their buffer (each overflow is a repair read from the store) while
    the producer finishes and the log is compacted right after; the end may arrive before the
    chunks it follows, and the repair then reads the folded log."""
    n = 400
    hub_a, hub_b = await make_hub(), await make_hub()
    p = await start(hub_a, "live")
    await p.publish(item(1))
    async with anyio.create_task_group() as tg:
        followers = [
            follow(tg, hub.subscribe("live", buffer=buffer))
            for hub in (hub_a, hub_b)
            for buffer in (1, 3, 1024)
        ]
        for f in followers:
            await f.first_chunk()
        for i in range(2, n + 1):
            await p.send(item(i))
            if i % 50 == 0:
                await anyio.lowlevel.checkpoint()
        await p.close()
        await until_compacted(store, "live")
        late = await collect(hub_b.subscribe("live", after=Cursor(p.generation, 123)))
        results = [await f.result() for f in followers]
    for items in results:
        chunks = chunks_of(items)
        assert [c.cursor.offset for c in chunks] == list(range(1, n + 1))
        assert items[-1] == End(State.DONE)
    expected = shape(results[0])
    assert all(shape(r) == expected for r in results)
    assert shape(late) == expected[123:]


# --------------------------------------------------------------------------- every ending


async def _vanish(store: Store, hub: StreamHub, p: Producer) -> None:
    hub._forget(p)  # stops renewing, never closes: as if its process died
    store.lapse_lease(p.session_id)


async def test_every_way_a_generation_ends_is_compacted(store: Store, make_hub: HubFactory) -> None:
    retention = 120.0
    options = {"retention": retention, "lease_ttl": 0.5}
    hub_a, hub_b = await make_hub(**options), await make_hub(**options)
    n = 30
    ends: dict[str, End] = {}

    done = await start(hub_a, "done")
    await write_mixed(done, n)
    await done.close()
    ends["done"] = End(State.DONE)

    cancelled = await start(hub_a, "cancelled")
    await write_mixed(cancelled, n)
    await hub_b.cancel("cancelled")
    with anyio.fail_after(5):
        await cancelled.cancelled.wait()
    await cancelled.close()
    ends["cancelled"] = End(State.CANCELLED, "cancelled")  # close() after a cancel, as async with

    failed = await start(hub_a, "failed")
    with pytest.raises(RuntimeError):
        async with failed:
            await write_mixed(failed, n)
            raise RuntimeError("model crashed")
    ends["failed"] = End(State.FAILED, "RuntimeError: model crashed")

    # A lapsed lease noticed by a cancel, and one noticed by the keeper of a follower.
    by_cancel = await start(hub_a, "by-cancel")
    await write_mixed(by_cancel, n)
    await _vanish(store, hub_a, by_cancel)
    assert await hub_b.cancel("by-cancel") is State.FAILED
    ends["by-cancel"] = End(State.FAILED, "lease_expired")

    by_keeper = await start(hub_a, "by-keeper")
    await write_mixed(by_keeper, n)
    async with anyio.create_task_group() as tg:
        f = follow(tg, hub_b.subscribe("by-keeper"))
        await f.until(lambda items: len(chunks_of(items)) == n)
        await _vanish(store, hub_a, by_keeper)
        assert (await f.result())[-1] == End(State.FAILED, "lease_expired")
    ends["by-keeper"] = End(State.FAILED, "lease_expired")

    for sid, end in ends.items():
        await until_compacted(store, sid)
        items = await collect(hub_b.subscribe(sid))
        assert [c.cursor.offset for c in chunks_of(items)] == list(range(1, n + 1)), sid
        assert [c.data for c in chunks_of(items)] == [
            x.data if isinstance(x := item(i), Event) else x for i in range(1, n + 1)
        ]
        assert items[-1] == end, sid
    # Retention TTLs are kept (memory: one record per session; redis: meta + log each).
    ttls = store.ttls()
    assert len(ttls) == (5 if store.kind in ("memory", "postgres") else 10), ttls
    for key, ttl in ttls.items():
        assert retention - 30 < ttl <= retention, (key, ttl)

    # A failed, compacted session is reclaimed as a new generation, not compacted until it ends.
    new = await start(hub_b, "failed")
    assert new.generation > failed.generation
    await new.publish("again")
    assert not is_compacted(store, "failed")
    async with anyio.create_task_group() as tg:
        f = follow(tg, hub_a.subscribe("failed", after=Cursor(failed.generation, 7)))
        await f.until(lambda items: len(chunks_of(items)) == 1)
        await new.publish("and again")
        await new.close()
        items = await f.result()
    assert [type(i).__name__ for i in items] == ["Reset", "Chunk", "Chunk", "End"]
    assert [c.data for c in chunks_of(items)] == ["again", "and again"]
    await until_compacted(store, "failed")
    assert shape(await collect(hub_a.subscribe("failed"))) == shape(items[1:])


async def test_an_active_log_is_never_compacted(make_hub: HubFactory) -> None:
    hub = await make_hub(**OFF)
    p = await start(hub, "running")
    await p.publish("a")
    assert await hub.backend.compact("running") is False
    assert await hub.backend.compact("unknown") is False
    await p.publish("b")
    await p.close()
    assert await hub.backend.compact("running") is True
    items = await collect(hub.subscribe("running"))
    assert [c.data for c in chunks_of(items)] == ["a", "b"]


# --------------------------------------------------------------------------- redis: cost


def _reads(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Top-level round-trip commands of a replay: script calls and stream reads."""
    return {name: after.get(name, 0) - before.get(name, 0) for name in ("evalsha", "xrange")}


async def _replay_cost(
    server: RedisServer, hub: StreamHub, sid: str
) -> tuple[dict[str, int], dict[str, int]]:
    """Commands of a full replay, and of a snapshot."""
    before = server.command_stats()
    items = await collect(hub.subscribe(sid))
    middle = server.command_stats()
    await hub.snapshot(sid)
    after = server.command_stats()
    assert isinstance(items[-1], End)
    return _reads(before, middle), _reads(middle, after)


async def test_replay_of_a_compacted_stream_costs_constant_round_trips_and_less_memory(
    redis_store: RedisStore, make_redis_hub: HubFactory
) -> None:
    """LLM-paced streams (one log entry per chunk): replaying them costs a page per
    ``replay_batch`` entries; folded, a constant number of reads whatever their length."""
    server = redis_store.server
    hub = await make_redis_hub(replay_batch=100, **OFF)
    costs: dict[int, Any] = {}
    for n in (300, 1000):
        sid = f"paced-{n}"
        p = await start(hub, sid)
        for i in range(1, n + 1):
            await p.publish(f" word{i}")
        await p.close()
        plain_replay, plain_snapshot = await _replay_cost(server, hub, sid)
        memory_before = server.execute("MEMORY", "USAGE", redis_store.log(sid), "SAMPLES", "0")
        assert await hub.backend.compact(sid) is True
        memory_after = server.execute("MEMORY", "USAGE", redis_store.log(sid), "SAMPLES", "0")
        folded_replay, folded_snapshot = await _replay_cost(server, hub, sid)
        costs[n] = (plain_replay, folded_replay, folded_snapshot, memory_before, memory_after)
        # Uncompacted: one page per 100 entries.
        assert plain_replay["xrange"] >= n // 100, costs
        assert plain_snapshot["xrange"] >= n // 100, costs
        # Folded: the record and the first page (two entries) in one round trip (two scripts,
        # info and page, the page's one XRANGE inside), and one more page when the fold has
        # more than one slice (1,000 chunks: two).
        one = n <= SLICE_CHUNKS
        assert folded_replay == {"evalsha": 2 if one else 3, "xrange": 1 if one else 2}, costs
        assert folded_snapshot == {"evalsha": 2, "xrange": 1}, costs
        assert isinstance(memory_before, int) and isinstance(memory_after, int)
        assert memory_after < 0.6 * memory_before, costs


async def test_a_finished_log_left_uncompacted_is_compacted_by_its_first_full_reader(
    redis_store: RedisStore, make_redis_hub: HubFactory
) -> None:
    """Compaction off on the producing hub (or failed, or a log from before compaction): a
    hub with compaction on folds it when it replays it from the start."""
    writer, reader = await make_redis_hub(**OFF), await make_redis_hub()
    p = await start(writer, "lazy")
    for i in range(1, 51):
        await p.publish(f"t{i}")
    await p.close()
    assert not is_compacted(redis_store, "lazy")
    items = await collect(reader.subscribe("lazy", after=Cursor(p.generation, 10)))
    assert not is_compacted(redis_store, "lazy")  # a resume does not see the start marker
    first = await collect(reader.subscribe("lazy"))
    await until_compacted(redis_store, "lazy")
    assert shape(await collect(reader.subscribe("lazy"))) == shape(first)
    assert shape(items) == shape(first)[10:]
    assert [c.data for c in chunks_of(first)] == [f"t{i}" for i in range(1, 51)]
