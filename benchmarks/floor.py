"""``floor_*``: what the many-streams load costs without the library, by hand, on redis-py.

The floors that ``many_streams``' goals are read against. The same pacing loops as
``many_streams`` (1,000 streams x 30 chunks/s, random phase), each chunk persisted by the
least a persisting producer can do in Python on redis-py: every loop appends ``(log, payload)``
to one list and sets one event; one writer task takes the whole list per round trip and sends
one ``EVALSHA`` whose script ``XADD``s each chunk (its own entry, id ``*``) and publishes the
round trip's live records (the library's record format) in one ``PUBLISH``. No fencing, no
offsets, no acknowledgement, no lease, no error handling, no byte bound: nothing the library
promises beyond "stored, then published". The reader is ``many_streams``' hand-written
reference subscriber (another process: one pub/sub connection, each record split once, one
task woken per stream).

- ``floor_cpu_producer``: that producer's CPU per chunk, against the bare pacing loops (the
  reference of ``many_streams_cpu_producer``) measured in the same run. Its ratio is the
  lowest ``many_streams_cpu_producer`` ratio a Python producer on redis-py can reach.
- ``floor_latency_p99`` / ``floor_2000_latency_p99``: generator-side stamp to the reader's
  task, 1,000 and 2,000 streams: the lowest p99 the hardware and runtime allow for the load of
  ``many_streams_latency_p99`` / ``many_streams_2000_latency_p99``, by hand.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import random
import time
from typing import Any

import anyio
from redis.asyncio import Redis

from fastapi_streamhub._codec import chunks_head, frame

from ._common import Context, Metric, new_id, percentile
from .many_streams import RATE, WARMUP, _reference_subscribers, pacing_only

# ARGV[1]: "<len>:<log key><len>:<framed value>" per chunk; ARGV[2]: the live records.
_SCRIPT = """
local blob, pos, n = ARGV[1], 1, #ARGV[1]
while pos <= n do
  local c = string.find(blob, ':', pos, true)
  local kl = tonumber(string.sub(blob, pos, c - 1))
  local key = string.sub(blob, c + 1, c + kl)
  pos = c + kl + 1
  c = string.find(blob, ':', pos, true)
  local vl = tonumber(string.sub(blob, pos, c - 1))
  redis.call('XADD', key, '*', 'c', string.sub(blob, c + 1, c + vl))
  pos = c + vl + 1
end
redis.call('PUBLISH', 'streamhub:bus:data', ARGV[2])
return 1
"""


class _ByHand:
    """The hand-written producer: a list, an event, one writer task."""

    def __init__(self, client: Redis, sha: str) -> None:
        self.client = client
        self.sha = sha
        self.pending: list[tuple[bytes, bytes, bytes]] = []
        self.wake = asyncio.Event()
        self.done = False
        self.sent = 0

    def send(self, key: bytes, sid: bytes, text: str) -> None:
        self.pending.append((key, sid, b"t" + text.encode()))
        self.wake.set()

    async def writer(self) -> None:
        while True:
            while not self.pending:
                if self.done:
                    return
                self.wake.clear()
                await self.wake.wait()
            batch, self.pending = self.pending, []
            stores = []
            records = []
            for key, sid, payload in batch:
                value = frame([payload])
                stores.append(b"%d:%s%d:%s" % (len(key), key, len(value), value))
                records.append(chunks_head(sid, 1, 1, len(value)) + value)
            await self.client.evalsha(self.sha, 0, b"".join(stores), b"".join(records))
            self.sent += len(batch)


async def _pace(hand: _ByHand, key: bytes, sid: bytes, count: int, t0: float) -> None:
    phase = random.random() / RATE
    for i in range(count):
        delay = t0 + phase + i / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        hand.send(key, sid, str(time.perf_counter_ns()))


async def _wait_message(parent: Any, proc: Any, seconds: float) -> Any:
    with anyio.fail_after(seconds):
        while not parent.poll(0):
            if not proc.is_alive():
                raise RuntimeError("the reader process died")
            await anyio.sleep(0.02)
    return parent.recv()


async def measure(ctx: Context, streams: int, seconds: float) -> dict[str, Any]:
    """One run: CPU per chunk of the producing side, latencies at the reader."""
    per_stream = int(RATE * seconds)
    sids = [new_id("floor") for _ in range(streams)]
    keys = [f"floor:{{{sid}}}:log".encode() for sid in sids]
    spawn = mp.get_context("spawn")
    parent, child = spawn.Pipe()
    proc = spawn.Process(target=_reference_subscribers, args=(ctx.url, sids, child))
    client = Redis.from_url(ctx.url)
    try:
        hand = _ByHand(client, await client.script_load(_SCRIPT))
        proc.start()
        assert await _wait_message(parent, proc, 60) == "listening"
        async with anyio.create_task_group() as tg:
            tg.start_soon(hand.writer)
            for key, sid in zip(keys, sids, strict=True):
                hand.send(key, sid.encode(), WARMUP)
            assert await _wait_message(parent, proc, 120) == "ready"
            gc.collect()
            gc.freeze()
            cpu0 = time.process_time()
            async with anyio.create_task_group() as pacing:
                t0 = time.perf_counter() + 0.05
                for key, sid in zip(keys, sids, strict=True):
                    pacing.start_soon(_pace, hand, key, sid.encode(), per_stream, t0)
            hand.done = True
            hand.wake.set()
        cpu = time.process_time() - cpu0
        parent.send(streams * per_stream)
        result: dict[str, Any] = await _wait_message(parent, proc, 120)
    finally:
        await client.aclose()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if result["received"] != streams * per_stream:
        raise RuntimeError(f"the reader got {result['received']} of {streams * per_stream}")
    return {"cpu": cpu / (streams * per_stream / 1000), "latencies": result["latencies"]}


async def run(ctx: Context) -> list[Metric]:
    seconds = ctx.pick(5, 10)
    floor = await pacing_only(1000, seconds)
    got = await measure(ctx, 1000, seconds)
    ctx.redis.flush()
    heavy = await measure(ctx, 2000, seconds)
    ctx.redis.flush()
    for label, run_ in (("floor", got), ("floor_2000", heavy)):
        lat = run_["latencies"]
        ctx.note(
            label,
            f"by hand: latency p50/p99/max {percentile(lat, 50):.1f}/{percentile(lat, 99):.1f}/"
            f"{percentile(lat, 100):.1f} ms; producing CPU {run_['cpu'] * 1000:.1f} us/chunk "
            f"(bare pacing {floor * 1000:.1f})",
        )
    return [
        Metric(
            "floor_cpu_producer",
            got["cpu"],
            "s/1000 chunks",
            reference=floor,
            note="a hand-written minimal producer (one EVALSHA per round trip) against the "
            "bare pacing loops: the least many_streams_cpu_producer's ratio can be",
        ),
        Metric(
            "floor_latency_p99",
            percentile(got["latencies"], 99),
            "ms",
            note="1,000 streams x 30/s by hand (producer and reader): the least "
            "many_streams_latency_p99 can be here",
        ),
        Metric(
            "floor_2000_latency_p99",
            percentile(heavy["latencies"], 99),
            "ms",
            note="the same with 2,000 streams",
        ),
    ]
