"""Scale-out figures: a Redis Cluster's shards, and the price of ``wait_replicas``.

- ``cluster_persist_3_shards``: aggregate ``persist_throughput`` of 12 producers (sessions
  spread over the slots) writing at once into a 3-primary cluster; reference: the same into a
  1-primary cluster. All on this one machine: the servers and the producing process share two
  cores, so the ratio shows what sharding costs or buys *here*, not on separate hosts.
- ``cluster_paced_3_shards``: the same with 200 LLM-like streams, each chunk published alone (one
  round trip each); ``cluster_redis_cpu_us_per_chunk``: Redis CPU (all nodes) per such chunk.
- ``wait_replicas_throughput``: one producer, ``wait_replicas=1`` against ``0``, on a primary
  with one replica (every writer round trip then waits for the replica's acknowledgement).
- ``wait_replicas_publish_ms``: median time of an awaited single-chunk publish + flush, with
  ``wait_replicas=1``; reference: ``0``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import anyio

from fastapi_streamhub import Producer, StreamHub

from ._common import TOKEN, Context, Metric, median, new_id
from ._redis import HOST, BenchRedis, cpu_seconds

PRODUCERS = 12


@contextmanager
def cluster(primaries: int) -> Iterator[tuple[str, list[BenchRedis]]]:
    """A ``primaries``-shard cluster on loopback; yields its ``redis+cluster://`` URL and nodes."""
    nodes = [
        BenchRedis(
            "redis-server",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        )
        for _ in range(primaries)
    ]
    try:
        for node in nodes:
            node.start()
        addresses = [f"{HOST}:{n.port}" for n in nodes]
        if primaries == 1:
            # redis-cli --cluster create wants 3 masters: give the one node every slot itself.
            nodes[0].admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        else:
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
        deadline = time.monotonic() + 30
        while not all(
            b"cluster_state:ok" in n.admin.execute_command("CLUSTER", "INFO") for n in nodes
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark cluster did not become ready")
            time.sleep(0.05)
        yield "redis+cluster://" + ",".join(addresses), nodes
    finally:
        for node in nodes:
            node.close()


async def _concurrently(
    url: str, count: int, write: Callable[[Producer], Awaitable[None]], nodes: list[BenchRedis]
) -> tuple[float, float]:
    """``count`` producers running ``write`` at once: seconds, and Redis CPU seconds (``nodes``)
    over that time. Registration and closing are not timed."""
    async with StreamHub.from_url(url) as hub:
        producers = []
        for _ in range(count):
            reg = await hub.register(new_id("shard"))
            assert reg.producer is not None
            producers.append(reg.producer)
        cpu0 = sum(cpu_seconds(node.pid) for node in nodes)
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for p in producers:
                tg.start_soon(write, p)
        elapsed = time.perf_counter() - t0
        cpu = sum(cpu_seconds(node.pid) for node in nodes) - cpu0
        for p in producers:
            await p.close()
    return elapsed, cpu


async def _aggregate(url: str, n: int) -> float:
    """Chunks/s of PRODUCERS producers sending ``n`` chunks each at once, all flushed."""

    async def send(p: Producer) -> None:
        for _ in range(n):
            await p.send(TOKEN)
        await p.flush()

    elapsed, _ = await _concurrently(url, PRODUCERS, send, [])
    return PRODUCERS * n / elapsed


async def _paced(url: str, nodes: list[BenchRedis], streams: int, n: int) -> tuple[float, float]:
    """LLM-like: ``streams`` producers each publish ``n`` chunks one at a time (each awaited,
    so each its own round trip). Returns aggregate chunks/s and Redis CPU µs per chunk (all
    nodes)."""

    async def publish(p: Producer) -> None:
        for _ in range(n):
            await p.publish(TOKEN)

    elapsed, cpu = await _concurrently(url, streams, publish, nodes)
    total = streams * n
    return total / elapsed, cpu / total * 1e6


async def _single(url: str, n: int, **options: object) -> tuple[float, float]:
    """One producer: chunks/s for ``n`` sent chunks, and the median ms of 200 awaited
    single-chunk publishes (each flushed before the next)."""
    async with StreamHub.from_url(url, **options) as hub:
        reg = await hub.register(new_id("wait"))
        p = reg.producer
        assert p is not None
        t0 = time.perf_counter()
        for _ in range(n):
            await p.send(TOKEN)
        await p.flush()
        rate = n / (time.perf_counter() - t0)
        times = []
        for _ in range(200):
            t = time.perf_counter()
            await p.publish(TOKEN)
            await p.flush()
            times.append((time.perf_counter() - t) * 1000)
        await p.close()
    return rate, median(times)


async def run(ctx: Context) -> list[Metric]:
    n = ctx.pick(5_000, 20_000)
    rounds = ctx.pick(3, 5)
    one: list[float] = []
    three: list[float] = []
    paced1: list[tuple[float, float]] = []
    paced3: list[tuple[float, float]] = []
    streams, per_stream = 200, ctx.pick(25, 50)
    with cluster(1) as (url1, nodes1), cluster(3) as (url3, nodes3):
        await _aggregate(url1, 500)
        await _aggregate(url3, 500)
        for _ in range(rounds):
            one.append(await _aggregate(url1, n))
            three.append(await _aggregate(url3, n))
            paced1.append(await _paced(url1, nodes1, streams, per_stream))
            paced3.append(await _paced(url3, nodes3, streams, per_stream))
    ctx.note(
        "cluster_persist_3_shards",
        f"{PRODUCERS} producers x {n} chunks, {rounds} rounds; 3 shards "
        f"{[round(x) for x in three]}, 1 shard {[round(x) for x in one]} chunks/s",
    )
    ctx.note(
        "cluster_paced_3_shards",
        f"{streams} streams x {per_stream} awaited publishes, {rounds} rounds; 3 shards "
        f"{[round(r) for r, _ in paced3]}, 1 shard {[round(r) for r, _ in paced1]} chunks/s; "
        f"Redis CPU per chunk (all nodes) 3 shards {[round(c, 1) for _, c in paced3]}, "
        f"1 shard {[round(c, 1) for _, c in paced1]} µs",
    )
    with (
        BenchRedis("redis-server", "--repl-diskless-sync-delay", "0") as primary,
        BenchRedis("redis-server") as replica,
    ):
        replica.admin.execute_command("REPLICAOF", HOST, primary.port)
        deadline = time.monotonic() + 30
        while replica.admin.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark replica did not sync")
            await anyio.sleep(0.05)
        await _single(primary.url, 1_000)  # warm up (connections, scripts)
        await _single(primary.url, 1_000, wait_replicas=1)
        plain: list[tuple[float, float]] = []
        waited: list[tuple[float, float]] = []
        for _ in range(rounds):
            plain.append(await _single(primary.url, n))
            waited.append(await _single(primary.url, n, wait_replicas=1))
    ctx.note(
        "wait_replicas",
        f"one producer, {n} chunks, {rounds} rounds; wait_replicas=1 "
        f"{[round(r) for r, _ in waited]} chunks/s, 0: {[round(r) for r, _ in plain]}",
    )
    paced = [r for r, _ in paced3], [r for r, _ in paced1]
    cpus = [c for _, c in paced3], [c for _, c in paced1]
    rates = [r for r, _ in waited], [r for r, _ in plain]
    times = [t for _, t in waited], [t for _, t in plain]
    return [
        _versus("cluster_persist_3_shards", (three, one), "chunks/s"),
        _versus("cluster_paced_3_shards", paced, "chunks/s"),
        _versus("cluster_redis_cpu_us_per_chunk", cpus, "µs"),
        _versus("wait_replicas_throughput", rates, "chunks/s"),
        _versus("wait_replicas_publish_ms", times, "ms"),
    ]


def _versus(name: str, runs: tuple[list[float], list[float]], unit: str) -> Metric:
    """Median of the measured runs against the median of their reference runs."""
    ours, reference = runs
    return Metric(name, median(ours), unit, reference=median(reference))
