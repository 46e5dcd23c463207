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
from support.conformance import assert_contiguous, chunks_of, follow, start, texts
from support.postgres_server import PostgresServer
from support.proxy import TCPProxy
from support.sse_client import wait_until

from fastapi_streamhub import End, State, StreamHub
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
    listen_url = f"postgresql://postgres@{proxied_host(proxied)}:{proxied.port}/postgres"
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


def proxied_host(proxy: TCPProxy) -> str:
    return proxy.target[0]


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
