"""The browser helper, ``static/streamhub.js``, as the router serves it.

It is served at ``{prefix}/~/streamhub.js``: ``~`` is not a session id character, so the path
can never be taken for ``GET /{sid}`` or ``/{sid}/status``, and no session id is shadowed. The
file is package data too (``importlib.resources.files("fastapi_streamhub") / "static"``), for
apps that would rather serve it themselves.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["MODULE_PATH", "module_response"]

MODULE_PATH = "/~/streamhub.js"
# The URL does not change with the library's version: browsers revalidate every time (a 304
# when unchanged), so an upgrade is never hidden behind a cached copy.
_CACHE_CONTROL = "no-cache"


@functools.cache
def _module() -> tuple[bytes, str]:
    body = (resources.files("fastapi_streamhub") / "static" / "streamhub.js").read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def module_response(request: Request) -> Response:
    """The module with ``text/javascript``, its ETag, and 304 when the client has it already."""
    body, etag = _module()
    headers = {
        "cache-control": _CACHE_CONTROL,
        "etag": etag,
        "x-content-type-options": "nosniff",
    }
    tags = request.headers.get("if-none-match", "")
    if etag in (t.strip().removeprefix("W/") for t in tags.split(",")) or tags.strip() == "*":
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)
