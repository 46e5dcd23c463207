"""What is specific to the PostgreSQL backend, on the tests' own PostgreSQL server: the schema
(created once under a lock, refused on a version mismatch, printable for a DBA), a pool the
application already has, live delivery through NOTIFY at its limits (a chunk over 8,000 bytes, a
NUL byte, a listener connection killed mid-stream), a server restart mid-stream, ordering under
concurrent fan-in writers, and the CLI on a ``postgresql://`` URL.

The backend contract itself runs on PostgreSQL in tests/conformance (store ``postgres``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from support.apps import AppServer, start_servers
from support.conformance import assert_contiguous, chunks_of, collect, follow, start, texts
from support.postgres_server import PostgresServer
from support.sids import new_sid
from support.sse_client import read_sse, wait_until
from test_cli import CLI, _env, assert_one_line_error, cli, producing, table
from test_http import assert_complete, check_log, expected, start_reader
from test_http_fanin import two_sub_producers_interleave

from fastapi_streamhub import BackendUnavailable, Chunk, End, Metadata, State, StreamHub
from fastapi_streamhub.backends.base import Append, Lost, ReadResult
from fastapi_streamhub.backends.postgres import PostgresBackend, SchemaMismatch
from fastapi_streamhub.backends.postgres_sql import SCHEMA_VERSION

pytestmark = pytest.mark.anyio


@pytest.fixture
async def hub(postgres_url: str) -> AsyncIterator[StreamHub]:
    async with StreamHub.from_url(postgres_url, lease_ttl=5) as running:
        yield running


# --------------------------------------------------------------------------- schema


async def test_hubs_starting_together_create_the_schema_once(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    # Four processes' worth of hubs starting at the same moment (each on its own event loop).
    barrier = threading.Barrier(4)

    async def one(i: int) -> list[Any]:
        async with StreamHub.from_url(postgres_url, key_prefix="together") as h:
            p = await start(h, f"s{i}")
            await p.publish(i)
            await p.close()
            barrier.wait(10)  # all four are up before any leaves
            return texts(await collect(h.subscribe(f"s{(i + 1) % 4}")))

    def run(i: int) -> list[Any]:
        return anyio.run(one, i)

    results: list[list[Any]] = [[] for _ in range(4)]

    async def runner(i: int) -> None:
        results[i] = await anyio.to_thread.run_sync(run, i)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(runner, i)
    assert results == [[(i + 1) % 4] for i in range(4)]
    assert postgres_server.execute("SELECT version FROM together_schema") == [(SCHEMA_VERSION,)]


async def test_another_schema_version_is_refused_and_left_alone(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    async with StreamHub.from_url(postgres_url):
        pass
    postgres_server.execute("UPDATE streamhub_schema SET version = 999")
    with pytest.raises(Exception) as caught:  # the hub's start wraps it in a group
        async with StreamHub.from_url(postgres_url):
            pass
    leaf: BaseException = caught.value
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, SchemaMismatch) and "version 999" in str(leaf)
    assert postgres_server.execute("SELECT version FROM streamhub_schema") == [(999,)]


async def test_postgres_schema_prints_the_ddl_a_dba_can_run(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    done = await cli("--prefix", "byhand", "postgres-schema", redis=None)
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE byhand_session" in done.stdout
    postgres_server.execute(done.stdout)
    async with StreamHub.from_url(postgres_url, key_prefix="byhand") as h:
        p = await start(h, "s")
        await p.publish("made by hand")
        await p.close()
        assert texts(await collect(h.subscribe("s"))) == ["made by hand"]


async def test_an_application_pool_is_used_and_left_open(postgres_url: str) -> None:
    # Not opened yet (``open=False``): the hub opens it, and leaves it open at exit.
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        postgres_url, min_size=1, max_size=4, open=False
    )
    try:
        async with StreamHub(pool) as h:
            assert isinstance(h.backend, PostgresBackend)
            p = await start(h, "pooled")
            await p.publish("x")
            await p.close()
            assert texts(await collect(h.subscribe("pooled"))) == ["x"]
        assert not pool.closed
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM streamhub_log")
            assert (await cur.fetchone()) == (2,)
    finally:
        await pool.close()


async def test_the_hubs_own_pool_plans_generically_and_an_application_pool_keeps_its_own(
    postgres_url: str,
) -> None:
    # Every connection of the hub's own pool, not only the first: hold several at once.
    async with StreamHub.from_url(postgres_url) as h:
        backend = h.backend
        assert isinstance(backend, PostgresBackend)
        modes: list[str] = []
        async with anyio.create_task_group() as tg:
            held = anyio.Event()

            async def show(conn: psycopg.AsyncConnection[Any]) -> None:
                cur = await conn.execute("SHOW plan_cache_mode")
                row = await cur.fetchone()
                assert row is not None
                modes.append(row[0])
                if len(modes) == 3:
                    held.set()
                await held.wait()

            for _ in range(3):
                tg.start_soon(backend._exec.run, show)
        assert modes == ["force_generic_plan"] * 3
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(postgres_url, min_size=1, open=False)
    try:
        async with StreamHub(pool), pool.connection() as conn:
            cur = await conn.execute("SHOW plan_cache_mode")
            assert (await cur.fetchone()) == ("auto",)
    finally:
        await pool.close()


async def test_an_unreachable_server_is_backend_unavailable(
    postgres_server: PostgresServer,
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{postgres_server.port + 1}/postgres"
    with pytest.raises(BaseException) as caught:  # wrapped by the task group
        async with StreamHub.from_url(url, outage_timeout=0.5):
            pass
    leaf: BaseException = caught.value
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, BackendUnavailable), repr(leaf)


async def test_expired_sessions_are_absent_then_swept(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    async with StreamHub.from_url(postgres_url, retention=1.0, lease_ttl=0.5) as h:
        for sid in ("old1", "old2"):
            p = await start(h, sid)
            await p.publish("x")
            await p.close()
        rows = postgres_server.execute("SELECT count(*) FROM streamhub_log")
        assert rows == [(4,)]
        # A row past its retention is absent to every read at once, swept or not (the hub's
        # sweeper runs every retention / 4 or so: here it may already have run).

        async def expired() -> bool:  # old2 closed last: past its retention, so is old1
            return await h.status("old2") is None

        await wait_until(expired, within=10, what="old2 past its retention")
        assert await h.status("old1") is None
        assert await h.backend.read("old2", (0, 0), 10) == ReadResult([], None, False)
        backend = h.backend
        assert isinstance(backend, PostgresBackend)
        await backend.sweep()
        for table in ("session", "log"):
            left = postgres_server.execute(f"SELECT count(*) FROM streamhub_{table}")
            assert left == [(0,)], table
        # Expired and unswept, or swept: a new claim starts afresh either way.
        p = await start(h, "old1")
        assert p.generation > 0


async def test_wait_replicas_is_refused_with_a_pointer(postgres_url: str) -> None:
    with pytest.raises(BaseException) as caught:  # wrapped by the task group
        async with StreamHub.from_url(postgres_url, wait_replicas=1):
            pass
    leaf: BaseException = caught.value
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, ValueError) and "synchronous_commit" in str(leaf)


# --------------------------------------------------------------------------- live delivery


async def test_chunks_over_the_notify_limit_and_with_nul_arrive_live(hub: StreamHub) -> None:
    big = "x" * 20_000
    nul = "a\x00b"
    p = await start(hub, "big")
    async with anyio.create_task_group() as tg:
        f = follow(tg, hub.subscribe("big"))
        await p.publish("first")
        await f.first_chunk()
        await p.publish(big)
        await p.publish(nul)
        await f.until(lambda items: len(chunks_of(items)) == 3)
        # Metadata over the limit: a wake record, then read from the store and delivered.
        # (Live only, as on Redis: a reader that catches up to the end through the log first
        # does not get it; hence the waits around it.)
        await p.set_metadata({"m": "y" * 9000})
        await f.until(lambda items: any(isinstance(i, Metadata) for i in items))
        await p.publish("last")
        await p.close()
        items = await f.result()
    assert texts(items) == ["first", big, nul, "last"]
    assert_contiguous(chunks_of(items), p.generation, 1, 4)
    # The metadata over the limit was read from the store and delivered too.
    assert [i.value for i in items if isinstance(i, Metadata)] == [{"m": "y" * 9000}]


async def test_a_killed_listener_connection_is_replaced_and_readers_repair(
    hub: StreamHub, postgres_server: PostgresServer
) -> None:
    p = await start(hub, "heal")
    n = 200
    async with anyio.create_task_group() as tg:
        f = follow(tg, hub.subscribe("heal"))
        for i in range(n):
            await p.publish(f"t{i}")
            if i == n // 2:
                postgres_server.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'streamhub-listen'"
                )
            await anyio.sleep(0.002)
        await p.close()
        items = await f.result(within=30)
    assert texts(items) == [f"t{i}" for i in range(n)]
    assert_contiguous(chunks_of(items), p.generation, 1, n)


@pytest.mark.timeout(60)
async def test_a_server_restart_mid_stream_completes_exactly() -> None:
    with PostgresServer() as server:
        async with (
            StreamHub.from_url(server.url, lease_ttl=10, outage_timeout=20) as hub_a,
            StreamHub.from_url(server.url, lease_ttl=10, outage_timeout=20) as hub_b,
        ):
            p = await start(hub_a, "restart")
            n = 300
            async with anyio.create_task_group() as tg:
                f = follow(tg, hub_b.subscribe("restart"))
                for i in range(n):
                    await p.publish(f"t{i}")
                    if i == n // 2:
                        await anyio.to_thread.run_sync(server.restart)
                await p.close()
                items = await f.result(within=40)
    assert items[-1] == End(State.DONE, None)
    assert texts(items) == [f"t{i}" for i in range(n)]
    assert_contiguous(chunks_of(items), p.generation, 1, n)


# --------------------------------------------------------------------------- ordering


async def claim_each(
    hub: StreamHub, *names: str
) -> tuple[PostgresBackend, dict[str, str], dict[str, int]]:
    """A new session per name, claimed on the hub's backend (not produced by the hub): the
    backend, and the ids and the generations by name."""
    backend = hub.backend
    assert isinstance(backend, PostgresBackend)
    sid = {name: new_sid(name) for name in names}
    gen = {}
    for name in names:
        claimed = await backend.claim(sid[name], token="t", restart=False, metadata=None)
        gen[name] = claimed.generation
    return backend, sid, gen


async def test_one_round_trip_gives_every_answer_of_an_append(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    # <p>_append stores the batches that continue their generation in one UPDATE and one
    # INSERT and settles the rest one by one: every answer in one call, each where it belongs.
    async with StreamHub.from_url(postgres_url, maxlen=2) as h:
        backend, sid, gen = await claim_each(
            h, "a", "b", "retry", "stale", "closed", "hole", "twice"
        )

        def batch(name: str, first: int, *texts: str, generation: int = 0) -> Append:
            payloads = [b"t" + t.encode() for t in texts]
            return Append(sid[name], generation or gen[name], first, payloads)

        assert await backend.append([batch("retry", 1, "r")]) == [None]
        assert await backend.close(sid["closed"], gen["closed"], State.DONE, None, last=0) == (
            State.DONE
        )
        answers = await backend.append(
            [
                batch("a", 1, "a1", "a2"),
                batch("retry", 1, "r"),  # a lost reply's retry: already stored
                batch("stale", 1, "s", generation=gen["stale"] - 1),
                batch("closed", 1, "c"),
                batch("hole", 3, "h3"),  # chunks 1-2 lost by the store: stored after the hole
                batch("b", 1, "b1"),
            ]
        )
        assert answers == [None, None, Lost("stale"), Lost("closed", State.DONE), None, None]
        # A session named twice: the whole round trip one by one, in order.
        answers = await backend.append(
            [batch("twice", 1, "t1"), batch("a", 3, "a3"), batch("twice", 2, "t2")]
        )
        assert answers == [None, None, None]
        # maxlen (2 chunks) trims whole rows of the batches stored together.
        assert await backend.append([batch("a", 4, "a4"), batch("b", 2, "b2")]) == [None, None]
        name_of = {s: name for name, s in sid.items()}
        rows = postgres_server.execute(
            "SELECT session_id, last_offset, kind FROM streamhub_log WHERE session_id = ANY(%s)",
            (list(name_of),),
        )
        assert {(name_of[str(s)], offset, kind) for s, offset, kind in rows} == {
            ("a", 3, "c"),  # the row of a1-a2 (offset 2) trimmed when a4 came
            ("a", 4, "c"),
            ("b", 1, "c"),
            ("b", 2, "c"),
            ("retry", 1, "c"),
            ("closed", 1, "e"),
            ("hole", 3, "c"),
            ("twice", 1, "c"),
            ("twice", 2, "c"),
        }
        counts = postgres_server.execute(
            "SELECT session_id, n FROM streamhub_session WHERE session_id = ANY(%s)",
            (list(name_of),),
        )
        assert {name_of[str(s)]: n for s, n in counts} == {
            "a": 4,
            "b": 2,
            "retry": 1,
            "stale": 0,
            "closed": 0,
            "hole": 3,
            "twice": 2,
        }


async def test_one_round_trip_gives_every_answer_of_a_renewal_and_of_a_lease_check(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    # <p>_renew extends the running leases in one UPDATE and <p>_expire reads them without a
    # lock; the others are settled one by one: every answer in one call, each where it belongs.
    async with StreamHub.from_url(postgres_url, lease_ttl=30) as h:
        backend, sid, gen = await claim_each(h, "a", "cancel", "stale", "closed", "lapsed", "b")
        assert await backend.close(sid["closed"], gen["closed"], State.DONE, None, last=0) == (
            State.DONE
        )
        assert await backend.cancel(sid["cancel"]) is not None
        name_of = {s: name for name, s in sid.items()}

        def leases(*which: str) -> list[tuple[str, int]]:
            return [(sid[name], gen[name] - (name == "stale")) for name in which]

        def lease_until() -> dict[str, Any]:
            rows = postgres_server.execute(
                "SELECT session_id, lease_until FROM streamhub_session WHERE session_id = ANY(%s)",
                (list(name_of),),
            )
            return {name_of[str(s)]: until for s, until in rows}

        def lapse(name: str) -> None:
            postgres_server.execute(
                "UPDATE streamhub_session SET lease_until = clock_timestamp() - interval '1 ms' "
                "WHERE session_id = %s",
                (sid[name],),
            )

        lapse("lapsed")
        before = lease_until()
        answers = await backend.renew(
            [*leases("a", "cancel", "stale", "closed", "lapsed", "b"), ("never-claimed", 1)]
        )
        assert answers == [
            False,
            True,  # renewed, and a cancel is pending
            Lost("stale"),
            Lost("closed", State.DONE),
            Lost("closed", State.FAILED, "lease_expired"),
            False,
            Lost("gone"),
        ]
        after = lease_until()
        assert all(after[name] > before[name] for name in ("a", "cancel", "b"))
        assert (after["closed"], after["lapsed"]) == (None, None)
        info = await h.status(sid["lapsed"])
        assert info is not None and info.state is State.FAILED

        lapse("b")
        left = await backend.expire(
            [*leases("a", "b", "stale", "closed", "lapsed", "cancel"), ("never-claimed", 1)]
        )
        # a and cancel still run (their time left); b lapsed (failed by this check), the rest over.
        assert [x is None for x in left] == [False, True, True, True, True, False, True]
        assert all(x is not None and 20 < x <= 30 for x in (left[0], left[5]))
        info = await h.status(sid["b"])
        assert info is not None and info.state is State.FAILED  # the check failed it


@pytest.mark.timeout(60)
async def test_concurrent_fan_in_writers_and_readers_see_one_gap_free_order(
    postgres_url: str,
) -> None:
    """Four hubs, a sub-producer on each, writing one session at once; every reader (live on
    each hub, and a replay afterwards) sees offsets 1..N, gap-free, in one identical order."""
    hubs = [StreamHub.from_url(postgres_url, lease_ttl=10) for _ in range(4)]
    per_part = 150
    async with AsyncExitStack() as stack:
        for h in hubs:
            await stack.enter_async_context(h)
        owner = await start(hubs[0], "fan")
        async with anyio.create_task_group() as tg:
            readers = [follow(tg, h.subscribe("fan")) for h in hubs]

            async def part(index: int) -> None:
                handle = await owner.admit(f"w{index}")
                async with await hubs[index].join(handle) as sub:
                    for i in range(per_part):
                        await sub.publish(f"w{index}-{i}")

            async with anyio.create_task_group() as writers:
                for index in range(4):
                    writers.start_soon(part, index)
            await owner.close()
            results = [await r.result(within=40) for r in readers]
        replay = await collect(hubs[1].subscribe("fan"))
    total = 4 * per_part
    orders: list[list[Any]] = []
    for items in [*results, replay]:
        chunks = [i for i in items if isinstance(i, Chunk)]
        assert_contiguous(chunks, owner.generation, 1, total)
        orders.append([c.data for c in chunks])
    assert all(order == orders[0] for order in orders)
    for index in range(4):  # each writer's own chunks in its order
        mine = [d for d in orders[0] if d.startswith(f"w{index}-")]
        assert mine == [f"w{index}-{i}" for i in range(per_part)]


class _OverlapProbe(PostgresBackend):
    """Counts the writer's appends in flight; the first ``write_slots`` of them wait until
    that many are in flight at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flying = 0
        self.most = 0
        self.calls = 0
        self.overlapped = anyio.Event()

    async def append(self, batches: Any) -> list[Lost | None]:
        self.calls += 1
        self.flying += 1
        self.most = max(self.most, self.flying)
        if self.flying >= self.write_slots:
            self.overlapped.set()
        try:
            if self.calls <= self.write_slots:
                with anyio.fail_after(10):
                    await self.overlapped.wait()
            return await super().append(batches)
        finally:
            self.flying -= 1


