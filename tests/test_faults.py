"""Fault injection (issue 4: "nothing is lost and nothing hangs"), with real processes only.

Every test starts its own app instances (``tests/http_app.py`` under uvicorn, see ``support/apps.py``)
on real redis-server processes, and breaks something for real: SIGKILL, SIGSTOP/SIGCONT and
SIGTERM of an instance, a Redis restart (with and without persistence), FLUSHALL, connections
reset or stalled by a TCP proxy between the apps and Redis (``support/proxy.py``), a client that stops
reading. Clients are httpx; SSE bodies are parsed by ``support/sse_client.py``.

The generator of the test app records what it did (runs, produced, exit, finally) in a Redis
that the faults do not touch (the session's shared ``redis_server``, through ``REC_URL``), once
per session and once per instance (``<sid>@<instance>``).

What every test checks, one way or another: a reader's output is exact (each chunk once, in
order, nothing missing: :class:`Follower` checks the cursors' offsets are consecutive), and
every stream ends with one ``end`` (or, for lost data, ``reset``/``end``/404) within a bound.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
from http_app import RECORD_PREFIX, expected_items
from support.apps import App, decode_record, start_apps
from support.proxy import TCPProxy
from support.redis_server import RedisServer
from support.sids import new_sid
from support.sse_client import (
    CONTROL_EVENTS,
    SSEEvent,
    SSEParser,
    SSEResult,
    as_rebuilt,
    cursor_key,
    read_sse,
    rebuild_event,
    wait_until,
)

from fastapi_streamhub._codec import unframe

pytestmark = pytest.mark.anyio

# Slack for scheduling on a loaded 2-core machine, added to every time bound derived from a
# setting (lease, renewal, outage timeout, shutdown grace).
SLACK = 2.0


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def rec_store(redis_url: str) -> Iterator[redis.Redis]:
    """The Redis holding the generators' records (flushed by ``redis_url``)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


Launch = Callable[..., Any]


@pytest.fixture
async def launch(
    anyio_backend: str, tmp_path: Path, redis_url: str
) -> AsyncIterator[Callable[..., Any]]:
    """``await launch(["A", "B"], redis=url, LEASE_TTL=2, ...)``: started apps (stopped after)."""
    started: list[App] = []

    async def start(names: Sequence[str], *, redis: str, **env: object) -> list[App]:
        settings = {
            "REDIS_URL": redis,
            "REC_URL": redis_url,
            "LEASE_TTL": "5",
            "PING_INTERVAL": "0.5",
            "SHUTDOWN_GRACE": "1.0",
            **{k: str(v) for k, v in env.items()},
        }
        apps = [App(name, settings, tmp_path) for name in names]
        started.extend(apps)
        await anyio.to_thread.run_sync(start_apps, apps)
        return apps

    try:
        yield start
    finally:
        for app in started:
            await anyio.to_thread.run_sync(app.stop)


@pytest.fixture
def proxy_for() -> Iterator[Callable[[RedisServer], TCPProxy]]:
    proxies: list[TCPProxy] = []

    def make(server: RedisServer) -> TCPProxy:
        proxy = TCPProxy(server.host, server.port).start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.close()


@asynccontextmanager
async def clients(*apps: App) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One httpx client per app, without a cap on concurrent connections."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=20)
    made = [
        httpx.AsyncClient(
            base_url=app.url, timeout=httpx.Timeout(20.0), trust_env=False, limits=limits
        )
        for app in apps
    ]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


# --------------------------------------------------------------------------- readers


def expected(n: int, kind: str = "text", pad: int = 0) -> list[tuple[str, Any]]:
    return [as_rebuilt(item) for item in expected_items(n, kind, pad)]


def text_of(n: int, pad: int = 0) -> str:
    return "".join(expected_items(n, "text", pad))


def record(store: redis.Redis, sid: str, instance: str | None = None) -> dict[str, Any]:
    """What the generator(s) of ``sid`` recorded (numbers as int); per instance if named."""
    key = RECORD_PREFIX + sid + (f"@{instance}" if instance else "")
    return decode_record(store.hgetall(key))


def ran_once_to_the_end(produced: int) -> dict[str, Any]:
    """The record of a generator that started once, produced everything and finished."""
    return {"runs": 1, "produced": produced, "finally": 1, "exit": "done"}


# Errors of a connection that was refused, reset or cut: the client reconnects.
NETWORK_ERRORS = (httpx.TransportError, OSError)


