"""How an endpoint finds its hub: the FastAPI dependency ``get_hub`` and ``get_hub_from``.

They live in the FastAPI layer, not beside :class:`StreamHub`, so that the engine imports no
starlette: the hub does not know it is served over HTTP.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection, Request

from .._hub import StreamHub

__all__ = ["get_hub", "get_hub_from", "request_hub"]


def get_hub_from(connection: HTTPConnection) -> StreamHub:
    """The hub of the app serving ``connection`` (``app.state.streamhub``)."""
    hub = getattr(connection.app.state, "streamhub", None)
    if hub is None:
        hub = getattr(connection.state, "streamhub", None)
    if not isinstance(hub, StreamHub):
        raise RuntimeError(
            "no StreamHub on this app: create it with FastAPI(lifespan=hub.lifespan) "
            "or set app.state.streamhub = hub"
        )
    return hub


def get_hub(request: Request) -> StreamHub:
    """FastAPI dependency: ``hub: StreamHub = Depends(get_hub)``."""
    return get_hub_from(request)


async def request_hub(request: Request) -> StreamHub:
    """:func:`get_hub` as the router's own dependency: a coroutine, which FastAPI calls on the
    event loop (a plain function dependency is run in a worker thread: a thread hop on every
    request, ~0.1-0.3 ms before a resumed stream's first byte)."""
    return get_hub_from(request)
