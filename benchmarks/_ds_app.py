"""The app ``benchmarks/durable_streams.py`` serves with uvicorn (``benchmarks._ds_app:app``):
``create_durable_streams_router`` at ``/v1/stream`` on the hub of ``REDIS_URL`` (``memory://``
or a Redis URL), long-poll timeout 5 s, and ``/healthz``."""

from __future__ import annotations

import os

from fastapi import FastAPI

from fastapi_streamhub import StreamHub, create_durable_streams_router

hub = StreamHub.from_url(os.environ.get("REDIS_URL", "memory://"))
app = FastAPI(lifespan=hub.lifespan)
app.include_router(create_durable_streams_router(long_poll_timeout=5.0))


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    """Ready."""
    return {"ok": True}
