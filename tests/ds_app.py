"""The app the Durable Streams tests serve: ``uvicorn ds_app:app --app-dir tests``.

Our router at ``/streams`` and the Durable Streams router at ``/v1/stream`` (the path the
conformance suite hard-codes) on one hub. Configured by environment variables:
``REDIS_URL`` (the hub's backend, default ``memory://``), ``LONG_POLL_TIMEOUT`` (seconds,
default 1), ``AUTH=1`` (``authorize`` lets only requests with ``X-User: owner`` through),
``MAX_APPEND_BYTES`` (default the library's).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request

from fastapi_streamhub import StreamHub, create_durable_streams_router, create_router


def _authorize(request: Request, stream_id: str, action: str) -> bool:
    return request.headers.get("x-user") == "owner"


def build() -> FastAPI:
    """The app, configured from the environment."""
    hub = StreamHub.from_url(os.environ.get("REDIS_URL", "memory://"))
    app = FastAPI(lifespan=hub.lifespan, title="streamhub durable streams tests")
    authorize = _authorize if os.environ.get("AUTH") == "1" else None
    options: dict[str, Any] = {}
    if "MAX_APPEND_BYTES" in os.environ:
        options["max_append_bytes"] = int(os.environ["MAX_APPEND_BYTES"])
    app.include_router(create_router(authorize=authorize))
    app.include_router(
        create_durable_streams_router(
            authorize=authorize,
            long_poll_timeout=float(os.environ.get("LONG_POLL_TIMEOUT", "1")),
            **options,
        )
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return build()
    raise AttributeError(name)