@pytest.mark.timeout(60)
async def test_the_writers_round_trips_overlap_and_each_stream_stays_exact(
    postgres_url: str,
) -> None:
    """The writer runs ``write_slots`` (3) appends at once on PostgreSQL (the first ones are
    held until that many have started), never more; every stream, live and replayed, is still
    1..N once each, in its producer's order."""
    backend = _OverlapProbe(conninfo=postgres_url)
    streams, per_stream = 12, 120
    async with StreamHub(backend, lease_ttl=10) as h:
        producers = [await start(h, f"two{k}") for k in range(streams)]
        async with anyio.create_task_group() as tg:
            readers = [follow(tg, h.subscribe(f"two{k}")) for k in range(streams)]

            async def produce(k: int) -> None:
                for i in range(per_stream):
                    await producers[k].publish(f"{k}-{i}")
                await producers[k].close()

            async with anyio.create_task_group() as writers:
                for k in range(streams):
                    writers.start_soon(produce, k)
            results = [await r.result(within=40) for r in readers]
        replays = [await collect(h.subscribe(f"two{k}")) for k in range(streams)]
    assert backend.write_slots == 3
    assert backend.overlapped.is_set() and backend.most == 3, backend.most
    for k in range(streams):
        for items in (results[k], replays[k]):
            chunks = chunks_of(items)
            assert_contiguous(chunks, producers[k].generation, 1, per_stream)
            assert [c.data for c in chunks] == [f"{k}-{i}" for i in range(per_stream)]
            assert items[-1] == End(State.DONE, None)


