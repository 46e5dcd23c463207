"""PostgreSQL faults beyond tests/test_faults.py, on servers the tests start: a LISTEN
connection gone half-open (silent, never closed), the failover to an asynchronous standby that
had not received the last acknowledged commits, and a burst of sessions ending together (their
background compactions take a bounded number of slots).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import anyio
import psycopg
import pytest
from support.conformance import (
    Item,
    assert_contiguous,
    chunks_of,
    collect,
    follow,
    start,
    texts,
)
from support.postgres_server import PostgresServer
from support.proxy import HOST as PROXY_HOST
from support.proxy import TCPProxy
from support.sse_client import wait_until

from fastapi_streamhub import Chunk, Cursor, End, Reset, State, StreamHub
from fastapi_streamhub.backends._compact import COMPACT_CONCURRENCY, COMPACT_DELAY
from fastapi_streamhub.backends.postgres import PostgresBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
def proxied(postgres_server: PostgresServer, postgres_url: str) -> Iterator[TCPProxy]:
    """A fault proxy in front of the shared server (its schema emptied by ``postgres_url``)."""
    proxy = TCPProxy(postgres_server.host, postgres_server.port).start()
    try:
        yield proxy
    finally:
        proxy.close()


# --------------------------------------------------------------------------- half-open LISTEN

HEARTBEAT = 0.3
HEARTBEAT_TIMEOUT = 0.5


@pytest.mark.timeout(60)
async def test_a_half_open_listen_connection_is_detected_and_followers_stay_exact(
    postgres_url: str, proxied: TCPProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The listener's connection goes through the proxy, which then blackholes it: no byte
    moves either way and neither peer is told (TCP keepalives are answered by the proxy's
    kernel, so only the heartbeat can notice). The heartbeat finds it, the listener reconnects,
    and a follower across that moment gets every chunk once, in order, and the end."""
    listen_url = f"postgresql://postgres@{PROXY_HOST}:{proxied.port}/postgres"
    backend = PostgresBackend(
        conninfo=postgres_url,
        listen_conninfo=listen_url,
        listen_heartbeat=HEARTBEAT,
        listen_timeout=HEARTBEAT_TIMEOUT,
    )
    async with StreamHub(backend, lease_ttl=5) as hub:
        listener = backend.listener
        assert listener is not None and proxied.connections() == 1  # the pool goes direct
        p = await start(hub, "halfopen")
        async with anyio.create_task_group() as tg:
            f = follow(tg, hub.subscribe("halfopen"))
            for i in range(10):
                await p.publish(f"t{i}")
            await f.until(lambda items: len(chunks_of(items)) == 10)
            with caplog.at_level(logging.WARNING, "fastapi_streamhub.postgres"):
                assert proxied.blackhole() == 1
                cut = time.monotonic()
                # Written while the listener is deaf: NOTIFYs that will never arrive.
                for i in range(10, 30):
                    await p.publish(f"t{i}")
                await p.flush()
                await wait_until(
                    lambda: listener.missed_heartbeats == 1, within=10, what="heartbeat miss"
                )
                detected = time.monotonic() - cut
                await wait_until(lambda: listener.reconnects == 1, within=10, what="reconnect")
            # The resync makes the follower read what it missed from the log.
            await f.until(lambda items: len(chunks_of(items)) == 30)
            for i in range(30, 40):
                await p.publish(f"t{i}")
            await p.close()
            items = await f.result(within=15)
    assert texts(items) == [f"t{i}" for i in range(40)]
    assert_contiguous(chunks_of(items), p.generation, 1, 40)
    assert items[-1] == End(State.DONE, None)
    # Found by the heartbeat (not by an error: none came), within heartbeat + its timeout.
    assert listener.missed_heartbeats == 1 and listener.reconnects == 1
    assert detected < HEARTBEAT + HEARTBEAT_TIMEOUT + 1.0, detected
    said = [r.getMessage() for r in caplog.records if "did not answer its heartbeat" in r.message]
    assert len(said) == 1, said
    # The new LISTEN connection went through the proxy again (so did psycopg's cancel request
    # for the unanswered heartbeat, a connection of its own).
    assert proxied.accepted >= 2
    print(f"\nhalf-open LISTEN connection detected after {detected:.2f}s")