@dataclass
class Follower:
    """A client that follows one session to its end like an ``EventSource``: it reconnects with
    ``Last-Event-ID`` whenever a response ends without ``end`` or the connection fails.

    Every chunk is checked as it arrives: its cursor must be the next offset of the generation
    (or offset 1 of a newer generation right after a ``reset``). ``duplicated`` and ``lost``
    count violations; the values of the current generation are in ``values``.
    """

    sid: str
    clients: Sequence[httpx.AsyncClient]
    rng: random.Random = field(default_factory=random.Random)
    values: list[tuple[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    resets: list[dict[str, Any]] = field(default_factory=list)
    ends: list[dict[str, Any]] = field(default_factory=list)
    metadata: list[Any] = field(default_factory=list)
    connects: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    duplicated: int = 0
    lost: int = 0
    delivered: int = 0
    ended_at: float | None = None
    _position: tuple[int, int] | None = None
    _after_reset: bool = False

    @property
    def cursor(self) -> str | None:
        return self.ids[-1] if self.ids else None

    @property
    def ended(self) -> bool:
        return bool(self.ends)

    @property
    def state(self) -> str | None:
        return self.ends[-1]["state"] if self.ends else None

    @property
    def text(self) -> str:
        return "".join(v for k, v in self.values if k == "text")

    def absorb(self, events: Sequence[SSEEvent]) -> None:
        for event in events:
            if self.ended:
                self.failures.append(f"event after end: {event}")
                continue
            if event.type == "reset":
                self.resets.append(json.loads(event.data))
                self._after_reset = True
                continue
            if event.type == "end":
                self.ends.append(json.loads(event.data))
                self.ended_at = time.monotonic()
                continue
            if event.type == "metadata":
                self.metadata.append(json.loads(event.data))
                continue
            chunk = rebuild_event(event)
            assert chunk is not None and chunk.id is not None, event
            self._take(cursor_key(chunk.id), chunk.id, (chunk.kind, chunk.value))

    def _take(self, key: tuple[int, int], cid: str, value: tuple[str, Any]) -> None:
        self.delivered += 1
        pos = self._position
        if self._after_reset:
            # A reset restarts the replay from what is stored: a newer generation, or the same
            # one after a gap (trimmed or lost data), never an older one.
            self._after_reset = False
            if pos is not None and key[0] < pos[0]:
                self.failures.append(f"reset went back from {pos} to {key}")
            if pos is None or key[0] != pos[0]:
                self.values, self.ids = [], []
            pos = None
        if pos is None or key[0] != pos[0]:
            if key[1] != 1 or (pos is not None and key[0] < pos[0]):
                self.lost += 1
                self.failures.append(f"first chunk {key} after {pos}")
        elif key[1] <= pos[1]:
            self.duplicated += 1
            self.failures.append(f"duplicate {key} after {pos}")
            return
        elif key[1] != pos[1] + 1:
            self.lost += 1
            self.failures.append(f"gap: {key} after {pos}")
        self._position = key
        self.values.append(value)
        self.ids.append(cid)

    async def connect_once(
        self,
        client: httpx.AsyncClient,
        *,
        url: str | None = None,
        params: dict[str, Any] | None = None,
        stop_after_chunks: int | None = None,
        within: float = 30.0,
    ) -> SSEResult:
        """One connection: from the current cursor until the response ends, the connection
        fails, or ``stop_after_chunks`` more chunks arrived (then disconnect). Events are
        checked as they arrive."""
        res = SSEResult()
        headers = {"Last-Event-ID": self.cursor} if self.cursor else None
        parser = SSEParser()
        self.connects += 1
        taken = 0
        try:
            with anyio.fail_after(within):
                async with client.stream(
                    "GET", url or f"/streams/{self.sid}", headers=headers, params=params
                ) as response:
                    res.status_code = response.status_code
                    self.statuses.append(response.status_code)
                    if response.status_code != 200:
                        res.body = await response.aread()
                        res.eof = True
                        return res
                    async for raw in response.aiter_raw():
                        records = parser.feed(raw)
                        res.records.extend(records)
                        events = [r for kind, r in records if kind == "event"]
                        self.absorb(events)
                        taken += sum(1 for e in events if e.type not in CONTROL_EVENTS)
                        if stop_after_chunks is not None and taken >= stop_after_chunks:
                            return res
                    self.absorb([r for kind, r in parser.feed(b"", final=True) if kind == "event"])
                    res.eof = True
        except NETWORK_ERRORS as exc:
            self.failures.append(f"connection: {type(exc).__name__}: {exc}")
        return res

    async def follow(
        self,
        *,
        within: float,
        first: tuple[str, dict[str, Any]] | None = None,
        disconnect_after: Callable[[], int | None] = lambda: None,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Reconnect until ``end`` (or a 404, or ``stop()``); fail after ``within`` seconds."""
        deadline = time.monotonic() + within
        url, params = first if first is not None else (None, None)
        while not self.ended and not stop():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self.sid}: no end after {within}s ({self.connects} connections, "
                    f"{len(self.values)} chunks, last failures {self.failures[-3:]})"
                )
            client = self.rng.choice(self.clients)
            try:
                res = await self.connect_once(
                    client,
                    url=url,
                    params=params,
                    stop_after_chunks=disconnect_after(),
                    within=remaining,
                )
            except TimeoutError:
                continue  # the deadline check above reports it
            url, params = None, None
            if res.status_code == 404:
                return
            if res.status_code != 200:
                # Could not connect, or refused (503 while an instance shuts down): as an
                # EventSource would, wait a little before trying again.
                await anyio.sleep(0.1)


def assert_exact(f: Follower, values: list[tuple[str, Any]], state: str | None = None) -> None:
    assert f.duplicated == 0 and f.lost == 0, f.failures
    assert f.values == values, (len(f.values), len(values), f.failures[-5:])
    if state is not None:
        assert [e["state"] for e in f.ends] == [state], f.ends


async def status_of(client: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    resp = await client.get(f"/streams/{sid}/status")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def start_stream(
    client: httpx.AsyncClient, sid: str, *, min_chunks: int = 1, **params: Any
) -> SSEResult:
    """Start ``sid`` with ``GET /gen`` and disconnect once ``min_chunks`` arrived (the producer
    runs detached from this request)."""
    res = await read_sse(
        client, f"/gen/{sid}", params=params, stop_after_chunks=min_chunks, within=20
    )
    assert res.status_code == 200, res.body[:300]
    assert len(res.chunks) >= min_chunks or res.eof, res.body[:300]
    return res


def log_marks(*apps: App) -> dict[str, int]:
    return {app.name: len(app.log()) for app in apps}


def assert_no_crash(
    apps: Sequence[App], marks: dict[str, int], *, allow: Sequence[str] = ()
) -> None:
    for app in apps:
        errors = app.errors(marks.get(app.name, 0), allow=allow)
        assert not errors, (
            f"app {app.name} logged:\n" + "\n".join(errors) + "\n" + app.log()[-4000:]
        )


# --------------------------------------------------------------------------- 1. crash


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ["redis", "postgres"])
async def test_killed_producer_fails_by_lease_and_is_reclaimed(
    launch: Launch, redis_url: str, rec_store: redis.Redis, backend: str, request: Any
) -> None:
    """SIGKILL of the producer's instance: the followers on the other instance get ``end``
    (failed) within lease + one renewal; the partial output stays readable; the next start
    claims a higher generation; an old cursor gets ``reset`` and then the new output.
    (The hubs run on Redis or on PostgreSQL; the generators record in Redis either way.)"""
    lease = 1.5
    renew = lease / 3
    url = redis_url if backend == "redis" else request.getfixturevalue("postgres_url")
    a, b = await launch(["A", "B"], redis=url, LEASE_TTL=lease)
    sid = new_sid("kill")
    n = 2000  # 40 s at 20 ms: only the crash ends it
    async with clients(a, b) as (ca, cb):
        await start_stream(ca, sid, n=n, delay=0.02, min_chunks=3)
        followers = [Follower(sid, [cb]) for _ in range(3)]
        async with anyio.create_task_group() as tg:
            for f in followers:
                tg.start_soon(partial(f.follow, within=60))
            await wait_until(
                lambda: all(len(f.values) >= 20 for f in followers), within=20, what="20 chunks"
            )
            a.kill()
            killed_at = time.monotonic()
            await wait_until(
                lambda: all(f.ended for f in followers), within=lease + renew + 20, what="ends"
            )
        took = max(f.ended_at or 0 for f in followers) - killed_at
        print(f"\nkill -> end on every follower: {took:.2f}s (lease {lease}s, renew {renew:.2f}s)")
        assert took <= lease + renew + SLACK, took

        status = await status_of(cb, sid)
        assert status["state"] == "failed" and status["reason"] == "lease_expired", status
        k = status["chunks"]
        assert 20 <= k < n
        for f in followers:
            assert_exact(f, expected(k), "failed")
            assert f.connects == 1 and f.resets == []
            assert f.ends[0]["reason"] == "lease_expired"

        # The partial output stays readable: replay, snapshot.
        replay = Follower(sid, [cb])
        await replay.follow(within=20)
        assert_exact(replay, expected(k), "failed")
        snap = (await cb.get(f"/streams/{sid}/snapshot")).json()
        assert snap["state"] == "failed" and snap["text"] == text_of(k)
        old_generation = status["generation"]
        old_cursor = replay.cursor
        assert old_cursor is not None

        # Starting again reclaims the session with a higher generation.
        again = Follower(sid, [cb])
        await again.follow(within=30, first=(f"/gen/{sid}", {"n": 30}))
        assert_exact(again, expected(30), "done")
        status = await status_of(cb, sid)
        assert status["state"] == "done" and status["generation"] > old_generation
        assert record(rec_store, sid, "A").get("finally") is None  # killed: no finally
        assert record(rec_store, sid, "B") == ran_once_to_the_end(30)

        # A client resuming with a cursor of the crashed generation: reset, then the new output.
        stale = Follower(sid, [cb])
        stale.ids.append(old_cursor)  # as if it had read up to there
        stale._position = cursor_key(old_cursor)
        await stale.follow(within=20)
        assert len(stale.resets) == 1 and stale.resets[0]["reason"], stale.resets
        assert stale.resets[0]["generation"] == status["generation"]
        assert_exact(stale, expected(30), "done")


# --------------------------------------------------------------------------- 2. zombie


def log_entries(store: redis.Redis, sid: str) -> list[tuple[str, dict[str, str]]]:
    """The session's stream entries, read straight from Redis."""
    reply = store.xrange(f"streamhub:{{{sid}}}:log")
    assert isinstance(reply, list)
    entries: list[tuple[str, dict[str, str]]] = []
    for entry_id, fields in reply:
        assert isinstance(entry_id, str) and isinstance(fields, dict)
        row: dict[str, str] = {}
        for key, value in fields.items():
            assert isinstance(key, str) and isinstance(value, str)
            row[key] = value
        entries.append((entry_id, row))
    return entries


@pytest.mark.timeout(90)
async def test_zombie_producer_cannot_write_into_the_new_generation(
    launch: Launch, redis_url: str, rec_store: redis.Redis
) -> None:
    """A producer frozen (SIGSTOP) past its lease while another instance claims the session,
    then thawed (SIGCONT): not one chunk, metadata or close of the zombie reaches the new
    generation, and the zombie's generator is stopped."""
    lease = 1.5
    renew = lease / 3
    a, b = await launch(["A", "B"], redis=redis_url, LEASE_TTL=lease)
    sid = new_sid("zombie")
    n2 = 150
    async with clients(a, b) as (ca, cb):
        await start_stream(ca, sid, n=3000, delay=0.01, meta=True, min_chunks=3)
        watcher = Follower(sid, [cb])
        new_reader = Follower(sid, [cb])  # A is frozen: its socket accepts, nothing answers
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: watcher.follow(within=60))
            await wait_until(lambda: len(watcher.values) >= 10, within=20, what="10 chunks")
            a.freeze()
            try:
                # B's keeper sees the lease lapse: the first generation ends as failed.
                await wait_until(
                    lambda: watcher.ended, within=lease + renew + SLACK + 5, what="lease expiry"
                )
                assert watcher.state == "failed", watcher.ends
                first = await status_of(cb, sid)
                assert first["state"] == "failed"
                assert_exact(watcher, expected(first["chunks"]), "failed")

                # B claims the session; the new generation is running when the zombie wakes.
                tg.start_soon(
                    lambda: new_reader.follow(
                        within=60,
                        first=(f"/gen/{sid}", {"n": n2, "delay": 0.02, "meta": True}),
                    )
                )
                await wait_until(lambda: len(new_reader.values) >= 5, within=20, what="claim")
                second = await status_of(cb, sid)
                assert second["state"] == "active"
                assert second["generation"] > first["generation"]
            finally:
                a.thaw()
            # The zombie learns it lost the session (refused append or renewal) and its
            # generator is stopped.
            await wait_until(
                lambda: record(rec_store, sid, "A").get("finally") == 1,
                within=renew + SLACK + 5,
                what="the zombie's generator to stop",
            )
            zombie = record(rec_store, sid, "A")
            assert zombie["runs"] == 1 and zombie["exit"] in ("cancelled", "closed"), zombie
            await wait_until(lambda: new_reader.ended, within=30, what="the new generation")

        assert_exact(new_reader, expected(n2), "done")
        assert new_reader.resets == []
        final = await status_of(ca, sid)
        assert final["state"] == "done" and final["reason"] is None, final
        assert final["generation"] == second["generation"]
        assert final["chunks"] == n2
        assert final["metadata"] == {"model": "test", "n": n2}
        # The store holds the new generation and nothing else: its start marker (unless the
        # finished log was compacted already, which drops it), entries holding exactly chunks
        # 1..n2 (an entry's id is the offset of its last chunk), and one end marker.
        entries = log_entries(rec_store, sid)
        generation = str(second["generation"])
        assert all(e[0].startswith(f"{generation}-") for e in entries), entries[:3]
        if entries[0][0] == f"{generation}-0":
            assert entries.pop(0) == (f"{generation}-0", {"s": ""})
        assert entries[-1] == (f"{generation}-{n2 + 1}", {"e": "done\n"})
        offset = 0
        for entry_id, fields in entries[:-1]:
            assert list(fields) == ["c"]
            offset += len(unframe(fields["c"].encode()))
            assert entry_id == f"{generation}-{offset}"
        assert offset == n2
        # Both instances replay exactly the new generation.
        for client in (ca, cb):
            replay = Follower(sid, [client])
            await replay.follow(within=20)
            assert_exact(replay, expected(n2), "done")
        assert record(rec_store, sid, "B") == ran_once_to_the_end(n2)


# --------------------------------------------------------------------------- 3. Redis restart


async def follow_all(
    tg: Any, sids: Sequence[str], clients_: Sequence[httpx.AsyncClient], per: int, within: float
) -> dict[str, list[Follower]]:
    """``per`` followers for each session, each on one of ``clients_`` in turn."""
    out: dict[str, list[Follower]] = {}
    cycle = itertools.cycle(clients_)
    for sid in sids:
        out[sid] = [Follower(sid, [next(cycle)]) for _ in range(per)]
        for f in out[sid]:
            tg.start_soon(partial(f.follow, within=within))
    return out


def everyone(followers: dict[str, list[Follower]]) -> list[Follower]:
    return [f for group in followers.values() for f in group]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["restart", "crash"])
async def test_redis_restart_with_aof_loses_nothing(
    make_redis: Callable[..., RedisServer],
    launch: Launch,
    rec_store: redis.Redis,
    how: str,
) -> None:
    """Redis (``appendonly yes``, fsync always) restarted mid-stream, gracefully or by SIGKILL:
    producers retry with bounded backoff, and afterwards every follower's output is exact (no
    chunk lost, duplicated or reordered), every generator ran once to the end."""
    server = make_redis(appendonly=True)
    a, b = await launch(["A", "B"], redis=server.url, OUTAGE_TIMEOUT=20)
    marks = log_marks(a, b)
    n = 300
    sids = [new_sid(f"aof{i}") for i in range(6)]
    async with clients(a, b) as (ca, cb):
        for i, sid in enumerate(sids):
            await start_stream((ca, cb)[i % 2], sid, n=n, delay=0.02, burst=2, min_chunks=1)
        async with anyio.create_task_group() as tg:
            followers = await follow_all(tg, sids, (ca, cb), per=2, within=90)
            await wait_until(
                lambda: all(len(f.values) >= 30 for f in everyone(followers)),
                within=30,
                what="30 chunks everywhere",
            )
            started = time.monotonic()
            if how == "restart":
                await anyio.to_thread.run_sync(server.stop)
            else:
                server.kill()
            # The outage's length is the subject: a second without Redis, then the restart.
            await anyio.sleep(1.0)
            await anyio.to_thread.run_sync(server.start)
            down = time.monotonic() - started
            assert any(len(f.values) < n for f in everyone(followers)), "too late: all done"
            await wait_until(
                lambda: all(f.ended for f in everyone(followers)), within=60, what="the ends"
            )
        connects = sum(f.connects for f in everyone(followers))
        print(
            f"\nRedis {how}: down {down:.2f}s; {len(everyone(followers))} followers, {connects} connections"
        )
        for f in everyone(followers):
            assert_exact(f, expected(n), "done")
            assert f.resets == []
        for sid in sids:
            status = await status_of(ca, sid)
            assert status["state"] == "done" and status["chunks"] == n, status
            assert record(rec_store, sid) == ran_once_to_the_end(n)
    assert_no_crash([a, b], marks)


# --------------------------------------------------------------------------- 4. network faults


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["redis", "postgres"])
async def test_connections_dropped_and_stalled_lose_nothing(
    make_redis: Callable[..., RedisServer],
    proxy_for: Callable[[Any], TCPProxy],
    launch: Launch,
    rec_store: redis.Redis,
    backend: str,
    request: Any,
) -> None:
    """The apps reach the store (Redis, or PostgreSQL: the pool and the LISTEN connection)
    through a TCP proxy that resets every connection three times and stalls them all for two
    seconds: every follower's output is exact, every generator ran once to the end."""
    if backend == "redis":
        proxy = proxy_for(make_redis())
        url = proxy.url
    else:
        proxy = proxy_for(request.getfixturevalue("fresh_postgres"))
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
    a, b = await launch(["A", "B"], redis=url, OUTAGE_TIMEOUT=20)
    marks = log_marks(a, b)
    n = 1000  # 10 s of output: every fault below lands while the streams still run
    sids = [new_sid(f"net{i}") for i in range(6)]
    async with clients(a, b) as (ca, cb):
        for i, sid in enumerate(sids):
            await start_stream((ca, cb)[i % 2], sid, n=n, delay=0.02, burst=2, min_chunks=1)
        async with anyio.create_task_group() as tg:
            followers = await follow_all(tg, sids, (ca, cb), per=2, within=90)
            all_f = everyone(followers)

            async def progress(step: int) -> None:
                """Wait until every follower got ``step`` more chunks (or ended)."""
                marks_ = [len(f.values) for f in all_f]
                await wait_until(
                    lambda: all(
                        f.ended or len(f.values) >= m + step
                        for f, m in zip(all_f, marks_, strict=True)
                    ),
                    within=30,
                    what=f"{step} more chunks",
                )

            await progress(20)
            faults: list[tuple[str, float]] = []
            for _ in range(3):
                faults.append(("drop", proxy.drop()))
                await progress(20)
            proxy.stall()
            # The stall's length is the subject.
            await anyio.sleep(2.0)
            proxy.unstall()
            faults.append(("stall", 2.0))
            await progress(10)
            faults.append(("drop", proxy.drop()))
            assert any(not f.ended for f in all_f), "too late: all done"
            await wait_until(lambda: all(f.ended for f in all_f), within=60, what="the ends")
        print(f"\nfaults: {faults}; proxied connections: {proxy.accepted}")
        assert all(count > 0 for kind, count in faults if kind == "drop"), faults
        for f in all_f:
            assert_exact(f, expected(n), "done")
        for sid in sids:
            assert record(rec_store, sid) == ran_once_to_the_end(n)
    assert_no_crash([a, b], marks)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("mode", "where"),
    [
        pytest.param("down", "both", id="refused"),
        pytest.param("down", "producer", id="refused-followed-on-producer-instance-only"),
        pytest.param("stall", "both", id="stalled"),
    ],
)
async def test_outage_longer_than_outage_timeout_fails_the_stream(
    make_redis: Callable[..., RedisServer],
    proxy_for: Callable[[RedisServer], TCPProxy],
    launch: Launch,
    rec_store: redis.Redis,
    mode: str,
    where: str,
) -> None:
    """Redis unreachable (connections refused, or stalled) for longer than ``outage_timeout``:
    the producer gives up within ``outage_timeout`` (its generator is stopped, nothing is
    buffered without bound), and once Redis is back every follower gets ``end`` with
    ``failed`` and a reason within a lease; the output stays exact up to where it stopped.
    Followers are on both instances, or only on the producer's."""
    outage_timeout = 2.0
    lease = 3.0
    server = make_redis()
    proxy = proxy_for(server)
    a, b = await launch(["A", "B"], redis=proxy.url, OUTAGE_TIMEOUT=outage_timeout, LEASE_TTL=lease)
    sid = new_sid(f"outage-{mode}")
    async with clients(a, b) as (ca, cb):
        await start_stream(ca, sid, n=3000, delay=0.01, min_chunks=1)
        followers = [Follower(sid, [ca])] + ([Follower(sid, [cb])] if where == "both" else [])
        async with anyio.create_task_group() as tg:
            for f in followers:
                tg.start_soon(partial(f.follow, within=90))
            await wait_until(
                lambda: all(len(f.values) >= 20 for f in followers), within=20, what="chunks"
            )
            if mode == "down":
                proxy.down()
            else:
                proxy.stall()
            cut_at = time.monotonic()
            try:
                await wait_until(
                    lambda: record(rec_store, sid).get("finally") == 1,
                    within=outage_timeout + 30,
                    what="the generator to stop",
                )
                stopped_at = time.monotonic()
                stopped = stopped_at - cut_at
                # A long outage: Redis stays away until the producer's attempt to record its
                # close has timed out too.
                await wait_until(
                    lambda: time.monotonic() - stopped_at > outage_timeout + 0.5, within=10
                )
            finally:
                if mode == "down":
                    proxy.up()
                else:
                    proxy.unstall()
            back_at = time.monotonic()
            try:
                await wait_until(
                    lambda: all(f.ended for f in followers),
                    within=lease + 3 * SLACK,
                    what="the ends",
                )
            except AssertionError:
                status = await status_of(ca, sid)
                raise AssertionError(f"followers hang; status after recovery: {status}") from None
        ended = max(f.ended_at or 0 for f in followers) - back_at
        print(
            f"\noutage ({mode}): generator stopped after {stopped:.2f}s "
            f"(outage_timeout {outage_timeout}s); ends {ended:.2f}s after Redis came back; "
            f"ends: {[f.ends for f in followers]}"
        )
        rec = record(rec_store, sid)
        # Stopped by a cancel inside the generator, or closed while it waited at its yield.
        assert rec["finally"] == 1 and rec["exit"] in ("cancelled", "closed"), rec
        status = await status_of(cb, sid)
        assert status["state"] == "failed" and status["reason"], status
        for f in followers:
            assert_exact(f, expected(status["chunks"]), "failed")
            assert f.ends[0]["reason"], f.ends
        assert stopped <= outage_timeout + SLACK, stopped
        assert ended <= lease + SLACK, ended


