"""ResumableStreamingResponse, and the SSE response that follows a session for one client."""

from __future__ import annotations

import logging
import typing
from collections.abc import AsyncIterable, Mapping
from typing import Any, ClassVar, Literal

import anyio
import anyio.lowlevel
from fastapi import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._budget import request_bound
from .._codec import ChunksMsg
from .._errors import (
    BackendUnavailable,
    SessionNotFound,
    StreamClosed,
    StreamHubError,
)
from .._finish import FinishHook
from .._hub import StreamHub
from .._outflow import WRITE_SIZE, OutBuffer
from .._producer import Producer
from .._runner import GeneratorFactory, close_unused, run_factory, run_generator
from .._subscriber import Subscription
from .._types import Cursor, End, Item, State, validate_session_id, validate_turn
from .aisdk import UI_MESSAGE_STREAM_HEADERS, UIMessageStreamEncoder
from .conversation import feed_conversation
from .deps import get_hub_from
from .errors import (
    UNAVAILABLE,
    Authorize,
    authorize_or_raise,
    json_error,
)
from .openapi import sse_responses
from .sse import PING, encode_item, encode_retry, encode_stored, parse_last_event_id

__all__ = ["Follow", "ResumableStreamingResponse", "SessionStreamResponse", "StreamProtocol"]

log = logging.getLogger("fastapi_streamhub")

SSE_HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}

# "sse": the wire format of ``sse.py``; "ai-sdk": the Vercel AI SDK's UI message stream.
StreamProtocol = Literal["sse", "ai-sdk"]
PROTOCOLS: tuple[StreamProtocol, ...] = ("sse", "ai-sdk")
# "generation": until the generation's end; "conversation": across generations (conversation.py);
# "turns": across generations, their start and end events only.
Follow = Literal["generation", "conversation", "turns"]
FOLLOWS: tuple[Follow, ...] = ("generation", "conversation", "turns")


_STREAM_STATUSES = frozenset(range(200, 300)) - {204, 205}


def _check_status_code(status_code: object) -> None:
    # EventSource clients take anything but a 2xx for a failure; 204/205 carry no events.
    ok = isinstance(status_code, int) and not isinstance(status_code, bool)
    if not ok or status_code not in _STREAM_STATUSES:
        raise ValueError(
            f"status_code must be a 2xx status with a body (not 204 or 205), not {status_code!r}"
        )


