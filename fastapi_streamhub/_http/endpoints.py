"""The router's endpoints as plain functions; create_router (router.py) registers them.

What differs between two routers (``authorize``, the allowed origins) reaches the endpoints
as an :class:`~.access.Access` dependency, so nothing here is a closure. The endpoints carry
no docstrings on purpose: FastAPI would publish them as operation descriptions.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from .._errors import LimitExceeded, StreamHubError
from .._hub import StreamHub
from .._steering import MESSAGE_KEY_PATTERN
from .._types import SESSION_ID_PATTERN, SESSION_ID_RULE
from .access import Access, router_access
from .browser import module_response, transport_response
from .deps import request_hub
from .errors import error_answer
from .guard import check_message_value, read_body, require_json
from .models import ActiveIn, MessageIn
from .response import Follow, SessionStreamResponse
from .sse import parse_last_event_id

__all__ = [
    "ACTIVE_BODY_LIMIT",
    "InvalidPath",
    "active",
    "browser_module",
    "browser_transport",
    "cancel",
    "delete",
    "read_stream",
    "resume_ui_message_stream",
    "send_message",
    "snapshot",
    "status",
]

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
Hub = Annotated[StreamHub, Depends(request_hub)]
RouterAccess = Annotated[Access, Depends(router_access)]
_SESSION_ID = re.compile(SESSION_ID_PATTERN)

# How a cursor is documented (an `id:` sent back; blank means none): the schema only, the
# endpoint answers a malformed one with its own 400. 19 digits at most keep the documented
# values in range (u64).
_CURSOR_DOC = {
    "type": "string",
    "pattern": r"^[ \t]*(?:[1-9][0-9]{0,18}-(?:0|[1-9][0-9]{0,18}))?[ \t]*$",
}

# The most a valid body needs: 1000 ids of 200 characters, quoted and separated, with room
# for whitespace; anything longer is refused before it is parsed.
ACTIVE_BODY_LIMIT = 256 * 1024


async def _domain(call: Awaitable[T]) -> T:
    try:
        return await call
    except StreamHubError as exc:
        raise _http_error(exc) from None


def _http_error(exc: StreamHubError) -> HTTPException:
    status, detail, headers = error_answer(exc)
    return HTTPException(status_code=status, detail=detail, headers=headers or None)


# The browser helper module (GET and HEAD /~streamhub.js).
async def browser_module(request: Request) -> Response:
    return module_response(request)


async def browser_transport(request: Request) -> Response:
    return transport_response(request)


# GET /{sid}: the SSE stream.
async def read_stream(
    request: Request,
    session_id: SessionId,
    hub: Hub,
    access: RouterAccess,
    last_event_id_header: Annotated[
        str | None,
        Header(alias="last-event-id", include_in_schema=True, json_schema_extra=_CURSOR_DOC),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(description="Cursor, when no header can be sent.", json_schema_extra=_CURSOR_DOC),
    ] = None,
    follow: Annotated[
        Follow,
        Query(
            description="`generation` (default): until the current generation ends. "
            "`conversation`: on across the session's generations (a chat's turns) until the "
            "client leaves; each generation is framed by `generation` and `generation-end` "
            "events, whose ids are cursors too. `turns`: the same `generation` and "
            "`generation-end` events only, without chunks nor metadata, for a page that "
            "streams each answer itself and only needs to learn of new turns."
        ),
    ] = "generation",
) -> Response:
    await access.check(request, session_id, "read")
    try:
        cursor = parse_last_event_id(last_event_id_header, last_event_id)
    except StreamHubError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    # An unknown session is answered 404 by the response itself, before any header.
    return SessionStreamResponse(session_id, hub=hub, after=cursor, follow=follow)


# GET /{sid}/status
async def status(request: Request, session_id: SessionId, hub: Hub, access: RouterAccess) -> Any:
    await access.check(request, session_id, "status")
    info = await _domain(hub.status(session_id))
    if info is None:
        raise HTTPException(status_code=404, detail=f"session {session_id!r} not found")
    return info.as_dict()


# GET /{sid}/snapshot
async def snapshot(request: Request, session_id: SessionId, hub: Hub, access: RouterAccess) -> Any:
    await access.check(request, session_id, "read")
    return await _domain(hub.snapshot(session_id))


# POST /{sid}/cancel
async def cancel(
    request: Request,
    session_id: SessionId,
    hub: Hub,
    access: RouterAccess,
    wait: Annotated[
        float | None,
        Query(ge=0, le=60, description="Seconds to wait for the stream to finish."),
    ] = None,
) -> Any:
    await access.check(request, session_id, "cancel")
    state = await _domain(hub.cancel(session_id, wait=wait))
    return JSONResponse({"state": state.value}, status_code=200 if state.finished else 202)


# DELETE /{sid}
async def delete(
    request: Request, session_id: SessionId, hub: Hub, access: RouterAccess
) -> Response:
    await access.check(request, session_id, "delete")
    await _domain(hub.delete(session_id))
    return Response(status_code=204)


# POST /active
async def active(request: Request, hub: Hub, access: RouterAccess) -> Any:
    access.same_origin(request)
    _, body = await _json_body(
        request, ACTIVE_BODY_LIMIT, ActiveIn, '{"session_ids": [up to 1000 session ids]}'
    )
    allowed = [
        session_id
        for session_id in dict.fromkeys(body.session_ids)
        if await access.may_see(request, session_id)
    ]
    return {"active": await _domain(hub.active(allowed))}


# POST /{sid}/messages: a steering message for the session's running producer.
async def send_message(
    request: Request,
    session_id: SessionId,
    hub: Hub,
    access: RouterAccess,
    idempotency_key: Annotated[
        str | None, Header(alias="idempotency-key", pattern=MESSAGE_KEY_PATTERN)
    ] = None,
) -> Any:
    await access.check(request, session_id, "message")
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


# GET /{sid}/stream (ai_sdk=True): the resume request of the AI SDK's DefaultChatTransport.
async def resume_ui_message_stream(
    request: Request, session_id: SessionId, hub: Hub, access: RouterAccess
) -> Response:
    await access.check(request, session_id, "read")
    info = await _domain(hub.status(session_id))
    if info is None or info.state.finished:
        return Response(status_code=204)
    return SessionStreamResponse(session_id, hub=hub, protocol="ai-sdk")


class InvalidPath:
    """The catch-all endpoint: 405 for a known endpoint with the wrong method, else 422.

    Ids that cannot match a route (empty, or holding "/" once percent-decoded) are invalid
    ids too: they get the contract's 422, not a routing 404. ``methods`` maps what follows
    ``/{sid}`` in each endpoint's path to the methods it answers (the router's own set: the
    AI SDK endpoint is optional).
    """

    def __init__(self, methods: Mapping[str, str]) -> None:
        self.methods = dict(methods)

    async def __call__(self, path: str) -> Any:
        """Raise the 405 or 422 for ``path`` (what follows the router's prefix)."""
        session_id, _, endpoint = path.partition("/")
        # The document has "/active" answer POST only (a GET reaches the session "active").
        allowed = "POST" if path == "active" else self.methods.get(endpoint)
        if allowed is not None and _SESSION_ID.fullmatch(session_id) is not None:
            raise HTTPException(
                status_code=405, detail="Method Not Allowed", headers={"Allow": allowed}
            )
        raise HTTPException(
            status_code=422,
            detail=f"invalid session id ({SESSION_ID_RULE}) or unknown endpoint",
        )


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