# --------------------------------------------------------------------------- 5. data loss


def assert_loud_end(f: Follower) -> None:
    """A follower whose data was lost: it ended (failed, with a reason) or was reset or told
    404 — never a silent gap."""
    assert f.duplicated == 0 and f.lost == 0, f.failures
    assert f.ends or f.resets or 404 in f.statuses, (f.ends, f.resets, f.statuses)
    for end in f.ends:
        assert end["state"] == "failed" and end["reason"], end


@pytest.mark.timeout(90)
async def test_flushall_mid_stream_is_reported_not_a_silent_gap(
    make_redis: Callable[..., RedisServer], launch: Launch, rec_store: redis.Redis
) -> None:
    """FLUSHALL while a stream runs: its followers (on both instances) end as failed with a
    reason within a lease; the producer stops; a client resuming with its cursor gets 404."""
    lease = 2.0
    server = make_redis()
    a, b = await launch(["A", "B"], redis=server.url, LEASE_TTL=lease)
    sid = new_sid("flush")
    async with clients(a, b) as (ca, cb):
        await start_stream(ca, sid, n=3000, delay=0.01, min_chunks=1)
        followers = [Follower(sid, [ca]), Follower(sid, [cb])]
        async with anyio.create_task_group() as tg:
            for f in followers:
                tg.start_soon(partial(f.follow, within=60))
            await wait_until(lambda: all(len(f.values) >= 20 for f in followers), within=20)
            server.execute("FLUSHALL")
            flushed_at = time.monotonic()
            await wait_until(
                lambda: record(rec_store, sid).get("finally") == 1,
                within=SLACK + 5,
                what="the producer to stop",
            )
            try:
                await wait_until(
                    lambda: all(f.ended for f in followers),
                    within=lease + 3 * SLACK,
                    what="the ends",
                )
            except AssertionError:
                raise AssertionError(
                    "followers still waiting after FLUSHALL: "
                    + ", ".join(f"{f.clients[0].base_url}: ended={f.ended}" for f in followers)
                ) from None
        took = max(f.ended_at or 0 for f in followers) - flushed_at
        print(f"\nFLUSHALL -> ends {took:.2f}s; {[f.ends for f in followers]}")
        for f in followers:
            assert_loud_end(f)
            assert f.values == expected(len(f.values))
            # Resuming after the loss: the session no longer exists.
            res = await read_sse(
                f.clients[0], f"/streams/{sid}", headers={"Last-Event-ID": f.cursor or ""}
            )
            assert res.status_code == 404, res.body
        assert (await ca.get(f"/streams/{sid}/status")).status_code == 404