async def test_a_transition_waiting_on_a_reclaim_sees_the_new_generation(
    hub: StreamHub, postgres_server: PostgresServer
) -> None:
    """A reclaim and a cancel queued on the same locked session row: the cancel, served after
    the reclaim committed, finds the new generation (the row is rewritten in place), never
    "not found"."""
    old = await start(hub, "queued")
    hub._forget(old)  # its hub stops renewing: the lease can lapse
    postgres_server.execute(
        "UPDATE streamhub_session SET lease_until = clock_timestamp() - interval '1 ms'"
    )

    def waiting(n: int) -> bool:
        rows = postgres_server.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        )
        return rows == [(n,)]

    with psycopg.connect(postgres_server.url) as holder:  # a transaction holding the row
        holder.execute("SELECT 1 FROM streamhub_session WHERE session_id = 'queued' FOR UPDATE")
        async with anyio.create_task_group() as tg:
            claimed: list[Any] = []
            cancelled: list[Any] = []

            async def claim() -> None:
                claimed.append(await hub.register("queued"))

            async def cancel() -> None:
                cancelled.append(await hub.backend.cancel("queued"))

            tg.start_soon(claim)
            await wait_until(lambda: waiting(1), within=10, what="the claim to wait on the row")
            tg.start_soon(cancel)
            await wait_until(lambda: waiting(2), within=10, what="the cancel to queue behind")
            holder.commit()
    new = claimed[0].producer
    assert new is not None and new.generation > old.generation
    info = cancelled[0]
    assert info is not None and info.generation == new.generation and info.cancel_requested
    await new.close()