class SessionStreamResponse(Response):
    """Streams one session to one client as SSE: replay from its cursor, then live, then ``end``.

    The subscription runs in a task of this response; a disconnect cancels only that task.
    Idle periods carry ``: ping`` comments; ``retry:`` is sent once at the start.
    ``protocol="ai-sdk"`` speaks the Vercel AI SDK's UI message stream instead (see
    ``aisdk.py``): always from the beginning of the generation, whatever the cursor.
    ``follow="conversation"`` (SSE only) goes on across generations until the client leaves
    (see ``conversation.py``); ``follow="turns"`` too, with each generation's start and end
    events only.
    """

    # FastAPI documents a route's ``response_class`` with this media type, and its status
    # with the default of ``status_code`` in ``__init__``'s signature.
    media_type = "text/event-stream"
    # The JSON errors the response itself can answer, before any event.
    openapi_errors: ClassVar[dict[int, str]] = {
        400: "Malformed cursor (`Last-Event-ID` or `?last_event_id=`)",
        404: "Unknown session",
        422: "Invalid session id",
        429: "Over max_subscribers for this session",
        503: "The store is unreachable",
    }

    @classmethod
    def openapi_responses(cls, description: str = "The event stream.") -> dict[int | str, Any]:
        """``responses=`` for a route that answers with this class: the 200 as
        ``text/event-stream`` with the schema of one event, and the errors as JSON."""
        return sse_responses(description, cls.openapi_errors)

    def __init__(
        self,
        session_id: str,
        *,
        hub: StreamHub | None = None,
        after: Cursor | str | None = None,
        headers: Mapping[str, str] | None = None,
        ping_interval: float | None = None,
        status_code: int = 200,
        protocol: StreamProtocol = "sse",
        follow: Follow = "generation",
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
        if follow not in FOLLOWS:
            raise ValueError(f"follow must be one of {FOLLOWS}, not {follow!r}")
        if follow != "generation" and protocol != "sse":
            raise ValueError(f"follow={follow!r} needs protocol='sse'")
        if protocol == "ai-sdk" and after is not None:
            raise ValueError("protocol='ai-sdk' always streams from the start; drop after=")
        _check_status_code(status_code)
        # Not Response.__init__: it would declare a Content-Length for an empty body.
        self.status_code = status_code
        self.background = None
        self.body = b""
        self.session_id = session_id
        self.hub = hub
        self.after = after
        self.ping_interval = ping_interval
        self.protocol = protocol
        self.follow = follow
        merged = {**SSE_HEADERS, **{k.lower(): v for k, v in (headers or {}).items()}}
        if protocol == "ai-sdk":
            merged.update(UI_MESSAGE_STREAM_HEADERS)
        merged["content-type"] = "text/event-stream; charset=utf-8"
        merged.pop("content-length", None)
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in merged.items()]

    def _resolve_hub(self, scope: Scope) -> StreamHub:
        if self.hub is None:
            self.hub = get_hub_from(Request(scope))
        return self.hub

    def _cursor(self, scope: Scope) -> Cursor | None:
        if self.protocol == "ai-sdk":
            return None  # the SDK rebuilds the message from its start on every resume
        if self.after is not None:
            return self.after if isinstance(self.after, Cursor) else Cursor.parse(self.after)
        request = Request(scope)
        return parse_last_event_id(
            request.headers.get("last-event-id"), request.query_params.get("last_event_id")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            validate_session_id(self.session_id)
            hub = self._resolve_hub(scope)
            cursor = self._cursor(scope)
            with request_bound(hub.settings.request_timeout):
                await self.prepare(hub, scope)
        except (StreamHubError, HTTPException) as exc:
            await json_error(send, exc)
            return
        await self._stream(hub, cursor, receive, send, head=scope.get("method") == "HEAD")

    async def prepare(self, hub: StreamHub, scope: Scope) -> None:
        """Work done before the response starts (claiming, in the subclass)."""

    async def _stream(
        self, hub: StreamHub, cursor: Cursor | None, receive: Receive, send: Send, *, head: bool
    ) -> None:
        ping = self.ping_interval or hub.settings.ping_interval
        out = OutBuffer(hub.settings.subscriber_buffer_bytes, hub.out_bytes)
        # The first write carries it with the first events (one write, not two).
        out.put(encode_retry(hub.settings.retry_ms))
        ready = anyio.Event()  # the subscription is set up, or failed to be
        failed: list[StreamHubError] = []
        try:
            async with anyio.create_task_group() as tg:
                # Opening fails fast in an outage; once streaming, the reader waits it out.
                with request_bound(hub.settings.request_timeout):
                    if self.follow != "generation":
                        chunks = self.follow == "conversation"
                        feed = (hub, self.session_id, cursor, ready, failed, out, chunks)
                        tg.start_soon(feed_conversation, *feed)
                    else:
                        subscription = hub.subscribe(self.session_id, after=cursor, batch=True)
                        subscription.opened = ready  # set by the subscription once it is open
                        tg.start_soon(self._feed, subscription, ready, failed, out)
                    tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                    await ready.wait()
                if failed:
                    # Before any header: an unknown session is a plain 404, and so on.
                    await json_error(send, failed[0])
                    tg.cancel_scope.cancel()
                    return
                await send(
                    {
                        "type": "http.response.start",
                        "status": self.status_code,
                        "headers": self.raw_headers,
                    }
                )
                if head:
                    # What a GET would get, without the stream, which may not end for hours.
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    tg.cancel_scope.cancel()
                    return
                timeout = hub.settings.stalled_reader_timeout
                tg.start_soon(out.tick, ping, timeout, tg.cancel_scope, self.session_id)
                await _pump(send, out)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                tg.cancel_scope.cancel()
        except* OSError as group:
            # The client went away while we wrote (ASGI 2.4 servers raise an OSError from
            # send()), inside the task group's ExceptionGroup; the rest of the group is raised.
            # The producer runs in the hub and carries on; the client resumes with its cursor.
            log.debug("client of %r disconnected: %r", self.session_id, group.exceptions)
        finally:
            out.close()

    async def _feed(
        self,
        subscription: Subscription,
        ready: anyio.Event,
        failed: list[StreamHubError],
        out: OutBuffer,
    ) -> None:
        encoder: _Encoder = (
            UIMessageStreamEncoder(self.session_id) if self.protocol == "ai-sdk" else _SSEEncoder()
        )
        # Plain SSE frames live writes from their stored bytes (no chunk objects).
        items = subscription if self.protocol == "ai-sdk" else subscription.stored_items()
        try:
            first = True
            async with subscription:
                async for item in items:
                    if isinstance(item, ChunksMsg):
                        data = encode_stored(item)
                    else:
                        data = encoder.encode(item, subscription.generation)
                    if not out.put(data):
                        await out.put_wait(data)
                    if encoder.finished:
                        return
                    if first:
                        # The writer sends the headers and this first event before the feed
                        # encodes the rest of the page (a resume's time to first event).
                        first = False
                        await anyio.lowlevel.checkpoint()
        except StreamHubError as exc:
            if not ready.is_set():
                failed.append(exc)
                return
            if isinstance(exc, SessionNotFound):
                await out.put_wait(encoder.encode(End(State.FAILED, "session not found"), 0))
                return
            if isinstance(exc, BackendUnavailable):
                log.warning("stream of %r interrupted: %s", self.session_id, exc)
            elif not isinstance(exc, StreamClosed):
                raise
            # The response ends before the session does. SSE clients reconnect by
            # themselves (to another instance, when this one is shutting down) with their
            # cursor; the AI SDK does not, so it is told why (the app can resume).
            why = UNAVAILABLE if isinstance(exc, BackendUnavailable) else str(exc)
            data = encoder.interrupted(why, subscription.generation)
            if data:
                await out.put_wait(data)
        finally:
            out.end()
            ready.set()


class _Encoder(typing.Protocol):
    finished: bool

    def encode(self, item: Item, generation: int) -> bytes: ...

    def interrupted(self, reason: str, generation: int) -> bytes: ...


class _SSEEncoder:
    """The wire format of ``sse.py``; an interrupted response just ends (clients reconnect)."""

    finished = False

    def encode(self, item: Item, generation: int) -> bytes:
        self.finished = isinstance(item, End)
        return encode_item(item)

    def interrupted(self, reason: str, generation: int) -> bytes:
        return b""


async def _pump(send: Send, out: OutBuffer) -> None:
    """Write the queued events to the client, coalescing what is ready, and the pings
    ``out`` asks for, until the feed is over and everything is written."""
    while (job := await out.next()) != "end":
        if job == "ping":
            await _write(send, out, PING)
            continue
        parts, size = out.take()
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        if size <= WRITE_SIZE:
            await _write(send, out, body)
        else:
            # In pieces: a client that stops reading leaves the rest in the bounded buffer.
            view = memoryview(body)
            for at in range(0, size, WRITE_SIZE):
                await _write(send, out, bytes(view[at : at + WRITE_SIZE]))
        out.release(size)


async def _write(send: Send, out: OutBuffer, body: bytes) -> None:
    out.writing()
    await send({"type": "http.response.body", "body": body, "more_body": True})
    out.written()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


class ResumableStreamingResponse(SessionStreamResponse):
    """Makes any async generator a resumable, cancellable SSE stream.

    On an unknown or failed session it claims the session and runs ``generator`` as the
    producer in the hub's task group, detached from this request (a disconnect never stops
    it; a cancel does, as a cancellation inside the generator). On an active session it
    closes ``generator`` unused and follows the running one; on a finished session it replays
    the stored output (``restart=True`` starts a new generation instead).

    ``turn`` (what this request asks, such as the id of a chat's last user message) decides
    instead of ``restart``: a request of the turn the session's generation answers, running
    or finished, follows it (a retry, a reconnect, a second tab); a request of a new turn
    cancels a running generation (``end`` with ``cancelled``, reason ``superseded``) and
    starts its own, atomically in the store (see :meth:`StreamHub.register`). Either way this
    client receives the stream from its ``Last-Event-ID`` (or ``?last_event_id=``).
    ``protocol="ai-sdk"`` answers in the Vercel AI SDK's UI message stream protocol instead,
    always from the start of the generation (the SDK rebuilds the message on a resume).

    ``generator`` may also be a factory, ``lambda ctx: answer(prompt, ctx)``: it is called
    with a :class:`StreamContext` only when this request starts a generation, and the
    generator reads the session's steering messages with ``ctx.messages()``.

    ``on_finish`` replaces the hub's ``on_finish`` hook for the generations this response
    starts (the hub's runs them when the instance that started them died).

    ``status_code`` (default 200) is the status of the stream; it must be a 2xx status with a
    body. As a route's ``response_class`` it documents the route's 200 as
    ``text/event-stream``; add ``responses=ResumableStreamingResponse.openapi_responses()``
    to document one event's fields and the JSON errors too.
    """

    # No 404: an unknown session is started.
    openapi_errors: ClassVar[dict[int, str]] = {
        status: why for status, why in SessionStreamResponse.openapi_errors.items() if status != 404
    }

    def __init__(
        self,
        session_id: str,
        generator: AsyncIterable[Any] | GeneratorFactory,
        *,
        metadata: Any = None,
        hub: StreamHub | None = None,
        restart: bool = False,
        turn: str | None = None,
        headers: Mapping[str, str] | None = None,
        ping_interval: float | None = None,
        authorize: Authorize | None = None,
        protocol: StreamProtocol = "sse",
        status_code: int = 200,
        on_finish: FinishHook | None = None,
    ) -> None:
        if on_finish is not None and not callable(on_finish):
            raise TypeError("on_finish must be a callable taking a FinishedGeneration")
        if not hasattr(generator, "__aiter__") and not callable(generator):
            raise TypeError(
                "ResumableStreamingResponse needs an async iterable or a factory of one, "
                f"got {type(generator).__name__}"
            )
        super().__init__(
            session_id,
            hub=hub,
            headers=headers,
            ping_interval=ping_interval,
            status_code=status_code,
            protocol=protocol,
        )
        self.generator = generator
        self.metadata = metadata
        validate_turn(turn)
        self.restart = restart
        self.turn = turn
        self.authorize = authorize
        self.on_finish = on_finish
        self.producer: Producer | None = None
        self.created = False

    async def prepare(self, hub: StreamHub, scope: Scope) -> None:
        if self.authorize is not None:
            await authorize_or_raise(self.authorize, Request(scope), self.session_id, "read")
        try:
            registration = await hub.register(
                self.session_id, metadata=self.metadata, restart=self.restart, turn=self.turn
            )
        except BaseException:
            await close_unused(self.generator)
            raise
        self.created = registration.created
        if registration.producer is None:
            await close_unused(self.generator)
            return
        self.producer = registration.producer
        if self.on_finish is not None:
            registration.producer.on_finish = self.on_finish
        if hasattr(self.generator, "__aiter__"):
            hub.spawn(run_generator, registration.producer, self.generator)
        else:
            hub.spawn(run_factory, registration.producer, self.generator)
