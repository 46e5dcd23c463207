"""Byte bounds: writer round trips, live messages, replay pages, queues, stalled readers.

Each Redis test starts its own redis-server with a lowered limit (``proto-max-bulk-len``,
``client-output-buffer-limit pubsub``) so that a few megabytes show what the defaults would
show with gigabytes; one runs the hub at its default settings. The stalled reader is a real
socket with a tiny receive buffer that never reads, against a real uvicorn.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from support.redis_server import RedisServer
from support.sse_client import SSEResult, read_sse, wait_until

from fastapi_streamhub import (
    BackendUnavailable,
    Chunk,
    End,
    Producer,
    StreamHub,
    streamhub_router,
)
from fastapi_streamhub._codec import ChunksMsg, ResyncMsg
from fastapi_streamhub._fanout import QueueListener
from fastapi_streamhub._types import Cursor

pytestmark = pytest.mark.anyio

MakeRedis = Callable[..., RedisServer]
KiB = 1024
MiB = 1024 * 1024


@asynccontextmanager
async def _hub(url: str, **options: Any) -> AsyncIterator[StreamHub]:
    async with StreamHub.from_url(url, compact_finished=False, **options) as hub:
        yield hub


async def _produce(hub: StreamHub, sid: str, chunks: Sequence[str]) -> Producer:
    """Send every chunk as fast as the producer takes them, then close (raises on failure)."""
    reg = await hub.register(sid)
    assert reg.created and reg.producer is not None
    producer = reg.producer
    for chunk in chunks:
        await producer.send(chunk)
    await producer.flush()
    await producer.close()
    return producer


async def _stored(hub: StreamHub, sid: str) -> list[str]:
    out: list[str] = []
    with anyio.fail_after(30):
        async with hub.subscribe(sid) as sub:
            async for item in sub:
                if isinstance(item, Chunk):
                    out.append(item.data)
                elif isinstance(item, End):
                    break
    return out


def _blocks(tag: str, n: int, size: int) -> list[str]:
    return [f"{tag}{i:06d}" + "x" * (size - len(tag) - 6) for i in range(n)]


# --------------------------------------------------------------------------- writer round trips


async def test_concurrent_big_sessions_fit_a_lowered_bulk_limit_at_default_settings(
    make_redis: MakeRedis,
) -> None:
    """Three sessions of 12 x 1 MB at once (36 MB): every round trip stays under
    ``max_write_bytes`` (8 MiB), so a Redis that refuses any argument over 16 MB stores them
    all, exactly. (Packed into one round trip, as before, Redis dropped the connection on it
    and every session lost its chunks.)"""
    server = make_redis(proto_max_bulk_len="16mb")
    async with _hub(server.url, outage_timeout=5) as hub:
        data = {f"big-{i}": _blocks(f"s{i}-", 12, 1_000_000) for i in range(3)}
        async with anyio.create_task_group() as tg:
            for sid, chunks in data.items():
                tg.start_soon(_produce, hub, sid, chunks)
        for sid, chunks in data.items():
            assert await _stored(hub, sid) == chunks


async def test_sessions_sharing_a_round_trip_survive_another_sessions_refused_write(
    make_redis: MakeRedis,
) -> None:
    """Redis (limit 1 MB per argument) drops the connection on a round trip that carries one
    session's 1.5 MB chunk beside two sessions' small ones: the round trip is tried again
    batch by batch, the two sessions are stored exactly, and only the oversized session
    fails, at once (not after ``outage_timeout``) and saying why."""
    server = make_redis(proto_max_bulk_len="1mb")
    async with _hub(
        server.url, max_write_bytes=4 * MiB, max_chunk_bytes=2 * MiB, outage_timeout=20
    ) as hub:
        small = {sid: _blocks(sid, 3, 100_000) for sid in ("ok-a", "ok-b")}
        producers = {}
        for sid in (*small, "huge"):
            reg = await hub.register(sid)
            assert reg.producer is not None
            producers[sid] = reg.producer
        started = time.monotonic()
        # No await in between: the writer finds all three ready and packs them together.
        for sid, chunks in small.items():
            for chunk in chunks:
                await producers[sid].send(chunk)
        await producers["huge"].send("h" * 1_500_000)
        with pytest.raises(BackendUnavailable, match="refused a write of 1 chunks"):
            await producers["huge"].flush()
        assert time.monotonic() - started < 10
        for sid, chunks in small.items():
            await producers[sid].flush()
            await producers[sid].close()
            assert await _stored(hub, sid) == chunks


async def test_a_batch_redis_refuses_is_written_again_in_smaller_entries(
    make_redis: MakeRedis,
) -> None:
    """The review's cheap reproduction: Redis limited to 1 MB per argument, default settings,
    a fast producer of 20 x 300 kB. Its batches (up to 4 MiB) are refused; each is written
    again in halves until the entries fit, so every chunk is stored, in order, in seconds
    (before: retried for ``outage_timeout``, then every chunk lost)."""
    server = make_redis(proto_max_bulk_len="1mb")
    async with _hub(server.url, outage_timeout=20) as hub:
        chunks = _blocks("h", 20, 300_000)
        started = time.monotonic()
        await _produce(hub, "halves", chunks)
        assert time.monotonic() - started < 10
        assert await _stored(hub, "halves") == chunks


# --------------------------------------------------------------------------- live messages


def _pubsub_ids(server: RedisServer) -> set[str]:
    listing = server.execute("CLIENT", "LIST", "TYPE", "pubsub")
    text = listing.decode() if isinstance(listing, bytes) else str(listing)
    return {part[3:] for part in text.split() if part.startswith("id=")}


async def test_a_big_live_batch_does_not_disconnect_another_hubs_pubsub(
    make_redis: MakeRedis,
) -> None:
    """Redis closes a pub/sub connection whose output buffer passes 256 kB. A producer on hub
    A writes 3 MB in big batches while hub B follows both that stream and an unrelated chat:
    no live message passes ``max_publish_bytes`` (the big batches go out as "read it from the
    log" notices), so B's pub/sub connection stays up, the chat's tokens keep flowing and
    both streams arrive exactly."""
    server = make_redis(client_output_buffer_limit="pubsub 256kb 128kb 60")
    options = {"max_publish_bytes": 64 * KiB, "outage_timeout": 5}
    async with _hub(server.url, **options) as hub_a, _hub(server.url, **options) as hub_b:
        big = _blocks("b", 30, 100_000)
        chat = [f" token{i}" for i in range(60)]
        reg = await hub_a.register("chat")
        assert reg.producer is not None
        chat_producer = reg.producer
        reg = await hub_a.register("big")  # exists before B follows it
        assert reg.producer is not None
        big_producer = reg.producer
        got: dict[str, list[str]] = {"big": [], "chat": []}
        arrivals: list[float] = []
        subs = {sid: hub_b.subscribe(sid) for sid in got}

        async def follow(sid: str) -> None:
            async with subs[sid] as sub:
                async for item in sub:
                    if isinstance(item, Chunk):
                        got[sid].append(item.data)
                        if sid == "chat":
                            arrivals.append(time.monotonic())
                    elif isinstance(item, End):
                        return

        async def chatter() -> None:
            for token in chat:
                await chat_producer.publish(token)
                await anyio.sleep(0.01)
            await chat_producer.close()

        with anyio.fail_after(40):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow, "chat")
                tg.start_soon(follow, "big")
                for sub in subs.values():
                    await sub.opened.wait()  # both follow live on B's bus connection now
                before = _pubsub_ids(server)
                tg.start_soon(chatter)
                for chunk in big:
                    await big_producer.send(chunk)
                await big_producer.close()
        assert got == {"big": big, "chat": chat}
        assert _pubsub_ids(server) >= before, "a pub/sub connection was dropped"
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert max(gaps) < 2.0, max(gaps)


# --------------------------------------------------------------------------- replay pages


def _url(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "memory":
        return "memory://"
    url: str = request.getfixturevalue(f"{backend}_url")
    return url


async def _pages(hub: StreamHub, sid: str, generation: int) -> list[int]:
    """The text bytes of each page of a full read of ``sid``, page by page."""
    after = (generation, 0)
    sizes: list[int] = []
    while True:
        page = await hub.backend.read(sid, after, 1000)
        if page.chunks:
            sizes.append(sum(len(c.data) for c in page.chunks))
            after = (generation, page.chunks[-1].cursor.offset)
        if not page.more:
            return sizes


@pytest.mark.parametrize("backend", ["memory", "redis", "postgres"])
async def test_a_replay_page_holds_about_replay_batch_bytes(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """A finished log of 40 x 10 kB, with pages of 32 kB: each read brings back 32 kB at most
    (one entry above it goes alone), and the replay is exact."""
    async with _hub(_url(backend, request), replay_batch_bytes=32 * KiB, max_batch=1) as hub:
        chunks = _blocks("r", 40, 10_000)
        producer = await _produce(hub, "paged", chunks)
        sizes = await _pages(hub, "paged", producer.generation)
        assert sum(sizes) == 400_000
        assert max(sizes) <= 32 * KiB
        assert len(sizes) >= 400_000 // (32 * KiB)
        assert await _stored(hub, "paged") == chunks


@pytest.mark.parametrize("backend", ["memory", "redis", "postgres"])
async def test_an_entry_above_replay_batch_bytes_goes_alone(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Entries of 50 kB among 10 kB ones, with pages of 32 kB: a big entry is a page of its own
    (whether it comes first or after small ones), small ones share pages, nothing is lost."""
    async with _hub(_url(backend, request), replay_batch_bytes=32 * KiB, max_batch=1) as hub:
        chunks = [*_blocks("a", 2, 50_000), *_blocks("b", 2, 10_000), *_blocks("c", 1, 50_000)]
        chunks += _blocks("d", 4, 10_000)
        producer = await _produce(hub, "big", chunks)
        sizes = await _pages(hub, "big", producer.generation)
        assert sizes == [50_000, 50_000, 20_000, 50_000, 30_000, 10_000]
        assert await _stored(hub, "big") == chunks


@pytest.mark.parametrize("backend", ["memory", "redis", "postgres"])
async def test_big_entries_among_tokens_share_pages_within_replay_batch_bytes(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Token entries with 1 kB and 20 kB ones among them, pages of 32 kB: tokens and the big
    entries that fit share a page, the next big one starts the next page, and the replay is
    exact. (On PostgreSQL a page whose rows are above their share of the budget, here after
    five token rows, reads those rows' bodies in a second statement.)"""
    async with _hub(_url(backend, request), replay_batch_bytes=32 * KiB, max_batch=1) as hub:
        chunks = [*_blocks("a", 5, 8), *_blocks("b", 1, 1_000), *_blocks("c", 5, 8)]
        chunks += [*_blocks("d", 1, 20_000), *_blocks("e", 3, 8), *_blocks("f", 2, 20_000)]
        chunks += _blocks("g", 2, 8)
        producer = await _produce(hub, "mixed", chunks)
        sizes = await _pages(hub, "mixed", producer.generation)
        assert sizes == [21_104, 20_000, 20_016]
        assert await _stored(hub, "mixed") == chunks


# --------------------------------------------------------------------------- queues


def test_a_subscribers_live_queue_is_bounded_in_bytes() -> None:
    """A reader that does not take its live messages holds at most ``capacity_bytes`` of them;
    past that its queue is replaced by one resync (it re-reads the store from its cursor)."""
    queue = QueueListener(1000, 250_000)

    def msg(offset: int) -> ChunksMsg:
        chunk = Chunk(Cursor(1, offset), "y" * 100_000)
        return ChunksMsg(1, (chunk,), 100_001)

    queue.push(msg(1))
    queue.push(msg(2))
    assert queue.held_bytes == 200_002
    queue.push(msg(3))  # would pass 250 kB
    assert queue.held_bytes == 0 and queue.overflows == 1
    assert isinstance(queue.get_nowait(), ResyncMsg)
    queue.push(msg(4))
    big = ChunksMsg(1, (Chunk(Cursor(1, 5), "z"),), 400_000)
    queue.push(big)  # over the bound on its own: taken only by an empty queue
    assert queue.overflows == 2
    queue.get_nowait()
    queue.push(big)
    assert queue.get_nowait() is big and queue.held_bytes == 0


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_producers_queue_is_bounded_in_bytes(backend: str, redis_url: str) -> None:
    """``send`` waits (backpressure) once ``max_pending_bytes`` are queued: 200 sends of
    10 kB in a row never queue more than 30 kB, and all are stored."""
    url = "memory://" if backend == "memory" else redis_url
    async with _hub(url, max_pending_bytes=30_000) as hub:
        reg = await hub.register("backpressure")
        assert reg.producer is not None
        producer = reg.producer
        peak = 0
        chunks = _blocks("p", 200, 10_000)
        for chunk in chunks:
            await producer.send(chunk)
            peak = max(peak, producer.pending_bytes)
        await producer.close()
        assert 0 < peak <= 30_000
        assert await _stored(hub, "backpressure") == chunks


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_write_bytes", 0),
        ("max_write_bytes", 513 * MiB),
        ("max_publish_bytes", -1),
        ("max_publish_bytes", 33 * MiB),
        ("max_pending_bytes", 1.5),
        ("replay_batch_bytes", None),
        ("subscriber_buffer_bytes", True),
        ("stalled_reader_timeout", 0),
        ("stalled_reader_timeout", float("inf")),
    ],
)
def test_byte_bound_settings_are_validated(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        StreamHub("memory://", **{name: value})


# --------------------------------------------------------------------------- stalled readers


def _stalled_reader(port: int, path: str) -> socket.socket:
    """A client with a 4 KiB receive buffer that sends its request and never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    return sock


@asynccontextmanager
async def _serve(app: FastAPI) -> AsyncIterator[int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", lifespan="on")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await wait_until(lambda: server.started, what="uvicorn started")
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield port
        finally:
            server.should_exit = True


@pytest.mark.timeout(90)
async def test_a_reader_that_stops_reading_is_disconnected_and_holds_bounded_memory(
    redis_url: str,
) -> None:
    """Over real HTTP (uvicorn), a client that never reads a finished 20 MB stream: the server
    holds at most about ``subscriber_buffer_bytes`` + one replay page for it while it is
    stuck, and ends its response after ``stalled_reader_timeout`` (the subscription is
    released; the client may resume with its cursor)."""
    hub = StreamHub.from_url(
        redis_url,
        stalled_reader_timeout=2,
        subscriber_buffer_bytes=256 * KiB,
        replay_batch_bytes=256 * KiB,
        compact_finished=False,
    )
    app = FastAPI(lifespan=hub.lifespan)
    app.include_router(streamhub_router)
    async with _serve(app) as port:
        await _produce(hub, "stalled", _blocks("s", 200, 100_000))
        sock = _stalled_reader(port, "/streams/stalled")
        try:
            await wait_until(lambda: "stalled" in hub._subscribers, what="the reader")
            began = time.monotonic()
            peaks = [0]

            def released() -> bool:
                peaks.append(hub.buffered_bytes())
                return "stalled" not in hub._subscribers

            await wait_until(released, within=30, interval=0.01, what="the end of the response")
            held_for = time.monotonic() - began
            peak = max(peaks)
            assert 2 <= held_for < 8, held_for
            # The output buffer (256 KiB, one encoded page above it) and the live queue.
            assert hub.out_bytes.peak <= 256 * KiB + 300 * KiB, hub.out_bytes.peak
            assert peak <= 256 * KiB + 300 * KiB, peak
            assert hub.buffered_bytes() == 0
        finally:
            sock.close()


async def test_an_idle_reader_that_reads_is_never_taken_for_a_stalled_one(redis_url: str) -> None:
    """The stall watchdog looks at blocked writes, not at silence: a client following a live
    stream that pauses for twice ``stalled_reader_timeout`` (pings included, every 0.3 s)
    gets every chunk and the end in one response."""
    hub = StreamHub.from_url(
        redis_url, stalled_reader_timeout=1, ping_interval=0.3, compact_finished=False
    )
    app = FastAPI(lifespan=hub.lifespan)
    app.include_router(streamhub_router)
    async with _serve(app) as port:
        reg = await hub.register("pausing")
        assert reg.producer is not None
        producer = reg.producer
        await producer.publish("before")

        res = SSEResult()

        async def pause_then_finish() -> None:
            # Silent for over twice the timeout, counted by the pings the client received.
            await wait_until(lambda: len(res.comments) >= 7, within=15, what="pings while idle")
            await producer.publish("after")
            await producer.close()

        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(pause_then_finish)
            await read_sse(client, "/streams/pausing", result=res, within=20)
        assert res.eof and res.text == "beforeafter"
        assert [e["state"] for e in res.ends] == ["done"]
        assert len(res.comments) >= 3  # the pings went out meanwhile


# --------------------------------------------------------------------------- lease renewals


@pytest.mark.timeout(120)
async def test_lease_renewals_stay_quick_while_big_appends_run(redis_url: str) -> None:
    """Three producers write 1 MB chunks as fast as Redis takes them (96 MB in all) while the
    lease keeper's renewal call is timed: renewals do not queue behind the appends (every
    round trip is at most ``max_write_bytes``, and renewals skip the queue of other calls),
    so each one takes a fraction of a 5 s lease's renewal period."""
    async with _hub(redis_url, lease_ttl=5) as hub:
        latencies: list[float] = []
        done = anyio.Event()

        async def renewals(leases: list[tuple[str, int]]) -> None:
            while not done.is_set():
                started = time.monotonic()
                await hub.backend.renew(leases)
                latencies.append(time.monotonic() - started)
                await anyio.sleep(0.05)

        producers = []
        for i in range(3):
            reg = await hub.register(f"load-{i}")
            assert reg.producer is not None
            producers.append(reg.producer)
        leases = [(p.session_id, p.generation) for p in producers]
        with anyio.fail_after(100):
            async with anyio.create_task_group() as tg:
                tg.start_soon(renewals, leases)
                async with anyio.create_task_group() as writers:
                    for p in producers:
                        writers.start_soon(_send_all, p, _blocks(p.session_id, 32, 1_000_000))
                done.set()
        for p in producers:
            assert await p.close() is not None
        worst = max(latencies)
        print(f"renewal latency under load: max {worst * 1000:.0f} ms over {len(latencies)}")
        assert worst < 5 / 3 / 2, worst


async def _send_all(producer: Producer, chunks: Sequence[str]) -> None:
    for chunk in chunks:
        await producer.send(chunk)
    await producer.flush()
