"""``many_streams_cmds_per_chunk`` and ``many_streams_latency_p99``: LLM-like load.

1,000 concurrent streams produced on one hub in this process, each sending one chunk every
1/30 s (random phase) for the duration; one subscriber per stream on one hub in another process
(spawned), in batch mode (``subscribe(batch=True)``, as the library's SSE responses consume).
Each chunk carries ``perf_counter_ns()`` taken just before ``producer.send``; the subscriber
process stamps the arrival (``CLOCK_MONOTONIC`` is shared by every process).

Commands: ``INFO commandstats`` delta (including calls made inside Lua scripts) from the first
chunk until every subscriber has seen its stream end, over the chunks sent. MONITOR is not used
here (it would be the bottleneck). CPU seconds per 1,000 chunks of each process are reported
beside it (producer, subscriber, redis-server), and the producer's CPU for the same pacing
loops without any library call (the floor). The same is then measured at 300 streams, for the
trend. A stream the library fails under overload (lease lapsed) is counted, not fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing as mp
import random
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

import anyio

from fastapi_streamhub import Batch, End, Producer, StreamHub, StreamHubError

from ._common import Context, Goal, LogTally, Metric, hub, new_id, percentile
from ._common import run as run_loop
from ._redis import cpu_seconds

RATE = 30.0
WARMUP = "w"


# -- the subscriber process -------------------------------------------------------------------


def _subscribers(url: str, session_ids: list[str], conn: Connection) -> None:
    tally = LogTally.install()
    result = run_loop(_follow_all, url, session_ids, conn)
    result["warnings"] = tally.take()
    conn.send(result)
    conn.close()


async def _follow_all(url: str, session_ids: list[str], conn: Connection) -> dict[str, Any]:
    latencies: list[float] = []
    received = [0]
    warm = [0]
    all_warm = anyio.Event()

    async def follow(h: StreamHub, session_id: str) -> None:
        # Batch mode: how the library's SSE responses consume a subscription.
        async with h.subscribe(session_id, batch=True) as subscription:
            async for item in subscription:
                if isinstance(item, Batch):
                    now = time.perf_counter_ns()
                    for chunk in item.chunks:
                        if chunk.data == WARMUP:
                            warm[0] += 1
                            if warm[0] == len(session_ids):
                                all_warm.set()
                            continue
                        latencies.append((now - int(chunk.data)) / 1e6)
                        received[0] += 1
                elif isinstance(item, End):
                    return

    async with StreamHub.from_url(url) as h, anyio.create_task_group() as tg:
        for session_id in session_ids:
            tg.start_soon(follow, h, session_id)
        await all_warm.wait()
        gc.collect()
        gc.freeze()  # the long-lived set-up leaves the collector's scans (see the module doc)
        cpu0 = time.process_time()
        conn.send("ready")
    return {
        "latencies": latencies,
        "received": received[0],
        "cpu": time.process_time() - cpu0,
    }


# -- the reference subscriber: the same live records, read by hand ---------------------------


def _reference_subscribers(url: str, session_ids: list[str], conn: Connection) -> None:
    result = run_loop(_reference_follow_all, url, session_ids, conn)
    conn.send(result)
    conn.close()


async def _reference_follow_all(
    url: str, session_ids: list[str], conn: Connection
) -> dict[str, Any]:
    """One pub/sub connection on the data bus, each record split once, and one task per stream
    woken with the chunks of its record: the least a reader of the library's live records does
    (no replay, no gap check, no ordering check, no end handling beyond counting)."""
    from redis.asyncio import Redis

    latencies: list[float] = []
    received = [0]
    warm = [0]
    all_warm = asyncio.Event()
    done = asyncio.Event()
    wanted = {sid.encode(): i for i, sid in enumerate(session_ids)}
    queues: list[asyncio.Queue[list[bytes]]] = [asyncio.Queue() for _ in session_ids]
    expected = [0]  # set once every stream is warm: chunks per stream

    async def follow(queue: asyncio.Queue[list[bytes]]) -> None:
        while True:
            payloads = await queue.get()
            now = time.perf_counter_ns()
            for payload in payloads:
                data = payload[1:]
                if data == b"w":
                    warm[0] += 1
                    if warm[0] == len(session_ids):
                        all_warm.set()
                    continue
                latencies.append((now - int(data)) / 1e6)
                received[0] += 1
            if expected[0] and received[0] >= expected[0]:
                done.set()

    def dispatch(message: bytes) -> None:
        pos, end = 0, len(message)
        while pos < end:
            tag = message[pos : pos + 1]
            colon = message.index(b":", pos + 1)
            sid_end = colon + 1 + int(message[pos + 1 : colon])
            sid = message[colon + 1 : sid_end]
            colon = message.index(b":", sid_end)
            body_end = colon + 1 + int(message[sid_end:colon])
            index = wanted.get(sid)
            if tag == b"C" and index is not None:
                _gen, _first, framed = message[colon + 1 : body_end].split(b":", 2)
                payloads = []
                at, stop = 0, len(framed)
                while at < stop:
                    sep = framed.index(b":", at)
                    start = sep + 1
                    at = start + int(framed[at:sep])
                    payloads.append(framed[start:at])
                queues[index].put_nowait(payloads)
            pos = body_end

    client = Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe("streamhub:bus:data")
    tasks = [asyncio.create_task(follow(q)) for q in queues]

    async def read() -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is not None and message["type"] == "message":
                dispatch(message["data"])

    reader = asyncio.create_task(read())
    conn.send("listening")
    await all_warm.wait()
    gc.collect()
    gc.freeze()
    cpu0 = time.process_time()
    conn.send("ready")
    # The producing side says how many chunks it sent; wait for them (or a deadline).
    expected[0] = await anyio.to_thread.run_sync(conn.recv)
    if received[0] >= expected[0]:
        done.set()
    with anyio.move_on_after(60):
        await done.wait()
    cpu = time.process_time() - cpu0
    reader.cancel()
    for task in tasks:
        task.cancel()
    await pubsub.aclose()
    await client.aclose()
    return {"latencies": latencies, "received": received[0], "cpu": cpu, "warnings": ""}


# -- the producing side -----------------------------------------------------------------------


async def _produce(
    producer: Producer | None, count: int, t0: float, failures: Counter[str] | None = None
) -> None:
    """One stream's pacing; with ``producer`` None only the pacing (the CPU floor).

    A stream the library fails (e.g. its lease lapsed while the process was overloaded) stops
    and is counted in ``failures``; the other streams go on.
    """
    phase = random.random() / RATE
    try:
        for i in range(count):
            delay = t0 + phase + i / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the generator's wait (the reference pays it too)
            stamp = str(time.perf_counter_ns())
            if producer is not None:
                await producer.send(stamp)
        if producer is not None:
            await producer.close()
    except StreamHubError as exc:
        if failures is None:
            raise
        failures[type(exc).__name__] += 1
        assert producer is not None
        with contextlib.suppress(StreamHubError):
            await producer.close()


async def pacing_only(streams: int, seconds: float) -> float:
    """CPU seconds per 1,000 chunks of the pacing loops alone (no library call)."""
    per_stream = int(RATE * seconds)
    cpu0 = time.process_time()
    async with anyio.create_task_group() as tg:
        t0 = time.perf_counter() + 0.05
        for _ in range(streams):
            tg.start_soon(_produce, None, per_stream, t0)
    return (time.process_time() - cpu0) / (streams * per_stream / 1000)


async def measure(
    ctx: Context, streams: int, seconds: float, *, reference: bool = False
) -> dict[str, Any]:
    """One run; with ``reference`` the subscribing process is the hand-written reader."""
    per_stream = int(RATE * seconds)
    failures: Counter[str] = Counter()
    spawn = mp.get_context("spawn")
    async with hub(ctx) as h:
        session_ids = [new_id("many") for _ in range(streams)]
        parent, child = spawn.Pipe()
        target = _reference_subscribers if reference else _subscribers
        proc = spawn.Process(target=target, args=(ctx.url, session_ids, child))
        producers: list[Producer] = []

        async def register() -> None:
            for session_id in session_ids:
                producer = (await h.register(session_id)).producer
                assert producer is not None
                producers.append(producer)
                await producer.send(WARMUP)

        if not reference:
            # The library's subscribers open sessions that must exist (2,000 registrations
            # can take longer than the process takes to start); they replay the warm-up.
            await register()
        proc.start()
        if reference:
            # It reads live records only: it must listen before the warm-up chunks go out.
            with anyio.fail_after(60):
                while not parent.poll(0):
                    if not proc.is_alive():
                        raise RuntimeError("the reference subscriber process died")
                    await anyio.sleep(0.02)
            assert parent.recv() == "listening"
            await register()
        try:
            with anyio.fail_after(120):
                while not parent.poll(0):
                    if not proc.is_alive():
                        raise RuntimeError("the subscriber process died")
                    await anyio.sleep(0.02)
            assert parent.recv() == "ready"
            gc.collect()
            gc.freeze()
            redis_cpu0 = cpu_seconds(ctx.redis.pid)
            cpu0 = time.process_time()
            t_start = time.perf_counter()
            with ctx.redis.window(monitor=False) as window:
                async with anyio.create_task_group() as tg:
                    t0 = time.perf_counter() + 0.05
                    for producer in producers:
                        tg.start_soon(_produce, producer, per_stream, t0, failures)
                producing_cpu = time.process_time() - cpu0
                if reference:
                    parent.send(sum(p.cursor.offset - 1 for p in producers))
                with anyio.fail_after(300):
                    while not parent.poll(0):
                        if not proc.is_alive():
                            raise RuntimeError("the subscriber process died")
                        await anyio.sleep(0.02)
                result: dict[str, Any] = parent.recv()
            wall = time.perf_counter() - t_start
            redis_cpu = cpu_seconds(ctx.redis.pid) - redis_cpu0
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    # Chunks persisted (the warm-up chunk excluded); all of them when no stream failed.
    sent = sum(p.cursor.offset - 1 for p in producers)
    if not failures and sent != streams * per_stream:
        raise RuntimeError(f"{sent} of {streams * per_stream} chunks persisted")
    if result["received"] != sent:
        failures["chunks persisted but not received"] += sent - result["received"]
    kilo = sent / 1000
    return {
        "chunks": sent,
        "wall": wall,
        "counts": window.counts,
        "latencies": result["latencies"],
        "cpu_producer": producing_cpu / kilo,
        "cpu_subscriber": result["cpu"] / kilo,
        "cpu_redis": redis_cpu / kilo,
        "subscriber_warnings": result["warnings"],
        "failures": failures,
    }


async def run(ctx: Context) -> list[Metric]:
    streams = 1000
    seconds = ctx.pick(5, 10)
    got = await measure(ctx, streams, seconds)
    floor = await pacing_only(streams, seconds)
    ctx.redis.flush()
    by_hand = await measure(ctx, streams, seconds, reference=True)
    ctx.redis.flush()
    # The same at a lower load, for the trend, and at twice the load.
    light_streams = 300
    light = await measure(ctx, light_streams, seconds)
    ctx.redis.flush()
    heavy_streams = 2000
    heavy = await measure(ctx, heavy_streams, seconds)
    ctx.redis.flush()
    for label, n, run_ in (
        ("many_streams", streams, got),
        ("many_streams_reference_subscriber", streams, by_hand),
        ("many_streams_300", light_streams, light),
        ("many_streams_2000", heavy_streams, heavy),
    ):
        lat = run_["latencies"]
        ctx.note(
            label,
            f"{n} streams x {RATE:g} chunks/s x {seconds}s = {run_['chunks']} chunks in "
            f"{run_['wall']:.1f}s (ideal {seconds}s); latency p50/p99/max "
            f"{percentile(lat, 50):.1f}/{percentile(lat, 99):.1f}/{percentile(lat, 100):.1f} ms; "
            f"CPU s per 1000 chunks: producer {run_['cpu_producer']:.3f}, subscriber "
            f"{run_['cpu_subscriber']:.3f}, redis {run_['cpu_redis']:.3f}; commands: "
            + ", ".join(f"{name} {k}" for name, k in run_["counts"].total.most_common())
            + f"; subscriber process warnings: {run_['subscriber_warnings'] or 'none'}"
            + f"; failed streams: {dict(run_['failures']) or 'none'}",
        )
    return [
        Metric(
            "many_streams_cmds_per_chunk",
            got["counts"].n_total / got["chunks"],
            "cmds/chunk",
            goal=Goal("value", "<=", 1.2),
            note="commandstats, including calls made inside Lua scripts",
        ),
        Metric(
            "many_streams_latency_p99",
            percentile(got["latencies"], 99),
            "ms",
            goal=Goal("value", "<=", 50.0, "ms"),
        ),
        Metric(
            "many_streams_cpu_producer",
            got["cpu_producer"],
            "s/1000 chunks",
            reference=floor,
            goal=Goal("ratio", "<=", 1.5),
            note="reference: the same pacing loops without any library call",
        ),
        Metric(
            "many_streams_cpu_subscriber",
            got["cpu_subscriber"],
            "s/1000 chunks",
            reference=by_hand["cpu_subscriber"],
            goal=Goal("ratio", "<=", 1.5),
            note="reference: a hand-written reader of the same live records (one pub/sub "
            "connection, each record decoded once, one task woken per stream)",
        ),
        Metric("many_streams_cpu_redis", got["cpu_redis"], "s/1000 chunks"),
        Metric(
            "many_streams_failed_streams",
            sum(v for k, v in got["failures"].items() if not k.startswith("chunks")),
            "streams",
            note="streams the library failed during the run (e.g. lease lapsed under overload)",
        ),
        Metric(
            "many_streams_300_cmds_per_chunk",
            light["counts"].n_total / light["chunks"],
            "cmds/chunk",
            note="the same with 300 streams",
        ),
        Metric("many_streams_300_latency_p99", percentile(light["latencies"], 99), "ms"),
        Metric(
            "many_streams_2000_latency_p99",
            percentile(heavy["latencies"], 99),
            "ms",
            goal=Goal("value", "<=", 50.0, "ms"),
            note="2,000 streams x 30 chunks/s",
        ),
        Metric(
            "many_streams_2000_failed_streams",
            sum(v for k, v in heavy["failures"].items() if not k.startswith("chunks")),
            "streams",
        ),
    ]
