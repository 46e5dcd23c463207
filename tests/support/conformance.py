"""What the conformance suite runs on: the stores, hubs on them, and helpers to read streams.

A ``Store`` is one shared backend (memory, one Redis server, or a Redis Cluster) plus the few
out-of-band operations a test needs (force a lease to lapse, set the durable cancel flag without
a live message, list keys and their TTLs). The fixtures built on these live in
tests/conformance/conftest.py; other suites (telemetry, ACL) use the classes directly.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest

from fastapi_streamhub import (
    Batch,
    Chunk,
    Cursor,
    End,
    MemoryBackend,
    Metadata,
    Producer,
    Reset,
    StreamHub,
    Subscription,
)
from fastapi_streamhub.backends._compact import PackedLog
from fastapi_streamhub.backends._keys import slot_of
from fastapi_streamhub.backends.postgres_sql import grants_sql, schema_sql
from support.cluster import Cluster
from support.postgres_server import PostgresServer
from support.redis_server import RedisServer
from support.sse_client import wait_until

Item = Chunk | Batch | Metadata | Reset | End
HubFactory = Callable[..., Awaitable[StreamHub]]

# Every hub of the suite gets these unless a test overrides them: a short shutdown grace keeps the
# teardown of a test that leaves a producer running fast.
BASE_OPTIONS: dict[str, Any] = {"shutdown_grace": 0.5}


# --------------------------------------------------------------------------- stores


class Store:
    """One shared store plus out-of-band access to it."""

    kind: str

    def new_hub(self, **options: Any) -> StreamHub:
        raise NotImplementedError

    def lapse_lease(self, sid: str) -> None:
        """Make the current producer's lease of ``sid`` look expired (as if it stopped renewing)."""
        raise NotImplementedError

    def set_cancel_flag(self, sid: str) -> None:
        """Set the durable cancel flag only: no live message is sent (a "missed" pub/sub cancel)."""
        raise NotImplementedError

    def key_count(self) -> int:
        """How many keys (records) the store holds."""
        raise NotImplementedError

    def ttls(self) -> dict[str, float]:
        """Remaining time to live, in seconds, of every key (record) in the store."""
        raise NotImplementedError

    def drop_pubsub(self) -> None:
        """Cut every pub/sub connection to the store (messages sent meanwhile are missed)."""
        raise NotImplementedError


class MemoryStore(Store):
    kind = "memory"

    def __init__(self) -> None:
        self.backend = MemoryBackend()
        self._options: dict[str, Any] | None = None

    def new_hub(self, **options: Any) -> StreamHub:
        # All hubs on one MemoryBackend share its settings (the last started hub's): keep them equal.
        if self._options is None:
            self._options = options
        assert options == self._options, "hubs sharing a MemoryBackend must use equal settings"
        return StreamHub(self.backend, **options)

    def lapse_lease(self, sid: str) -> None:
        self.backend._records[sid].lease_until = 0.0

    def set_cancel_flag(self, sid: str) -> None:
        self.backend._records[sid].cancel = True

    def key_count(self) -> int:
        now = time.monotonic()
        return sum(1 for rec in self.backend._records.values() if rec.expires_at > now)

    def ttls(self) -> dict[str, float]:
        now = time.monotonic()
        return {sid: rec.expires_at - now for sid, rec in self.backend._records.items()}


