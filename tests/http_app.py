"""A test app for the HTTP tests, run by uvicorn in a subprocess: ``uvicorn http_app:app
--app-dir tests``.

Configured by environment variables:

- ``REDIS_URL``: the hub's backend (default ``memory://``);
- ``LEASE_TTL``: the hub's lease length in seconds (default 5.0);
- ``PING_INTERVAL``: seconds between ``: ping`` comments while idle (default: the library's);
- ``SHUTDOWN_GRACE``: the hub's shutdown grace in seconds (default 1.0);
- ``AUTH``: ``1`` builds the router with ``create_router(authorize=...)`` that only lets
  requests with the header ``X-User: owner`` through (and the generator route too);
- ``COMPACT``: ``0`` turns compaction of finished logs off (for tests that count commands);
- ``OUTAGE_TIMEOUT``, ``RENEW_INTERVAL``, ``SUBSCRIBER_BUFFER``: the hub's settings of those names
  (default: the library's);
- ``REC_URL``: where the generator records (default ``REDIS_URL`` when it is a Redis URL), so
  that fault tests can break the hub's Redis without breaking the record;
- ``INSTANCE``: a name for this instance; the generator then also records in
  ``httptest:rec:<sid>@<INSTANCE>``, so tests can tell apart generators of one session that
  ran on different instances.

``GET /gen/{sid}?n=&delay=&fail_at=&kind=&meta=&pad=&burst=&count=`` returns
``ResumableStreamingResponse(sid, gen(...))``: ``delay`` seconds of sleep after every ``burst``
items (default 1), text items padded with ``pad`` dots, ``count=false`` skips the per-item
``produced`` count (for load tests). The generator records, in Redis (hash
``httptest:rec:<sid>``) when the hub runs on Redis or in this process otherwise, how many
times it started (``runs``), how many items it
produced (``produced``), how many times its ``finally`` ran (``finally``) and how it exited
(``exit``: done, cancelled, failed, closed). ``GET /_rec/{sid}`` answers that record as JSON.

``GET /steer/{sid}?n=`` returns ``ResumableStreamingResponse(sid, lambda ctx: echo(ctx, n))``:
the generator yields ``"ready"``, then one JSON chunk ``{"id", "data"}`` per steering message
it receives (``POST /streams/{sid}/messages``), and ends after ``n`` of them.

Fan-in (several producers in one session): ``POST /fanin/{sid}/owner?names=a,b&n=&delay=``
claims ``sid`` here, admits the named producers and answers their grants (``{"grants": {name:
grant}}``) while the owner writes ``o0``, ``o1``, ... in the background;
``POST /fanin/join?grant=&n=&delay=`` joins with a grant (on any instance) and writes
``<name>0``, ``<name>1``, ... then ends its part (answers ``{"last": cursor}``);
``POST /fanin/{sid}/finish`` (on the owner's instance) waits for the owner's chunks and closes
the session (answers ``{"state": ...}``).

The expected output is a pure function (:func:`expected_items`) the tests import; importing this
module does not build the app (``app`` is created on first access, which uvicorn does).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Request

from fastapi_streamhub import (
    Event,
    Producer,
    ResumableStreamingResponse,
    StreamContext,
    StreamHub,
    create_router,
    streamhub_router,
)

RECORD_PREFIX = "httptest:rec:"


class GeneratorBoom(RuntimeError):
    """Raised by the test generator at ``fail_at``."""


def item(i: int, kind: str, pad: int = 0) -> Any:
    """The ``i``-th item the generator yields for ``kind`` (text padded with ``pad`` dots)."""
    if kind == "text":
        return f"t{i} " + "." * pad
    if kind == "named":
        # Plain text, and text sent under an event name.
        return f"t{i} " if i % 2 == 0 else Event(f"note {i}", "note")
    if kind in ("mixed", "rich"):
        m = i % 7
        if m == 0:
            return f"t{i} "
        if m == 1:
            return {"i": i, "s": "x\ny", "nested": [1, None, True]}
        if m == 2:
            return f"crlf{i}\r\nand\0nul\rcr "
        if m == 3:
            return Event({"tool": i}, "tool")
        if m == 4:
            return f"multi\nline {i}\n\n"
        if m == 5:
            # "mixed": a named event with text data; "rich": every named event holds JSON.
            return Event(f"note {i}" if kind == "mixed" else [i, "note"], "note")
        return f" ünï {i} \U0001f600 : data: x"
    raise ValueError(f"unknown kind {kind!r}")


def expected_items(n: int, kind: str = "text", pad: int = 0) -> list[Any]:
    """The items of a generator run to completion (``fail_at`` unset)."""
    return [item(i, kind, pad) for i in range(n)]


class Recorder:
    """Where the generator records what it did: Redis if available, else this process."""

    def __init__(self, url: str | None, instance: str = "") -> None:
        self._local: dict[str, dict[str, str]] = {}
        self._redis: Any = None
        self._instance = instance
        if url is not None:
            from redis.asyncio import BlockingConnectionPool, Redis

            # Blocking: with more than max_connections generators recording at once (load
            # tests), wait for a connection instead of failing the generator.
            pool = BlockingConnectionPool.from_url(
                url, decode_responses=True, max_connections=50, timeout=60
            )
            self._redis = Redis.from_pool(pool)  # owns the pool: closed by aclose()

    def _keys(self, sid: str) -> list[str]:
        key = RECORD_PREFIX + sid
        return [key, f"{key}@{self._instance}"] if self._instance else [key]

    async def incr(self, sid: str, field: str) -> None:
        # Shielded: a cancel delivered while the command is in flight must not leave the count
        # ahead of what the generator really did (or break the connection).
        with anyio.CancelScope(shield=True):
            for key in self._keys(sid):
                if self._redis is not None:
                    await self._redis.hincrby(key, field, 1)
                else:
                    rec = self._local.setdefault(key, {})
                    rec[field] = str(int(rec.get(field, "0")) + 1)

    async def set(self, sid: str, field: str, value: str) -> None:
        with anyio.CancelScope(shield=True):
            for key in self._keys(sid):
                if self._redis is not None:
                    await self._redis.hset(key, field, value)
                else:
                    self._local.setdefault(key, {})[field] = value

    async def get(self, sid: str) -> dict[str, str]:
        if self._redis is not None:
            return dict(await self._redis.hgetall(RECORD_PREFIX + sid))
        return dict(self._local.get(RECORD_PREFIX + sid, {}))

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


async def gen(
    rec: Recorder,
    sid: str,
    n: int,
    delay: float,
    fail_at: int | None,
    kind: str,
    *,
    pad: int = 0,
    burst: int = 1,
    count: bool = True,
) -> AsyncIterator[Any]:
    await rec.incr(sid, "runs")
    exit_kind = "unknown"
    try:
        for i in range(n):
            if fail_at is not None and i == fail_at:
                raise GeneratorBoom(f"boom at {i}")
            if count:
                await rec.incr(sid, "produced")
            yield item(i, kind, pad)
            if delay and (i + 1) % burst == 0:
                await anyio.sleep(delay)
        exit_kind = "done"
    except GeneratorExit:
        exit_kind = "closed"
        raise
    except anyio.get_cancelled_exc_class():
        exit_kind = "cancelled"
        raise
    except GeneratorBoom:
        exit_kind = "failed"
        raise
    finally:
        await rec.set(sid, "exit", exit_kind)
        await rec.incr(sid, "finally")


async def echo(ctx: StreamContext, n: int) -> AsyncIterator[Any]:
    """``"ready"``, then each steering message as it arrives, until ``n`` of them."""
    yield "ready"
    if n <= 0:
        return
    received = 0
    async for message in ctx.messages():
        yield {"id": message.id, "data": message.data}
        received += 1
        if received >= n:
            return


def _float_env(name: str, default: float | None) -> float | None:
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


def create_app() -> FastAPI:
    url = os.environ.get("REDIS_URL") or "memory://"
    ping = _float_env("PING_INTERVAL", None)
    options: dict[str, Any] = {
        "lease_ttl": _float_env("LEASE_TTL", 5.0),
        "shutdown_grace": _float_env("SHUTDOWN_GRACE", 1.0),
    }
    if ping is not None:
        options["ping_interval"] = ping
    for name in ("OUTAGE_TIMEOUT", "RENEW_INTERVAL"):
        value = _float_env(name, None)
        if value is not None:
            options[name.lower()] = value
    for name in ("SUBSCRIBER_BUFFER", "SUBSCRIBER_BUFFER_BYTES", "MAX_CHUNK_BYTES"):
        if os.environ.get(name):
            options[name.lower()] = int(os.environ[name])
    if os.environ.get("COMPACT") == "0":
        options["compact_finished"] = False
    hub = StreamHub.from_url(url, **options)
    rec_url = os.environ.get("REC_URL") or url
    rec = Recorder(
        rec_url if rec_url.startswith(("redis://", "rediss://", "unix://")) else None,
        os.environ.get("INSTANCE", ""),
    )
    auth = os.environ.get("AUTH") == "1"

    async def authorize(request: Request, session_id: str, action: str) -> bool:
        return request.headers.get("x-user") == "owner"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with hub.lifespan(app):
                yield
        finally:
            await rec.aclose()

    app = FastAPI(lifespan=lifespan, title="streamhub http tests")
    app.include_router(create_router(authorize=authorize) if auth else streamhub_router)

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/_rec/{sid:path}")
    async def record(sid: str) -> dict[str, str]:
        return await rec.get(sid)

    # ``:path`` so that ids the router cannot even route (``a/b``) reach the response's own
    # validation.
    @app.get("/gen/{sid:path}")
    async def generate(
        sid: str,
        n: int = 20,
        delay: float = 0.0,
        fail_at: int | None = None,
        kind: str = "text",
        meta: bool = False,
        restart: bool = False,
        pad: int = 0,
        burst: int = 1,
        count: bool = True,
    ) -> ResumableStreamingResponse:
        return ResumableStreamingResponse(
            sid,
            gen(rec, sid, n, delay, fail_at, kind, pad=pad, burst=max(1, burst), count=count),
            metadata={"model": "test", "n": n} if meta else None,
            ping_interval=ping,
            restart=restart,
            authorize=authorize if auth else None,
        )

    @app.get("/steer/{sid}")
    async def steer(sid: str, n: int = 10) -> ResumableStreamingResponse:
        return ResumableStreamingResponse(
            sid,
            lambda ctx: echo(ctx, n),
            ping_interval=ping,
            authorize=authorize if auth else None,
        )

    _fanin_routes(app, hub)
    return app


def _fanin_routes(app: FastAPI, hub: StreamHub) -> None:
    owners: dict[str, tuple[Producer, anyio.Event]] = {}

    async def write(producer: Producer, label: str, n: int, delay: float) -> None:
        for i in range(n):
            await producer.send(f"{label}{i}")
            await anyio.sleep(delay)
        await producer.flush()

    async def run_owner(owner: Producer, n: int, delay: float, written: anyio.Event) -> None:
        try:
            await write(owner, "o", n, delay)
        finally:
            written.set()

    @app.post("/fanin/{sid}/owner")
    async def fanin_owner(
        sid: str, names: str, n: int = 20, delay: float = 0.01
    ) -> dict[str, dict[str, str]]:
        registration = await hub.register(sid)
        owner = registration.producer
        if owner is None:
            raise HTTPException(409, f"session {sid!r} is not ours to start")
        grants = {name: str(await owner.admit(name)) for name in names.split(",")}
        written = anyio.Event()
        owners[sid] = (owner, written)
        hub.spawn(run_owner, owner, n, delay, written)
        return {"grants": grants}

    @app.post("/fanin/join")
    async def fanin_join(grant: str, n: int = 20, delay: float = 0.01) -> dict[str, str]:
        async with await hub.join(grant) as sub:
            await write(sub, sub.name or "", n, delay)
        return {"last": str(sub.cursor)}

    @app.post("/fanin/{sid}/finish")
    async def fanin_finish(sid: str) -> dict[str, str]:
        owner, written = owners.pop(sid)
        await written.wait()
        return {"state": (await owner.close()).value}


def __getattr__(name: str) -> Any:
    # uvicorn's "http_app:app" does getattr(module, "app"): build the app only then.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
