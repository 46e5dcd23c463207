"""Hub lifecycle edge cases: abandoned subscriptions, running twice, not running."""

from __future__ import annotations

from types import AsyncGeneratorType
from typing import Any, cast

import anyio
import pytest

from fastapi_streamhub import Chunk, End, StreamHub


@pytest.fixture(params=["memory", "redis"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_url"))


@pytest.mark.anyio
async def test_subscription_left_with_break_is_closed_at_hub_exit(url: str) -> None:
    async with StreamHub.from_url(url) as hub:
        producer, _ = await hub.register("left")
        assert producer is not None
        await producer.publish("x")
        subscription = hub.subscribe("left")
        async for _item in subscription:
            break  # abandoned while following live: never closed by the caller
        await producer.close()
    # The hub closed it, while its connections were still open (no finaliser error later).
    assert cast("AsyncGeneratorType[Any, None]", subscription._iter).ag_frame is None
    assert not hub._subscribers


@pytest.mark.anyio
async def test_subscription_after_end_left_unclosed(url: str) -> None:
    async with StreamHub.from_url(url) as hub:
        producer, _ = await hub.register("ended")
        assert producer is not None
        await producer.close()
        subscription = hub.subscribe("ended")
        items = []
        async for item in subscription:
            items.append(item)
            if isinstance(item, End):
                break
        assert isinstance(items[-1], End)
    assert cast("AsyncGeneratorType[Any, None]", subscription._iter).ag_frame is None


@pytest.mark.anyio
async def test_hub_refuses_to_run_twice_and_to_work_when_stopped() -> None:
    hub = StreamHub.from_url("memory://")
    with pytest.raises(RuntimeError, match="not running"):
        await hub.register("x")
    async with hub:
        with pytest.raises(RuntimeError, match="already running"):
            await hub.__aenter__()
    with pytest.raises(RuntimeError, match="not running"):
        await hub.register("x")


@pytest.mark.anyio
async def test_concurrent_senders_and_flushers_all_wake(url: str) -> None:
    """Several tasks waiting on one producer's full buffer, or flushing it at once, all go on.

    With ``max_pending=1`` the second chunk of each task waits for room; every waiter must be
    woken when the writer takes a batch (a waiter that replaced the shared event orphaned the
    others' before), and every concurrent ``flush`` must return.
    """
    async with StreamHub.from_url(url, max_pending=1) as hub:
        producer, _ = await hub.register("crowd")
        assert producer is not None

        async def sender(name: str) -> None:
            for i in range(5):
                await producer.send(f"{name}{i}")
            await producer.flush()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for name in "abcd":
                    tg.start_soon(sender, name)
        assert producer.cursor.offset == 20
        await producer.close()
        texts = [c.data async for c in hub.subscribe("crowd") if isinstance(c, Chunk)]
        assert sorted(texts) == sorted(f"{n}{i}" for n in "abcd" for i in range(5))
