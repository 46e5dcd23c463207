"""HTTP clients of a streamhub app: :class:`StreamClient` (async) and :class:`SyncStreamClient`.

Both follow a session's event stream and reconnect by themselves with their last cursor; both
call the router's status, snapshot, cancel, delete and active endpoints. They only do I/O: the
decisions (URLs, cursors, what an answer or a byte means, how long to wait) are made in
:mod:`.follow` and :mod:`.api`, so the two behave the same by construction.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any, Generic, Self, TypeVar

import anyio

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "fastapi_streamhub.client needs httpx: pip install 'fastapi-streamhub[client]'"
    ) from exc

from .._types import End, SessionInfo, Snapshot, State
from .api import Call, Options
from .follow import Backoff, Follow
from .sse_decode import Item

__all__ = ["ClientStream", "StreamClient", "SyncClientStream", "SyncStreamClient"]

T = TypeVar("T")
H = TypeVar("H", httpx.AsyncClient, httpx.Client)

# Seconds without a byte (the server pings every 15 s by default) before a stream counts as cut.
DEFAULT_READ_TIMEOUT = 45.0
# Connect, write and pool timeouts, and the read timeout of plain requests.
DEFAULT_TIMEOUT = 10.0


class _StreamView(Generic[H]):
    """What a followed stream shows besides its items (shared by the async and sync streams)."""

    def __init__(self, http: H, options: Options, follow: Follow) -> None:
        self._http: H = http
        self._options = options
        self._follow = follow

    @property
    def session_id(self) -> str:
        """The session followed."""
        return self._follow.target.session_id

    @property
    def cursor(self) -> str | None:
        """The last chunk's cursor (``Last-Event-ID`` of the next reconnect), None before any."""
        return self._follow.cursor

    @property
    def metadata(self) -> Any:
        """The session's metadata as last received (None before any)."""
        return self._follow.metadata

    @property
    def end(self) -> End | None:
        """The terminal :class:`End` (state and reason) once received, else None."""
        return self._follow.end

    @property
    def text(self) -> str:
        """The text chunks (no JSON, no named events) since the start or the last reset, joined."""
        return self._follow.text

    @property
    def reconnects(self) -> int:
        """Requests made after the first one."""
        return max(0, self._follow.connections - 1)

    @property
    def retry(self) -> float | None:
        """The server's ``retry:`` in seconds (the backoff's base), None until received."""
        return self._follow.retrier.server_base

    def _request(self) -> dict[str, Any]:
        path, params, headers = self._follow.request()
        options = self._options
        return {
            "method": "GET",
            "url": options.url(path),
            "params": params,
            "headers": headers,
            "timeout": options.stream_timeout,
        }


class ClientStream(_StreamView[httpx.AsyncClient]):
    """The items of one session (:class:`Chunk`, :class:`Metadata`, :class:`Reset`, then one
    :class:`End`), across as many reconnects as it takes.

    Use ``async for item in stream``; ``async with`` (or :meth:`aclose`) releases the connection
    when leaving early. A :class:`Reset` means the replay starts over: drop what was
    accumulated (:attr:`text` does). Raises SessionNotFound, ResponseError, ProtocolError, or
    ReconnectFailed when the backoff's budget is spent.
    """

    def __init__(self, http: httpx.AsyncClient, options: Options, follow: Follow) -> None:
        super().__init__(http, options, follow)
        self._items = self._run()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Item:
        return await self._items.__anext__()

    async def aclose(self) -> None:
        """Stop following and release the connection."""
        await self._items.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[Item, None]:
        follow = self._follow
        for delay in follow.retrier.waits():
            await anyio.sleep(delay)
            try:
                async with self._http.stream(**self._request()) as response:
                    status, headers = response.status_code, response.headers
                    if not follow.accepts(status, headers):
                        follow.refused(status, headers, await response.aread())
                        continue
                    async for data in response.aiter_bytes():
                        for item in follow.feed(data):
                            yield item
                        if follow.end is not None:
                            return
                    for item in follow.closed():
                        yield item
            except httpx.TransportError as exc:
                follow.retrier.failed(exc)
            if follow.end is not None:
                return


