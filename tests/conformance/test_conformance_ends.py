"""Conformance of how a generation ends, on every backend (memory, redis, redis-cluster).

A cut-off answer is never reported complete: when the last write of a producer is lost (the
store froze past ``outage_timeout``, or refused it), the generation ends ``failed`` with a
``backend`` reason, its stored chunks stay readable, and every reader gets that ``end``. The
store checks the claim too: ``close`` carries what the producer wrote, and a ``done`` the log
does not match is stored as ``failed``. And whichever path ends a generation (``close()``,
``async with``, an exception, a cancel, shutdown, a lapsed lease), the record and the ``end``
every reader gets are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from support.conformance import (
    STORE_KINDS,
    ClusterStore,
    HubFactory,
    MemoryStore,
    PostgresStore,
    RedisStore,
    Store,
    collect,
    follow,
    make_store,
    start,
    texts,
)

from fastapi_streamhub import (
    BackendUnavailable,
    End,
    MemoryBackend,
    OwnershipLost,
    Producer,
    Reset,
    State,
    StreamHub,
)
from fastapi_streamhub.backends._keys import slot_of
from fastapi_streamhub.backends.base import Append, Lost, SharedAppend

pytestmark = pytest.mark.anyio

OUTAGE = 1.0
FROZEN = "backend: the store did not answer within 1s"
REFUSED = "backend: the store refused the write (OutOfMemoryError)"
# PostgreSQL: the condition the refusing trigger raises (see set_fault).
REFUSED_PG = "backend: the store refused the write (OUT_OF_MEMORY)"


class FaultyMemory(MemoryBackend):
    """Our own memory backend whose appends fail on demand: a test double of the store
    itself (there is no server to freeze), not a mock of anything else."""

    def __init__(self) -> None:
        super().__init__()
        self.fault: str | None = None

    def _raise_fault(self) -> None:
        if self.fault == "freeze":
            # What the Redis backend reports once a frozen server let outage_timeout pass.
            raise BackendUnavailable(
                f"the store did not answer within {self.settings.outage_timeout:g}s"
            )
        if self.fault == "refuse":
            raise BackendUnavailable("append failed: OutOfMemoryError: command not allowed")

    async def append(self, batches: Sequence[Append]) -> list[Lost | None]:
        self._raise_fault()
        return await super().append(batches)

    async def append_shared(self, batches: Sequence[SharedAppend]) -> list[int | Lost]:
        self._raise_fault()
        return await super().append_shared(batches)


class FaultyMemoryStore(MemoryStore):
    backend: FaultyMemory

    def __init__(self) -> None:
        super().__init__()
        self.backend = FaultyMemory()


def set_fault(store: Store, sid: str, kind: str, *, on: bool) -> None:
    """Make the writes of ``sid`` fail (``on``) or work again: ``kind`` ``freeze`` (the store
    does not answer) or ``refuse`` (out of memory)."""
    if isinstance(store, FaultyMemoryStore):
        store.backend.fault = kind if on else None
        return
    if isinstance(store, PostgresStore):
        if kind == "freeze":
            if on:
                store.server.pause()
            elif store.server.paused:
                store.server.resume()
        elif on:
            # The store refuses this session's chunks as a full server would (out of memory).
            store.sql(
                "CREATE OR REPLACE FUNCTION refuse_log() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.session_id = '" + sid + "' AND NEW.kind = 'c' THEN"
                " RAISE EXCEPTION 'no memory' USING ERRCODE = 'out_of_memory'; END IF;"
                " RETURN NEW; END $$;"
                "CREATE OR REPLACE TRIGGER refuse_log BEFORE INSERT ON streamhub_log"
                " FOR EACH ROW EXECUTE FUNCTION refuse_log()"
            )
        else:
            store.sql("DROP TRIGGER IF EXISTS refuse_log ON streamhub_log")
        return
    assert isinstance(store, RedisStore)
    node = store.cluster.owner(slot_of(sid)) if isinstance(store, ClusterStore) else store.server
    if kind == "refuse":
        node.execute("CONFIG", "SET", "maxmemory", "1" if on else "0")
    elif on:
        node.pause()
    elif node.paused:
        node.resume()


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Store:
    """The suite's stores; the memory one a :class:`FaultyMemory` (make_hub builds on it)."""
    return make_store(request, FaultyMemoryStore)


