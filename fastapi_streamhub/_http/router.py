"""The HTTP endpoints of a hub: read (SSE), status, snapshot, cancel, delete, active."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.params import Depends as DependsParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from .._budget import request_bound
from .._errors import LimitExceeded, StreamHubError
from .._hub import StreamHub
from .._steering import MESSAGE_KEY_PATTERN
from .._types import SESSION_ID_PATTERN, SESSION_ID_RULE
from .browser import MODULE_PATH, module_response
from .deps import get_hub
from .errors import Authorize, authorize_or_raise, error_answer
from .guard import OriginCheck, check_message_value, read_body, require_json
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
from .sse import parse_last_event_id

__all__ = ["create_router", "streamhub_router"]

# What the edge guard (guard.py) answers on the endpoints that change something.
_CROSS_SITE: dict[int | str, dict[str, Any]] = {
    403: json_error("A browser request from another origin, or refused by authorize")
}
_NOT_JSON: dict[int | str, dict[str, Any]] = {415: json_error("The body is not `application/json`")}

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

SessionId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=SESSION_ID_PATTERN,
        description="1-200 characters of letters, digits and `. _ : -`, not `.` or `..`.",
    ),
]
_SESSION_ID = re.compile(SESSION_ID_PATTERN)
# What follows "/{sid}" in each endpoint's path, and the methods it answers.
_ENDPOINT_METHODS = {
    "": "GET, HEAD, DELETE",
    "status": "GET, HEAD",
    "snapshot": "GET, HEAD",
    "cancel": "POST",
}
# Every method the catch-all takes, so that a 405 names all the methods of its path (the
# first route that matches the path alone would name only its own).
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "QUERY"]

# How a cursor is documented (an `id:` sent back; blank means none): the schema only, the
# endpoint answers a malformed one with its own 400. 19 digits at most keep the documented
# values in range (u64).
_CURSOR_DOC = {
    "type": "string",
    "pattern": r"^[ \t]*(?:[1-9][0-9]{0,18}-(?:0|[1-9][0-9]{0,18}))?[ \t]*$",
}

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
- `: ping` comments while idle; `retry:` once at the start.

Resume by sending the last `id` back as the `Last-Event-ID` header (or `?last_event_id=`).
"""


async def _domain(call: Awaitable[T]) -> T:
    try:
        return await call
    except StreamHubError as exc:
        raise _http_error(exc) from None


def _http_error(exc: StreamHubError) -> HTTPException:
    status, detail, headers = error_answer(exc)
    return HTTPException(status_code=status, detail=detail, headers=headers or None)


