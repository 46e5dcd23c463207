"""An app with every router variant, for the OpenAPI tests: ``uvicorn openapi_app:app --app-dir tests``.

- ``streamhub_router`` at ``/streams``;
- ``create_router(prefix="/api/chat", ai_sdk=True, authorize=...)``: the authorize refuses ids
  that start with ``deny`` (403) and lets every other one through;
- ``GET /gen/{sid}?n=&delay=``: the app's own route with
  ``response_class=ResumableStreamingResponse`` and its ``openapi_responses()``: ``n`` text
  chunks ``t0 ``, ``t1 ``, ... with ``delay`` seconds between them;
- ``GET /plain/{sid}``: the same with ``response_class`` only (what FastAPI could not document
  before ``ResumableStreamingResponse`` had a ``status_code`` parameter).

``ASGI_SEND_RAISES=1`` wraps the app in :class:`SendRaisesAfterDisconnect` (see there).
Warnings and errors of the library are logged to stderr as ``LEVEL name: message``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Path, Query, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_streamhub import (
    ResumableStreamingResponse,
    StreamHub,
    create_router,
    streamhub_router,
)

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

SESSION_ID = r"^[A-Za-z0-9._:-]{1,200}$"


def deny_prefixed(request: Request, session_id: str, action: str) -> bool:
    """Refuse (403) the sessions whose id starts with ``deny``."""
    return not session_id.startswith("deny")


async def tokens(n: int, delay: float) -> AsyncIterator[str]:
    for i in range(n):
        yield f"t{i} "
        await anyio.sleep(delay)


class SendRaisesAfterDisconnect:
    """Makes uvicorn behave as the ASGI spec lets a server behave once the client is gone:
    ``send()`` raises an ``OSError`` (here ``ConnectionResetError``) and ``receive()`` does not
    say ``http.disconnect``. (uvicorn itself drops the message silently and says
    ``http.disconnect``; other servers, and ASGI 2.4, raise.) The real ``receive`` is read in
    the background to learn of the reset. For GET requests only: nothing else streams."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        request = await receive()  # the (empty) body of the GET
        gone = anyio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        pending: list[Message] = [request]

        async def app_receive() -> Message:
            if pending:
                return pending.pop()
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def app_send(message: Message) -> None:
            if gone.is_set():
                raise ConnectionResetError("the client reset the connection")
            await send(message)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await self.app(scope, app_receive, app_send)
            tg.cancel_scope.cancel()


def build_app() -> Any:
    hub = StreamHub.from_url(os.environ.get("REDIS_URL", "memory://"))
    app = FastAPI(title="streamhub OpenAPI variants", lifespan=hub.lifespan)
    app.include_router(streamhub_router)
    app.include_router(create_router(prefix="/api/chat", ai_sdk=True, authorize=deny_prefixed))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/gen/{sid}",
        summary="Stream n tokens",
        response_class=ResumableStreamingResponse,
        responses=ResumableStreamingResponse.openapi_responses(),
    )
    async def gen(
        sid: Annotated[str, Path(pattern=SESSION_ID)],
        n: Annotated[int, Query(ge=0, le=100)] = 5,
        delay: Annotated[float, Query(ge=0, le=0.02)] = 0.0,
    ) -> ResumableStreamingResponse:
        return ResumableStreamingResponse(sid, tokens(n, delay))

    @app.get("/plain/{sid}", response_class=ResumableStreamingResponse)
    async def plain(sid: Annotated[str, Path(pattern=SESSION_ID)]) -> ResumableStreamingResponse:
        return ResumableStreamingResponse(sid, tokens(3, 0.0))

    if os.environ.get("ASGI_SEND_RAISES") == "1":
        return SendRaisesAfterDisconnect(app)
    return app


app = build_app()
