"""Hub lifecycle edge cases: abandoned subscriptions, running twice, not running."""

from __future__ import annotations

from collections.abc import Sequence
from types import AsyncGeneratorType
from typing import Any, cast

import anyio
import pytest

from fastapi_streamhub import Chunk, End, StreamHub
from fastapi_streamhub.backends.memory import MemoryBackend


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


class _CountingMemory(MemoryBackend):
    """The memory backend, recording the sessions of each lease check (``expire`` call)."""

    def __init__(self, watched: list[str]) -> None:
        super().__init__()
        self.checks: list[list[str]] = []
        self._unchecked = set(watched)
        self.all_checked = anyio.Event()

    async def expire(self, leases: Sequence[tuple[str, int]]) -> list[float | None]:
        self.checks.append([sid for sid, _ in leases])
        self._unchecked.difference_update(self.checks[-1])
        if not self._unchecked:
            self.all_checked.set()
        return await super().expire(leases)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_lease_checks_of_followed_sessions_share_round_trips() -> None:
    """Sessions followed here but produced elsewhere have their leases checked; deadlines a
    few ms apart are checked together, not one store call per session."""
    names = [f"watched-{i}" for i in range(12)]
    backend = _CountingMemory(names)
    async with (
        StreamHub(backend, lease_ttl=1.0) as producing,
        StreamHub(backend, lease_ttl=1.0) as following,
        anyio.create_task_group() as tg,
    ):
        producers = []
        for name in names:
            producer, _ = await producing.register(name)
            assert producer is not None
            producers.append(producer)
            await anyio.sleep(0.005)  # the scenario: leases granted a few ms apart
        opened = []
        for name in names:
            subscription = following.subscribe(name)
            opened.append(subscription.opened)

            async def drain(sub: Any = subscription) -> None:
                async with sub:
                    async for _ in sub:
                        pass

            tg.start_soon(drain)
        for event in opened:
            await event.wait()
        with anyio.fail_after(10):
            await backend.all_checked.wait()
        calls = len(backend.checks)
        for producer in producers:
            await producer.close()
    assert calls <= 3, backend.checks
