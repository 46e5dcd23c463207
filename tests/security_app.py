"""A test app for the limits, security and fuzz tests, run by uvicorn in a subprocess:
``uvicorn security_app:app --app-dir tests``.

Configured by environment variables:

- ``REDIS_URL``: the hub's backend (default ``memory://``);
- ``MAX_CHUNK_BYTES``, ``MAX_METADATA_BYTES``, ``MAX_SUBSCRIBERS``, ``MAX_MESSAGES``,
  ``MAX_MESSAGES_BYTES``: the hub's limits;
- ``OUTAGE_TIMEOUT``, ``REQUEST_TIMEOUT``: the hub's settings of those names;
- ``ALLOWED_ORIGINS``: comma-separated, ``create_router(allowed_origins=...)``;
- ``PING_INTERVAL``: seconds between ``: ping`` comments while idle;
- ``AUTH``: how the router and the generator routes authorize (every call is recorded, see
  ``GET /_authlog/{sid}``):

  - ``none`` (default): everything is allowed;
  - ``owner``: the README's "owner in the metadata" pattern: a session records its creator's
    ``X-User`` in its metadata; only that user may read, cancel or delete it, and anyone else
    gets the same 404 as for an unknown session;
  - ``prefix``: the README's "owner in the id" pattern: session ids are ``<user>:<name>`` and
    only ``<user>`` may touch them (no store read, no race).

Routes (each a ``ResumableStreamingResponse``):

- ``GET /hostile/{sid}``: yields :data:`HOSTILE_ITEMS` with :data:`HOSTILE_METADATA`;
- ``GET /hostile-fail/{sid}``: yields two chunks, then raises :class:`HostileError` with
  :data:`HOSTILE_REASON` as its message;
- ``GET /bad/{sid}?case=&good=``: yields ``good`` text chunks, then ``BAD_ITEMS[case]``;
- ``GET /slow/{sid}?n=&delay=``: ``n`` text chunks ``c<i> ``, ``delay`` seconds apart;
- ``GET /big-meta/{sid}?size=``: a stream whose metadata is about ``size`` bytes of JSON;
- ``GET /chat/{sid}``: a slow stream created with ``metadata={"owner": <X-User>}``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.sse import ServerSentEvent

from fastapi_streamhub import (
    Event,
    ResumableStreamingResponse,
    StreamHub,
    create_router,
    get_hub,
)

# Text that tries every way to break out of a data line or to forge a field: line breaks of
# every kind, field names, NUL, a BOM, Unicode separators SSE must not split on.
HOSTILE_TEXTS = [
    "plain",
    "\n",
    "\r",
    "\r\n",
    "\n\n",
    "\r\r",
    "\r\n\r\n",
    "a\nid: 9-9\n\nevent: end\ndata: {}\n\n",
    "a\rid: 9-9\r\revent: end\rdata: {}\r\r",
    "a\r\nid: 9-9\r\n\r\nevent: end\r\ndata: {}\r\n\r\n",
    "id: 1-1",
    "event: end",
    "data: forged",
    "retry: 1",
    ": comment",
    "\0",
    "a\0b\nid: 1-\0",
    "\ufeffbom",
    "\u2028line\u2029para\x85nel\x0bvt\x0cff",
    " leading space",
    "trailing\n",
    "\ud7ff\ue000\U0010ffff",
    "é🌍",
    "",
]
HOSTILE_ITEMS: list[Any] = [
    *HOSTILE_TEXTS,
    {"k\nid: 1-1\n\n": "v\r\nevent: end", "nul": "\0", "ls": "\u2028"},
    ["\n\nevent: end\n\n", "\r", None, 1.5, True],
    Event("\nid: 1-1\n\nevent: end\n", "note"),
    Event({"x": "\r\n\r\n"}, "tool:call.v2-x"),
    ServerSentEvent(data="data: x\n\nid: 5-5", event="fastapi_sse"),
    ServerSentEvent(raw_data="raw\r\nid: 1-1\r\n\r\n"),
]
HOSTILE_METADATA: dict[str, Any] = {
    "title": "a\n\nevent: end\ndata: {}\n\nid: 9-9",
    "cr": "\r\r\n",
    "nul": "\0",
    "ls": "\u2028\u2029",
    "bom": "\ufeff",
}
HOSTILE_REASON = "boom\r\n\r\nevent: end\ndata: {}\nid: 9-9\n\n\0\u2028"


class HostileError(RuntimeError):
    """Raised by ``/hostile-fail`` with a message that tries to break the ``end`` event."""


class Unsupported:
    """An object a generator cannot stream."""


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def bad_items(max_chunk_bytes: int) -> dict[str, Any]:
    """Items a generator may not yield, by name; each must end the stream ``failed``."""
    return {
        "object": Unsupported(),
        "set": {1, 2},
        "bytes-not-utf8": b"\xff\xfe",
        "lone-surrogate": "a\ud800b",
        "event-reserved-end": Event("x", "end"),
        "event-reserved-json": Event("x", "json"),
        "event-newline": Event("x", "a\nid: 1-1"),
        "event-empty": Event("x", ""),
        "event-long": Event("x", "a" * 65),
        "event-not-str": Event("x", cast(str, 5)),  # deliberately not a str
        "sse-with-id": ServerSentEvent(data="x", id="1-1"),
        "sse-with-retry": ServerSentEvent(data="x", retry=1),
        "int-over-64-bits": 2**64,
        "dict-int-key": {1: "x"},
        "too-deep": _deep(600),
        "json-unsupported-inside": {"k": Unsupported()},
        "too-big": "x" * (max_chunk_bytes + 1),
        "too-big-multibyte": "é" * (max_chunk_bytes // 2 + 1),
        "too-big-named": Event("x" * max_chunk_bytes, "note"),
    }


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return None if value in (None, "") else int(value)


def create_app() -> FastAPI:
    options: dict[str, Any] = {"lease_ttl": 5.0, "shutdown_grace": 1.0}
    for env, setting in (
        ("MAX_CHUNK_BYTES", "max_chunk_bytes"),
        ("MAX_METADATA_BYTES", "max_metadata_bytes"),
        ("MAX_SUBSCRIBERS", "max_subscribers"),
        ("MAX_MESSAGES", "max_messages"),
        ("MAX_MESSAGES_BYTES", "max_messages_bytes"),
    ):
        value = _int_env(env)
        if value is not None:
            options[setting] = value
    for env, setting in (
        ("OUTAGE_TIMEOUT", "outage_timeout"),
        ("REQUEST_TIMEOUT", "request_timeout"),
    ):
        if os.environ.get(env):
            options[setting] = float(os.environ[env])
    ping = os.environ.get("PING_INTERVAL")
    if ping:
        options["ping_interval"] = float(ping)
    hub = StreamHub.from_url(os.environ.get("REDIS_URL") or "memory://", **options)
    mode = os.environ.get("AUTH", "none")
    calls: dict[str, list[str]] = {}
    items = bad_items(hub.settings.max_chunk_bytes)

    async def authorize(request: Request, session_id: str, action: str) -> bool:
        calls.setdefault(session_id, []).append(f"{request.method} {action}")
        if mode == "none":
            return True
        user = request.headers.get("x-user")
        if not user:
            raise HTTPException(status_code=401, detail="log in first")
        if mode == "prefix":
            # Race-free and no store read: the id itself names its owner.
            owner, sep, _ = session_id.partition(":")
            if not sep or owner != user:
                raise HTTPException(status_code=404, detail=f"session {session_id!r} not found")
            return True
        # mode == "owner": the creator recorded in the metadata. An unknown session may be
        # created by anyone (the router's endpoints then answer 404 by themselves, but DELETE
        # would answer 204: refuse it like the others); a session of someone else looks
        # exactly like an unknown one.
        info = await get_hub(request).status(session_id)
        if info is None:
            if action == "delete":
                raise HTTPException(status_code=404, detail=f"session {session_id!r} not found")
            return True
        metadata = info.metadata if isinstance(info.metadata, dict) else {}
        if metadata.get("owner") != user:
            raise HTTPException(status_code=404, detail=f"session {session_id!r} not found")
        return True

    app = FastAPI(lifespan=hub.lifespan, title="streamhub security tests")
    origins = [o for o in os.environ.get("ALLOWED_ORIGINS", "").split(",") if o]
    app.include_router(create_router(authorize=authorize, allowed_origins=origins))

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/_authlog/{sid:path}")
    async def authlog(sid: str) -> list[str]:
        return calls.get(sid, [])

    async def hostile() -> AsyncIterator[Any]:
        for item in HOSTILE_ITEMS:
            yield item

    async def hostile_fail() -> AsyncIterator[Any]:
        yield "one "
        yield "two "
        raise HostileError(HOSTILE_REASON)

    async def bad(case: str, good: int) -> AsyncIterator[Any]:
        for i in range(good):
            yield f"g{i} "
        yield items[case]
        yield "never sent"

    async def slow(n: int, delay: float) -> AsyncIterator[Any]:
        for i in range(n):
            yield f"c{i} "
            if delay:
                await anyio.sleep(delay)

    def response(request: Request, sid: str, gen: AsyncIterator[Any], **kw: Any) -> Any:
        return ResumableStreamingResponse(sid, gen, authorize=authorize, **kw)

    @app.get("/hostile/{sid:path}")
    async def hostile_route(request: Request, sid: str) -> Any:
        return response(request, sid, hostile(), metadata=HOSTILE_METADATA)

    @app.get("/hostile-fail/{sid:path}")
    async def hostile_fail_route(request: Request, sid: str) -> Any:
        return response(request, sid, hostile_fail())

    @app.get("/bad/{sid:path}")
    async def bad_route(request: Request, sid: str, case: str, good: int = 2) -> Any:
        if case not in items:
            raise HTTPException(status_code=400, detail=f"unknown case {case!r}")
        return response(request, sid, bad(case, good))

    @app.get("/slow/{sid:path}")
    async def slow_route(request: Request, sid: str, n: int = 10, delay: float = 0.0) -> Any:
        return response(request, sid, slow(n, delay))

    @app.get("/big-meta/{sid:path}")
    async def big_meta_route(request: Request, sid: str, size: int) -> Any:
        return response(request, sid, slow(2, 0.0), metadata={"pad": "x" * size})

    @app.get("/chat/{sid:path}")
    async def chat_route(request: Request, sid: str, n: int = 200, delay: float = 0.02) -> Any:
        owner = request.headers.get("x-user")
        return response(request, sid, slow(n, delay), metadata={"owner": owner})

    return app


def __getattr__(name: str) -> Any:
    # uvicorn's "security_app:app" does getattr(module, "app"): build the app only then.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
