"""Conformance: ``register(turn=...)`` on every backend (claim with a turn, ``claim.lua``).

A generation may name the turn it answers (a chat's user message). A claim of the same turn
joins it, running or finished; a claim of a new turn ends a running generation as
``cancelled`` with reason ``superseded`` and takes the session, in one atomic step of the
store: racing claims of one new turn give exactly one producer, and the superseded producer
learns it lost (its cancel fires; its writes are refused).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from support.conformance import HubFactory, Store, chunks_of, collect, follow, start

from fastapi_streamhub import End, StaleGeneration, State, StreamHub

pytestmark = pytest.mark.anyio


async def _race(hubs: list[StreamHub], sid: str, turn: str, n: int = 40) -> list[Any]:
    regs: list[Any] = []

    async def claim(hub: StreamHub) -> None:
        regs.append(await hub.register(sid, turn=turn))

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(claim, hubs[i % len(hubs)])
    assert len(regs) == n
    return regs


async def test_racing_claims_of_one_turn_give_one_producer(make_hub: HubFactory) -> None:
    hubs = [await make_hub(), await make_hub()]
    regs = await _race(hubs, "chat", "message:1")
    winners = [r for r in regs if r.created]
    assert len(winners) == 1
    assert {r.generation for r in regs} == {winners[0].generation}
    first = winners[0].producer
    assert first is not None
    await first.publish("answer one")

    # A new turn while the first runs, raced from both hubs: the first generation is ended
    # once, and exactly one of the racers produces the second.
    async with anyio.create_task_group() as tg:
        old = follow(tg, hubs[1].subscribe("chat"))
        await old.first_chunk()
        regs = await _race(hubs, "chat", "message:2")
        winners = [r for r in regs if r.created]
        assert len(winners) == 1
        second = winners[0].producer
        assert second is not None and second.generation > first.generation
        assert {r.generation for r in regs} == {second.generation}
        items = await old.result()
    assert items[-1] == End(State.CANCELLED, "superseded")
    assert [c.data for c in chunks_of(items)] == ["answer one"]

    # The superseded producer stops: its cancel fires and its writes are refused.
    with anyio.fail_after(5):
        await first.cancelled.wait()
    with pytest.raises(StaleGeneration):
        await first.publish("late")
    await second.publish("answer two")
    await second.close()
    info = await hubs[0].status("chat")
    assert info is not None
    assert (info.state, info.generation, info.chunks) == (State.DONE, second.generation, 1)


async def test_a_finished_turn_is_replayed_and_a_new_one_starts(make_hub: HubFactory) -> None:
    hub = await make_hub()
    first = await start(hub, "done-chat", turn="message:1")
    await first.publish("one")
    await first.close()

    again = await hub.register("done-chat", turn="message:1")  # a reload after the end
    assert (again.created, again.generation, again.state) == (
        False,
        first.generation,
        State.DONE,
    )
    items = await collect(hub.subscribe("done-chat"))
    assert [c.data for c in chunks_of(items)] == ["one"] and items[-1] == End(State.DONE)

    second = await start(hub, "done-chat", turn="message:2")  # no restart=True needed
    assert second.generation > first.generation
    await second.close()


async def test_a_failed_turn_is_claimed_again(store: Store, make_hub: HubFactory) -> None:
    hub = await make_hub(lease_ttl=1.0)
    first = await start(hub, "lapsed", turn="message:1")
    hub._forget(first)  # its hub stops renewing, as if the process had died
    store.lapse_lease("lapsed")
    again = await hub.register("lapsed", turn="message:1")
    assert again.created and again.generation > first.generation
    assert again.producer is not None
    await again.producer.close()


async def test_turn_is_validated(make_hub: HubFactory) -> None:
    hub = await make_hub()
    for bad in ("", "x" * 201):
        with pytest.raises(ValueError, match="turn must be"):
            await hub.register("v", turn=bad)
    assert await hub.status("v") is None


async def test_the_status_and_snapshot_name_the_turn(make_hub: HubFactory) -> None:
    hub = await make_hub()
    first = await start(hub, "named", turn="message:1")
    await first.publish("one")
    info = await hub.status("named")
    assert info is not None and info.turn == "message:1"
    assert info.as_dict()["turn"] == "message:1"
    await first.close()
    snapshot = await hub.snapshot("named")
    assert snapshot is not None and snapshot["turn"] == "message:1"
    # A claim without a turn (a restart) leaves none behind.
    second = await start(hub, "named", restart=True)
    info = await hub.status("named")
    assert info is not None and info.turn is None and info.generation == second.generation
    assert info.as_dict()["turn"] is None
    await second.close()