class RedisStore(Store):
    kind = "redis"

    def __init__(self, url: str, server: RedisServer) -> None:
        self.url = url
        self.server = server
        self.servers = [server]

    def execute(self, key: str, *args: str | bytes | int) -> object:
        """A command about ``key``, on the server that holds it."""
        return self.server.execute(*args)

    def new_hub(self, **options: Any) -> StreamHub:
        return StreamHub.from_url(self.url, **options)

    @staticmethod
    def meta(sid: str) -> str:
        return f"streamhub:{{{sid}}}:meta"

    @staticmethod
    def log(sid: str) -> str:
        return f"streamhub:{{{sid}}}:log"

    @staticmethod
    def lease(sid: str) -> str:
        return f"streamhub:{{{sid}}}:lease"

    def lapse_lease(self, sid: str) -> None:
        self.execute(sid, "DEL", self.lease(sid))

    def set_cancel_flag(self, sid: str) -> None:
        # No PUBLISH: the producer can learn it only from the durable flag (the lease's value).
        gen = self.execute(sid, "HGET", self.meta(sid), "gen")
        assert isinstance(gen, bytes)
        self.execute(sid, "HSET", self.meta(sid), "cancel", "1")
        self.execute(sid, "SET", self.lease(sid), gen + b":c", "KEEPTTL")

    def key_count(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        out: list[str] = []
        for server in self.servers:
            if server.running:
                reply = server.execute("KEYS", "*")
                assert isinstance(reply, list)
                out += [k.decode() for k in reply]
        return sorted(out)

    def ttls(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in self.keys():
            sid = key.partition("{")[2].partition("}")[0]
            pttl = self.execute(sid, "PTTL", key)
            assert isinstance(pttl, int)
            out[key] = pttl / 1000 if pttl >= 0 else float(pttl)  # -1: no TTL, -2: gone
        return out

    def drop_pubsub(self) -> None:
        for server in self.servers:
            server.execute("CLIENT", "KILL", "TYPE", "pubsub")


class ClusterStore(RedisStore):
    """A 3-primary Redis Cluster: each command goes to the primary of its key's slot."""

    kind = "redis-cluster"

    def __init__(self, url: str, cluster: Cluster) -> None:
        self.url = url
        self.cluster = cluster
        self.servers = cluster.nodes

    def execute(self, key: str, *args: str | bytes | int) -> object:
        return self.cluster.owner(slot_of(key)).execute(*args)


class PostgresStore(Store):
    """One PostgreSQL server (tables of the default prefix ``streamhub``)."""

    kind = "postgres"

    def __init__(self, url: str, server: PostgresServer) -> None:
        self.url = url
        self.server = server

    def new_hub(self, **options: Any) -> StreamHub:
        return StreamHub.from_url(self.url, **options)

    def sql(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        return self.server.execute(sql, params)

    def lapse_lease(self, sid: str) -> None:
        self.sql(
            "UPDATE streamhub_session SET lease_until = clock_timestamp() - interval '1 ms' "
            "WHERE session_id = %s AND state = 'active'",
            sid,
        )

    def set_cancel_flag(self, sid: str) -> None:
        # No NOTIFY: the producer can learn it only from the durable flag (its renewal).
        self.sql("UPDATE streamhub_session SET cancel = true WHERE session_id = %s", sid)

    def key_count(self) -> int:
        return len(self.ttls())

    def ttls(self) -> dict[str, float]:
        """Session rows and idempotency keys: the rows that carry their own ``expires_at``
        (log, part and message rows live and die with their session row)."""
        rows = self.sql(
            "SELECT 'session:' || session_id, extract(epoch FROM expires_at - clock_timestamp()) "
            "FROM streamhub_session UNION ALL "
            "SELECT 'key:' || session_id || ':' || key, "
            "extract(epoch FROM expires_at - clock_timestamp()) FROM streamhub_message_key"
        )
        return {str(k): float(v) for k, v in rows}

    def drop_pubsub(self) -> None:
        self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'streamhub-listen'"
        )


# The backends every conformance test runs on (the ``store`` fixtures' parameters).
# ``postgres-role``: PostgreSQL as a runtime role holding only the grants the README documents
# (``grants_sql``), the schema created beforehand by the superuser.
STORE_KINDS = ["memory", "redis", "redis-cluster", "postgres", "postgres-role"]
APP_ROLE = "streamhub_app"


def make_store(request: pytest.FixtureRequest, memory: type[MemoryStore] = MemoryStore) -> Store:
    """The store named by ``request.param`` (companion suites pass their own memory store)."""
    if request.param == "memory":
        return memory()
    if request.param == "redis-cluster":
        return ClusterStore(
            request.getfixturevalue("cluster_url"), request.getfixturevalue("redis_cluster")
        )
    if request.param in ("postgres", "postgres-role"):
        url = request.getfixturevalue("postgres_url")
        server: PostgresServer = request.getfixturevalue("postgres_server")
        if request.param == "postgres-role":
            server.execute(schema_sql("streamhub"))
            server.execute(
                "DO $$ BEGIN CREATE ROLE " + APP_ROLE + " LOGIN; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            )
            server.execute(grants_sql("streamhub", APP_ROLE))
            url = server.url_of("postgres", user=APP_ROLE)
        return PostgresStore(url, server)
    return RedisStore(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_server"))


@asynccontextmanager
async def open_hubs(store: Store) -> AsyncIterator[HubFactory]:
    """A factory of started hubs on ``store``; all are closed (in reverse) on exit."""
    async with AsyncExitStack() as stack:

        async def factory(**options: Any) -> StreamHub:
            hub = store.new_hub(**{**BASE_OPTIONS, **options})
            await stack.enter_async_context(hub)
            return hub

        yield factory


# --------------------------------------------------------------------------- helpers


async def collect(sub: Subscription, within: float = 15.0) -> list[Item]:
    """Every item of a subscription up to and including its End (which must come exactly once)."""
    items: list[Item] = []
    with anyio.fail_after(within):
        async with sub:
            async for item in sub:
                items.append(item)
    ends = [i for i, item in enumerate(items) if isinstance(item, End)]
    assert ends == [len(items) - 1], f"expected exactly one End, last: {items[-3:]!r}"
    return items


def chunks_of(items: Sequence[Item]) -> list[Chunk]:
    return [item for item in items if isinstance(item, Chunk)]


def texts(items: Sequence[Item]) -> list[Any]:
    return [chunk.data for chunk in chunks_of(items)]


def assert_contiguous(chunks: Sequence[Chunk], generation: int, first: int, last: int) -> None:
    """The chunks are exactly offsets ``first..last`` of ``generation``, in order, once each."""
    cursors = [c.cursor for c in chunks]
    expected = [Cursor(generation, o) for o in range(first, last + 1)]
    if cursors != expected:
        got = [str(c) for c in cursors]
        offs = [c.offset for c in cursors]
        gaps = [(a, b) for a, b in itertools.pairwise(offs) if b != a + 1][:5]
        raise AssertionError(
            f"expected {generation}-{first}..{generation}-{last} ({len(expected)} chunks), "
            f"got {len(got)}: {got[:3]}...{got[-3:]}; first jumps: {gaps}"
        )


def tok(i: int) -> str:
    return f"tok{i};"


class Follower:
    """A subscription consumed in a background task; the test awaits conditions on its items."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.items: list[Item] = []
        self.error: BaseException | None = None
        self.finished = anyio.Event()
        self.ended_at: float | None = None
        self._changed = anyio.Event()

    async def run(self) -> None:
        try:
            async with self.sub:
                async for item in self.sub:
                    self.items.append(item)
                    if isinstance(item, End):
                        self.ended_at = time.perf_counter()
                    self._changed.set()
                    self._changed = anyio.Event()
        except Exception as exc:  # reported by until()/result()
            self.error = exc
        finally:
            self.finished.set()
            self._changed.set()

    async def until(self, predicate: Callable[[list[Item]], bool], within: float = 10.0) -> None:
        with anyio.fail_after(within):
            while True:
                changed = self._changed
                if predicate(self.items):
                    return
                if self.finished.is_set():
                    raise AssertionError(
                        f"subscription ended ({self.error!r}) before the condition held; "
                        f"last items: {self.items[-3:]!r}"
                    )
                await changed.wait()

    async def first_chunk(self, within: float = 10.0) -> None:
        await self.until(lambda items: any(isinstance(i, Chunk) for i in items), within)

    async def result(self, within: float = 15.0) -> list[Item]:
        with anyio.fail_after(within):
            await self.finished.wait()
        if self.error is not None:
            raise AssertionError(f"subscription failed: {self.error!r}") from self.error
        ends = [i for i, item in enumerate(self.items) if isinstance(item, End)]
        assert ends == [len(self.items) - 1], f"expected exactly one End: {self.items[-3:]!r}"
        return self.items


def follow(tg: anyio.abc.TaskGroup, sub: Subscription) -> Follower:
    follower = Follower(sub)
    tg.start_soon(follower.run)
    return follower


async def reclaim(store: Store, hub: StreamHub, sid: str, **kwargs: Any) -> Producer:
    """Take ``sid`` over from its current producer as if that one's lease ran out.

    The old producer's hub may renew between the lapse and the claim; then try again.
    """
    for _ in range(20):
        store.lapse_lease(sid)
        reg = await hub.register(sid, **kwargs)
        if reg.created:
            assert reg.producer is not None
            return reg.producer
    raise AssertionError(f"could not reclaim {sid!r}")


async def start(hub: StreamHub, sid: str, **kwargs: Any) -> Producer:
    reg = await hub.register(sid, **kwargs)
    assert reg.created and reg.producer is not None
    return reg.producer


# --------------------------------------------------------------------------- compaction


def is_compacted(store: Store, sid: str) -> bool:
    if isinstance(store, MemoryStore):
        return isinstance(store.backend._records[sid].log, PackedLog)
    if isinstance(store, PostgresStore):
        rows = store.sql(
            "SELECT compacted IS NOT DISTINCT FROM generation FROM streamhub_session "
            "WHERE session_id = %s",
            sid,
        )
        return bool(rows and rows[0][0])
    assert isinstance(store, RedisStore)
    reply = store.execute(sid, "HMGET", store.meta(sid), "gen", "compact")
    assert isinstance(reply, list)
    return reply[0] is not None and reply[1] == reply[0]


def log_entries(store: Store, sid: str) -> int:
    """Redis: entries of the log stream; memory: chunks held (it has no entries)."""
    if isinstance(store, MemoryStore):
        return len(store.backend._records[sid].log)
    if isinstance(store, PostgresStore):
        n = store.sql("SELECT count(*) FROM streamhub_log WHERE session_id = %s", sid)[0][0]
        assert isinstance(n, int)
        return n
    assert isinstance(store, RedisStore)
    n = store.execute(sid, "XLEN", store.log(sid))
    assert isinstance(n, int)
    return n


async def until_compacted(store: Store, sid: str, within: float = 10.0) -> None:
    """Compaction runs in the background after a close: wait for it (polling the store)."""
    await wait_until(
        lambda: is_compacted(store, sid), within=within, interval=0.01, what=f"{sid!r} compacted"
    )