async def _bounded(hub: Annotated[StreamHub, Depends(get_hub)]) -> AsyncIterator[None]:
    """Store calls made while a request is answered retry ``request_timeout`` at most."""
    with request_bound(hub.settings.request_timeout):
        yield


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
    same_origin = OriginCheck(allowed_origins)
    router = APIRouter(
        prefix=prefix,
        dependencies=[*(dependencies or []), Depends(_bounded)],
        tags=list(tags) if tags is not None else ["streams"],
        responses={
            422: json_error("Invalid session id or parameter"),
            503: json_error("The store is unreachable"),
            **({403: json_error("Refused by authorize")} if authorize is not None else {}),
        },
    )

    async def check(request: Request, session_id: str, action: str) -> None:
        same_origin(request)
        if authorize is not None:
            await authorize_or_raise(authorize, request, session_id, action)

    # Before "/{session_id}" and the catch-all; "~" is not a session id character.
    # HEAD beside every GET (out of the document: FastAPI would give both one operation id).
    @router.get(MODULE_PATH, include_in_schema=False)
    @router.head(MODULE_PATH, include_in_schema=False)
    async def browser_module(request: Request) -> Response:
        return module_response(request)

    @router.get(
        "/{session_id}",
        summary="Follow a stream (SSE)",
        description=SSE_DESCRIPTION,
        response_class=SessionStreamResponse,
        responses=SessionStreamResponse.openapi_responses(),
    )
    @router.head("/{session_id}", include_in_schema=False)
    async def read_stream(
        request: Request,
        session_id: SessionId,
        hub: Annotated[StreamHub, Depends(get_hub)],
        last_event_id_header: Annotated[
            str | None,
            Header(alias="last-event-id", include_in_schema=True, json_schema_extra=_CURSOR_DOC),
        ] = None,
        last_event_id: Annotated[
            str | None,
            Query(description="Cursor, when no header can be sent.", json_schema_extra=_CURSOR_DOC),
        ] = None,
    ) -> Response:
        await check(request, session_id, "read")
        try:
            cursor = parse_last_event_id(last_event_id_header, last_event_id)
        except StreamHubError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        # An unknown session is answered 404 by the response itself, before any header.
        return SessionStreamResponse(session_id, hub=hub, after=cursor)

    @router.get(
        "/{session_id}/status",
        summary="State of a stream",
        response_model=StatusOut,
        responses={404: {"model": ErrorOut, "description": "Unknown session"}},
    )
    @router.head("/{session_id}/status", response_model=StatusOut, include_in_schema=False)
    async def status(
        request: Request, session_id: SessionId, hub: Annotated[StreamHub, Depends(get_hub)]
    ) -> Any:
        await check(request, session_id, "status")
        info = await _domain(hub.status(session_id))
        if info is None:
            raise HTTPException(status_code=404, detail=f"session {session_id!r} not found")
        return info.as_dict()

    @router.get(
        "/{session_id}/snapshot",
        summary="The whole output so far in one answer",
        response_model=SnapshotOut,
        responses={404: {"model": ErrorOut, "description": "Unknown session"}},
    )
    @router.head("/{session_id}/snapshot", response_model=SnapshotOut, include_in_schema=False)
    async def snapshot(
        request: Request, session_id: SessionId, hub: Annotated[StreamHub, Depends(get_hub)]
    ) -> Any:
        await check(request, session_id, "read")
        return await _domain(hub.snapshot(session_id))

    @router.post(
        "/{session_id}/cancel",
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
    async def cancel(
        request: Request,
        session_id: SessionId,
        hub: Annotated[StreamHub, Depends(get_hub)],
        wait: Annotated[
            float | None,
            Query(ge=0, le=60, description="Seconds to wait for the stream to finish."),
        ] = None,
    ) -> Any:
        await check(request, session_id, "cancel")
        state = await _domain(hub.cancel(session_id, wait=wait))
        return JSONResponse({"state": state.value}, status_code=200 if state.finished else 202)

    @router.delete(
        "/{session_id}",
        summary="Stop a stream and remove everything stored for it",
        status_code=204,
        response_class=Response,
        responses=_CROSS_SITE,
    )
    async def delete(
        request: Request, session_id: SessionId, hub: Annotated[StreamHub, Depends(get_hub)]
    ) -> Response:
        await check(request, session_id, "delete")
        await _domain(hub.delete(session_id))
        return Response(status_code=204)

    @router.post(
        "/active",
        summary="Which of these sessions have a running producer",
        response_model=ActiveOut,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ActiveIn.model_json_schema()}},
            }
        },
        responses={
            400: {"model": ErrorOut, "description": "The body is not JSON"},
            413: json_error("The body is larger than 1,000 session ids need"),
            **_CROSS_SITE,
            **_NOT_JSON,
        },
    )
    async def active(request: Request, hub: Annotated[StreamHub, Depends(get_hub)]) -> Any:
        same_origin(request)
        _, body = await _json_body(
            request, _ACTIVE_BODY_LIMIT, ActiveIn, '{"session_ids": [up to 1000 session ids]}'
        )
        allowed = []
        for session_id in dict.fromkeys(body.session_ids):
            if authorize is None or await _allowed(authorize, request, session_id):
                allowed.append(session_id)
        return {"active": await _domain(hub.active(allowed))}

    endpoints = dict(_ENDPOINT_METHODS)
    _add_message_route(router, check)
    endpoints["messages"] = "POST"
    if ai_sdk:
        endpoints["stream"] = "GET, HEAD"

        @router.get(
            "/{session_id}/stream",
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
        @router.head("/{session_id}/stream", include_in_schema=False)
        async def resume_ui_message_stream(
            request: Request, session_id: SessionId, hub: Annotated[StreamHub, Depends(get_hub)]
        ) -> Response:
            await check(request, session_id, "read")
            info = await _domain(hub.status(session_id))
            if info is None or info.state.finished:
                return Response(status_code=204)
            return SessionStreamResponse(session_id, hub=hub, protocol="ai-sdk")

    # Ids that cannot match a route above (empty, or holding "/" once percent-decoded) are
    # invalid ids too: answer them with the contract's 422, not a routing 404. A valid id on
    # an endpoint that exists, with the wrong method, is a 405 as it would be without this
    # catch-all.
    @router.api_route("/{path:path}", methods=_ALL_METHODS, include_in_schema=False)
    async def invalid_session_id(path: str) -> Any:
        session_id, _, endpoint = path.partition("/")
        # The document has "/active" answer POST only (a GET reaches the session "active").
        allowed = "POST" if path == "active" else endpoints.get(endpoint)
        if allowed is not None and _SESSION_ID.fullmatch(session_id) is not None:
            raise HTTPException(
                status_code=405, detail="Method Not Allowed", headers={"Allow": allowed}
            )
        raise HTTPException(
            status_code=422,
            detail=f"invalid session id ({SESSION_ID_RULE}) or unknown endpoint",
        )

    return router


def _add_message_route(
    router: APIRouter, check: Callable[[Request, str, str], Awaitable[None]]
) -> None:
    """``POST /{sid}/messages``: a steering message for the session's running producer."""

    @router.post(
        "/{session_id}/messages",
        summary="Send a steering message to the running producer",
        response_model=MessageOut,
        status_code=202,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": MessageIn.model_json_schema()}},
            }
        },
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
    async def send_message(
        request: Request,
        session_id: SessionId,
        hub: Annotated[StreamHub, Depends(get_hub)],
        idempotency_key: Annotated[
            str | None, Header(alias="idempotency-key", pattern=MESSAGE_KEY_PATTERN)
        ] = None,
    ) -> Any:
        await check(request, session_id, "message")
        body, parsed = await _json_body(
            request,
            hub.settings.max_message_bytes + 1024,
            MessageIn,
            'a JSON object {"message": <JSON value>, "id": <key>}',
        )
        check_message_value(parsed.message, body)
        key = parsed.id or idempotency_key
        if parsed.id and idempotency_key and parsed.id != idempotency_key:
            raise HTTPException(status_code=422, detail="the body's id and Idempotency-Key differ")
        try:
            receipt = await hub.send_message(session_id, parsed.message, key=key)
        except LimitExceeded as exc:
            raise HTTPException(status_code=413, detail=str(exc)) from None
        except StreamHubError as exc:
            raise _http_error(exc) from None
        return JSONResponse(
            {"id": receipt.id, "generation": receipt.generation, "duplicate": receipt.duplicate},
            status_code=202,
        )


