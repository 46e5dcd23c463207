"""Redis Cluster and Sentinel: topology changes under a live stream, on real servers.

The conformance suite runs on a shared 3-primary cluster (backend id ``redis-cluster``); these
tests build private clusters (``make_cluster``) and Sentinel groups to move slots, fail primaries
over and kill them while a producer writes and subscribers on two hubs follow. Every test checks
the exact output: every chunk once, in order, and the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import pytest
from redis.asyncio import RedisCluster
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot
from support.cluster import Cluster
from support.redis_server import RedisServer
from support.sentinel import SentinelGroup

from fastapi_streamhub import Batch, Chunk, End, Reset, State, StreamHub
from fastapi_streamhub.backends._keys import Keys, slot_of
from fastapi_streamhub.backends.redis import RedisBackend

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

OPTIONS: dict[str, Any] = {"shutdown_grace": 0.5, "lease_ttl": 10.0, "outage_timeout": 20.0}
N = 400


async def collect(hub: StreamHub, sid: str, out: list[Any], **kwargs: Any) -> None:
    """Every item of a subscription, batches flattened, until its end."""
    async for item in hub.subscribe(sid, **kwargs):
        if isinstance(item, Batch):
            out.extend(item.chunks)
        else:
            out.append(item)


def texts(items: list[Any]) -> list[str]:
    return [i.data for i in items if isinstance(i, Chunk)]


def expected(n: int = N) -> list[str]:
    return [f"t{i}" for i in range(1, n + 1)]


async def stream_through(
    hubs: tuple[StreamHub, StreamHub],
    sid: str,
    change: Callable[[], object],
    *,
    pace: float = 0.002,
) -> tuple[list[list[Any]], list[Any]]:
    """Produce N chunks on hubs[0] while a subscriber on each hub follows; ``change`` (blocking,
    run in a thread) happens after the first third. Returns the followers' items and a fresh
    replay's items."""
    hub_a, hub_b = hubs
    reg = await hub_a.register(sid)
    assert reg.created and reg.producer is not None
    p = reg.producer
    followers: list[list[Any]] = [[], []]
    async with anyio.create_task_group() as tg:
        for hub, out in zip(hubs, followers, strict=True):
            tg.start_soon(collect, hub, sid, out)
        async with p:
            for i in range(1, N + 1):
                if i == N // 3:
                    await p.flush()
                    await anyio.to_thread.run_sync(change)
                await p.send(f"t{i}")  # the writer batches what waits behind a slow round trip
                await anyio.sleep(pace)
    replay: list[Any] = []
    with anyio.fail_after(30):
        await collect(hub_b, sid, replay)
    return followers, replay


def assert_exact(items: list[Any], n: int = N) -> None:
    others = [i for i in items if not isinstance(i, Chunk)]
    assert texts(items) == expected(n), others
    assert not [i for i in items if isinstance(i, Reset)]
    assert items[-1] == End(State.DONE)


async def test_a_cluster_client_needs_redis_py_8() -> None:
    """The ``cluster`` extra's floor: below 8.0 a cluster client is refused, with the fix."""
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", 1)])
    try:
        if hasattr(PubSub, "ssubscribe"):
            assert RedisBackend(client).cluster
        else:
            with pytest.raises(ValueError, match=r"redis-py 8\.0 or newer.*\[cluster\]"):
                RedisBackend(client)
    finally:
        await client.aclose()


async def test_from_url_and_client_forms(redis_cluster: Cluster, cluster_url: str) -> None:
    port = redis_cluster.nodes[0].port
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", port)])
    try:
        async with StreamHub(client, **OPTIONS) as hub:
            async with (await hub.register("form")).producer as p:  # type: ignore[union-attr]
                await p.publish("x")
            items: list[Any] = []
            await collect(hub, "form", items)
            assert texts(items) == ["x"]
    finally:
        await client.aclose()
    for bad in (
        "redis+cluster://",
        "redis+cluster://127.0.0.1",
        "redis+cluster://127.0.0.1:7000/0",
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/svc/x",
        "redis+sentinel://127.0.0.1:99999/svc",
        "mongodb://x",
    ):
        with pytest.raises(ValueError):
            StreamHub.from_url(bad)


