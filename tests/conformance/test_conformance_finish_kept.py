"""Conformance of keeping a replaced generation for its ``on_finish`` hook, on every backend
(memory, redis, redis-cluster, postgres).

A claim that replaces a generation whose hook is expected (``expect_finish``) and has not
settled keeps its record and log (``read_generation``, ``claim_finish``) until ``settle``,
``delete`` or the retention TTL; a session keeps the newest ``KEPT_GENERATIONS``. The hook of a
superseded answer, of a generation restarted right after its end, and of one only the sweep
finds, runs once with that generation's own state, reason and output.
"""

from __future__ import annotations

import anyio
import pytest
from support.conformance import HubFactory, RedisStore, Store
from support.sids import new_sid
from support.sse_client import wait_until

from fastapi_streamhub import FinishedGeneration, State, StreamHub
from fastapi_streamhub.backends.base import KEPT_GENERATIONS

pytestmark = pytest.mark.anyio


async def _generation(hub: StreamHub, sid: str, text: str, *, restart: bool = False) -> int:
    """A generation claimed, marked as expecting its hook, written and closed ``done``."""
    reg = await hub.register(sid, restart=restart)
    assert reg.producer is not None
    await hub.backend.expect_finish(sid, reg.generation)
    await reg.producer.publish(text)
    await reg.producer.publish({"type": "usage", "of": text})
    assert await reg.producer.close() is State.DONE
    return reg.generation


async def test_a_replaced_generation_is_kept_until_settled(
    store: Store, make_hub: HubFactory
) -> None:
    hub = await make_hub()  # no hook: the marks are set by hand, nothing runs them
    backend = hub.backend
    sid = new_sid("keep")
    first = await _generation(hub, sid, "one ")
    second = await _generation(hub, sid, "two ", restart=True)

    if isinstance(store, RedisStore):  # kept for the retention, like the session's own keys
        base = f"streamhub:{{{sid}}}"
        retention_ms = hub.settings.retention * 1000
        for key in (f"{base}:kept", f"{base}:klog"):
            ttl = store.execute(sid, "PTTL", key)
            assert isinstance(ttl, int) and 0 < ttl <= retention_ms, (key, ttl)
    info, page = await backend.read_generation(sid, first, 0, 100)
    assert info is not None and info.generation == first
    assert (info.state, info.reason, info.chunks) == (State.DONE, None, 2)
    assert [c.data for c in page.chunks] == ["one ", {"type": "usage", "of": "one "}]
    assert page.end is not None and page.end[0] == first
    # From an offset: the rest only.
    _, rest = await backend.read_generation(sid, first, 1, 100)
    assert [c.data for c in rest.chunks] == [{"type": "usage", "of": "one "}]
    # The current generation answers too, and reads as before.
    current, page = await backend.read_generation(sid, second, 0, 100)
    assert current is not None and current.generation == second
    assert [c.data for c in page.chunks if c.kind == "text"] == ["two "]
    latest = (await backend.info([sid]))[0]
    assert latest is not None and latest.generation == second

    assert await backend.claim_finish(sid, first, "t1", 5.0) == "claimed"
    assert await backend.claim_finish(sid, first, "t2", 5.0) == "busy"
    assert await backend.claim_finish(sid, first, "t1", 5.0) == "claimed"  # its own: extended
    await backend.settle(sid, first)
    assert await backend.claim_finish(sid, first, "t1", 5.0) == "gone"  # settled: dropped
    assert (await backend.read_generation(sid, first, 0, 100))[0] is None
    assert (sid, first) not in await backend.unsettled(10_000, 0.0)

    # Settled before the next claim: not kept. Not marked: not kept either.
    await backend.settle(sid, second)
    third = await _generation(hub, sid, "three ", restart=True)
    assert (await backend.read_generation(sid, second, 0, 100))[0] is None
    reg = await hub.register(sid, restart=True)
    assert reg.producer is not None
    await reg.producer.close()
    assert (await backend.read_generation(sid, third, 0, 100))[0] is not None
    await backend.settle(sid, third)
    unmarked = reg.generation
    await hub.register(sid, restart=True)
    assert (await backend.read_generation(sid, unmarked, 0, 100))[0] is None
    if isinstance(store, RedisStore):  # nothing kept: no keys of it left either
        base = f"streamhub:{{{sid}}}"
        assert store.execute(sid, "EXISTS", f"{base}:kept", f"{base}:klog") == 0


async def test_a_session_keeps_the_newest_generations_and_delete_drops_them(
    make_hub: HubFactory,
) -> None:
    hub = await make_hub()
    backend = hub.backend
    sid = new_sid("keep-many")
    count = KEPT_GENERATIONS + 2
    gens = [await _generation(hub, sid, f"g{i} ", restart=i > 0) for i in range(count)]
    kept = gens[-1 - KEPT_GENERATIONS : -1]
    assert (await backend.read_generation(sid, gens[0], 0, 100))[0] is None  # the oldest: dropped
    for i, gen in enumerate(gens[1:-1], start=1):
        info, page = await backend.read_generation(sid, gen, 0, 100)
        assert info is not None and info.generation == gen
        own = [c.data for c in page.chunks if c.cursor.generation == gen]
        assert own == [f"g{i} ", {"type": "usage", "of": f"g{i} "}]
    assert len(kept) == KEPT_GENERATIONS
    # Dropping one in the middle leaves the others whole.
    await backend.settle(sid, kept[1])
    for gen in (kept[0], kept[2]):
        info, page = await backend.read_generation(sid, gen, 0, 100)
        assert info is not None and page.end is not None and page.end[0] == gen
    assert await hub.delete(sid)
    assert (await backend.read_generation(sid, kept[0], 0, 100))[0] is None
    assert await backend.claim_finish(sid, kept[0], "t", 5.0) == "gone"


