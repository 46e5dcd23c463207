"""``e2e_latency_p50`` / ``e2e_latency_p99``: publish on hub A → received on hub B in another process.

Light load: one chunk every 2 ms. Each chunk carries ``time.perf_counter_ns()`` taken just before
``producer.send``; the receiving process stamps it again when the subscription yields it. On
Linux ``perf_counter`` is ``CLOCK_MONOTONIC``, one clock for every process of the machine, so the
difference is a one-way latency without any clock synchronisation.

Reference, measured the same way in the same run: ``XADD`` (redis-py asyncio, one command) in
this process → ``XREAD BLOCK`` loop (redis-py asyncio) in another process. Both receiving
processes stay up for the whole measurement and the sending alternates between the two paths in
blocks, so that the drifts of a noisy machine hit both alike.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any, Literal

import anyio
from redis.asyncio import Redis

from fastapi_streamhub import Chunk, End, StreamHub

from ._common import Context, Goal, LogTally, Metric, hub, new_id, percentile
from ._common import run as run_loop

Mode = Literal["hub", "raw"]
INTERVAL = 0.002
WARMUP = "w"
MEASURE = "m"
STOP = "stop"


# -- the receiving process --------------------------------------------------------------------


def _receiver(url: str, mode: Mode, key: str, conn: Connection) -> None:
    LogTally.install()  # a warning here would show as a latency outlier anyway
    latencies = run_loop(_receive_hub if mode == "hub" else _receive_raw, url, key, conn)
    conn.send(latencies)
    conn.close()


async def _receive_hub(url: str, session_id: str, conn: Connection) -> list[float]:
    out: list[float] = []
    ready = False
    async with StreamHub.from_url(url) as h, h.subscribe(session_id) as subscription:
        async for item in subscription:
            now = time.perf_counter_ns()
            if isinstance(item, Chunk):
                text = item.data
                if text.startswith(MEASURE):
                    out.append((now - int(text[1:])) / 1e6)
                elif not ready:
                    ready = True
                    conn.send("ready")
            elif isinstance(item, End):
                break
    return out


async def _receive_raw(url: str, key: str, conn: Connection) -> list[float]:
    out: list[float] = []
    ready = False
    client = Redis.from_url(url)
    last = "0-0"
    try:
        while True:
            reply: Any = await client.xread({key: last}, block=5000, count=100)
            if not reply:
                continue
            # RESP2: [[key, entries]]; RESP3: {key: [entries]}
            entries = next(iter(reply.values()))[0] if isinstance(reply, dict) else reply[0][1]
            now = time.perf_counter_ns()
            for entry_id, fields in entries:
                last = entry_id
                text = fields[b"d"].decode()
                if text == STOP:
                    return out
                if text.startswith(MEASURE):
                    out.append((now - int(text[1:])) / 1e6)
                elif not ready:
                    ready = True
                    conn.send("ready")
    finally:
        await client.aclose()


# -- the publishing side ----------------------------------------------------------------------


async def _wait_ready(conn: Connection, send_warmup: Any, proc: Any) -> None:
    deadline = time.monotonic() + 30
    while not conn.poll(0):
        if not proc.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the receiving process did not become ready")
        await send_warmup()
        await anyio.sleep(0.01)
    assert conn.recv() == "ready"


async def _paced(n: int, send: Any) -> None:
    t0 = time.perf_counter()
    for i in range(n):
        delay = t0 + i * INTERVAL - time.perf_counter()
        if delay > 0:
            await anyio.sleep(delay)
        await send(f"{MEASURE}{time.perf_counter_ns()}")


async def _collect(conn: Connection, proc: Any) -> list[float]:
    with anyio.fail_after(60):
        while not conn.poll(0):
            if not proc.is_alive():
                raise RuntimeError("the receiving process died")
            await anyio.sleep(0.01)
    latencies: list[float] = conn.recv()
    return latencies


async def measure(ctx: Context, n: int, blocks: int) -> tuple[list[float], list[float]]:
    """Latencies (ms) of the hub path and of the raw path, ``n`` each.

    Both receiving processes run for the whole measurement; the publishing alternates between
    the two paths in ``blocks`` blocks, so that a drift of the machine affects both alike.
    """
    spawn = mp.get_context("spawn")
    key = new_id("e2e-raw")
    client = Redis.from_url(ctx.url)

    async def xadd(text: str) -> None:
        await client.xadd(key, {"d": text})

    procs: list[Any] = []
    try:
        async with hub(ctx) as a:
            session_id = new_id("e2e")
            producer = (await a.register(session_id)).producer
            assert producer is not None
            pipes = {}
            for mode, name in (("hub", session_id), ("raw", key)):
                parent, child = spawn.Pipe()
                proc = spawn.Process(target=_receiver, args=(ctx.url, mode, name, child))
                proc.start()
                procs.append(proc)
                pipes[mode] = (parent, proc)
            await _wait_ready(pipes["hub"][0], lambda: producer.send(WARMUP), pipes["hub"][1])
            await _wait_ready(pipes["raw"][0], lambda: xadd(WARMUP), pipes["raw"][1])
            per_block = n // blocks
            for _ in range(blocks):
                await _paced(per_block, xadd)
                await _paced(per_block, producer.send)
            await producer.close()
            await xadd(STOP)
            lib = await _collect(*pipes["hub"])
            raw = await _collect(*pipes["raw"])
            return lib, raw
    finally:
        await client.aclose()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


async def run(ctx: Context) -> list[Metric]:
    blocks = 8
    n = ctx.pick(2_000, 10_000) // blocks * blocks
    lib, raw = await measure(ctx, n, blocks)
    if len(lib) != n or len(raw) != n:
        raise RuntimeError(f"lost samples: hub {len(lib)}/{n}, raw {len(raw)}/{n}")
    ctx.note(
        "e2e_latency",
        f"{n} samples each in {blocks} alternating blocks, 1 chunk / {INTERVAL * 1e3:g} ms; "
        "hub p50/p90/p99/max "
        + "/".join(f"{percentile(lib, p):.3f}" for p in (50, 90, 99, 100))
        + " ms; raw "
        + "/".join(f"{percentile(raw, p):.3f}" for p in (50, 90, 99, 100))
        + " ms",
    )
    return [
        Metric(
            "e2e_latency_p50",
            percentile(lib, 50),
            "ms",
            reference=percentile(raw, 50),
            goal=Goal("ratio", "<=", 2.0),
        ),
        Metric(
            "e2e_latency_p99",
            percentile(lib, 99),
            "ms",
            reference=percentile(raw, 99),
            goal=Goal("ratio", "<=", 3.0),
        ),
    ]