async def test_a_renewal_that_finds_its_lease_lapsed_keeps_the_output(
    hub: StreamHub, postgres_server: PostgresServer
) -> None:
    """The renewal fails the generation (lease_expired) and the session stays stored for
    ``retention`` like any finished one (a retention of zero deleted it on the next touch)."""
    p = await start(hub, "lapsed")
    await p.publish("kept")
    await p.flush()
    postgres_server.execute(
        "UPDATE streamhub_session SET lease_until = clock_timestamp() - interval '1 ms'"
    )
    lost = await hub.backend.renew([("lapsed", p.generation)])
    assert lost == [Lost("closed", State.FAILED, "lease_expired")]
    info = await hub.status("lapsed")
    assert info is not None and info.state is State.FAILED
    assert texts(await collect(hub.subscribe("lapsed"))) == ["kept"]
    assert (await hub.backend.cancel("lapsed")) is not None


# --------------------------------------------------------------------------- CLI


async def test_cli_on_a_postgres_url(hub: StreamHub, postgres_url: str) -> None:
    sid = new_sid("cli")
    producer = await producing(hub, sid, "hello ", "world", metadata={"model": "m"})
    status = await cli("status", sid, redis=postgres_url)
    assert status.returncode == 0, status.stderr
    record = orjson.loads(status.stdout)
    assert (record["state"], record["chunks"], record["metadata"]) == ("active", 2, {"model": "m"})

    shown = await cli("top", "--once", "--interval", "0.2", redis=postgres_url)
    assert shown.returncode == 0, shown.stderr
    assert set(table(shown.stdout)[1]) == {sid}

    argv = [*CLI, "--redis", postgres_url, "tail", sid]
    with anyio.fail_after(30):
        async with await anyio.open_process(argv, env=_env()) as process:
            assert process.stdout is not None
            seen = b""
            while b"world" not in seen:
                seen += await process.stdout.receive()
            await producer.publish("!")
            await producer.close()
            async for data in process.stdout:
                seen += data
            assert await process.wait() == 0
    assert seen.decode() == "hello world!"

    other = await producing(hub, new_sid("cli"), "x")
    cancelled = await cli("cancel", other.session_id, redis=postgres_url)
    assert (cancelled.returncode, cancelled.stdout) == (0, "active\n")
    with anyio.fail_after(10):
        await other.cancelled.wait()
    await other.close()
    deleted = await cli("delete", sid, redis=postgres_url)
    assert (deleted.returncode, deleted.stdout) == (0, "deleted\n")
    assert_one_line_error(await cli("status", sid, redis=postgres_url), 3, "not found")