async def test_live_delivery_stays_in_the_owning_shard(
    redis_cluster: Cluster, cluster_url: str
) -> None:
    """SPUBLISH on the session's shard only; one pub/sub connection per shard and hub, whatever
    the number of sessions and subscribers."""
    sessions = 40
    async with (
        StreamHub.from_url(cluster_url, **OPTIONS) as hub_a,
        StreamHub.from_url(cluster_url, **OPTIONS) as hub_b,
    ):
        sids = [f"shard-{i}" for i in range(sessions)]
        outs: dict[str, list[list[Any]]] = {sid: [[], [], []] for sid in sids}
        async with anyio.create_task_group() as tg:
            producers = []
            for sid in sids:
                reg = await hub_a.register(sid)
                assert reg.producer is not None
                producers.append(reg.producer)
                for hub, out in zip((hub_a, hub_b, hub_b), outs[sid], strict=True):
                    tg.start_soon(collect, hub, sid, out)
            for i in range(1, 21):
                for p in producers:
                    await p.publish(f"t{i}")
            for p in producers:
                await p.close()
        for sid in sids:
            for out in outs[sid]:
                assert_exact(out, 20)
        owners = {redis_cluster.owner(slot_of(sid)).port for sid in sids}
        assert len(owners) == 3, "40 sessions spread over the 3 shards"
        for node in redis_cluster.nodes:
            stats = node.command_stats()
            assert stats.get("publish", 0) == 0, "no cluster-wide PUBLISH"
            assert stats.get("spublish", 0) > 0
            clients = node.execute("CLIENT", "LIST")
            assert isinstance(clients, bytes)
            ours = [line for line in clients.decode().splitlines() if "cmd=client|list" not in line]
            listeners = [line for line in ours if " ssub=0 " not in line]
            # One shard connection per hub (two hubs), not one per session or subscriber.
            assert len(listeners) == 2, listeners
            # Command connections are bounded by the hubs' concurrency, not by sessions.
            assert len(ours) <= 2 * 50, len(ours)
            channels = node.execute("PUBSUB", "SHARDCHANNELS")
            assert isinstance(channels, list)
            for channel in channels:
                # Every channel on a node belongs to a slot that node serves.
                assert redis_cluster.owner(slot_of_channel(channel.decode())) is node


def slot_of_channel(channel: str) -> int:
    return key_slot(channel.encode())


