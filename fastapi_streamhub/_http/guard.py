"""What the router refuses before any work: cross-site writes, non-JSON bodies, oversized bodies.

A browser lets any page send a "simple" request (a form post, or a ``fetch`` with a
``text/plain`` body) to another site, with the user's cookies and without asking the server
first (no CORS preflight). The state-changing endpoints therefore refuse requests that a
browser marks as coming from another site (``Sec-Fetch-Site``, or, from browsers too old to
send it, an ``Origin`` that differs from ``Host``), and ``POST /{sid}/messages`` only takes a
JSON content type, which a cross-site page cannot send without a preflight. Clients that are
not browsers send neither header and are not affected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

__all__ = ["MAX_DEPTH", "OriginCheck", "check_message_value", "read_body", "require_json"]

# Methods a browser sends cross-site freely but that change nothing here.
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class OriginCheck:
    """Refuses (403) unsafe requests a browser sent from another origin.

    ``allowed`` are origins (``https://app.example``) that may call the router from another
    origin, as the CORS middleware of the app allows them; ``"*"`` turns the check off.
    """

    def __init__(self, allowed: Iterable[str] | None) -> None:
        if isinstance(allowed, str):
            raise ValueError("allowed_origins must be a list of origins, not one string")
        origins = [] if allowed is None else list(allowed)
        for origin in origins:
            if not isinstance(origin, str) or not origin:
                raise ValueError(f"allowed_origins holds {origin!r}, not an origin string")
        self.any = "*" in origins
        self.allowed = frozenset(o.rstrip("/").lower() for o in origins)

    def __call__(self, request: Request) -> None:
        """Raise HTTPException(403) when ``request`` is a cross-origin write."""
        if self.any or request.method in _SAFE:
            return
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() in self.allowed:
            return
        # Sent by every current browser, and independent of how a proxy rewrote Host.
        site = request.headers.get("sec-fetch-site")
        if site is not None:
            if site in ("same-origin", "none"):
                return
            raise _cross_origin()
        if origin is None:
            return  # not a browser (curl, the Python client, a server): nothing to forge
        if origin == "null" or urlsplit(origin).netloc.lower() != _host(request):
            raise _cross_origin()


def _host(request: Request) -> str:
    return (request.headers.get("host") or "").lower()


def _cross_origin() -> HTTPException:
    return HTTPException(
        status_code=403,
        detail="cross-origin request refused: this endpoint only takes requests from its own "
        "origin (or from origins listed in create_router(allowed_origins=...))",
    )


def require_json(request: Request) -> None:
    """Raise HTTPException(415) unless the body is declared ``application/json`` (or
    ``application/<something>+json``): the content types a cross-site form cannot send."""
    declared = request.headers.get("content-type", "")
    media = declared.partition(";")[0].strip().lower()
    kind, _, subtype = media.partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        raise HTTPException(
            status_code=415,
            detail="the body must be sent as Content-Type: application/json",
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is over ``limit`` bytes (chunked bodies too)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
    return b"".join(parts)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(status_code=413, detail=f"the body is over {limit} bytes")


# orjson writes at most this many levels (its recursion limit): a deeper message could be
# parsed but never stored.
MAX_DEPTH = 255
_INT64 = 2**63


def check_message_value(value: Any, body: bytes) -> None:
    """Raise HTTPException(422) for ``value`` (parsed from ``body``) when the store would not
    keep it as sent: nested deeper than :data:`MAX_DEPTH`, or holding an integer beyond 64 bits
    (orjson parses those as floats: ``2**64`` would silently become ``1.8446744073709552e+19``)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    suspect = False
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise HTTPException(
                    status_code=422,
                    detail=f"the message is nested deeper than {MAX_DEPTH} levels",
                )
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, float) and item.is_integer() and abs(item) >= _INT64:
            suspect = True
    # A big integral float may also have been written as one ("1e20"): only the text tells.
    if suspect and _has_big_int(body):
        raise HTTPException(
            status_code=422,
            detail="the message holds an integer beyond the 64-bit range, which would not be "
            "kept exactly: send it as a string",
        )


def _has_big_int(body: bytes) -> bool:
    found = False

    def integer(text: str) -> int:
        nonlocal found
        number = int(text)
        found = found or not -_INT64 <= number < 2 * _INT64
        return number

    json.loads(body, parse_int=integer)
    return found
