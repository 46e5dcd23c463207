"""Conformance of the ``on_finish`` settle marks, on every backend (memory, redis, redis-cluster).

The four methods of ``backends/base.py`` (``expect_finish``, ``claim_finish``, ``settle``,
``unsettled``) as a backend must implement them, and the sweep built on them: a generation whose
producer stopped renewing (a crash) is failed and its hook runs once, by the sweep (the sweep
failing a lapsed lease itself is covered with a SIGKILL in tests/test_on_finish.py). Sessions
are new per test; the index is shared by the store's hubs, so a test only looks at its own
entries.
"""

from __future__ import annotations

import anyio
import pytest
from support.conformance import HubFactory, Store
from support.sids import new_sid
from support.sse_client import wait_until

from fastapi_streamhub import FinishedGeneration, State

pytestmark = pytest.mark.anyio


async def test_claim_settle_and_index_contract(make_hub: HubFactory) -> None:
    hub = await make_hub()
    backend = hub.backend
    sid = new_sid("fin")
    assert await backend.claim_finish(sid, 1, "t1", 5.0) == "gone"  # unknown session
    reg = await hub.register(sid)
    assert reg.producer is not None
    gen = reg.generation
    await backend.expect_finish(sid, gen)
    await backend.expect_finish(sid, gen)  # idempotent
    assert (sid, gen) in await backend.unsettled(10_000, 0.0)
    # Just handed out: not again until it was idle that long.
    assert (sid, gen) not in await backend.unsettled(10_000, 60.0)

    assert await backend.claim_finish(sid, gen + 1, "t1", 5.0) == "gone"  # not its generation
    assert await backend.claim_finish(sid, gen, "t1", 5.0) == "claimed"  # the state is not checked
    assert await backend.claim_finish(sid, gen, "t2", 5.0) == "busy"
    assert await backend.claim_finish(sid, gen, "t1", 0.05) == "claimed"  # its own: extended

    async def taken_over() -> bool:
        return await backend.claim_finish(sid, gen, "t2", 5.0) == "claimed"

    # Busy until the claim lapses, then taken over (polled: no fixed wait for the lapse).
    await wait_until(taken_over, within=5, what="the lapsed claim taken over")

    await reg.producer.close()
    await backend.settle(sid, gen)
    await backend.settle(sid, gen)  # idempotent
    assert await backend.claim_finish(sid, gen, "t3", 5.0) == "settled"
    assert (sid, gen) not in await backend.unsettled(10_000, 0.0)

    # A new generation has its own mark; the old one is gone.
    again = await hub.register(sid, restart=True)
    assert again.producer is not None and again.generation > gen
    assert await backend.claim_finish(sid, gen, "t1", 5.0) == "gone"
    assert await backend.claim_finish(sid, again.generation, "t1", 5.0) == "claimed"
    await again.producer.close()

    # An entry of a deleted session is removed by settle.
    await backend.expect_finish(sid, again.generation)
    assert await hub.delete(sid)
    await backend.settle(sid, again.generation)
    assert (sid, again.generation) not in await backend.unsettled(10_000, 0.0)


async def test_a_producer_that_stopped_renewing_is_settled_once_by_the_sweep(
    store: Store, make_hub: HubFactory
) -> None:
    calls: list[FinishedGeneration] = []
    arrived = anyio.Event()

    async def hook(done: FinishedGeneration) -> None:
        calls.append(done)
        arrived.set()

    options = {"on_finish": hook, "lease_ttl": 0.5, "renew_interval": 0.1}
    a = await make_hub(**options)
    b = await make_hub(**options)
    sid = new_sid("fin-lapse")
    reg = await a.register(sid)
    assert reg.producer is not None
    await reg.producer.publish("partial ")
    store.lapse_lease(sid)  # as if its instance died: nobody closes it
    # A follower's keeper notices first (the memory backend's hub would renew it otherwise).
    assert await b.backend.expire([(sid, reg.generation)]) == [None]
    with anyio.fail_after(15):
        await arrived.wait()

    async def settled() -> bool:
        # A probe's claim of 1 ms is harmless: settle does not check who holds the claim.
        return await b.backend.claim_finish(sid, reg.generation, "probe", 0.001) == "settled"

    await wait_until(settled, within=5, what="the settled mark")
    assert len(calls) == 1, calls
    done = calls[0]
    assert (done.state, done.reason, done.truncated) == (State.FAILED, "lease_expired", True)
    assert done.text == "partial " and done.generation == reg.generation


async def test_fan_in_runs_the_hook_once_at_the_owners_end(make_hub: HubFactory) -> None:
    calls: list[FinishedGeneration] = []
    arrived = anyio.Event()

    async def hook(done: FinishedGeneration) -> None:
        calls.append(done)
        arrived.set()

    a = await make_hub(on_finish=hook)
    b = await make_hub(on_finish=hook)
    sid = new_sid("fin-fanin")
    reg = await a.register(sid)
    owner = reg.producer
    assert owner is not None
    await owner.publish("owner ")
    helper = await b.join(await owner.admit("helper"))
    await helper.publish("helper ")
    await helper.close()  # a part's end: not the generation's
    await owner.publish({"type": "usage"})
    assert await owner.close() is State.DONE
    with anyio.fail_after(5):
        await arrived.wait()

    async def settled() -> bool:
        return await a.backend.claim_finish(sid, reg.generation, "probe", 0.001) == "settled"

    await wait_until(settled, within=5, what="the settled mark")
    assert len(calls) == 1, calls
    assert (calls[0].text, calls[0].chunks) == ("owner helper ", ({"type": "usage"},))
