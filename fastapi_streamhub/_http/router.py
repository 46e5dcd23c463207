"""create_router: the routes of a hub's HTTP endpoints (endpoints.py), and what each documents."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.params import Depends as DependsParam
from fastapi.responses import Response
from pydantic import BaseModel

from .._budget import request_bound
from .._hub import StreamHub
from .access import Access
from .browser import MODULE_PATH, TRANSPORT_PATH
from .deps import request_hub
from .endpoints import (
    InvalidPath,
    active,
    browser_module,
    browser_transport,
    cancel,
    delete,
    read_stream,
    resume_ui_message_stream,
    send_message,
    snapshot,
    status,
)
from .errors import Authorize
from .models import (
    ActiveIn,
    ActiveOut,
    ErrorOut,
    MessageIn,
    MessageOut,
    SnapshotOut,
    StateOut,
    StatusOut,
)
from .openapi import json_error, sse_responses
from .response import SessionStreamResponse

__all__ = ["create_router", "streamhub_router"]

# What the edge guard (guard.py) answers on the endpoints that change something.
_CROSS_SITE: dict[int | str, dict[str, Any]] = {
    403: json_error("A browser request from another origin, or refused by authorize")
}
_NOT_JSON: dict[int | str, dict[str, Any]] = {415: json_error("The body is not `application/json`")}

# What follows "/{sid}" in each endpoint's path, and the methods it answers.
_ENDPOINT_METHODS = {
    "": "GET, HEAD, DELETE",
    "status": "GET, HEAD",
    "snapshot": "GET, HEAD",
    "cancel": "POST",
    "messages": "POST",
}
# Every method the catch-all takes, so that a 405 names all the methods of its path (the
# first route that matches the path alone would name only its own).
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "QUERY"]

SSE_DESCRIPTION = """\
A `text/event-stream`: the replay from the cursor, then live chunks, until the terminal event.

Events:
- a chunk: `id: <cursor>` and its data. Plain text arrives as `data:` lines (default `message`
  event); JSON values as `event: json`; text containing CR or NUL as `event: json` with a JSON
  string; chunks the producer named arrive under their name with JSON data.
- `event: metadata`: the session's metadata (JSON), first and whenever the producer sets it.
- `event: reset`: `{"reason", "generation"}`; the cursor could not be honoured and the replay
  starts from the beginning of what is stored.
- `event: end`: `{"state": "done"|"cancelled"|"failed", "reason"}`; exactly once, last.
- with `?follow=conversation`, each generation of the session in turn instead: `event:
  generation` (`{"generation", "turn"}`, id `<generation>-0`) first, `event: generation-end`
  (`{"generation", "state", "reason"}`, id `<generation>-<last offset + 1>`) last; `end` only
  if the session is deleted.
- with `?follow=turns`, only those `generation` and `generation-end` events: no chunk, no
  metadata (a page that streams each answer itself learns of new turns from other tabs).
- `: ping` comments while idle; `retry:` once at the start.