@pytest.mark.timeout(90)
async def test_restart_without_persistence_is_reported_not_a_silent_gap(
    make_redis: Callable[..., RedisServer], launch: Launch, rec_store: redis.Redis
) -> None:
    """Redis restarted without persistence (all data gone) while one stream runs and another
    is finished: followers end as failed with a reason; resuming either session gets 404."""
    server = make_redis()
    a, b = await launch(["A", "B"], redis=server.url, LEASE_TTL=2)
    running, finished = new_sid("lost-run"), new_sid("lost-done")
    async with clients(a, b) as (ca, cb):
        done = Follower(finished, [cb])
        await done.follow(within=20, first=(f"/gen/{finished}", {"n": 10}))
        assert_exact(done, expected(10), "done")
        await start_stream(ca, running, n=3000, delay=0.01, min_chunks=1)
        followers = [Follower(running, [ca]), Follower(running, [cb])]
        async with anyio.create_task_group() as tg:
            for f in followers:
                tg.start_soon(partial(f.follow, within=60))
            await wait_until(lambda: all(len(f.values) >= 20 for f in followers), within=20)
            await anyio.to_thread.run_sync(server.restart)
            restarted_at = time.monotonic()
            await wait_until(
                lambda: all(f.ended for f in followers), within=2 + 3 * SLACK, what="the ends"
            )
            await wait_until(
                lambda: record(rec_store, running).get("finally") == 1,
                within=SLACK + 5,
                what="the producer to stop",
            )
        took = max(f.ended_at or 0 for f in followers) - restarted_at
        print(f"\nrestart without persistence -> ends {took:.2f}s; {[f.ends for f in followers]}")
        for f in followers:
            assert_loud_end(f)
            assert f.values == expected(len(f.values))
        for client, sid, cursor in (
            (ca, running, followers[0].cursor),
            (cb, running, followers[1].cursor),
            (ca, finished, done.cursor),
        ):
            res = await read_sse(client, f"/streams/{sid}", headers={"Last-Event-ID": cursor or ""})
            assert res.status_code == 404, res.body