async def record_and_end(hub: StreamHub, sid: str) -> tuple[State, str | None, End]:
    info = await hub.status(sid)
    assert info is not None
    items = await collect(hub.subscribe(sid))
    end = items[-1]
    assert isinstance(end, End)
    return info.state, info.reason, end


# --------------------------------------------------------------------------- lost final write


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["freeze", "refuse"])
@pytest.mark.parametrize("how", ["async_with", "close"])
async def test_a_lost_final_write_ends_failed_with_a_backend_reason(
    store: Store, make_hub: HubFactory, kind: str, how: str
) -> None:
    if kind == "freeze" and isinstance(store, ClusterStore):
        pytest.skip("freezing a primary of the shared cluster past its node timeout fails it over")
    expected = FROZEN if kind == "freeze" else REFUSED_PG if store.kind == "postgres" else REFUSED
    hub_a = await make_hub(outage_timeout=OUTAGE)
    # The reader's hub rides the outage out (a reader's own reads fail after outage_timeout);
    # hubs sharing one memory backend must share settings, and it has no outage to ride out.
    hub_b = await make_hub(outage_timeout=OUTAGE if isinstance(store, MemoryStore) else 15.0)
    sid = f"cut-{kind}-{how}"
    p = await start(hub_a, sid)
    sent = [f"t{i}" for i in range(8)]
    try:
        async with anyio.create_task_group() as tg:
            reader = follow(tg, hub_b.subscribe(sid))

            async def body(producer: Producer) -> None:
                for chunk in sent[:5]:
                    await producer.publish(chunk)
                set_fault(store, sid, kind, on=True)
                # Mend the store the moment the producer learns its write was lost, so the
                # close that follows can record the failure.
                producer.add_cancel_callback(lambda _: set_fault(store, sid, kind, on=False))
                for chunk in sent[5:]:
                    await producer.send(chunk)  # the final batch: written while closing

            if how == "async_with":
                async with p:
                    await body(p)
                assert p.closed
            else:
                await body(p)
                assert await p.close() is State.FAILED
            items = await reader.result(within=20)
    finally:
        set_fault(store, sid, kind, on=False)
    assert items[-1] == End(State.FAILED, expected)
    # Redis publishes a batch beside its XADD (not in one script): a live reader may be sent the
    # batch the store refused. It is then told so by a reset (never a silent difference from
    # what a replay shows) and gets what is stored again.
    resets = [i for i, item in enumerate(items) if isinstance(item, Reset)]
    assert len(resets) <= 1, items
    before = texts(items[: resets[0]]) if resets else []
    assert before == sent[: len(before)], before
    stored = texts(items[resets[0] + 1 :] if resets else items)
    # What was stored before stays readable, in order; the lost batch is not reported done.
    assert stored[:5] == sent[:5] and stored == sent[: len(stored)], stored
    for hub in (hub_a, hub_b):
        state, reason, end = await record_and_end(hub, sid)
        assert (state, reason) == (State.FAILED, expected)
        assert end == End(State.FAILED, expected)


# --------------------------------------------------------------------------- the store checks


