"""How the SSE responses and their errors are described in an app's OpenAPI document.

FastAPI documents a route's main answer with the media type of its ``response_class`` and,
for a class that is not a ``JSONResponse``, the schema ``{"type": "string"}``. Two things
need more than that for an event stream:

- its errors are JSON (``{"detail": ...}``), sent before any event; FastAPI would list an
  additional response's ``model`` under the route's own media type, ``text/event-stream``;
- a reader of the document (schemathesis, a client generator) reads the ``schema`` of a
  ``text/event-stream`` body in an OpenAPI 3.0/3.1 document as the schema of *each event*
  (``data``, ``event``, ``id``, ``retry``), not of the whole body as a string.

The dicts built here are meant for a route's ``responses=``; FastAPI merges them into what it
generates (the event schema replaces the ``string`` one key by key).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["ERROR_SCHEMA", "SSE_EVENT_SCHEMA", "json_error", "sse_responses"]

# One event as an SSE parser hands it over (the WHATWG field names).
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One event of the stream. `data`: the event's data lines joined by LF; "
    "`event`: its type (`message` when unnamed; `metadata`, `reset`, `end`, `json`, `part` or a "
    "name the producer chose); `id`: the cursor to resume from; `retry`: the reconnection delay "
    "in milliseconds (sent once, first).",
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
    "required": ["data"],
}

# Inline rather than a $ref: a document may hold an SSE route and none of the router's JSON
# routes, which are what registers ``ErrorOut`` among its components.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ErrorOut",
    "properties": {"detail": {"title": "Detail"}},
    "required": ["detail"],
}


def json_error(description: str) -> dict[str, Any]:
    """An error answer documented as the JSON ``{"detail": ...}`` it is, whatever the route's
    own media type."""
    return {
        "description": description,
        "content": {"application/json": {"schema": copy.deepcopy(ERROR_SCHEMA)}},
    }


def sse_responses(description: str, errors: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of an SSE route: the event stream (200), then each JSON error."""
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": description,
            "content": {"text/event-stream": {"schema": copy.deepcopy(SSE_EVENT_SCHEMA)}},
        }
    }
    for status, why in sorted(errors.items()):
        responses[status] = json_error(why)
    return responses
