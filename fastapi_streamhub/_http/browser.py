"""The browser modules of ``static/`` as the router serves them: the helper ``streamhub.js``
and ``chat-transport.js`` (the AI SDK chat transport whose stop() cancels).

They are served at ``{prefix}/~/streamhub.js`` and ``{prefix}/~/chat-transport.js``: ``~`` is
not a session id character, so the path can never be taken for ``GET /{sid}`` or
``/{sid}/status``, and no session id is shadowed. The files are package data too
(``importlib.resources.files("fastapi_streamhub") / "static"``), for apps that would rather
serve them themselves.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["MODULE_PATH", "TRANSPORT_PATH", "module_response", "transport_response"]

MODULE_PATH = "/~/streamhub.js"
TRANSPORT_PATH = "/~/chat-transport.js"
# The URL does not change with the library's version: browsers revalidate every time (a 304
# when unchanged), so an upgrade is never hidden behind a cached copy.
_CACHE_CONTROL = "no-cache"


@functools.cache
def _module(name: str) -> tuple[bytes, str]:
    body = (resources.files("fastapi_streamhub") / "static" / name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def module_response(request: Request) -> Response:
    """``streamhub.js``; see :func:`_serve`."""
    return _serve(request, "streamhub.js")


def transport_response(request: Request) -> Response:
    """``chat-transport.js``; see :func:`_serve`."""
    return _serve(request, "chat-transport.js")


def _serve(request: Request, name: str) -> Response:
    """The module with ``text/javascript``, its ETag, and 304 when the client has it already."""
    body, etag = _module(name)
    headers = {
        "cache-control": _CACHE_CONTROL,
        "etag": etag,
        "x-content-type-options": "nosniff",
    }
    tags = request.headers.get("if-none-match", "")
    if etag in (t.strip().removeprefix("W/") for t in tags.split(",")) or tags.strip() == "*":
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)