async def test_a_superseding_turn_runs_both_hooks_once(make_hub: HubFactory) -> None:
    calls: list[FinishedGeneration] = []

    async def hook(done: FinishedGeneration) -> None:
        calls.append(done)

    a = await make_hub(on_finish=hook)
    b = await make_hub(on_finish=hook)
    sid = new_sid("keep-turn")
    old = await a.register(sid, turn="q1", metadata={"q": 1})
    assert old.producer is not None
    await old.producer.publish("partial ")
    await old.producer.publish("answer ")
    await old.producer.flush()
    new = await b.register(sid, turn="q2", metadata={"q": 2})  # supersedes, atomically
    assert new.producer is not None and new.generation > old.generation
    await new.producer.publish("second")
    assert await new.producer.close() is State.DONE
    # The superseded producer learns it is stale; its instance runs the old generation's hook.
    with anyio.fail_after(10):
        assert await old.producer.close() is State.FAILED  # for this producer: it lost it

    async def settled() -> bool:
        if len(calls) < 2:
            return False
        gone = await a.backend.claim_finish(sid, old.generation, "probe", 0.001) == "gone"
        marked = await a.backend.claim_finish(sid, new.generation, "probe", 0.001) == "settled"
        return gone and marked

    await wait_until(settled, within=10, what="both hooks settled")
    by_gen = {c.generation: c for c in calls}
    assert len(calls) == 2 and set(by_gen) == {old.generation, new.generation}, calls
    first = by_gen[old.generation]
    assert (first.state, first.reason, first.truncated) == (State.CANCELLED, "superseded", True)
    assert first.text == "partial answer " and first.metadata == {"q": 1}
    second = by_gen[new.generation]
    assert (second.state, second.text, second.truncated) == (State.DONE, "second", False)
    assert (await a.backend.read_generation(sid, old.generation, 0, 10))[0] is None


async def test_restart_right_after_the_end_runs_the_ended_generations_hook(
    make_hub: HubFactory,
) -> None:
    calls: list[FinishedGeneration] = []

    async def hook(done: FinishedGeneration) -> None:
        calls.append(done)

    a = await make_hub(on_finish=hook)
    sid = new_sid("keep-restart")
    reg = await a.register(sid)
    assert reg.producer is not None
    await reg.producer.publish("first answer")
    assert await reg.producer.close() is State.DONE
    again = await a.register(sid, restart=True)  # before (or while) the hook runs
    assert again.producer is not None
    await again.producer.publish("second answer")
    assert await again.producer.close() is State.DONE

    async def settled() -> bool:
        if len(calls) < 2:  # first: a probe's claim must not make a hook's claim busy
            return False
        gone = await a.backend.claim_finish(sid, reg.generation, "probe", 0.001) == "gone"
        marked = await a.backend.claim_finish(sid, again.generation, "probe", 0.001) == "settled"
        return gone and marked

    await wait_until(settled, within=10, what="both hooks settled")
    assert sorted((c.generation, c.state, c.text) for c in calls) == [
        (reg.generation, State.DONE, "first answer"),
        (again.generation, State.DONE, "second answer"),
    ]


async def test_a_crashed_generation_claimed_again_runs_its_hook_by_the_sweep(
    store: Store, make_hub: HubFactory
) -> None:
    """Its producer stopped renewing (a crash) and a retry claimed the session again before
    any sweep: the claim fails the lapsed generation and keeps it; a sweep runs its hook."""
    calls: list[FinishedGeneration] = []
    arrived = anyio.Event()

    async def hook(done: FinishedGeneration) -> None:
        calls.append(done)
        arrived.set()

    options = {"on_finish": hook, "lease_ttl": 0.5, "renew_interval": 0.1}
    a = await make_hub(**options)
    b = await make_hub(**options)
    sid = new_sid("keep-crash")
    old = await a.register(sid)
    assert old.producer is not None
    await old.producer.publish("partial ")
    await old.producer.flush()
    store.lapse_lease(sid)  # as if its instance died: nobody closes it
    new = await b.register(sid, turn="retry")  # fails the lapsed one, keeps it, claims
    assert new.producer is not None and new.generation > old.generation
    with anyio.fail_after(15):
        await arrived.wait()

    async def dropped() -> bool:
        return (await b.backend.read_generation(sid, old.generation, 0, 10))[0] is None

    await wait_until(dropped, within=5, what="the kept generation dropped")
    assert len(calls) == 1, calls
    done = calls[0]
    assert (done.generation, done.text, done.truncated) == (old.generation, "partial ", True)
    assert (done.state, done.reason) == (State.FAILED, "lease_expired")
    await new.producer.close()
