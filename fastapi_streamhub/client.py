"""HTTP clients of a streamhub app, for Python programs: ``pip install 'fastapi-streamhub[client]'``.

.. code-block:: python

    from fastapi_streamhub.client import StreamClient
    from fastapi_streamhub import Chunk, End, Reset

    async with StreamClient("http://127.0.0.1:8000") as client:
        stream = client.start("/chat/s1", {"prompt": "hello"})
        async for item in stream:
            if isinstance(item, Chunk) and item.kind == "text" and item.event is None:
                print(item.data, end="", flush=True)
        print(stream.end)           # End(state=<State.DONE: 'done'>, reason=None)

A stream yields the items :meth:`StreamHub.subscribe` yields in-process (:class:`Chunk`,
:class:`Metadata`, :class:`Reset`, then one :class:`End`) and reconnects by itself with its
last cursor after network errors and server restarts. :class:`SyncStreamClient` does the same
for synchronous code.
"""

from ._client.clients import ClientStream, StreamClient, SyncClientStream, SyncStreamClient
from ._client.follow import Backoff, ReconnectFailed, ResponseError
from ._client.sse_decode import ProtocolError
from ._errors import SessionNotFound
from ._types import Chunk, End, Metadata, Reset, SessionInfo, Snapshot, State

__all__ = [
    "Backoff",
    "Chunk",
    "ClientStream",
    "End",
    "Metadata",
    "ProtocolError",
    "ReconnectFailed",
    "Reset",
    "ResponseError",
    "SessionInfo",
    "SessionNotFound",
    "Snapshot",
    "State",
    "StreamClient",
    "SyncClientStream",
    "SyncStreamClient",
]
