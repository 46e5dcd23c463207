"""What a Durable Streams request asks and how it is refused: the query, the stream name, the
refusals as exceptions (each one answer), the CORS lists."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from starlette.requests import Request

from ..._types import SESSION_ID_RULE, validate_session_id
from .protocol import ProtocolError
from .reads import Page

__all__ = [
    "ALLOWED_HEADERS",
    "CREATE_REFUSALS",
    "EXPOSED",
    "METHODS",
    "Answer",
    "existing",
    "query",
    "stream_id_of",
]

METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"]
EXPOSED = (
    "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, "
    "Stream-Expires-At, ETag, Location, Content-Type, Producer-Epoch, Producer-Seq, "
    "Producer-Expected-Seq, Producer-Received-Seq, stream-sse-data-encoding"
)
ALLOWED_HEADERS = (
    "Content-Type, Authorization, If-None-Match, Stream-TTL, Stream-Expires-At, Stream-Seq, "
    "Stream-Closed, Producer-Id, Producer-Epoch, Producer-Seq, Stream-Forked-From, "
    "Stream-Fork-Offset, Stream-Fork-Sub-Offset"
)


class Answer(Exception):
    """A finished response raised from deep in a handler (a refusal)."""

    def __init__(self, status: int, detail: str = "", headers: Mapping[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


CREATE_REFUSALS = {
    "conflict": (409, "the stream exists with another configuration"),
    "source_not_found": (404, "the fork's source stream does not exist"),
    "source_gone": (409, "the fork's source stream is deleted"),
    "bad_fork_offset": (400, "the fork offset is not a position of the source stream"),
    # The protocol's PUT lists 429 as its one "not now" status; the store frees a place as
    # streams expire or are deleted, so a retry later can succeed.
    "full": (429, "the store holds as many streams as it may (ds_max_streams): none created"),
}


def existing(page: Page | None) -> Page:
    """``page``, or the 404 of a stream that does not exist or the 410 of a deleted one."""
    if page is None:
        raise Answer(404, "stream not found")
    if page.stream.gone:
        raise Answer(410, "stream deleted")
    return page


def stream_id_of(name: str) -> str:
    if name.startswith("__ds"):
        raise Answer(404, "reserved name")
    try:
        return validate_session_id(name)
    except ValueError:
        raise ProtocolError(f"invalid stream name ({SESSION_ID_RULE})") from None


def query(request: Request) -> dict[str, str]:
    """The query parameters; a repeated or empty ``offset``, ``live`` or ``cursor`` is a 400."""
    out: dict[str, str] = {}
    for key, value in parse_qsl(request.url.query, keep_blank_values=True):
        if key in out and key in ("offset", "live", "cursor"):
            raise ProtocolError(f"the {key} parameter is given more than once")
        if key == "offset" and value == "":
            raise ProtocolError("the offset parameter is empty")
        out[key] = value
    return out
