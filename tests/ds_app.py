"""The app the Durable Streams tests serve: ``uvicorn ds_app:app --app-dir tests``.

Our router at ``/streams`` and the Durable Streams router at ``/v1/stream`` (the path the
conformance suite hard-codes) on one hub. Configured by environment variables:
``REDIS_URL`` (the hub's backend, default ``memory://``), ``LONG_POLL_TIMEOUT`` (seconds,
default 1), ``AUTH=1`` (``authorize`` lets only requests with ``X-User: owner`` through),
``MAX_APPEND_BYTES``, ``MAX_LIVE_READERS``, ``DS_MAX_STREAMS`` (default the library's). The
sessions view is on.

``GET /gen/{sid}?n=&delay=`` returns ``ResumableStreamingResponse(sid, gen())``: ``n`` items
(``t0``, ``{"i": 1}``, an ``Event("t2", "note")``, ... by ``i % 3``), ``delay`` seconds apart,
for the sessions-view tests (:func:`item` is the item, for the tests to compare).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI, Request

from fastapi_streamhub import (
    Event,
    ResumableStreamingResponse,
    StreamHub,
    create_durable_streams_router,
    create_router,
)


def item(i: int) -> Any:
    """The ``i``-th item ``/gen`` yields: text, a JSON value, or a named event."""
    if i % 3 == 0:
        return f"t{i}"
    if i % 3 == 1:
        return {"i": i}
    return Event(f"t{i}", "note")


def _authorize(request: Request, stream_id: str, action: str) -> bool:
    return request.headers.get("x-user") == "owner"


def build() -> FastAPI:
    """The app, configured from the environment."""
    settings: dict[str, Any] = {}
    if "DS_MAX_STREAMS" in os.environ:
        settings["ds_max_streams"] = int(os.environ["DS_MAX_STREAMS"])
    hub = StreamHub.from_url(os.environ.get("REDIS_URL", "memory://"), **settings)
    app = FastAPI(lifespan=hub.lifespan, title="streamhub durable streams tests")
    authorize = _authorize if os.environ.get("AUTH") == "1" else None
    options: dict[str, Any] = {}
    if "MAX_APPEND_BYTES" in os.environ:
        options["max_append_bytes"] = int(os.environ["MAX_APPEND_BYTES"])
    if "MAX_LIVE_READERS" in os.environ:
        options["max_live_readers"] = int(os.environ["MAX_LIVE_READERS"])
    app.include_router(create_router(authorize=authorize))
    app.include_router(
        create_durable_streams_router(
            authorize=authorize,
            long_poll_timeout=float(os.environ.get("LONG_POLL_TIMEOUT", "1")),
            sessions_view=True,
            **options,
        )
    )

    @app.get("/gen/{sid}")
    async def generate(sid: str, n: int = 3, delay: float = 0.0) -> ResumableStreamingResponse:
        async def gen() -> AsyncIterator[Any]:
            for i in range(n):
                if delay:
                    await anyio.sleep(delay)
                yield item(i)

        return ResumableStreamingResponse(sid, gen())

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return build()
    raise AttributeError(name)
