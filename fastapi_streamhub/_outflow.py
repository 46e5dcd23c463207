"""What one SSE response holds for its client, bounded in bytes, and when that client stalls.

A response has two tasks: one turns the subscription's items into encoded events, the other
writes them to the client. Between them sit at most about ``subscriber_buffer_bytes`` (one
event above it goes alone), so a client that reads slowly slows its own feed instead of
growing the server's memory. A client that stops reading altogether blocks the write; pings
cannot reveal it (they queue behind the blocked write), so a watchdog ends the response once
one write has been blocked for ``stalled_reader_timeout``: the client resumes with its cursor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import anyio

__all__ = ["WRITE_SIZE", "Gauge", "OutBuffer", "held_bytes"]

log = logging.getLogger("fastapi_streamhub")

# A bigger event is written in pieces of this size: a stalled client then leaves at most about
# this much (plus the server's transport buffer) outside the bounded buffer.
WRITE_SIZE = 64 * 1024


class Gauge:
    """Bytes held in this process by the output buffers of SSE responses (all of them)."""

    __slots__ = ("peak", "value")

    def __init__(self) -> None:
        self.value = 0
        self.peak = 0

    def add(self, n: int) -> None:
        """Count ``n`` more bytes (negative: fewer)."""
        self.value += n
        if self.value > self.peak:
            self.peak = self.value


class OutBuffer:
    """The byte budget between a response's feed and its writer, and its stall watchdog."""

    __slots__ = ("_busy", "_gauge", "_held", "_limit", "_room", "_since")

    def __init__(self, limit: int, gauge: Gauge) -> None:
        self._limit = limit
        self._gauge = gauge
        self._held = 0
        self._room = anyio.Event()
        self._since: float | None = None  # when the write in progress began
        self._busy = anyio.Event()  # a write began since the watchdog last looked

    @property
    def held(self) -> int:
        """Bytes encoded and not yet written to the client."""
        return self._held

    async def reserve(self, n: int) -> None:
        """Wait until ``n`` more bytes fit (any size fits an empty buffer), then hold them."""
        while self._held and self._held + n > self._limit:
            self._room = anyio.Event()
            await self._room.wait()
        self._held += n
        self._gauge.add(n)

    def release(self, n: int) -> None:
        """``n`` held bytes were written (or dropped)."""
        self._held -= n
        self._gauge.add(-n)
        self._room.set()

    def close(self) -> None:
        """The response ended: whatever is still held is dropped."""
        self.release(self._held)

    def writing(self) -> None:
        """A write to the client begins."""
        self._since = anyio.current_time()
        self._busy.set()

    def written(self) -> None:
        """The write returned."""
        self._since = None

    async def watch(self, stalled_after: float, scope: anyio.CancelScope, session_id: str) -> None:
        """Cancel ``scope`` once one write has been blocked for ``stalled_after`` seconds.

        It sleeps until a write begins, then looks once per ``stalled_after`` while writes go
        on: an idle response costs no timer, a busy one a wake-up per ``stalled_after``.
        """
        while True:
            await self._busy.wait()
            self._busy = anyio.Event()  # the next write after this look sets it
            await anyio.sleep(stalled_after)
            while (since := self._since) is not None:
                overdue_in = since + stalled_after - anyio.current_time()
                if overdue_in <= 0:
                    log.warning(
                        "client of %r read nothing for %gs; its response ends (it resumes "
                        "with its cursor)",
                        session_id,
                        stalled_after,
                    )
                    scope.cancel()
                    return
                await anyio.sleep(overdue_in)


def held_bytes(queues: Iterable[int], out: Gauge) -> int:
    """Bytes of ``queues`` (producers' and subscribers') and of SSE output buffers."""
    return sum(queues) + out.value
