"""``create_durable_streams_router``: its settings checked, the endpoint built, one route."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter
from fastapi.params import Depends as DependsParam

from ..errors import Authorize
from .requests import METHODS
from .router import DurableStreams

__all__ = ["create_durable_streams_router"]


def create_durable_streams_router(
    *,
    prefix: str = "/v1/stream",
    authorize: Authorize | None = None,
    long_poll_timeout: float = 20.0,
    sse_reconnect_after: float = 60.0,
    max_append_bytes: int = 8 << 20,
    max_read_bytes: int = 1 << 20,
    cache_control: str = "private, max-age=60, stale-while-revalidate=300",
    allow_origin: str = "*",
    sessions_view: bool = False,
    max_live_readers: int = 1000,
    dependencies: Sequence[DependsParam] | None = None,
) -> APIRouter:
    """A router speaking the Durable Streams protocol at ``{prefix}/{stream}`` on the hub's
    backend (``app.state.streamhub``), beside :func:`create_router` on the same hub.

    ``authorize(request, stream_id, action)`` (sync or async; False or an HTTPException
    refuses) is called on every request but CORS preflights, with action ``create`` (PUT),
    ``append`` (POST, closing too), ``read`` (GET), ``head`` or ``delete``.
    ``long_poll_timeout``: seconds a long-poll waits before its 204; ``sse_reconnect_after``:
    seconds after which an SSE answer ends (clients reconnect from their offset).
    ``sessions_view=True``: a name that is no stream but one of our sessions (from
    ``ResumableStreamingResponse`` or ``hub.register``) reads as an ``application/json``
    stream, read-only (POST and DELETE answer 405), open while active, closed once ended.
    ``max_live_readers``: long-polls and SSE answers of one stream waiting on this instance at
    once; one more gets 429. Bodies over ``max_append_bytes`` get 413.
    """
    for label, value in (
        ("long_poll_timeout", long_poll_timeout),
        ("sse_reconnect_after", sse_reconnect_after),
    ):
        if not value > 0:
            raise ValueError(f"{label} must be > 0, got {value!r}")
    sizes = (
        ("max_append_bytes", max_append_bytes),
        ("max_read_bytes", max_read_bytes),
        ("max_live_readers", max_live_readers),
    )
    for label, size in sizes:
        if size < 1:
            raise ValueError(f"{label} must be >= 1, got {size!r}")
    endpoint = DurableStreams(
        prefix=prefix,
        sessions_view=sessions_view,
        max_live_readers=max_live_readers,
        authorize=authorize,
        long_poll_timeout=long_poll_timeout,
        sse_reconnect_after=sse_reconnect_after,
        max_append_bytes=max_append_bytes,
        max_read_bytes=max_read_bytes,
        cache_control=cache_control,
        allow_origin=allow_origin,
    )
    router = APIRouter(prefix=prefix, dependencies=list(dependencies or []))
    router.add_api_route(
        "/{name:path}",
        endpoint,
        methods=METHODS,
        name="durable_stream",
        include_in_schema=False,
    )
    return router
