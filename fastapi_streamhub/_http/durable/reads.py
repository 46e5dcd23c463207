"""Durable Streams reads: one page from an offset, waiting for the next change (long-poll),
and the SSE body. They take the backend and return bytes; the router builds the responses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import anyio

from ..._codec import Message
from ..._fanout import CallbackListener
from ...backends._ds import DsStream
from ...backends.base import Backend
from .protocol import control_event, data_event, is_json

__all__ = ["Change", "Page", "read_page", "sse_body"]


@dataclass(frozen=True, slots=True)
class Page:
    """Bytes of a stream from ``start`` to ``end`` (whole messages for JSON) and its record."""

    stream: DsStream
    start: int
    end: int
    data: bytes

    @property
    def up_to_date(self) -> bool:
        """The page reaches the tail."""
        return self.end >= self.stream.tail


async def read_page(
    backend: Backend, stream_id: str, start: int, limit: int, *, touch: bool = True
) -> Page | None:
    """The page from ``start``, at most ``limit`` bytes unless one JSON message is larger."""
    answer = await backend.ds_read(stream_id, start, limit, touch=touch)
    if answer is None:
        return None
    stream, data = answer
    if is_json(stream.spec.content_type) and data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            # One message over the limit: read it whole rather than never.
            answer = await backend.ds_read(stream_id, start, stream.tail - start, touch=False)
            if answer is None:
                return None
            stream, data = answer
            cut = data.rfind(b"\n") + 1
        data = data[:cut]
    return Page(stream, start, start + len(data), data)


class Change:
    """Wakes a waiter when the stream changes (append, close, delete): a listener on the
    stream's live channel, registered before the store is read, so no change is missed."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.listener = CallbackListener(self._on_message)

    def _on_message(self, msg: Message) -> None:
        self._event.set()

    def reset(self) -> None:
        """Forget changes seen so far (call before reading the store again)."""
        if self._event.is_set():
            self._event = anyio.Event()

    async def wait(self, seconds: float) -> bool:
        """Whether a change came within ``seconds``."""
        with anyio.move_on_after(max(0.0, seconds)):
            await self._event.wait()
            return True
        return False


async def sse_body(
    backend: Backend,
    stream_id: str,
    start: int | None,
    limit: int,
    reconnect_after: float,
    cursor: Callable[[], str],
) -> AsyncIterator[bytes]:
    """The SSE events of a stream from ``start`` (None: its tail): a ``data`` event and a
    ``control`` event per page, until it is closed (final control) or ``reconnect_after``."""
    change = Change()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(backend.listen(stream_id, change.listener))
        deadline = anyio.current_time() + reconnect_after
        position = start
        if position is None:
            answer = await backend.ds_read(stream_id, 0, 0, touch=True)
            if answer is None or answer[0].gone:
                return
            position = answer[0].tail
        sent_control = False
        while True:
            change.reset()
            page = await read_page(backend, stream_id, position, limit)
            if page is None or page.stream.gone:
                return
            stream = page.stream
            closed_here = stream.closed and page.up_to_date
            if page.data or not sent_control or closed_here:
                # A data event and its control event go out in one write: a client that stops
                # reading at the first "event: control" it sees never gets half a pair.
                data = data_event(page.data, stream.spec.content_type) if page.data else b""
                yield data + control_event(
                    page.end, cursor(), up_to_date=page.up_to_date, closed=closed_here
                )
                sent_control = True
            position = page.end
            if closed_here:
                return
            if not page.up_to_date:
                continue
            remaining = deadline - anyio.current_time()
            if remaining <= 0 or not await change.wait(remaining):
                return
