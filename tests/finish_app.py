"""A test app for ``tests/test_on_finish.py``, run by uvicorn in a subprocess:
``uvicorn finish_app:app --app-dir tests``.

Configured by environment variables:

- ``REDIS_URL``: the hub's backend (default ``memory://``); ``LEASE_TTL`` (default 1.0);
- ``FINISH_REC``: the file the hook appends one JSON line to per call (required);
- ``INSTANCE``: this instance's name, written in every line;
- ``BEFORE_END``: the hub's ``finish_before_end`` (default: unset, the end comes first);
- ``KEY_PREFIX``: the hub's ``key_prefix`` (default ``streamhub``), to keep a test's instances
  (and their sweeps) apart from the others'.

``GET /gen/{sid}?n=&delay=&fail_at=&fails=&hold=&route=&turn=&restart=`` returns
``ResumableStreamingResponse`` of ``t0 t1 ...`` (``delay`` seconds before each item;
``RuntimeError`` at item ``fail_at``), with one JSON chunk ``{"type": "usage", "n": n}`` at the
end. Its metadata carries ``fails`` (the hook raises on its first ``fails`` calls of the
generation on one instance), ``hold`` (seconds each call takes before it records) and
``hold_on`` (hold only on the instance of that name, and write a ``{"sid", "started":
<instance>}`` line when a call starts); ``route=1`` gives the response its own ``on_finish``
(its lines say ``"hook": "route"``, the hub's ``"hub"``); ``turn`` and ``restart`` are the
claim's. Lines are appended with ``O_APPEND`` (one ``write`` each, well under ``PIPE_BUF``), so
two processes never interleave them.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI

from fastapi_streamhub import (
    FinishedGeneration,
    ResumableStreamingResponse,
    StreamHub,
    streamhub_router,
)

REC = os.environ.get("FINISH_REC", "")
INSTANCE = os.environ.get("INSTANCE", "")
_calls: dict[tuple[str, int], int] = {}


def record(line: dict[str, Any]) -> None:
    data = (json.dumps(line) + "\n").encode()
    fd = os.open(REC, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


async def on_finish(done: FinishedGeneration, hook: str = "hub") -> None:
    key = (done.session_id, done.generation)
    call = _calls[key] = _calls.get(key, 0) + 1
    fails = int(done.metadata.get("fails", 0))
    hold = float(done.metadata.get("hold", 0))
    hold_on = done.metadata.get("hold_on")
    if hold_on:  # hold only on that instance, and say that the call started
        hold = hold if hold_on == INSTANCE else 0.0
        record({"sid": done.session_id, "started": INSTANCE})
    if hold:
        await anyio.sleep(hold)
    ok = call > fails
    record(
        {
            "sid": done.session_id,
            "gen": done.generation,
            "state": done.state.value,
            "reason": done.reason,
            "text": done.text,
            "chunks": list(done.chunks),
            "metadata": done.metadata,
            "truncated": done.truncated,
            "instance": INSTANCE,
            "hook": hook,
            "ok": ok,
        }
    )
    if not ok:
        raise RuntimeError(f"hook failure {call} of {fails}")


async def route_hook(done: FinishedGeneration) -> None:
    await on_finish(done, "route")


def _build() -> FastAPI:
    before = os.environ.get("BEFORE_END")
    hub = StreamHub.from_url(
        os.environ.get("REDIS_URL", "memory://"),
        on_finish=on_finish,
        lease_ttl=float(os.environ.get("LEASE_TTL", "1.0")),
        shutdown_grace=1.0,
        finish_backoff=0.05,
        finish_claim_ttl=5.0,
        finish_before_end=float(before) if before else None,
        key_prefix=os.environ.get("KEY_PREFIX", "streamhub"),
    )
    app = FastAPI(lifespan=hub.lifespan)
    app.include_router(streamhub_router)

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/gen/{sid}")
    async def gen(
        sid: str,
        n: int = 3,
        delay: float = 0.0,
        fail_at: int = -1,
        fails: int = 0,
        hold: float = 0.0,
        hold_on: str = "",
        route: bool = False,
        turn: str = "",
        restart: bool = False,
    ) -> ResumableStreamingResponse:
        async def items() -> AsyncIterator[Any]:
            for i in range(n):
                if delay:
                    await anyio.sleep(delay)
                if i == fail_at:
                    raise RuntimeError(f"boom at {i}")
                yield f"t{i} "
            yield {"type": "usage", "n": n}

        return ResumableStreamingResponse(
            sid,
            items(),
            metadata={"fails": fails, "hold": hold, "hold_on": hold_on},
            hub=hub,
            on_finish=route_hook if route else None,
            turn=turn or None,
            restart=restart,
        )

    return app


def __getattr__(name: str) -> Any:
    # uvicorn's "finish_app:app" does getattr(module, "app"): build the app only then.
    if name == "app":
        app = _build()
        globals()["app"] = app
        return app
    raise AttributeError(name)