async def test_the_store_refuses_done_when_the_log_misses_chunks(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    short = await start(hub_a, "claims-more")
    exact = await start(hub_a, "claims-exact")
    for i in range(3):
        await short.publish(i)
        await exact.publish(i)
    async with anyio.create_task_group() as tg:
        reader = follow(tg, hub_b.subscribe("claims-more"))
        await reader.first_chunk()
        # A producer that believes it wrote 5 chunks where the log holds 3.
        state = await hub_a.backend.close("claims-more", short.generation, State.DONE, None, last=5)
        items = await reader.result()
    reason = "backend: the store holds 3 of 5 chunks"
    assert state is State.FAILED
    assert texts(items) == [0, 1, 2] and items[-1] == End(State.FAILED, reason)
    assert await record_and_end(hub_b, "claims-more") == (
        State.FAILED,
        reason,
        End(State.FAILED, reason),
    )
    # The producer learns the stored state when it closes.
    assert await short.close() is State.FAILED

    assert await exact.close() is State.DONE
    assert await record_and_end(hub_b, "claims-exact") == (State.DONE, None, End(State.DONE, None))
    # The same check applies to cancelled; failed needs no claim.
    cancelled = await start(hub_a, "claims-cancelled")
    await cancelled.publish("x")
    assert (
        await hub_a.backend.close(
            "claims-cancelled", cancelled.generation, State.CANCELLED, None, last=2
        )
        is State.FAILED
    )
    await cancelled.close()


async def test_the_store_checks_a_fan_in_owner_by_its_batches(make_hub: HubFactory) -> None:
    hub = await make_hub()
    owner = await start(hub, "fan-claims")
    await owner.admit("helper")
    await owner.publish("a")
    await owner.publish("b")
    assert owner._buffer.seq == 2
    state = await hub.backend.close("fan-claims", owner.generation, State.DONE, None, last=3)
    reason = "backend: the store holds 2 of 3 batches"
    assert state is State.FAILED
    assert await record_and_end(hub, "fan-claims") == (
        State.FAILED,
        reason,
        End(State.FAILED, reason),
    )
    await owner.close()

    fine = await start(hub, "fan-fine")
    await fine.admit("helper")
    await fine.publish("a")
    assert await fine.close() is State.DONE


async def test_a_sub_producer_part_ended_short_fails_the_session(make_hub: HubFactory) -> None:
    hub_a, hub_b = await make_hub(), await make_hub()
    owner = await start(hub_a, "fan-short")
    part = await hub_b.join(await owner.admit("helper"))
    await part.publish("h1")
    # The helper's producer counted one batch more than the store holds (a lost write).
    name, token = "helper", part._buffer.part[1] if part._buffer.part else ""
    assert await hub_b.backend.end_part("fan-short", owner.generation, name, token, last=2) is None
    await owner.publish("o1")
    assert await owner.close() is State.FAILED
    reason = "backend: producer helper lost a write"
    assert await record_and_end(hub_b, "fan-short") == (
        State.FAILED,
        reason,
        End(State.FAILED, reason),
    )

    # A part that ends with everything stored leaves the owner's done alone.
    fine = await start(hub_a, "fan-whole")
    whole = await hub_b.join(await fine.admit("helper"))
    await whole.publish("h1")
    assert await whole.close() is State.DONE
    assert await fine.close() is State.DONE


@pytest.mark.parametrize("kind", ["freeze", "refuse"])
async def test_a_sub_producer_lost_write_fails_its_part_and_the_session(
    store: Store, make_hub: HubFactory, kind: str
) -> None:
    if kind == "freeze" and isinstance(store, ClusterStore):
        pytest.skip("freezing a primary of the shared cluster past its node timeout fails it over")
    hub_a, hub_b = await make_hub(outage_timeout=OUTAGE), await make_hub(outage_timeout=OUTAGE)
    sid = f"fan-lost-{kind}"
    owner = await start(hub_a, sid)
    async with await hub_b.join(await owner.admit("helper")) as part:
        await part.publish("h1")
        set_fault(store, sid, kind, on=True)
        part.add_cancel_callback(lambda _: set_fault(store, sid, kind, on=False))
        await part.send("h2")  # lost while the part closes
    set_fault(store, sid, kind, on=False)
    assert part.closed and part._state is State.FAILED  # its part: by the producer's rule
    page = await hub_a.backend.read(sid, (owner.generation, 0), 10)
    stored = [chunk.data for chunk in page.chunks]
    # The session: by what the store holds. A frozen Redis runs the write it had received once
    # it resumes, after the producer gave up on it: then nothing is missing and done is true.
    held = stored == ["h1", "h2"]
    assert held or stored == ["h1"], stored
    if kind == "refuse" or isinstance(store, FaultyMemoryStore):
        assert not held
    final = await owner.close()
    reason = None if held else "backend: producer helper lost a write"
    assert final is (State.DONE if held else State.FAILED)
    assert await record_and_end(hub_a, sid) == (final, reason, End(final, reason))


# --------------------------------------------------------------------------- one rule, every path


async def _run_path(hub: StreamHub, store: Store, sid: str, path: str) -> Any:
    p = await start(hub, sid)
    await p.publish("first")
    if path == "close":
        return await p.close()
    if path == "async_with":
        async with p:
            await p.publish("second")
        return p._state
    if path == "exception":
        with pytest.raises(ValueError, match="model blew up"):
            async with p:
                raise ValueError("model blew up")
        return p._state
    if path == "cancel_close":
        await hub.cancel(sid)
        with anyio.fail_after(10):
            await p.cancelled.wait()
        return await p.close()
    if path == "cancel_async_with":
        async with p:
            await hub.cancel(sid)
            await anyio.sleep_forever()  # ends when the cancel reaches the producer's scope
        return p._state
    if path == "lost_lease":
        hub._forget(p)  # this hub stops renewing it
        store.lapse_lease(sid)
        assert await hub.cancel(sid) is State.FAILED  # noticed: the store fails the generation
        return await p.close()  # the store answers the state it recorded
    raise AssertionError(path)


PATHS = {
    "close": (State.DONE, None),
    "async_with": (State.DONE, None),
    "exception": (State.FAILED, "ValueError: model blew up"),
    "cancel_close": (State.CANCELLED, "cancelled"),
    "cancel_async_with": (State.CANCELLED, "cancelled"),
    "lost_lease": (State.FAILED, "lease_expired"),
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_every_exit_path_stores_the_same_record_and_end(
    store: Store, make_hub: HubFactory, path: str
) -> None:
    hub, other = await make_hub(), await make_hub()
    sid = f"path-{path}"
    returned = await _run_path(hub, store, sid, path)
    expected_state, expected_reason = PATHS[path]
    assert returned is expected_state
    assert await record_and_end(other, sid) == (
        expected_state,
        expected_reason,
        End(expected_state, expected_reason),
    )


@pytest.mark.timeout(30)
async def test_shutdown_stores_failed_shutdown_for_owner_and_part(store: Store) -> None:
    options = {"shutdown_grace": 0.2}
    async with store.new_hub(**options) as reader_hub:
        hub = store.new_hub(**options)
        async with hub:
            p = await start(hub, "path-shutdown")
            await p.publish("first")
            grant = await p.admit("helper")
            part = await reader_hub.join(grant)
            # The owner's producer keeps running (never closed) until the hub shuts down.
        assert p._state is State.FAILED
        assert await record_and_end(reader_hub, "path-shutdown") == (
            State.FAILED,
            "shutdown",
            End(State.FAILED, "shutdown"),
        )
        # The sub-producer's part ends by the same rule: its owner's generation is over.
        with pytest.raises(OwnershipLost):
            await part.publish("late")
        assert await part.close() is State.FAILED


@pytest.mark.parametrize("how", ["close", "async_with"])
async def test_a_sub_producer_ends_by_the_same_rule(
    store: Store, make_hub: HubFactory, how: str
) -> None:
    hub = await make_hub()
    owner = await start(hub, f"part-{how}")
    part = await hub.join(await owner.admit("helper"))
    await part.publish("p")
    part.request_cancel("cancelled")
    if how == "close":
        assert await part.close() is State.CANCELLED
    else:
        async with part:
            await anyio.sleep_forever()
        assert part._state is State.CANCELLED
    assert await owner.close() is State.DONE
