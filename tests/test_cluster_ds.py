"""Durable Streams on a Redis Cluster whose index node fails over mid-create.

On a cluster a create is counted in three steps: ``ds_admit.lua`` reserves the id in the
store's index (its own slot, ``{#ds}``), ``ds_create.lua`` creates in the stream's slot, and
``ds_index.lua`` sets the real score or drops the reservation. The index's primary fails over
to its replica while creates and forks keep running on two hubs, and, deterministically,
between the reservation and the create (the failover run from inside the backend's create
step): once replicated, once with the reservation lost with its primary (the replica frozen,
the primary killed). No create may fail, and afterwards the index names exactly the streams
that exist, each with its real score (no reservation left standing, none missing), and nothing
once they are deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from redis.crc import key_slot
from support.cluster import Cluster
from support.redis_server import RedisServer

from fastapi_streamhub import StreamHub
from fastapi_streamhub.backends._ds import DsFork, DsSpec
from fastapi_streamhub.backends._ds_redis import RedisDurable
from fastapi_streamhub.backends._keys import Keys

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

# A limit, so every create is counted in the index; far above what the creates reach however
# long the failover takes (at 500, a slow failover on a loaded machine let the creates hit it:
# "full").
OPTIONS: dict[str, Any] = {
    "shutdown_grace": 0.5,
    "outage_timeout": 20.0,
    "ds_max_streams": 100_000,
}
INDEX = Keys("streamhub").ds_index()
TEXT = DsSpec("text/plain")


def _index(cluster: Cluster) -> set[str]:
    """The ids in the index, read on the primary that owns its slot now."""
    owner = cluster.owner(key_slot(INDEX.encode()))
    members = owner.execute("ZRANGE", INDEX, 0, -1)
    assert isinstance(members, list)
    return {m.decode() for m in members}


async def test_the_index_node_fails_over_mid_create(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(primaries=3, replicas=1)
    primary = cluster.owner(key_slot(INDEX.encode()))
    promoted: list[RedisServer] = []
    made: list[str] = []
    async with (
        StreamHub.from_url(cluster.url, **OPTIONS) as hub_a,
        StreamHub.from_url(cluster.url, **OPTIONS) as hub_b,
    ):
        source = "ds-source"
        assert (await hub_a.backend.ds_create(source, TEXT, b"abc")).outcome == "created"
        made.append(source)
        running, failing, failed_over = anyio.Event(), anyio.Event(), anyio.Event()
        during: list[str] = []

        async def creates(hub: StreamHub, name: str) -> None:
            i = 0
            # Until the failover is over, and a few creates after it.
            while not failed_over.is_set() or i % 10:
                i += 1
                sid = f"{name}-{i}"
                fork = DsFork(source, 1) if i % 3 == 0 else None
                spec = DsSpec("") if fork else TEXT
                created = await hub.backend.ds_create(sid, spec, b"x", fork)
                assert created.outcome == "created", (sid, created.outcome)
                made.append(sid)
                if len(made) > 10:
                    running.set()
                if failing.is_set() and not failed_over.is_set():
                    during.append(sid)

        async def fail_over() -> None:
            await running.wait()  # the creates are running
            failing.set()
            promoted.append(await anyio.to_thread.run_sync(_failover, cluster, primary))
            failed_over.set()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(creates, hub_a, "ds-a")
                tg.start_soon(creates, hub_b, "ds-b")
                tg.start_soon(fail_over)
        assert cluster.owner(key_slot(INDEX.encode())) is promoted[0]
        assert during, "no create ran while the index failed over"
        # Every stream is whole and counted once; no reservation of a create is left.
        for sid in made:
            read = await hub_b.backend.ds_read(sid, 0, 10, touch=False)
            assert read is not None and read[1] in (b"x", b"ax", b"abc"), (sid, read)
        assert _index(cluster) == set(made)
        # Deleted (forks first, then their source): the index is empty.
        for sid in reversed(made):
            assert await hub_a.backend.ds_delete(sid) == "deleted", sid
        assert _index(cluster) == set()


def _failover(cluster: Cluster, primary: RedisServer) -> RedisServer:
    """``CLUSTER FAILOVER`` on ``primary``'s replica, asked again when a loaded machine let the
    manual failover time out (Redis gives it 5 s and then silently gives up); the new primary."""
    replica = cluster.replica_of(primary)
    for _ in range(4):
        replica.execute("CLUSTER", "FAILOVER")
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            if b"role:master" in replica.execute("INFO", "replication"):  # type: ignore[operator]
                cluster.wait_ready()
                return replica
            time.sleep(0.05)
    raise AssertionError("the replica did not take over")


def _score(cluster: Cluster, sid: str) -> float | None:
    owner = cluster.owner(key_slot(INDEX.encode()))
    score = owner.execute("ZSCORE", INDEX, sid)
    return None if score is None else float(score)  # type: ignore[arg-type]


def _lose_with_primary(cluster: Cluster) -> Iterator[None]:
    """Freeze the index primary's replica, let the caller write (acknowledged, never
    replicated), then kill the primary and let the replica take over."""
    primary = cluster.owner(key_slot(INDEX.encode()))
    replica = cluster.replica_of(primary)
    assert primary.execute("WAIT", 1, 5000) == 1  # what came before is the replica's
    replica.pause()
    primary.execute("CLIENT", "KILL", "TYPE", "replica")
    yield
    primary.kill()
    replica.resume()
    replica.execute("CLUSTER", "FAILOVER", "TAKEOVER")
    cluster.wait_ready()


async def test_a_failover_between_the_reservation_and_the_create(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster(primaries=3, replicas=1)
    create = RedisDurable._create
    faults: dict[str, Callable[[], None]] = {}

    async def faulty(self: RedisDurable, stream_id: str, *args: Any, **kwargs: Any) -> Any:
        fault = faults.pop(stream_id, None)
        if fault is not None:  # the id is reserved in the index now
            assert _score(cluster, stream_id) is not None
            await anyio.to_thread.run_sync(fault)
        return await create(self, stream_id, *args, **kwargs)

    monkeypatch.setattr(RedisDurable, "_create", faulty)
    brief = DsSpec("text/plain", ttl=5)
    async with StreamHub.from_url(cluster.url, **OPTIONS) as hub:
        # Replicated: the reservation moves with the slot, and the create scores it.
        primary = cluster.owner(key_slot(INDEX.encode()))

        def fail_over() -> None:
            _failover(cluster, primary)

        faults["ds-moved"] = fail_over
        assert (await hub.backend.ds_create("ds-moved", brief, b"m")).outcome == "created"
        assert cluster.owner(key_slot(INDEX.encode())) is not primary
        # Lost with its primary: the create's score adds it again.
        lose = _lose_with_primary(cluster)
        next(lose)
        faults["ds-lost"] = lambda: next(lose, None)
        assert (await hub.backend.ds_create("ds-lost", brief, b"l")).outcome == "created"
        # A reserved create that creates nothing gives its place back (a session holds the id).
        reg = await hub.register("ds-session")
        assert reg.producer is not None
        await reg.producer.close()
        assert (await hub.backend.ds_create("ds-session", TEXT, b"")).outcome == "conflict"
        horizon = (time.time() + 30) * 1000  # a reservation scores 60 s ahead; these 5 s
        for sid in ("ds-moved", "ds-lost"):
            score = _score(cluster, sid)
            assert score is not None and score < horizon, (sid, score)
        assert _index(cluster) == {"ds-moved", "ds-lost"}
        assert not faults
        for sid in ("ds-moved", "ds-lost"):
            assert await hub.backend.ds_delete(sid) == "deleted"
        assert _index(cluster) == set()
