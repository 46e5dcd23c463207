"""The Durable Streams floor (``benchmarks._ds_floor_app:app``): the same requests the
benchmark sends (create, append, read a page, long-poll at the tail) answered by hand in a
plain FastAPI app, in memory, with no validation, limits, bounds or protocol headers beyond
the offsets: what a FastAPI app on this uvicorn costs per request before any protocol work.
Offsets are byte positions written in decimal (``-1`` is the start)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request, Response

app = FastAPI()
_data: dict[str, bytearray] = {}
_changed: dict[str, asyncio.Event] = {}


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    """Ready."""
    return {"ok": True}


@app.put("/v1/stream/{name}")
async def create(name: str) -> Response:
    _data[name] = bytearray()
    _changed[name] = asyncio.Event()
    return Response(status_code=201, headers={"Stream-Next-Offset": "0"})


@app.post("/v1/stream/{name}")
async def append(name: str, request: Request) -> Response:
    data = _data[name]
    data += await request.body()
    _changed.pop(name).set()
    _changed[name] = asyncio.Event()
    return Response(status_code=204, headers={"Stream-Next-Offset": str(len(data))})


@app.get("/v1/stream/{name}")
async def read(name: str, offset: str = "-1", live: str | None = None) -> Response:
    data = _data[name]
    start = max(0, int(offset))
    if live == "long-poll" and start >= len(data):
        await asyncio.wait_for(_changed[name].wait(), 5.0)
    body = bytes(data[start:])
    headers = {"Stream-Next-Offset": str(start + len(body)), "Stream-Up-To-Date": "true"}
    return Response(body, media_type="text/plain", headers=headers)