class SyncClientStream(_StreamView[httpx.Client]):
    """:class:`ClientStream` for synchronous code: ``for item in stream``, ``with``, :meth:`close`."""

    def __init__(self, http: httpx.Client, options: Options, follow: Follow) -> None:
        super().__init__(http, options, follow)
        self._items = self._run()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Item:
        return next(self._items)

    def close(self) -> None:
        """Stop following and release the connection."""
        self._items.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> Generator[Item, None, None]:
        follow = self._follow
        for delay in follow.retrier.waits():
            time.sleep(delay)
            try:
                with self._http.stream(**self._request()) as response:
                    status, headers = response.status_code, response.headers
                    if not follow.accepts(status, headers):
                        follow.refused(status, headers, response.read())
                        continue
                    for data in response.iter_bytes():
                        yield from follow.feed(data)
                        if follow.end is not None:
                            return
                    yield from follow.closed()
            except httpx.TransportError as exc:
                follow.retrier.failed(exc)
            if follow.end is not None:
                return


class _Client(Generic[H]):
    """Options and the httpx client, shared by the async and the sync client."""

    def __init__(
        self,
        base_url: str,
        *,
        httpx_client: H | None = None,
        prefix: str = "/streams",
        backoff: Backoff | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._options = Options(base_url, prefix, backoff, read_timeout, timeout)
        self._owned = httpx_client is None
        self._http: H = httpx_client if httpx_client is not None else self._new_http(timeout)

    def _new_http(self, timeout: float) -> H:
        raise NotImplementedError

    def _send(self, call: Call[Any]) -> dict[str, Any]:
        return {
            "method": call.method,
            "url": self._options.url(call.path),
            "params": call.params,
            "json": call.json,
            "timeout": call.timeout or self._options.timeout,
        }


class StreamClient(_Client[httpx.AsyncClient]):
    """Async client of a streamhub app: follow streams, read status and snapshots, cancel.

    ``StreamClient("http://127.0.0.1:8000")`` talks to the router mounted at ``prefix``
    (default ``/streams``). Pass ``httpx_client=`` to bring your own ``httpx.AsyncClient``
    (headers, auth, TLS, proxies); the client then leaves closing it to you. ``backoff``
    bounds the reconnects and retries (:class:`Backoff`); ``read_timeout`` is how long a stream
    may stay silent (the server pings every 15 s) before it counts as cut; ``timeout`` bounds
    connecting and plain requests. Every call retries connection errors and 5xx/429 answers
    within the backoff's budget.
    """

    def _new_http(self, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the httpx client if this client created it."""
        if self._owned:
            await self._http.aclose()

    def stream(
        self,
        session_id: str,
        *,
        after: str | None = None,
        conversation: bool = False,
        turns: bool = False,
    ) -> ClientStream:
        """Follow ``GET {prefix}/{session_id}`` from the start, or after the cursor ``after``.

        ``conversation=True`` follows the session across its generations (a chat's turns)
        until the caller stops: each generation comes between a :class:`GenerationStart` and a
        :class:`GenerationEnd` item, and reconnects resume across turns. ``turns=True``
        (``?follow=turns``) yields those two items only, no chunk nor metadata: for code that
        reads each answer by itself and needs to learn of new turns.
        """
        follow = self._options.follow(session_id, after, conversation, turns)
        return ClientStream(self._http, self._options, follow)

    def start(
        self, path: str, params: Any = None, *, session_id: str | None = None
    ) -> ClientStream:
        """``GET path?params`` on an app route that returns ResumableStreamingResponse (which
        starts the producer or joins it), then reconnect to ``{prefix}/{session_id}``.

        ``session_id`` defaults to the last segment of ``path`` (``/chat/s1`` → ``s1``).
        """
        follow = self._options.start(path, params, session_id)
        return ClientStream(self._http, self._options, follow)

    async def status(self, session_id: str) -> SessionInfo:
        """The session's record; SessionNotFound when unknown."""
        return await self._call(self._options.status(session_id))

    async def snapshot(self, session_id: str) -> Snapshot:
        """The whole output so far in one answer; SessionNotFound when unknown."""
        return await self._call(self._options.snapshot(session_id))

    async def cancel(self, session_id: str, wait: float | None = None) -> State:
        """Stop the session's producer; with ``wait`` (≤ 60 s), the final state once it ends."""
        return await self._call(self._options.cancel(session_id, wait))

    async def delete(self, session_id: str) -> None:
        """Stop the producer and remove everything stored for the session."""
        await self._call(self._options.delete(session_id))

    async def active(self, session_ids: Sequence[str]) -> list[str]:
        """The ids among ``session_ids`` whose producer is running."""
        return await self._call(self._options.active(session_ids))

    async def _call(self, call: Call[T]) -> T:
        retrier = self._options.retrier(call.what)
        for delay in retrier.waits():
            await anyio.sleep(delay)
            try:
                response = await self._http.request(**self._send(call))
            except httpx.TransportError as exc:
                retrier.failed(exc)
                continue
            if response.is_success:
                return call.result(response.content)
            retrier.answered(
                response.status_code, response.headers, response.content, not_found=True
            )
        raise AssertionError("unreachable: waits() ends by raising")


class SyncStreamClient(_Client[httpx.Client]):
    """:class:`StreamClient` for synchronous code (scripts, notebooks): the same methods,
    blocking, on an ``httpx.Client`` (``httpx_client=``); streams are plain iterators. No
    thread and no event loop run behind it."""

    def _new_http(self, timeout: float) -> httpx.Client:
        return httpx.Client(timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the httpx client if this client created it."""
        if self._owned:
            self._http.close()

    def stream(
        self,
        session_id: str,
        *,
        after: str | None = None,
        conversation: bool = False,
        turns: bool = False,
    ) -> SyncClientStream:
        """See :meth:`StreamClient.stream`."""
        follow = self._options.follow(session_id, after, conversation, turns)
        return SyncClientStream(self._http, self._options, follow)

    def start(
        self, path: str, params: Any = None, *, session_id: str | None = None
    ) -> SyncClientStream:
        """See :meth:`StreamClient.start`."""
        follow = self._options.start(path, params, session_id)
        return SyncClientStream(self._http, self._options, follow)

    def status(self, session_id: str) -> SessionInfo:
        """See :meth:`StreamClient.status`."""
        return self._call(self._options.status(session_id))

    def snapshot(self, session_id: str) -> Snapshot:
        """See :meth:`StreamClient.snapshot`."""
        return self._call(self._options.snapshot(session_id))

    def cancel(self, session_id: str, wait: float | None = None) -> State:
        """See :meth:`StreamClient.cancel`."""
        return self._call(self._options.cancel(session_id, wait))

    def delete(self, session_id: str) -> None:
        """See :meth:`StreamClient.delete`."""
        self._call(self._options.delete(session_id))

    def active(self, session_ids: Sequence[str]) -> list[str]:
        """See :meth:`StreamClient.active`."""
        return self._call(self._options.active(session_ids))

    def _call(self, call: Call[T]) -> T:
        retrier = self._options.retrier(call.what)
        for delay in retrier.waits():
            time.sleep(delay)
            try:
                response = self._http.request(**self._send(call))
            except httpx.TransportError as exc:
                retrier.failed(exc)
                continue
            if response.is_success:
                return call.result(response.content)
            retrier.answered(
                response.status_code, response.headers, response.content, not_found=True
            )
        raise AssertionError("unreachable: waits() ends by raising")
