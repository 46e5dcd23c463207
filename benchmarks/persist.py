"""``persist_throughput``: chunks/s from a producer into Redis, acknowledged.

Library: ``hub.register`` then ``producer.send`` in a loop and ``flush`` (every chunk stored and
acknowledged by Redis). Reference: redis-py asyncio, ``XADD`` in non-transactional pipelines of
64, one pipeline in flight at a time, same stored payload bytes. Runs alternate between the two
so that drifts of a noisy machine hit both; each reports its median.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from fastapi_streamhub import StreamHub
from fastapi_streamhub._codec import encode_chunk

from ._common import TOKEN, Context, Goal, Metric, hub, median, new_id

PIPELINE = 64


async def raw_pipelined_xadd(client: Redis, key: str, n: int, payload: bytes) -> float:
    """Seconds to XADD ``n`` entries in pipelines of 64 (each acknowledged)."""
    t0 = time.perf_counter()
    done = 0
    while done < n:
        size = min(PIPELINE, n - done)
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(size):
                pipe.xadd(key, {"d": payload})
            await pipe.execute()
        done += size
    return time.perf_counter() - t0


async def producer_send(h: StreamHub, n: int) -> float:
    """Seconds to ``send`` ``n`` chunks and ``flush`` them (registration not included)."""
    registration = await h.register(new_id("persist"))
    producer = registration.producer
    assert producer is not None
    t0 = time.perf_counter()
    for _ in range(n):
        await producer.send(TOKEN)
    await producer.flush()
    elapsed = time.perf_counter() - t0
    await producer.close()
    return elapsed


async def run(ctx: Context) -> list[Metric]:
    n = ctx.pick(50_000, 200_000)
    rounds = ctx.pick(5, 7)
    payload = encode_chunk(TOKEN)  # the exact bytes the library stores
    raw: list[float] = []
    lib: list[float] = []
    client = Redis.from_url(ctx.url)
    try:
        async with hub(ctx) as h:
            # Warm up both paths (script loading, connections).
            await raw_pipelined_xadd(client, new_id("raw"), 1_000, payload)
            await producer_send(h, 1_000)
            for _ in range(rounds):
                raw.append(n / await raw_pipelined_xadd(client, new_id("raw"), n, payload))
                lib.append(n / await producer_send(h, n))
                ctx.redis.flush()
    finally:
        await client.aclose()
    ctx.note(
        "persist_throughput",
        f"{n} chunks x {rounds} rounds; library runs {[round(x) for x in lib]}, "
        f"raw runs {[round(x) for x in raw]}",
    )
    return [
        Metric(
            "persist_throughput",
            median(lib),
            "chunks/s",
            reference=median(raw),
            goal=Goal("ratio", ">=", 1.0),
        )
    ]