@pytest.mark.timeout(60)
async def test_lost_log_of_a_finished_session_gives_reset_not_a_hang(
    launch: Launch, redis_url: str, rec_store: redis.Redis
) -> None:
    """The log of a finished session is lost while its record survives (eviction, a partial
    restore): a client resuming with its cursor, or reading from the start, gets ``reset`` (the
    chunks are gone) and ``end`` — never a silent gap, never a hang."""
    (a,) = await launch(["A"], redis=redis_url)
    sid = new_sid("nolog")
    async with clients(a) as (ca,):
        first = Follower(sid, [ca])
        await first.follow(within=20, first=(f"/gen/{sid}", {"n": 20}))
        assert_exact(first, expected(20), "done")
        rec_store.delete(f"streamhub:{{{sid}}}:log")
        for cursor in (first.ids[4], None):
            res = await read_sse(
                ca,
                f"/streams/{sid}",
                headers={"Last-Event-ID": cursor} if cursor else None,
                within=3 * SLACK,
            )
            assert res.status_code == 200 and res.eof
            assert res.resets and res.resets[0]["reason"], res.events
            assert len(res.ends) == 1 and res.chunks == []


# --------------------------------------------------------------------------- 7. slow consumer


def kernel_socket_buffers() -> int:
    """What the kernel may buffer for one loopback connection whose reader does not read: the
    sender's largest send buffer plus the receiver's initial receive buffer (it only grows
    when the application reads)."""
    wmem = Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()
    rmem = Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()
    return int(wmem[2]) + int(rmem[1])


