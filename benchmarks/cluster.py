"""Scale-out figures: a Redis Cluster's shards, and the price of ``wait_replicas``.

- ``cluster_persist_3_shards``: aggregate ``persist_throughput`` of 12 producers (sessions
  spread over the slots) writing at once into a 3-primary cluster; reference: the same into a
  1-primary cluster. All on this one machine: the servers and the producing process share two
  cores, so the ratio shows what sharding costs or buys *here*, not on separate hosts.
- ``wait_replicas_throughput``: one producer, ``wait_replicas=1`` against ``0``, on a primary
  with one replica (every writer round trip then waits for the replica's acknowledgement).
- ``wait_replicas_publish_ms``: median time of an awaited single-chunk publish + flush, with
  ``wait_replicas=1``; reference: ``0``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio

from fastapi_streamhub import StreamHub

from ._common import TOKEN, Context, Metric, median, new_id
from ._redis import HOST, BenchRedis

PRODUCERS = 12


@contextmanager
def cluster(primaries: int) -> Iterator[str]:
    """A ``primaries``-shard cluster on loopback; yields its ``redis+cluster://`` URL."""
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
        yield "redis+cluster://" + ",".join(addresses)
    finally:
        for node in nodes:
            node.close()


async def _aggregate(url: str, n: int, **options: object) -> float:
    """Chunks/s of PRODUCERS producers sending ``n`` chunks each at once, all flushed."""
    async with StreamHub.from_url(url, **options) as hub:
        producers = []
        for _ in range(PRODUCERS):
            reg = await hub.register(new_id("shard"))
            assert reg.producer is not None
            producers.append(reg.producer)

        async def send(p: object) -> None:
            for _ in range(n):
                await p.send(TOKEN)  # type: ignore[attr-defined]
            await p.flush()  # type: ignore[attr-defined]

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for p in producers:
                tg.start_soon(send, p)
        elapsed = time.perf_counter() - t0
        for p in producers:
            await p.close()
    return PRODUCERS * n / elapsed


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
    with cluster(1) as url1, cluster(3) as url3:
        await _aggregate(url1, 500)
        await _aggregate(url3, 500)
        for _ in range(rounds):
            one.append(await _aggregate(url1, n))
            three.append(await _aggregate(url3, n))
    ctx.note(
        "cluster_persist_3_shards",
        f"{PRODUCERS} producers x {n} chunks, {rounds} rounds; 3 shards "
        f"{[round(x) for x in three]}, 1 shard {[round(x) for x in one]} chunks/s",
    )
    with (
        BenchRedis("redis-server", "--repl-diskless-sync-delay", "0") as primary,
        BenchRedis("redis-server") as replica,
    ):
        replica.admin.execute_command("REPLICAOF", HOST, primary.port)
        deadline = time.monotonic() + 30
        while b"master_link_status:up" not in replica.admin.execute_command("INFO", "replication"):
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark replica did not sync")
            await anyio.sleep(0.05)
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
    return [
        Metric("cluster_persist_3_shards", median(three), "chunks/s", reference=median(one)),
        Metric(
            "wait_replicas_throughput",
            median([r for r, _ in waited]),
            "chunks/s",
            reference=median([r for r, _ in plain]),
        ),
        Metric(
            "wait_replicas_publish_ms",
            median([t for _, t in waited]),
            "ms",
            reference=median([t for _, t in plain]),
        ),
    ]
