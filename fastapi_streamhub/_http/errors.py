"""HTTP error policy: which status a domain error maps to, what the client sees, who may act.

Shared by the router and the streaming responses, so both answer the same error the same way.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import HTTPException
from starlette.requests import Request
from starlette.types import Send

from .._errors import (
    BackendUnavailable,
    InvalidChunk,
    InvalidCursor,
    InvalidSessionId,
    LimitExceeded,
    SessionNotFound,
    StreamClosed,
    StreamHubError,
)

__all__ = [
    "RETRY_AFTER",
    "UNAVAILABLE",
    "Authorize",
    "authorize_or_raise",
    "error_answer",
    "error_status",
    "json_error",
]

log = logging.getLogger("fastapi_streamhub")

Authorize = Callable[[Request, str, str], Any]


def error_status(exc: StreamHubError) -> int:
    """The HTTP status a domain error maps to."""
    if isinstance(exc, SessionNotFound):
        return 404
    if isinstance(exc, InvalidSessionId | InvalidChunk):
        # InvalidChunk here is a steering message that cannot be stored (too deep, say): bad
        # input, not the 409 that tells a client the session is finished.
        return 422
    if isinstance(exc, InvalidCursor):
        return 400
    if isinstance(exc, LimitExceeded):
        return 429
    if isinstance(exc, BackendUnavailable | StreamClosed):
        return 503
    return 409


# What a client learns of a store outage: not the address or the driver's text (they are logged).
UNAVAILABLE = "the store is unavailable; retry later"
RETRY_AFTER = "2"


def error_answer(exc: StreamHubError) -> tuple[int, str, dict[str, str]]:
    """Status, detail and headers of the JSON answer to a domain error."""
    if isinstance(exc, BackendUnavailable):
        log.warning("answered 503: %s", exc)
        return 503, UNAVAILABLE, {"retry-after": RETRY_AFTER}
    return error_status(exc), str(exc), {}


async def json_error(send: Send, exc: StreamHubError | HTTPException) -> None:
    """Answer a request with ``{"detail": ...}`` at the ASGI level (before any body was sent)."""
    if isinstance(exc, HTTPException):
        status, detail, headers = exc.status_code, str(exc.detail), dict(exc.headers or {})
    else:
        status, detail, headers = error_answer(exc)
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def authorize_or_raise(
    authorize: Authorize, request: Request, session_id: str, action: str
) -> None:
    """Call ``authorize`` (sync or async); False means 403, an HTTPException passes through."""
    result = authorize(request, session_id, action)
    if inspect.isawaitable(result):
        result = await result
    if result is False:
        raise HTTPException(status_code=403, detail=f"not allowed to {action} this session")