class RawSSE:
    """An SSE response read only when asked: between reads the client does not touch the
    socket, so the kernel buffers fill up and the server has to hold back."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._raw = response.aiter_raw()
        self.parser = SSEParser()
        self.follower = Follower("", [])
        self.eof = False

    async def read(self, *, chunks: int | None = None) -> None:
        """Read until ``chunks`` more chunks arrived, or to the end of the response."""
        target = self.follower.delivered + chunks if chunks is not None else None
        while target is None or self.follower.delivered < target:
            try:
                raw = await self._raw.__anext__()
            except StopAsyncIteration:
                self.follower.absorb(
                    [r for k, r in self.parser.feed(b"", final=True) if k == "event"]
                )
                self.eof = True
                return
            self.follower.absorb([r for k, r in self.parser.feed(raw) if k == "event"])


@pytest.mark.timeout(120)
async def test_slow_consumer_blocks_nobody_and_costs_bounded_memory(
    make_redis: Callable[..., RedisServer], launch: Launch, rec_store: redis.Redis
) -> None:
    """Two clients stop reading their open SSE responses while the producer writes 32 MiB: the
    producer and a fast reader on the same instance are not held up, the instance's peak RSS
    grows by far less than what was written (bounded per-subscriber buffer), and then one slow
    client resumes reading its response, the other reconnects with its cursor: both get the
    exact rest."""
    server = make_redis()
    buffer = 128  # live chunks queued per subscriber before it falls back to the store
    # Bytes a subscriber's queue, and its response's output buffer, may hold each.
    buffer_bytes = 1024 * 1024
    (a,) = await launch(
        ["A"], redis=server.url, SUBSCRIBER_BUFFER=buffer, SUBSCRIBER_BUFFER_BYTES=buffer_bytes
    )
    sid = new_sid("slow")
    n, pad = 4000, 8192
    written = n * (pad + 8)
    want = expected(n, pad=pad)
    async with clients(a) as (ca,):
        # Warm the app up (imports, first connections) before the baseline.
        warm = Follower(new_sid("warm"), [ca])
        await warm.follow(within=20, first=(f"/gen/{warm.sid}", {"n": 200, "pad": pad}))
        assert_exact(warm, expected(200, pad=pad), "done")
        before = a.memory()

        params = {"n": n, "pad": pad, "delay": 0.02, "burst": 40}
        async with (
            ca.stream("GET", f"/gen/{sid}", params=params) as r1,
            ca.stream("GET", f"/streams/{sid}") as r2,
        ):
            slow1, slow2 = RawSSE(r1), RawSSE(r2)
            await slow1.read(chunks=2)
            await slow2.read(chunks=2)
            paused = (slow1.follower.delivered, slow2.follower.delivered)
            # Both stop reading here. A fast reader follows the whole stream meanwhile.
            fast = Follower(sid, [ca])
            started = time.monotonic()
            await fast.follow(within=60)
            took = time.monotonic() - started
            assert_exact(fast, want, "done")
            await wait_until(lambda: record(rec_store, sid).get("exit") == "done", within=10)
            after = a.memory()
            assert not slow1.eof and not slow2.eof
            assert slow1.follower.delivered < n and slow2.follower.delivered < n
            # One slow client resumes reading the same response...
            await slow1.read()
            # ... the other gives up on its response and reconnects with its cursor.
            cursor = slow2.follower.cursor
        assert slow1.eof
        assert_exact(slow1.follower, want, "done")
        rest = Follower(sid, [ca])
        rest.ids.append(cursor)
        rest._position = cursor_key(cursor)
        await rest.follow(within=30)
        k = cursor_key(cursor)[1]
        assert_exact(rest, want[k:], "done")
        assert rest.resets == []
        assert slow2.follower.values == want[:k]

    growth = after["VmHWM"] - before["VmRSS"]
    mib = 1024 * 1024
    print(
        f"\nslow consumers: {written / mib:.0f} MiB written in {took:.1f}s, fast reader done; "
        f"app RSS {before['VmRSS'] / mib:.0f} MiB before, peak {after['VmHWM'] / mib:.0f} MiB "
        f"(+{growth / mib:.1f} MiB); slow readers paused after {paused} chunks, "
        f"the second resumed from chunk {k + 1}"
    )
    # What a slow subscriber may hold: its queue (`buffer` chunks, at most `buffer_bytes`) and its
    # response's output buffer (`buffer_bytes`), besides the server's socket buffer; the rest is
    # re-read from the store. Allow the same again, plus 8 MiB of interpreter and allocator
    # growth (measured +9-11 MiB in all, with 1 MiB or 4 MiB buffers alike): half the 32 MiB
    # written, where an unbounded buffer would hold all of it per reader.
    queue = min(buffer * (pad + 64), buffer_bytes)
    bound = 2 * 2 * (queue + buffer_bytes) + 8 * mib
    assert growth < bound, (growth, bound)
    # The kernel cannot have absorbed the stream for the paused clients: most of it had to wait
    # on the server side (and be dropped there and re-read from the store).
    kernel = kernel_socket_buffers()
    assert written > 4 * kernel, (written, kernel)


# --------------------------------------------------------------------------- 8. shutdown


@pytest.mark.timeout(90)
async def test_sigterm_fails_local_producers_after_the_grace_and_ends_responses(
    launch: Launch, redis_url: str, rec_store: redis.Redis
) -> None:
    """SIGTERM on A while A runs producers and serves open responses: A's producers get the
    grace, then end as failed/shutdown (their generators cancelled, ``finally`` run); A's open
    responses end and their clients resume on B with their cursor, exactly; B's producers are
    untouched; A exits and no session is left ``active``."""
    grace = 1.0
    a, b = await launch(["A", "B"], redis=redis_url, SHUTDOWN_GRACE=grace, LEASE_TTL=5)
    marks = log_marks(a, b)
    on_a = [new_sid(f"term-a{i}") for i in range(3)]
    on_b = [new_sid(f"term-b{i}") for i in range(2)]
    n_b = 400
    async with clients(a, b) as (ca, cb):
        for sid in on_a:
            await start_stream(ca, sid, n=3000, delay=0.01, min_chunks=1)
        for sid in on_b:
            await start_stream(cb, sid, n=n_b, delay=0.02, burst=2, min_chunks=1)
        # Every session has a follower on A (which will have to move) and one on B.
        via_a = {sid: Follower(sid, [ca]) for sid in on_a + on_b}
        via_b = {sid: Follower(sid, [cb]) for sid in on_a + on_b}
        followers = [*via_a.values(), *via_b.values()]
        async with anyio.create_task_group() as tg:
            for f in followers:
                tg.start_soon(partial(f.follow, within=60))
            await wait_until(
                lambda: all(len(f.values) >= 10 for f in followers), within=20, what="chunks"
            )
            a.terminate()
            termed_at = time.monotonic()
            for f in via_a.values():
                f.clients = [cb]  # A refuses new connections from now on: resume on B
            code = await anyio.to_thread.run_sync(a.wait_exit, grace * 2 + 3 + 10)
            exited = time.monotonic() - termed_at
            await wait_until(
                lambda: all(via_b[sid].ended for sid in on_a),
                within=SLACK,
                what="the ends of A's sessions",
            )
            await wait_until(lambda: all(f.ended for f in followers), within=30, what="all ends")
        print(f"\nSIGTERM: A exited with {code} after {exited:.2f}s (grace {grace}s)")
        assert exited <= grace * 2 + 3 + SLACK, exited

        for sid in on_a:
            status = await status_of(cb, sid)
            assert status["state"] == "failed" and status["reason"] == "shutdown", status
            for f in (via_a[sid], via_b[sid]):
                assert_exact(f, expected(status["chunks"]), "failed")
                assert f.ends[0]["reason"] == "shutdown"
            rec = record(rec_store, sid)
            assert rec["finally"] == 1 and rec["exit"] in ("cancelled", "closed"), rec
            took = (via_b[sid].ended_at or 0) - termed_at
            assert grace * 0.9 <= took <= grace * 2 + SLACK, took
        for sid in on_b:
            for f in (via_a[sid], via_b[sid]):
                assert_exact(f, expected(n_b), "done")
            assert record(rec_store, sid)["exit"] == "done"
        # A's responses following B's sessions ended without ``end`` and their clients moved to
        # B (those following A's own sessions may have received ``end`` before A let go).
        assert all(via_a[sid].connects >= 2 for sid in on_b), [f.connects for f in via_a.values()]
        resp = await cb.post("/streams/active", json={"session_ids": on_a + on_b})
        assert resp.json() == {"active": []}
    assert_no_crash([b], marks)
    assert_no_crash([a], marks)


# --------------------------------------------------------------------------- 6. chaos


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["redis", "postgres"])
async def test_chaos_many_streams_random_reconnects_cancels_and_a_crash(
    make_redis: Callable[..., RedisServer],
    launch: Launch,
    rec_store: redis.Redis,
    backend: str,
    request: Any,
) -> None:
    """200 streams of 500 chunks on two instances, three readers each that disconnect at random
    and reconnect with their cursor to a random live instance; 10 % of the streams are
    cancelled at random moments and instance A is killed (SIGKILL) at a third of the way, then
    replaced by a fresh instance. Every reader must end, with no chunk lost or duplicated, and
    its text equal to the producer's text (done) or to the stored output (cancelled/failed)."""
    streams, n, per = 200, 500, 3
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    url = make_redis().url if backend == "redis" else request.getfixturevalue("fresh_postgres").url
    env = {"LEASE_TTL": 3, "PING_INTERVAL": 2}
    a, b = await launch(["A", "B"], redis=url, **env)
    params = {"n": n, "delay": 0.05, "burst": 5, "count": "false"}
    sids = [new_sid(f"chaos{i}") for i in range(streams)]
    cancel = set(rng.sample(sids, streams // 10))
    started = time.monotonic()
    async with clients(a, b) as (ca, cb):
        pool = [ca, cb]  # live instances; shared by every reader, changed by the crash
        readers = {
            sid: [Follower(sid, pool, rng=random.Random(rng.random())) for _ in range(per)]
            for sid in sids
        }
        everyone_ = [f for group in readers.values() for f in group]

        def disconnect_after(f: Follower) -> Callable[[], int | None]:
            return lambda: f.rng.randint(20, 250)

        async def one_stream(i: int, sid: str) -> None:
            first, *others = readers[sid]
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: first.follow(
                        within=150,
                        first=(f"/gen/{sid}", params),
                        disconnect_after=disconnect_after(first),
                    )
                )
                await wait_until(lambda: first.values or first.ended, within=60, interval=0.1)
                for f in others:
                    tg.start_soon(
                        partial(f.follow, within=150, disconnect_after=disconnect_after(f))
                    )
                if sid in cancel:
                    at = rng.randint(10, n - 50)
                    await wait_until(
                        lambda: len(first.values) >= at or first.ended, within=150, interval=0.1
                    )
                    for _ in range(20):  # the instance picked may be the one just killed
                        try:
                            resp = await rng.choice(pool).post(f"/streams/{sid}/cancel")
                        except NETWORK_ERRORS:
                            await anyio.sleep(0.1)
                            continue
                        assert resp.status_code in (200, 202), resp.text
                        break

        def progress() -> float:
            return sum(len(f.values) for f in everyone_) / (streams * n * per)

        async with anyio.create_task_group() as tg:
            for i, sid in enumerate(sids):
                tg.start_soon(one_stream, i, sid)
            await wait_until(lambda: progress() >= 0.3, within=120, interval=0.1)
            a.kill()
            killed_at = time.monotonic() - started
            pool.remove(ca)
            (a2,) = await launch(["A2"], redis=url, **env)
            async with clients(a2) as (ca2,):
                pool.append(ca2)
                await wait_until(lambda: all(f.ended for f in everyone_), within=150, interval=0.2)
                elapsed = time.monotonic() - started
                states: dict[str, int] = {}
                states_of: dict[str, tuple[str, str | None]] = {}
                stored: dict[str, int] = {}
                for sid in sids:
                    status = await status_of(cb, sid)
                    key = f"{status['state']}/{(status['reason'] or '')[:60]}"
                    states[key] = states.get(key, 0) + 1
                    states_of[sid] = (status["state"], status["reason"])
                    stored[sid] = status["chunks"]
                    snapshot = (await ca2.get(f"/streams/{sid}/snapshot")).json()
                    assert snapshot["text"] == text_of(stored[sid])
                    # A cancel may arrive after the last chunk (the reader it waited for lags).
                    allowed = (
                        {"cancelled", "done", "failed"} if sid in cancel else {"done", "failed"}
                    )
                    assert status["state"] in allowed, status

        delivered = sum(f.delivered for f in everyone_)
        reconnects = sum(f.connects for f in everyone_) - len(everyone_)
        lost = sum(f.lost for f in everyone_)
        duplicated = sum(f.duplicated for f in everyone_)
        print(
            f"\nchaos (seed {seed}): streams={streams} chunks_delivered={delivered} "
            f"reconnects={reconnects} lost={lost} duplicated={duplicated} states={states} "
            f"kill_at={killed_at:.1f}s elapsed={elapsed:.1f}s"
        )
        for sid in sids:
            for f in readers[sid]:
                assert f.duplicated == 0 and f.lost == 0, (sid, f.failures[:5])
                assert len(f.ends) == 1, (sid, f.ends)
                assert f.text == text_of(stored[sid]), (sid, len(f.values), stored[sid])
                if f.state == "done":
                    assert f.text == text_of(n)
        assert lost == 0 and duplicated == 0
        runs = {sid: record(rec_store, sid).get("runs") for sid in sids}
        assert all(r == 1 for r in runs.values()), {s: r for s, r in runs.items() if r != 1}
        # Producers on B were never in danger: a lease lapsing there is the overload issue of
        # benchmarks/PROFILE.md section 3 (reported, not a loss: the readers stayed exact).
        survivors_failed = [
            sid
            for sid in sids
            if record(rec_store, sid, "B") and states_of[sid] == ("failed", "lease_expired")
        ]
        print(
            f"streams produced on B (alive throughout) that ended failed/lease_expired: "
            f"{len(survivors_failed)} of {sum(1 for sid in sids if record(rec_store, sid, 'B'))}"
            + "".join(
                f"\n  {sid}: {states_of[sid]}, {stored[sid]} chunks, generator on B: "
                f"{record(rec_store, sid, 'B')}"
                for sid in survivors_failed[:3]
            )
        )
