"""``create_durable_streams_router``: the Durable Streams protocol over the hub's backend.

One catch-all route per stream URL parses each request by hand, so that every refusal is the
protocol's status (400, not FastAPI's 422) and every answer, errors included, carries the
browser security headers and exact content types.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.datastructures import Headers
from starlette.responses import Response, StreamingResponse

from ..._budget import request_bound
from ..._errors import BackendUnavailable
from ...backends._ds import DsAppend, DsFork, DsOutcome, DsSpec, DsStream, media_type
from ...backends.base import Backend
from ..deps import get_hub_from
from ..errors import UNAVAILABLE, Authorize, authorize_or_raise
from .protocol import (
    ProtocolError,
    etag,
    format_offset,
    is_binary,
    is_json,
    join_json,
    json_messages,
    normalize_type,
    parse_closed,
    parse_expires_at,
    parse_offset,
    parse_producer,
    parse_sub_offset,
    parse_ttl,
    stream_cursor,
)
from .reads import Change, Page, read_page, sse_body
from .requests import (
    ALLOWED_HEADERS,
    CREATE_REFUSALS,
    EXPOSED,
    METHODS,
    Answer,
    existing,
    query,
    stream_id_of,
)
from .sessions import answer_session

__all__ = ["DurableStreams"]


class DurableStreams:
    """The endpoint of every stream URL under one router's prefix."""

    def __init__(
        self,
        *,
        prefix: str,
        authorize: Authorize | None,
        sessions_view: bool,
        max_live_readers: int,
        long_poll_timeout: float,
        sse_reconnect_after: float,
        max_append_bytes: int,
        max_read_bytes: int,
        cache_control: str,
        allow_origin: str,
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.sessions_view = sessions_view
        self.max_live_readers = max_live_readers
        self.live: dict[str, int] = {}
        self.authorize = authorize
        self.long_poll_timeout = long_poll_timeout
        self.sse_reconnect_after = sse_reconnect_after
        self.max_append_bytes = max_append_bytes
        self.max_read_bytes = max_read_bytes
        self.cache_control = cache_control
        self.common = {
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "cross-origin",
            "Access-Control-Allow-Origin": allow_origin,
            "Access-Control-Expose-Headers": EXPOSED,
        }

    def response(
        self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        """An answer with the headers every answer carries."""
        return Response(body, status_code=status, headers={**self.common, **(headers or {})})

    def error(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
        """A refusal: ``detail`` as plain text (none for 204 and 304)."""
        body = detail.encode() if status not in (204, 304) and detail else b""
        extra = {"Content-Type": "text/plain"} if body else {}
        return self.response(status, body, {**extra, **(headers or {})})

    async def __call__(self, request: Request, name: str) -> Response:
        """Answer one request on the stream ``name``."""
        method = request.method
        if method == "OPTIONS":
            return self.response(
                204,
                headers={
                    "Access-Control-Allow-Methods": ", ".join(METHODS),
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                    "Access-Control-Max-Age": "86400",
                },
            )
        hub = get_hub_from(request)
        # Store calls while a request waits retry request_timeout at most (503 then).
        with request_bound(hub.settings.request_timeout):
            return await self._answer(request, method, name, hub.backend)

    async def _answer(self, request: Request, method: str, name: str, backend: Backend) -> Response:
        stream_id: str | None = None
        try:
            stream_id = stream_id_of(name)
            action = {"GET": "read", "HEAD": "head", "PUT": "create", "POST": "append"}.get(
                method, "delete"
            )
            if self.authorize is not None:
                await authorize_or_raise(self.authorize, request, stream_id, action)
            if method == "PUT":
                return await self._create(request, backend, stream_id)
            if method == "POST":
                return await self._append(request, backend, stream_id)
            if method == "DELETE":
                deleted = await backend.ds_delete(stream_id)
                if deleted == "not_found":
                    raise Answer(404, "stream not found")
                if deleted == "gone":
                    return self.error(410, "stream deleted")
                return self.response(204)
            if method == "HEAD":
                return await self._head(backend, stream_id)
            return await self._read(request, backend, stream_id)
        except ProtocolError as exc:
            return self.error(exc.status, str(exc))
        except Answer as exc:
            if exc.status == 404 and self.sessions_view and method != "PUT" and stream_id:
                return await self._session(request, method, stream_id)
            return self.error(exc.status, exc.detail, exc.headers)
        except HTTPException as exc:
            return self.error(exc.status_code, str(exc.detail), exc.headers)
        except BackendUnavailable:
            return self.error(503, UNAVAILABLE, {"Retry-After": "2"})
        except NotImplementedError as exc:
            # A third-party backend without the ds_* methods: the protocol's "not supported".
            return self.error(501, str(exc))

    async def _session(self, request: Request, method: str, stream_id: str) -> Response:
        """A request on a name that is no stream: our session of that id, read-only."""
        try:
            return await answer_session(self, request, get_hub_from(request), method, stream_id)
        except ProtocolError as exc:
            return self.error(exc.status, str(exc))
        except Answer as exc:
            return self.error(exc.status, exc.detail, exc.headers)
        except BackendUnavailable:
            return self.error(503, UNAVAILABLE, {"Retry-After": "2"})

    # -- writes --------------------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_append_bytes:
            raise Answer(413, f"body over {self.max_append_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_append_bytes:
                raise Answer(413, f"body over {self.max_append_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _stream_headers(self, stream: DsStream) -> dict[str, str]:
        headers = {
            "Content-Type": stream.spec.content_type,
            "Stream-Next-Offset": format_offset(stream.tail),
        }
        if stream.closed:
            headers["Stream-Closed"] = "true"
        return headers

    def _fork(self, headers: Headers) -> tuple[DsFork | None, str | None]:
        """The fork a PUT asks for (and its origin as compared for idempotency), or None."""
        source, offset_text = headers.get("stream-forked-from"), headers.get("stream-fork-offset")
        sub_text = headers.get("stream-fork-sub-offset")
        if source is None:
            if sub_text is not None or offset_text is not None:
                raise ProtocolError("fork offsets need Stream-Forked-From")
            return None, None
        path = urlsplit(source.strip()).path
        if not path.startswith(self.prefix + "/"):
            raise ProtocolError(f"Stream-Forked-From must be a stream under {self.prefix}/")
        source_id = stream_id_of(path[len(self.prefix) + 1 :])
        sub = parse_sub_offset(sub_text.strip()) if sub_text is not None else 0
        if sub and offset_text is None:
            raise ProtocolError("Stream-Fork-Sub-Offset needs Stream-Fork-Offset")
        offset = parse_offset(offset_text.strip()) if offset_text is not None else None
        origin = f"{source_id}:{'' if offset is None else offset}:{sub}"
        return DsFork(source_id, offset, sub), origin

    async def _create(self, request: Request, backend: Backend, stream_id: str) -> Response:
        headers = request.headers
        fork, origin = self._fork(headers)
        raw_type = headers.get("content-type")
        # A fork without a type takes its source's ("" asks the store to).
        content_type = "" if fork is not None and not raw_type else normalize_type(raw_type)
        ttl_text, expires_text = headers.get("stream-ttl"), headers.get("stream-expires-at")
        if ttl_text is not None and expires_text is not None:
            raise ProtocolError("Stream-TTL and Stream-Expires-At exclude each other")
        ttl = parse_ttl(ttl_text) if ttl_text is not None else None
        expires_ms = parse_expires_at(expires_text) if expires_text is not None else None
        spec = DsSpec(
            content_type,
            ttl,
            expires_text.strip() if expires_text is not None else None,
            expires_ms,
            parse_closed(headers.get("stream-closed")),
            origin,
        )
        body = await self._body(request)
        json_body = is_json(content_type)
        if fork is not None and not content_type and body:
            # The fork's type is its source's: frame the initial body as that type.
            source = await backend.ds_read(fork.source, 0, 0, touch=False)
            json_body = source is not None and is_json(source[0].spec.content_type)
        data = json_messages(body, allow_empty=True) if body and json_body else body
        created = await backend.ds_create(stream_id, spec, data, fork)
        refusal = CREATE_REFUSALS.get(created.outcome)
        if refusal is not None:
            raise Answer(*refusal)
        assert created.stream is not None
        out = self._stream_headers(created.stream)
        if created.outcome == "created":
            out["Location"] = str(request.url.replace(query=""))
        return self.response(201 if created.outcome == "created" else 200, headers=out)

    async def _append(self, request: Request, backend: Backend, stream_id: str) -> Response:
        headers = request.headers
        close = parse_closed(headers.get("stream-closed"))
        producer = parse_producer(
            headers.get("producer-id"), headers.get("producer-epoch"), headers.get("producer-seq")
        )
        body = await self._body(request)
        raw_type = headers.get("content-type")
        if not body:
            if not close:
                raise ProtocolError("an append needs a body (or Stream-Closed: true)")
            content_type = None
            data = b""
        else:
            if raw_type is None or not raw_type.strip():
                raise ProtocolError("an append needs a Content-Type")
            content_type = media_type(raw_type)
            data = json_messages(body, allow_empty=False) if is_json(content_type) else body
        result = await backend.ds_append(
            stream_id,
            DsAppend(data, content_type, headers.get("stream-seq") or None, producer, close),
        )
        outcome, stream = result.outcome, result.stream
        if stream is None:
            raise Answer(404, "stream not found")
        out = {"Stream-Next-Offset": format_offset(stream.tail)}
        if stream.closed:
            out["Stream-Closed"] = "true"
        if producer is not None:
            out["Producer-Epoch"] = str(result.epoch)
        if outcome is DsOutcome.APPENDED or outcome is DsOutcome.DUPLICATE:
            if producer is not None:
                out["Producer-Seq"] = str(result.seq)
            # 200 tells a producer its batch was new; a duplicate or a close alone is 204.
            fresh = producer is not None and outcome is DsOutcome.APPENDED and data
            status = 200 if fresh else 204
            return self.response(status, headers=out)
        if outcome is DsOutcome.GONE:
            return self.error(410, "stream deleted")
        if outcome is DsOutcome.STALE_EPOCH:
            return self.error(403, "stale producer epoch", out)
        if outcome is DsOutcome.BAD_EPOCH_SEQ:
            return self.error(400, "a new producer epoch starts at Producer-Seq 0", out)
        if outcome is DsOutcome.SEQ_GAP:
            assert producer is not None
            out["Producer-Expected-Seq"] = str(result.seq)
            out["Producer-Received-Seq"] = str(producer.seq)
            return self.error(409, "producer sequence gap", out)
        if outcome is DsOutcome.CLOSED:
            out["Stream-Closed"] = "true"
            return self.error(409, "the stream is closed", out)
        if outcome is DsOutcome.TYPE_MISMATCH:
            return self.error(409, "content type does not match the stream's", out)
        return self.error(409, "Stream-Seq must increase", out)

    # -- reads ---------------------------------------------------------------------------

    async def _head(self, backend: Backend, stream_id: str) -> Response:
        answer = await backend.ds_read(stream_id, 0, 0, touch=False)
        if answer is None:
            raise Answer(404, "stream not found")
        stream = answer[0]
        if stream.gone:
            return self.error(410, "stream deleted")
        out = {**self._stream_headers(stream), "Cache-Control": "no-store"}
        if stream.spec.ttl is not None:
            out["Stream-TTL"] = str(stream.spec.ttl)
        if stream.spec.expires_at is not None:
            out["Stream-Expires-At"] = stream.spec.expires_at
        return self.response(200, headers=out)

    def cursor(self, client: str | None) -> str:
        """A ``Stream-Cursor`` for a live answer to a client that echoed ``client``."""
        return stream_cursor(time.time(), client)

    async def _read(self, request: Request, backend: Backend, stream_id: str) -> Response:
        params = query(request)
        live = params.get("live")
        if live not in (None, "long-poll", "sse"):
            raise ProtocolError(f"unknown live mode {live!r}")
        if live is not None and "offset" not in params:
            raise ProtocolError("live reads need an offset")
        try:
            start = parse_offset(params.get("offset"))
        except ProtocolError:
            # A stream that does not exist is a 404 whatever the offset (and, with the sessions
            # view, may be a session, whose offsets carry a generation).
            existing(await read_page(backend, stream_id, 0, 0, touch=False))
            raise
        cursor = params.get("cursor")
        if live == "sse":
            return await self._sse(backend, stream_id, start, cursor)
        if start is None:
            page = existing(await read_page(backend, stream_id, 0, 0))
            start = page.stream.tail
            if live is None:
                return self._page(stream_id, Page(page.stream, start, start, b""), None, True)
        page = await self._page_at(backend, stream_id, start)
        if live == "long-poll" and not page.data:
            if page.stream.closed:
                return self._empty_poll(page, cursor)
            page = await self._poll(backend, stream_id, start, page)
            if not page.data:
                return self._empty_poll(page, cursor)
        if live is None:
            tag = etag(stream_id, start, page.end, page.stream.closed and page.up_to_date)
            if request.headers.get("if-none-match") == tag:
                return self.response(304, headers={"ETag": tag})
        return self._page(stream_id, page, cursor, False, live is not None)

    async def _page_at(self, backend: Backend, stream_id: str, start: int) -> Page:
        page = existing(await read_page(backend, stream_id, start, self.max_read_bytes))
        if start > page.stream.tail:
            raise ProtocolError("offset beyond the end of the stream")
        return page

    def take_live_slot(self, stream_id: str) -> None:
        """Count one more live reader (long-poll, SSE) of ``stream_id`` here: 429 over the
        limit. Each taken slot is given back with :meth:`give_live_slot`."""
        count = self.live.get(stream_id, 0)
        if count >= self.max_live_readers:
            raise Answer(429, f"{count} live readers of this stream already wait here")
        self.live[stream_id] = count + 1

    def give_live_slot(self, stream_id: str) -> None:
        """One live reader of ``stream_id`` is done."""
        left = self.live[stream_id] - 1
        if left:
            self.live[stream_id] = left
        else:
            del self.live[stream_id]

    async def _poll(self, backend: Backend, stream_id: str, start: int, first: Page) -> Page:
        change = Change()
        self.take_live_slot(stream_id)
        try:
            async with backend.listen(stream_id, change.listener):
                page = await self._page_at(backend, stream_id, start)
                deadline = time.monotonic() + self.long_poll_timeout
                while not page.data and not page.stream.closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not await change.wait(remaining):
                        break
                    change.reset()
                    page = await self._page_at(backend, stream_id, start)
        finally:
            self.give_live_slot(stream_id)
        return page

    def _empty_poll(self, page: Page, client_cursor: str | None) -> Response:
        out = {
            "Stream-Next-Offset": format_offset(page.end),
            "Stream-Up-To-Date": "true",
            "Stream-Cursor": self.cursor(client_cursor),
        }
        if page.stream.closed:
            out["Stream-Closed"] = "true"
        return self.response(204, headers=out)

    def _page(
        self,
        stream_id: str,
        page: Page,
        client_cursor: str | None,
        at_now: bool,
        live: bool = False,
    ) -> Response:
        stream = page.stream
        content_type = stream.spec.content_type
        body = join_json(page.data) if is_json(content_type) else page.data
        out: dict[str, str] = {
            "Content-Type": content_type,
            "Stream-Next-Offset": format_offset(page.end),
            "Cache-Control": "no-store" if at_now else self.cache_control,
        }
        if page.up_to_date:
            out["Stream-Up-To-Date"] = "true"
            if stream.closed:
                out["Stream-Closed"] = "true"
        if not at_now:
            out["ETag"] = etag(stream_id, page.start, page.end, stream.closed and page.up_to_date)
        if live or at_now:
            out["Stream-Cursor"] = self.cursor(client_cursor)
        return self.response(200, body, out)

    async def _sse(
        self, backend: Backend, stream_id: str, start: int | None, client_cursor: str | None
    ) -> Response:
        page = existing(await read_page(backend, stream_id, 0, 0))
        content_type = page.stream.spec.content_type
        if start is not None and start > page.stream.tail:
            raise ProtocolError("offset beyond the end of the stream")
        out = {
            **self.common,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
        if is_binary(content_type):
            out["stream-sse-data-encoding"] = "base64"
        body = sse_body(
            backend,
            stream_id,
            start,
            self.max_read_bytes,
            self.sse_reconnect_after,
            lambda: self.cursor(client_cursor),
        )
        self.take_live_slot(stream_id)  # refuses (429) before the answer starts

        async def counted() -> AsyncIterator[bytes]:
            try:
                async for event in body:
                    yield event
            finally:
                self.give_live_slot(stream_id)

        return StreamingResponse(counted(), status_code=200, headers=out)