async def test_cli_on_an_unreachable_postgres_is_one_line_and_exit_4(
    postgres_server: PostgresServer,
) -> None:
    url = f"postgresql://postgres:secret@127.0.0.1:{postgres_server.port + 1}/postgres"
    done = await cli("--timeout", "0.5", "status", "s1", redis=url)
    assert_one_line_error(done, 4, "PostgreSQL")
    assert "secret" not in done.stderr


def test_the_schema_command_needs_no_server() -> None:
    done = subprocess.run([*CLI, "postgres-schema"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "CREATE FUNCTION streamhub_claim" in done.stdout
    assert sys.executable  # the same interpreter as the tests


# --------------------------------------------------------------------------- HTTP, two instances


@pytest.mark.timeout(90)
async def test_two_app_instances_resume_exactly_and_cancel_across(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    """``tests/http_app.py`` twice under uvicorn on one PostgreSQL: a stream read on A resumes
    on B exactly (no gap, no duplicate, the generator ran once), a cancel on B stops the
    generator running on A, and test_http_fanin's two sub-producers on two instances
    interleave into one order. (The generators record their runs in Redis.)"""
    settings = {"REDIS_URL": postgres_url, "REC_URL": redis_url, "LEASE_TTL": "5", "AUTH": "0"}
    a, b = AppServer("A", settings, tmp_path), AppServer("B", settings, tmp_path)
    try:
        await anyio.to_thread.run_sync(start_servers, [a, b])
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=15, trust_env=False) as ca,
            httpx.AsyncClient(base_url=b.url, timeout=15, trust_env=False) as cb,
        ):
            sid = new_sid("pghttp")
            n = 40
            before = await read_sse(
                ca, f"/gen/{sid}", params={"n": n, "delay": 0.03}, stop_after_chunks=10
            )
            assert before.status_code == 200 and not before.eof
            after = await read_sse(
                cb, f"/streams/{sid}", headers={"Last-Event-ID": before.last_id or ""}
            )
            assert_complete(after, "done")
            assert before.values + after.values == expected(n)
            ids = before.ids + after.ids
            assert len(set(ids)) == n

            long = new_sid("pghttp")
            async with anyio.create_task_group() as tg:
                on_a = await start_reader(
                    tg, ca, f"/gen/{long}", params={"n": 1500, "delay": 0.02}, min_chunks=5
                )
                resp = await cb.post(f"/streams/{long}/cancel", params={"wait": 5})
                assert resp.json() == {"state": "cancelled"}, resp.text
            assert_complete(on_a, "cancelled")
            status = (await ca.get(f"/streams/{long}/status")).json()
            assert on_a.values == expected(status["chunks"])

            await two_sub_producers_interleave(ca, cb)
        for server in (a, b):
            check_log(server.name, server.log())
    finally:
        a.stop()
        b.stop()