# The most a valid body needs: 1000 ids of 200 characters, quoted and separated, with room
# for whitespace; anything longer is refused before it is parsed.
_ACTIVE_BODY_LIMIT = 256 * 1024


async def _json_body(request: Request, limit: int, model: type[M], shape: str) -> tuple[bytes, M]:
    """The body as ``model``: 415 unless declared JSON, 413 over ``limit`` bytes, 422 when it
    does not parse or validate, saying where without echoing the refused input (a 10 MB string
    would come back as 10 MB)."""
    require_json(request)
    raw = await read_body(request, limit)
    try:
        return raw, model.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise HTTPException(
            status_code=422, detail=f"the body is not valid JSON: {exc.args[0]}"
        ) from None
    except ValidationError as exc:
        raise HTTPException(
            status_code=422, detail=f"the body must be {shape}: {_problems(exc)}"
        ) from None


def _problems(exc: ValidationError) -> str:
    """Where and why a body was refused, without the refused input."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    # A location may hold a key the client chose (an unknown field): cut it short too.
    shown = [f"{'.'.join(str(p)[:40] for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:3]]
    more = len(errors) - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")


async def _allowed(authorize: Authorize, request: Request, session_id: str) -> bool:
    try:
        await authorize_or_raise(authorize, request, session_id, "status")
    except HTTPException as exc:
        # 404 too: an authorize that hides other users' sessions as "not found" must not have
        # the whole answer fail, which would tell that one of the ids exists.
        if exc.status_code in (403, 404):
            return False
        raise
    return True


streamhub_router = create_router()
