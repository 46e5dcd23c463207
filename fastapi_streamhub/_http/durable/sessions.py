"""Our own sessions seen through the Durable Streams protocol, read-only
(``create_durable_streams_router(sessions_view=True)``).

A session is an ``application/json`` stream: each chunk one message (text as a JSON string, a
JSON value as it is, a named event as ``{"event", "data"}``), open while its generation is
active, closed once it ended. Its offsets are ``<generation>_<chunks>`` (both 16 digits), so an
offset of an earlier generation is recognised and answered 410. Catch-up reads are the log's
pages; long-poll and SSE follow the session with ``hub.subscribe`` (its replay-to-live hand-off,
gap repair and lease expiry included).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..._hub import StreamHub
from ..._types import Batch, Chunk, Cursor, End, Reset, SessionInfo
from .protocol import (
    control_event,
    data_event,
    etag,
    format_offset,
    join_json,
    parse_epoch_offset,
)
from .requests import Answer, query

__all__ = [
    "SessionPage",
    "ViewHost",
    "answer_session",
    "session_page",
    "session_sse",
    "session_start",
    "session_wait",
]

_JSON = "application/json"


def chunk_message(chunk: Chunk) -> bytes:
    """A chunk as one stored JSON message (compact, ``\\n``-terminated)."""
    value = chunk.data if chunk.event is None else {"event": chunk.event, "data": chunk.data}
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class SessionPage:
    """Chunks ``start + 1 .. end`` of ``generation`` as JSON messages."""

    generation: int
    start: int
    end: int
    messages: bytes
    up_to_date: bool
    closed: bool

    @property
    def next_offset(self) -> str:
        """The offset token after this page."""
        return format_offset(self.end, self.generation)


def session_start(info: SessionInfo, offset: str | None) -> int:
    """The chunk count an ``offset`` parameter asks for in the session's current generation
    (400 for a malformed one, 410 for one of another generation or past its end)."""
    position = parse_epoch_offset(offset)
    if position is None:
        return info.chunks
    generation, chunks = position
    if generation == 0 and chunks == 0:
        return 0
    if generation != info.generation or chunks > info.chunks:
        raise Answer(410, "the offset is of another generation of this session")
    return chunks


async def session_page(hub: StreamHub, info: SessionInfo, start: int, count: int) -> SessionPage:
    """What the log holds after chunk ``start`` (up to ``count`` chunks), without waiting."""
    result = await hub.backend.read(info.session_id, (info.generation, start), count)
    chunks = [c for c in result.chunks if c.cursor.generation == info.generation]
    end = chunks[-1].cursor.offset if chunks else start
    up_to_date = not result.more
    closed = result.end is not None and up_to_date
    messages = b"".join(chunk_message(c) for c in chunks)
    return SessionPage(info.generation, start, end, messages, up_to_date, closed)


async def _live_pages(
    hub: StreamHub, info: SessionInfo, start: int, seconds: float
) -> AsyncGenerator[SessionPage]:
    """Pages of the chunks after ``start`` as they arrive, for ``seconds``; a last closed
    page when the generation ends. A new generation is a 410 (the offsets are gone)."""
    generation, position = info.generation, start
    subscription = hub.subscribe(
        info.session_id, Cursor(generation, start), batch=True, batch_replay=True
    )
    async with subscription:
        with anyio.move_on_after(seconds):
            async for item in subscription:
                chunks = _chunks_of(item)
                if chunks:
                    end = chunks[-1].cursor.offset
                    messages = b"".join(chunk_message(c) for c in chunks)
                    yield SessionPage(generation, position, end, messages, True, False)
                    position = end
                elif isinstance(item, End):
                    yield SessionPage(generation, position, position, b"", True, True)
                    return
                elif isinstance(item, Reset):
                    raise Answer(410, "the session started another generation")


async def session_wait(
    hub: StreamHub, info: SessionInfo, start: int, seconds: float
) -> SessionPage:
    """The first chunks after ``start`` to arrive within ``seconds`` (an empty page when none
    did; closed when the generation ended)."""
    pages = _live_pages(hub, info, start, seconds)
    try:
        async for page in pages:
            return page
    finally:
        await pages.aclose()
    return SessionPage(info.generation, start, start, b"", True, False)


def _chunks_of(item: object) -> tuple[Chunk, ...]:
    if isinstance(item, Batch):
        return item.chunks
    if isinstance(item, Chunk):
        return (item,)
    return ()


async def session_sse(
    hub: StreamHub,
    info: SessionInfo,
    start: int,
    count: int,
    reconnect_after: float,
    cursor: Callable[[], str],
) -> AsyncIterator[bytes]:
    """The SSE events of a session from chunk ``start``: the stored pages, then live batches,
    until the generation ends (a final control event) or ``reconnect_after`` seconds."""
    position = start
    sent = False
    while True:
        page = await session_page(hub, info, position, count)
        if page.messages or page.closed or not sent:
            data = data_event(page.messages, _JSON) if page.messages else b""
            yield data + control_event(
                page.next_offset, cursor(), up_to_date=page.up_to_date, closed=page.closed
            )
            sent = True
        position = page.end
        if page.closed:
            return
        if page.up_to_date:
            break
    pages = _live_pages(hub, info, position, reconnect_after)
    try:
        async for page in pages:
            data = data_event(page.messages, _JSON) if page.messages else b""
            live_cursor = None if page.closed else cursor()
            yield data + control_event(
                page.next_offset, live_cursor, up_to_date=True, closed=page.closed
            )
    except Answer:
        return  # a new generation: the client's next request gets the 410
    finally:
        await pages.aclose()


class ViewHost(Protocol):
    """What the session view needs of the router's endpoint."""

    max_read_bytes: int
    long_poll_timeout: float
    sse_reconnect_after: float
    cache_control: str
    common: dict[str, str]

    def response(
        self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response: ...

    def cursor(self, client: str | None) -> str: ...


# A page of a catch-up read: chunks are short (LLM tokens); the byte cap of the stream reads
# does not apply, the count bounds the answer.
_PAGE = 1000


async def answer_session(
    host: ViewHost, request: Request, hub: StreamHub, method: str, session_id: str
) -> Response:
    """Answer a request on one of our sessions, read-only; 404 when there is none."""
    info = await hub.status(session_id)
    if info is None:
        raise Answer(404, "stream not found")
    if method not in ("GET", "HEAD"):
        raise Answer(405, "a session is read-only here", {"Allow": "GET, HEAD"})
    closed = {"Stream-Closed": "true"} if info.state.finished else {}
    if method == "HEAD":
        return host.response(
            200,
            headers={
                "Content-Type": _JSON,
                "Stream-Next-Offset": format_offset(info.chunks, info.generation),
                "Cache-Control": "no-store",
                **closed,
            },
        )
    params = query(request)
    live = params.get("live")
    if live not in (None, "long-poll", "sse"):
        raise Answer(400, f"unknown live mode {live!r}")
    start = session_start(info, params.get("offset"))
    client_cursor = params.get("cursor")
    if live == "sse":
        body = session_sse(
            hub,
            info,
            start,
            _PAGE,
            host.sse_reconnect_after,
            lambda: host.cursor(client_cursor),
        )
        headers = {
            **host.common,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
        return StreamingResponse(body, status_code=200, headers=headers)
    at_now = params.get("offset") == "now"
    page = (
        SessionPage(info.generation, start, start, b"", True, info.state.finished)
        if at_now and live is None
        else await session_page(hub, info, start, _PAGE)
    )
    if live == "long-poll" and not page.messages:
        if not page.closed:
            page = await session_wait(hub, info, start, host.long_poll_timeout)
        if not page.messages:
            return host.response(
                204,
                headers={
                    "Stream-Next-Offset": page.next_offset,
                    "Stream-Up-To-Date": "true",
                    "Stream-Cursor": host.cursor(client_cursor),
                    **({"Stream-Closed": "true"} if page.closed else {}),
                },
            )
    out = {
        "Content-Type": _JSON,
        "Stream-Next-Offset": page.next_offset,
        "Cache-Control": "no-store" if at_now else host.cache_control,
    }
    if page.up_to_date:
        out["Stream-Up-To-Date"] = "true"
        if page.closed:
            out["Stream-Closed"] = "true"
    if live is not None or at_now:
        out["Stream-Cursor"] = host.cursor(client_cursor)
    if not at_now:
        tag = etag(f"{session_id}@{info.generation}", start, page.end, page.closed)
        out["ETag"] = tag
        if live is None and request.headers.get("if-none-match") == tag:
            return host.response(304, headers={"ETag": tag})
    return host.response(200, join_json(page.messages), out)
