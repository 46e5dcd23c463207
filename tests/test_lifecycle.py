"""Hub lifecycle edge cases: abandoned subscriptions, running twice, not running."""

from __future__ import annotations

from types import AsyncGeneratorType
from typing import Any, cast

import pytest

from fastapi_streamhub import End, StreamHub


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