Resume by sending the last `id` back as the `Last-Event-ID` header (or `?last_event_id=`).
"""


async def _bounded(hub: Annotated[StreamHub, Depends(request_hub)]) -> AsyncIterator[None]:
    """Store calls made while a request is answered retry ``request_timeout`` at most."""
    with request_bound(hub.settings.request_timeout):
        yield


# The two read endpoints with a GET and a HEAD alike: path, endpoint, answer, summary.
_READS: list[tuple[str, Callable[..., Awaitable[Any]], type[BaseModel], str]] = [
    ("/{session_id}/status", status, StatusOut, "State of a stream"),
    ("/{session_id}/snapshot", snapshot, SnapshotOut, "The whole output so far in one answer"),
]


def create_router(
    *,
    prefix: str = "/streams",
    dependencies: Sequence[DependsParam] | None = None,
    authorize: Authorize | None = None,
    tags: list[str] | None = None,
    ai_sdk: bool = False,
    allowed_origins: Sequence[str] | None = None,
) -> APIRouter:
    """Build the streams router.

    ``ai_sdk=True`` adds ``GET /{chat_id}/stream``, the resume request of the Vercel AI SDK's
    ``DefaultChatTransport`` (mount the router at the chat route's path, such as
    ``prefix="/api/chat"``): 204 when the session is unknown or finished, else the whole
    generation so far and then live, as a UI message stream.

    ``authorize(request, session_id, action)`` (sync or async) is called on every endpoint
    with action ``read`` (stream, snapshot), ``status`` (status, and each id of ``POST
    /active``), ``cancel``, ``delete`` or ``message`` (``POST /{sid}/messages``); it refuses
    by raising an HTTPException (401/403, or 404 to make another user's session look unknown)
    or by returning False (403). ``POST /active`` leaves out the ids refused with 403 or 404
    instead of failing.

    The endpoints that change something (cancel, delete, messages; ``POST /active`` too)
    refuse with 403 a request a browser sent from another origin (``Sec-Fetch-Site``, else
    ``Origin`` against ``Host``), unless its ``Origin`` is one of ``allowed_origins`` (the
    origins your CORS middleware lets in; ``["*"]`` turns the check off). Clients that are not
    browsers are not affected. See the README's Security section.
    """
    access = Access(authorize, allowed_origins)
    router = APIRouter(
        prefix=prefix,
        dependencies=[*(dependencies or []), Depends(_bounded), Depends(access)],
        tags=list(tags) if tags is not None else ["streams"],
        responses={
            422: json_error("Invalid session id or parameter"),
            503: json_error("The store is unreachable"),
            **({403: json_error("Refused by authorize")} if authorize is not None else {}),
        },
    )
    # Registration order is the document's order, and the "/~/..." modules must come before
    # "/{session_id}" ("~" is not a session id character). Each HEAD route is added before its
    # GET and left out of the document: FastAPI would give both one operation id.
    router.add_api_route(MODULE_PATH, browser_module, methods=["HEAD"], include_in_schema=False)
    router.add_api_route(MODULE_PATH, browser_module, methods=["GET"], include_in_schema=False)
    for method in ("HEAD", "GET"):
        router.add_api_route(
            TRANSPORT_PATH, browser_transport, methods=[method], include_in_schema=False
        )
    _add_session_routes(router)
    methods = dict(_ENDPOINT_METHODS)
    if ai_sdk:
        _add_ai_sdk_route(router)
        methods["stream"] = "GET, HEAD"
    # Last: it takes every path, so that the routes above answer theirs first.
    router.add_api_route(
        "/{path:path}",
        InvalidPath(methods),
        methods=_ALL_METHODS,
        name="invalid_session_id",
        include_in_schema=False,
    )
    return router


def _add_session_routes(router: APIRouter) -> None:
    """The endpoints every router has: stream, status, snapshot, cancel, delete, active,
    messages."""
    router.add_api_route("/{session_id}", read_stream, methods=["HEAD"], include_in_schema=False)
    router.add_api_route(
        "/{session_id}",
        read_stream,
        methods=["GET"],
        summary="Follow a stream (SSE)",
        description=SSE_DESCRIPTION,
        response_class=SessionStreamResponse,
        responses=SessionStreamResponse.openapi_responses(),
    )
    for path, endpoint, model, summary in _READS:
        router.add_api_route(
            path, endpoint, methods=["HEAD"], response_model=model, include_in_schema=False
        )
        router.add_api_route(
            path,
            endpoint,
            methods=["GET"],
            summary=summary,
            response_model=model,
            responses={404: {"model": ErrorOut, "description": "Unknown session"}},
        )
    router.add_api_route(
        "/{session_id}/cancel",
        cancel,
        methods=["POST"],
        summary="Stop a stream wherever its producer runs",
        response_model=StateOut,
        status_code=202,
        responses={
            200: {"model": StateOut, "description": "The stream is finished (final state)"},
            202: {"model": StateOut, "description": "The cancel was sent; still stopping"},
            404: {"model": ErrorOut, "description": "Unknown session"},
            **_CROSS_SITE,
        },
    )
    router.add_api_route(
        "/{session_id}",
        delete,
        methods=["DELETE"],
        summary="Stop a stream and remove everything stored for it",
        status_code=204,
        response_class=Response,
        responses=_CROSS_SITE,
    )
    router.add_api_route(
        "/active",
        active,
        methods=["POST"],
        summary="Which of these sessions have a running producer",
        response_model=ActiveOut,
        openapi_extra=_json_request_body(ActiveIn),
        responses={
            400: {"model": ErrorOut, "description": "The body is not JSON"},
            413: json_error("The body is larger than 1,000 session ids need"),
            **_CROSS_SITE,
            **_NOT_JSON,
        },
    )
    router.add_api_route(
        "/{session_id}/messages",
        send_message,
        methods=["POST"],
        summary="Send a steering message to the running producer",
        response_model=MessageOut,
        status_code=202,
        openapi_extra=_json_request_body(MessageIn),
        responses={
            404: {"model": ErrorOut, "description": "Unknown session"},
            409: {"model": ErrorOut, "description": "The session is finished"},
            413: {
                "model": ErrorOut,
                "description": "Over max_message_bytes, or over this generation's "
                "max_messages / max_messages_bytes",
            },
            **_CROSS_SITE,
            **_NOT_JSON,
            422: {
                "model": ErrorOut,
                "description": "Invalid session id, body or `Idempotency-Key`, or a body `id` "
                "that differs from the `Idempotency-Key` header",
            },
            503: {"model": ErrorOut, "description": "The store is unreachable"},
        },
    )


def _add_ai_sdk_route(router: APIRouter) -> None:
    """``GET /{sid}/stream``: the resume request of the Vercel AI SDK's chat transport."""
    path = "/{session_id}/stream"
    router.add_api_route(path, resume_ui_message_stream, methods=["HEAD"], include_in_schema=False)
    router.add_api_route(
        path,
        resume_ui_message_stream,
        methods=["GET"],
        summary="Resume a Vercel AI SDK chat stream",
        description="The resume request of the AI SDK's `DefaultChatTransport`: 204 when "
        "the session is unknown or finished; else a UI message stream (`data:` JSON parts, "
        "`[DONE]`) from the start of the generation, then live.",
        response_class=SessionStreamResponse,
        responses={
            **sse_responses(
                "The UI message stream of the running answer.",
                {429: "Over max_subscribers for this session"},
            ),
            204: {"description": "Nothing to resume"},
        },
    )


def _json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The document's required JSON body for an endpoint that reads its body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


streamhub_router = create_router()
