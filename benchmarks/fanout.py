"""``fanout_redis_cmds_per_chunk`` and ``fanout_mem_per_subscriber``.

One stream, 1,000 subscribers (``hub.subscribe``) on one hub in this process, the producer on
another hub. Each chunk is published on its own (``producer.publish`` awaited one at a time), the
worst case for the command count: no two chunks share a write.

- Commands: ``INFO commandstats`` delta over the publishing window (until every subscriber has
  every chunk). Commandstats counts the calls Lua scripts make too; the top-level (network)
  count comes from MONITOR (see ``_redis.py``). The goal's figure leaves out what does not
  depend on chunks (connection handshakes, lease renewal and lease checks: per second, not per
  chunk); the figure with everything is reported beside it.
- Memory: ``tracemalloc`` traced size after the 1,000 subscriptions are set up and idle (each
  has received the first chunk and waits for the next), minus before, over 1,000.
"""

from __future__ import annotations

import gc
import tracemalloc

import anyio

from fastapi_streamhub import Chunk, End, StreamHub

from ._common import TOKEN, Context, Goal, Metric, hub, new_id

SUBSCRIBERS = 1000
_NOT_PER_CHUNK = frozenset({"hello", "client|setinfo", "getex", "pttl"})


class _Tally:
    def __init__(self, subscribers: int) -> None:
        self.subscribers = subscribers
        self.counts = [0] * subscribers
        self.in_order = [True] * subscribers
        self.ended = 0
        self._target = 0
        self._reached = 0
        self._event = anyio.Event()

    async def wait_for(self, count: int) -> None:
        """Until every subscriber has received ``count`` chunks."""
        self._target = count
        self._reached = sum(1 for c in self.counts if c >= count)
        self._event = anyio.Event()
        if self._reached < self.subscribers:
            await self._event.wait()

    def got(self, index: int, offset: int) -> None:
        count = self.counts[index] + 1
        self.counts[index] = count
        if offset != count:
            self.in_order[index] = False
        if count == self._target:
            self._reached += 1
            if self._reached == self.subscribers:
                self._event.set()


async def _follow(h: StreamHub, session_id: str, index: int, tally: _Tally) -> None:
    async with h.subscribe(session_id) as subscription:
        async for item in subscription:
            if isinstance(item, Chunk):
                tally.got(index, item.cursor.offset)
            elif isinstance(item, End):
                tally.ended += 1
                return


async def run(ctx: Context) -> list[Metric]:
    chunks = ctx.pick(200, 1000)
    tally = _Tally(SUBSCRIBERS)
    async with hub(ctx) as producing, hub(ctx) as following:
        session_id = new_id("fanout")
        producer = (await producing.register(session_id)).producer
        assert producer is not None
        async with anyio.create_task_group() as tg:
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for i in range(SUBSCRIBERS):
                tg.start_soon(_follow, following, session_id, i, tally)
            await producer.publish(TOKEN)
            with anyio.fail_after(120):
                await tally.wait_for(1)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            per_subscriber = (after - before) / SUBSCRIBERS

            with ctx.redis.window() as window, anyio.fail_after(300):
                for _ in range(chunks):
                    await producer.publish(TOKEN)
                await tally.wait_for(1 + chunks)
            await producer.close()
        counts = window.counts
    complete = (
        all(c == chunks + 1 for c in tally.counts)
        and all(tally.in_order)
        and tally.ended == SUBSCRIBERS
    )
    if not complete:
        raise RuntimeError("not every subscriber received every chunk in order")
    ctx.note(
        "fanout",
        f"{SUBSCRIBERS} subscribers x {chunks} chunks, each published alone; every subscriber "
        f"received all, in order. Commands in the window: {counts.describe()}",
    )
    ctx.note(
        "fanout_script_counting",
        "Redis "
        + ctx.redis.version()
        + " INFO commandstats counts commands run inside Lua scripts (verified with MONITOR: "
        + f"{counts.n_script} of {counts.n_total} calls were script-internal)",
    )
    # Per-chunk work excludes what does not depend on chunks: opening a pool connection
    # (HELLO, CLIENT SETINFO) and the lease upkeep of the producer (GETEX) and of the
    # following hub (PTTL), which cost per second (see idle_cmds_per_s), not per chunk.
    upkeep = sum(n for name, n in counts.total.items() if name in _NOT_PER_CHUNK)
    return [
        Metric(
            "fanout_redis_cmds_per_chunk",
            (counts.n_total - upkeep) / chunks,
            "cmds/chunk",
            goal=Goal("value", "<=", 2.0),
            note="commandstats (including calls inside Lua scripts), less connection handshakes "
            "and lease upkeep",
        ),
        Metric(
            "fanout_redis_cmds_per_chunk_all",
            counts.n_total / chunks,
            "cmds/chunk",
            note="every command in the window, handshakes and lease upkeep included",
        ),
        Metric(
            "fanout_redis_cmds_per_chunk_toplevel",
            counts.n_top_level / chunks,
            "cmds/chunk",
            note="network round trips only (MONITOR, client type != lua)",
        ),
        Metric(
            "fanout_mem_per_subscriber",
            per_subscriber / 1024,
            "KiB",
            goal=Goal("value", "<=", 16.0, "KiB"),
        ),
    ]