def test_listen_heartbeat_and_timeout_must_be_positive() -> None:
    for bad in ({"listen_heartbeat": 0}, {"listen_timeout": -1.0}):
        with pytest.raises(ValueError, match="must be a positive number of seconds"):
            PostgresBackend(conninfo="postgresql://localhost/x", **bad)


# --------------------------------------------------------------------------- failover


def replayed_to(primary: PostgresServer, standby: PostgresServer) -> bool:
    """Whether the standby has applied everything the primary has written so far."""
    lsn = primary.execute("SELECT pg_current_wal_lsn()::text")[0][0]
    rows = standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))
    return bool(rows[0][0])


def with_resets(items: list[Item]) -> list[str]:
    """A subscription's items as text: chunks by their data, resets as ``reset``, the end."""
    out: list[str] = []
    for item in items:
        if isinstance(item, Chunk):
            out.append(str(item.data))
        elif isinstance(item, Reset):
            out.append("reset")
        elif isinstance(item, End):
            out.append(f"end {item.state.value}")
    return out


def reasons(items: list[Item]) -> list[str]:
    return [str(i.reason) for i in items if isinstance(i, Reset)]


def tokens(first: int, last: int) -> list[str]:
    return [f"t{i}" for i in range(first, last + 1)]


@pytest.mark.timeout(120)
async def test_failover_to_a_standby_that_missed_acknowledged_chunks_is_a_reset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An asynchronous standby, its replication connection through a fault proxy. Chunks 1-20
    reach it; the proxy then cuts it off, and chunks 21-50 are acknowledged by the primary
    alone. The primary is SIGKILLed and the standby promoted; the application, on a multi-host
    URL with ``target_session_attrs=read-write`` (what the README tells users to do), finds it
    by itself. Readers whose cursor lies beyond what the standby holds get a ``reset`` (never a
    silent gap, never a duplicate), a client that comes back sees the stored prefix only, and
    the producer goes on: 51-100 after a hole every replay names."""
    sid = "failover"
    with PostgresServer() as primary:
        feed = TCPProxy(primary.host, primary.port).start()  # the standby's WAL comes this way
        standby = primary.standby(via_port=feed.port)
        try:
            standby.start()
            url = (
                f"postgresql://postgres@{primary.host}:{primary.port},"
                f"{standby.host}:{standby.port}/postgres?target_session_attrs=read-write"
            )
            # lease_ttl: the lease the standby holds (the last renewal it received) outlives
            # the test's outage.
            async with StreamHub.from_url(url, lease_ttl=60, outage_timeout=30) as hub:
                p = await start(hub, sid)
                gen = p.generation
                async with anyio.create_task_group() as tg:
                    live = follow(tg, hub.subscribe(sid))
                    for i in range(1, 21):
                        await p.publish(f"t{i}")
                    await p.flush()
                    await wait_until(
                        lambda: replayed_to(primary, standby), within=20, what="standby caught up"
                    )
                    feed.down()  # the standby hears nothing from now on
                    for i in range(21, 51):
                        await p.publish(f"t{i}")
                    await p.flush()  # acknowledged: committed on the primary
                    await live.until(lambda items: len(chunks_of(items)) == 50)
                    held = "SELECT n FROM streamhub_session WHERE session_id = %s"
                    assert standby.execute(held, (sid,)) == [(20,)]
                    primary.kill()
                    standby.promote()
                    # Readers arriving now, on the promoted standby: one whose cursor is beyond
                    # what it holds, one from 35, a client from the start.
                    ahead = follow(tg, hub.subscribe(sid, after=Cursor(gen, 50)))
                    middle = follow(tg, hub.subscribe(sid, after=Cursor(gen, 35)))
                    fresh = follow(tg, hub.subscribe(sid))
                    for f in (ahead, middle, fresh):
                        await f.until(lambda items: len(chunks_of(items)) >= 20, within=30)
                    # The follower that was live across the failover holds chunks the store
                    # no longer has: it is told too, when its listener resynchronises.
                    await live.until(lambda items: any(isinstance(i, Reset) for i in items), 30)
                    # The producer goes on, on the new primary.
                    with caplog.at_level(logging.WARNING, "fastapi_streamhub.postgres"):
                        for i in range(51, 101):
                            await p.publish(f"t{i}")
                        await p.close()
                    results = [await f.result(within=30) for f in (live, ahead, middle, fresh)]
                replay = await collect(hub.subscribe(sid), within=30)
        finally:
            standby.close()
            feed.close()
    # The stored stream: 1-20, a hole where 21-50 were, 51-100, done. Every reader that
    # replays it is told of the hole; a cursor beyond the stored 20 is a reset first.
    stored = [*tokens(1, 20), "reset", *tokens(51, 100), "end done"]
    assert with_resets(replay) == stored
    assert "chunks 21-50 are no longer stored" in reasons(replay)[0]
    live_items, ahead_items, middle_items, fresh_items = results
    assert with_resets(live_items) == [*tokens(1, 50), "reset", *stored]
    assert "holds 20 chunks, fewer than the 50 delivered" in reasons(live_items)[0]
    assert with_resets(ahead_items) == ["reset", *stored]
    assert "ahead of the stored stream (20 chunks)" in reasons(ahead_items)[0]
    assert with_resets(middle_items) == ["reset", *stored]
    assert with_resets(fresh_items) == stored
    # The producer was not failed (its lease held) and the operator was told.
    said = [r.getMessage() for r in caplog.records if "no longer stored" in r.message]
    assert len(said) == 1 and "chunks 21-50" in said[0], said
    for items in results:
        # Between resets, every chunk once and in order.
        segment: list[int] = []
        for item in items:
            if isinstance(item, Reset):
                segment = []
            elif isinstance(item, Chunk):
                assert not segment or item.cursor.offset > segment[-1], items
                segment.append(item.cursor.offset)


# --------------------------------------------------------------------------- compaction burst


@pytest.mark.timeout(60)
async def test_sessions_ending_together_compact_a_few_at_a_time(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    """Background compaction after a burst of sessions ending at once: never more than
    COMPACT_CONCURRENCY folds at a time. The test holds every session row, so each fold that
    starts waits inside PostgreSQL (on {p}_compact's row lock) where pg_stat_activity shows it;
    then it lets go and every log is folded."""
    n = 3 * COMPACT_CONCURRENCY
    sids = [f"burst{i}" for i in range(n)]
    async with StreamHub.from_url(postgres_url, lease_ttl=5) as hub:
        producers = [await start(hub, sid) for sid in sids]
        for p in producers:
            for i in range(5):
                await p.publish(f"t{i}")
            await p.flush()
        async with await psycopg.AsyncConnection.connect(postgres_url) as holder:
            async with anyio.create_task_group() as tg:
                for p in producers:
                    tg.start_soon(p.close)
            # Each close scheduled a fold COMPACT_DELAY x 0.5-1.5 from now: hold the rows first.
            async with holder.transaction():
                await holder.execute(
                    "SELECT 1 FROM streamhub_session WHERE session_id = ANY(%s) FOR UPDATE",
                    (sids,),
                )

                def waiting() -> int:
                    rows = postgres_server.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE '%%streamhub_compact(%%'"
                    )
                    return int(str(rows[0][0]))

                # Every fold has started by 1.5 x COMPACT_DELAY (its jitter): watch past that.
                peak = 0
                deadline = time.monotonic() + 1.5 * COMPACT_DELAY + 1.0
                while time.monotonic() < deadline:
                    peak = max(peak, await anyio.to_thread.run_sync(waiting))
                    await anyio.sleep(0.05)
                assert peak == COMPACT_CONCURRENCY, peak
        await wait_until(
            lambda: (
                postgres_server.execute(
                    "SELECT count(*) FROM streamhub_session WHERE compacted = generation"
                )[0][0]
                == n
            ),
            within=20,
            what="every log folded",
        )
