"""The app the HTTP benchmarks serve with uvicorn in a subprocess (``benchmarks._app:app``).

``REDIS_URL`` selects the hub's Redis. Routes:

- ``/streams/...``: the library's router (resume with ``Last-Event-ID``);
- ``GET /gen/resumable/{sid}?n=&interval=&start=``: ``ResumableStreamingResponse`` of :func:`tokens`;
- ``GET /gen/plain?n=&interval=&start=&spread=``: plain ``StreamingResponse`` of the same generator;
- ``POST /gen/start?count=&n=&interval=&start=&spread=``: ``count`` new sessions produced here in
  the background (no response streams them; followers read them on another instance); answers
  their ids as JSON;
- ``GET /raw/{key}``: a hand-written resume baseline, ``StreamingResponse`` over plain
  ``XRANGE`` pages (100 first, then 1,000) of a stream the benchmark wrote with one entry per
  chunk (what a minimal implementation stores), framed as SSE (reference for the resume
  figures);
- ``GET /healthz``.

With ``interval > 0`` the generator paces its items and each is ``m<perf_counter_ns()>;`` taken
at the moment it is yielded (for latency); otherwise items are 8-byte tokens.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from redis.asyncio import Redis

from fastapi_streamhub import Producer, ResumableStreamingResponse, StreamHub, create_router

TOKEN = "tok12345"
FIRST_PAGE = 100
PAGE = 1000


async def tokens(
    n: int, interval: float = 0.0, start: float = 0.0, spread: float = 0.0
) -> AsyncIterator[str]:
    """``n`` tokens; with ``interval`` > 0 paced, each ``m<perf_counter_ns>;`` as it is yielded.

    ``start`` delays the first item (so that readers on other instances are connected), and
    ``spread`` by a random part of it more (so that many streams do not yield in step).
    """
    if interval <= 0:
        for _ in range(n):
            yield TOKEN
        return
    t0 = time.perf_counter() + start + random.random() * spread
    for i in range(n):
        delay = t0 + i * interval - time.perf_counter()
        if delay > 0:
            await anyio.sleep(delay)
        yield f"m{time.perf_counter_ns()};"


async def raw_replay(client: Redis, key: str, after: str) -> AsyncIterator[bytes]:
    """A minimal resume without the library: XRANGE pages, SSE framing, then ``end``.

    The first page is small (100) so the first event goes out early; then pages of 1,000.
    """
    yield b"retry: 1000\n\n"
    start = f"({after}"
    size = FIRST_PAGE
    while True:
        entries: Any = await client.xrange(key, start, "+", count=size)
        parts = []
        for entry_id, fields in entries:
            data = fields.get(b"d")
            if data is None:
                parts.append(b'event: end\ndata: {"state":"done","reason":null}\n\n')
                continue
            parts.append(b"data: " + data[1:] + b"\nid: " + entry_id + b"\n\n")
        if parts:
            yield b"".join(parts)
        if len(entries) < size:
            return
        start = "(" + entries[-1][0].decode()
        size = PAGE


def build() -> FastAPI:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    hub = StreamHub.from_url(url)
    raw_client = Redis.from_url(url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with hub.lifespan(app):
            yield
        await raw_client.aclose()

    app = FastAPI(lifespan=lifespan)
    app.include_router(create_router())

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/gen/resumable/{sid}")
    async def gen_resumable(
        sid: str, n: int, interval: float = 0.0, start: float = 0.0
    ) -> ResumableStreamingResponse:
        return ResumableStreamingResponse(sid, tokens(n, interval, start), hub=hub)

    @app.get("/gen/plain")
    async def gen_plain(
        n: int, interval: float = 0.0, start: float = 0.0, spread: float = 0.0
    ) -> StreamingResponse:
        return StreamingResponse(tokens(n, interval, start, spread), media_type="text/event-stream")

    async def produce(producer: Producer, items: AsyncIterator[str]) -> None:
        async with producer:
            async for item in items:
                await producer.send(item)

    @app.post("/gen/start")
    async def gen_start(
        count: int, n: int, interval: float = 0.0, start: float = 0.0, spread: float = 0.0
    ) -> list[str]:
        session_ids = [f"bg-{uuid.uuid4().hex[:12]}" for _ in range(count)]
        for session_id in session_ids:
            producer = (await hub.register(session_id)).producer
            assert producer is not None
            hub.spawn(produce, producer, tokens(n, interval, start, spread))
        return session_ids

    @app.get("/raw/{key}")
    async def raw(key: str, request: Request) -> StreamingResponse:
        # `key`: a stream written by the benchmark itself, one entry per chunk (field `d`).
        after = request.headers.get("last-event-id", "0-0")
        return StreamingResponse(raw_replay(raw_client, key, after), media_type="text/event-stream")

    return app


app = build()