async def test_slot_migration_mid_stream(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(primaries=3)
    sid = "migrating"
    slot = slot_of(sid)
    source = cluster.owner(slot)
    target = next(n for n in cluster.nodes if n is not source)
    moved: list[int] = []
    async with (
        StreamHub.from_url(cluster.url, **OPTIONS) as hub_a,
        StreamHub.from_url(cluster.url, **OPTIONS) as hub_b,
    ):
        followers, replay = await stream_through(
            (hub_a, hub_b), sid, lambda: moved.append(cluster.migrate_slot(slot, target))
        )
        # A resume from the middle, after the move, reads the exact rest.
        middle = next(c for c in followers[1] if isinstance(c, Chunk) and c.data == "t200")
        rest: list[Any] = []
        await collect(hub_b, sid, rest, after=middle.cursor)
    assert moved == [3], "meta, log and lease moved"
    assert cluster.owner(slot) is target
    for items in (*followers, replay):
        assert_exact(items)
    assert texts(rest) == expected()[200:]
    print(f"\nslot migration mid-stream: {N} chunks, 3 keys moved, every reader exact")


async def test_manual_failover_mid_stream(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(primaries=3, replicas=1)
    sid = "failing-over"
    primary = cluster.owner(slot_of(sid))
    promoted: list[RedisServer] = []
    async with (
        StreamHub.from_url(cluster.url, **OPTIONS) as hub_a,
        StreamHub.from_url(cluster.url, **OPTIONS) as hub_b,
    ):
        started = time.monotonic()
        followers, replay = await stream_through(
            (hub_a, hub_b), sid, lambda: promoted.append(cluster.failover(primary))
        )
        took = time.monotonic() - started
    assert cluster.owner(slot_of(sid)) is promoted[0]
    for items in (*followers, replay):
        assert_exact(items)
    print(f"\nCLUSTER FAILOVER mid-stream: {N} chunks in {took:.2f}s, every reader exact")


def _sync_replica(cluster: Cluster, primary: RedisServer, replica: RedisServer) -> None:
    """Until the replica has applied everything the primary wrote."""
    deadline = time.monotonic() + 10
    while True:
        want = _offset(primary, "master_repl_offset")
        if _offset(replica, "slave_repl_offset") >= want:
            return
        assert time.monotonic() < deadline, "replica did not catch up"
        time.sleep(0.02)


def _offset(node: RedisServer, field: str) -> int:
    info = node.execute("INFO", "replication")
    assert isinstance(info, bytes)
    for line in info.decode().splitlines():
        if line.startswith(field + ":"):
            return int(line.partition(":")[2])
    raise AssertionError(f"{field} not in INFO replication")


async def _unsynced_failover(
    cluster: Cluster, sid: str, caplog: pytest.LogCaptureFixture, **options: Any
) -> list[Any]:
    """Chunks 1-20 replicated; 21-50 acknowledged by a primary whose replica is frozen; the
    primary dies and the replica takes over; chunks 51-100 follow. Returns a fresh replay."""
    primary = cluster.owner(slot_of(sid))
    replica = cluster.replica_of(primary)
    async with StreamHub.from_url(cluster.url, **{**OPTIONS, **options}) as hub:
        reg = await hub.register(sid)
        assert reg.producer is not None
        async with reg.producer as p:
            for i in range(1, 21):
                await p.send(f"t{i}")
            await p.flush()
            await anyio.to_thread.run_sync(_sync_replica, cluster, primary, replica)
            # Frozen, and cut off: nothing written from now on reaches it (SIGSTOP alone would
            # leave the bytes in its socket buffer, to be read on waking).
            replica.pause()
            primary.execute("CLIENT", "KILL", "TYPE", "replica")
            with caplog.at_level(logging.WARNING, "fastapi_streamhub.redis"):
                for i in range(21, 51):
                    await p.send(f"t{i}")
                await p.flush()  # acknowledged: written on the primary
            primary.kill()
            replica.resume()
            replica.execute("CLUSTER", "FAILOVER", "TAKEOVER")
            await anyio.to_thread.run_sync(cluster.wait_ready)
            for i in range(51, 101):
                await p.send(f"t{i}")
        replay: list[Any] = []
        with anyio.fail_after(30):
            await collect(hub, sid, replay)
    return replay


async def test_unreplicated_chunks_lost_in_a_failover_are_reported(
    make_cluster: Callable[..., Cluster], caplog: pytest.LogCaptureFixture
) -> None:
    """Asynchronous replication: a chunk acknowledged by a primary that dies before its replica
    has it is gone. Readers are told (a reset naming the lost chunks), never a silent gap."""
    cluster = make_cluster(primaries=3, replicas=1)
    replay = await _unsynced_failover(cluster, "lossy", caplog)
    resets = [i for i in replay if isinstance(i, Reset)]
    assert len(resets) == 1 and "21-50" in resets[0].reason, (resets, texts(replay))
    assert texts(replay) == expected(20) + [f"t{i}" for i in range(51, 101)]
    assert replay[-1] == End(State.DONE)


async def test_wait_replicas_warns_when_a_write_is_not_replicated(
    make_cluster: Callable[..., Cluster], caplog: pytest.LogCaptureFixture
) -> None:
    """``wait_replicas=1``: every append waits for a replica; one that does not answer within
    ``wait_timeout`` leaves the write unconfirmed, and the hub says so (the data is not hidden)."""
    cluster = make_cluster(primaries=3, replicas=1)
    replay = await _unsynced_failover(cluster, "waited", caplog, wait_replicas=1, wait_timeout=0.2)
    warnings = [r.getMessage() for r in caplog.records if "replicas acknowledged" in r.message]
    assert warnings and "only 0 of 1 replicas" in warnings[0], warnings
    resets = [i for i in replay if isinstance(i, Reset)]
    assert len(resets) == 1 and "21-50" in resets[0].reason, resets


async def test_wait_replicas_keeps_every_chunk_through_a_primary_crash(
    make_cluster: Callable[..., Cluster],
) -> None:
    """``wait_replicas=1`` and a healthy replica: SIGKILL the primary mid-stream; the replica
    is promoted by the cluster itself and holds every acknowledged chunk."""
    cluster = make_cluster(primaries=3, replicas=1)
    sid = "crash"
    primary = cluster.owner(slot_of(sid))
    async with (
        StreamHub.from_url(cluster.url, **OPTIONS, wait_replicas=1, wait_timeout=0.1) as hub_a,
        StreamHub.from_url(cluster.url, **OPTIONS) as hub_b,
    ):
        started = time.monotonic()
        followers, replay = await stream_through((hub_a, hub_b), sid, primary.kill)
        took = time.monotonic() - started
    assert cluster.owner(slot_of(sid)) is not primary
    for items in (*followers, replay):
        assert_exact(items)
    print(f"\nprimary SIGKILL mid-stream (wait_replicas=1): {N} chunks in {took:.2f}s, exact")


async def test_sentinel_failover_mid_stream(make_redis: Callable[..., RedisServer]) -> None:
    primary = make_redis(repl_diskless_sync_delay=0)
    replica = make_redis(
        repl_diskless_sync_delay=0, extra_args=["--replicaof", "127.0.0.1", str(primary.port)]
    )
    with SentinelGroup(primary, replica, count=3) as sentinels:
        url = sentinels.url
        async with (
            StreamHub.from_url(url, **OPTIONS, wait_replicas=1, wait_timeout=0.1) as hub_a,
            StreamHub.from_url(url, **OPTIONS) as hub_b,
        ):
            started = time.monotonic()
            followers, replay = await stream_through((hub_a, hub_b), "sentinel", primary.kill)
            took = time.monotonic() - started
        assert sentinels.primary_port() == replica.port
    for items in (*followers, replay):
        assert_exact(items)
    print(f"\nSentinel: primary SIGKILL mid-stream, {N} chunks in {took:.2f}s, exact")


def test_cluster_channels_map_to_their_slot() -> None:
    keys = Keys("streamhub")
    for sid in ("a", "b", "session-42", "x" * 200):
        slot = slot_of(sid)
        data, ctl = keys.slot_channels(slot)
        assert key_slot(data.encode()) == key_slot(ctl.encode()) == slot
        assert key_slot(keys.meta(sid).encode()) == key_slot(keys.lease(sid).encode()) == slot
