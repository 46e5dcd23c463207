"""What one SSE response holds for its client, bounded in bytes, and when that client stalls.

A response has two tasks: one turns the subscription's items into encoded events, the other
writes them to the client. Between them sit at most about ``subscriber_buffer_bytes`` (one
event above it goes alone), so a client that reads slowly slows its own feed instead of
growing the server's memory. A client that stops reading altogether blocks the write; pings
cannot reveal it (they queue behind the blocked write), so a watchdog ends the response once
one write has been blocked for ``stalled_reader_timeout``: the client resumes with its cursor.
A third task per response ticks for both, the pings and the watchdog, so the per-chunk path
arms no timer.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import Literal

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
    """A response's queue of encoded events between its feed and its writer, bounded in bytes;
    its pings and its stall watchdog.

    Plain attributes and one event, no memory stream: an LLM-paced stream passes every chunk
    through here on its own, so what it costs is paid per chunk (no checkpoint, no exception,
    no timer per chunk; one :meth:`tick` task per response does the pings and the watchdog).
    """

    __slots__ = (
        "_ended",
        "_gauge",
        "_held",
        "_limit",
        "_ping",
        "_queue",
        "_ready",
        "_room",
        "_writes",
        "_writing",
    )

    def __init__(self, limit: int, gauge: Gauge) -> None:
        self._limit = limit
        self._gauge = gauge
        self._held = 0
        self._queue: deque[bytes] = deque()
        self._ready = anyio.Event()  # something to do for the writer: data, a ping, the end
        self._room = anyio.Event()
        self._ended = False  # the feed is over: the writer ends once the queue is empty
        self._ping = False  # the response was idle for a whole tick: write a ping
        self._writing = False  # a write to the client is in progress
        self._writes = 0  # writes begun so far (the ticker compares them; no clock per write)

    @property
    def held(self) -> int:
        """Bytes encoded and not yet written to the client."""
        return self._held

    def put(self, data: bytes) -> bool:
        """Queue ``data`` unless it does not fit (any size fits an empty buffer)."""
        n = len(data)
        if self._held and self._held + n > self._limit:
            return False
        self._queue.append(data)
        self._held += n
        self._gauge.add(n)
        self._ready.set()
        return True

    async def put_wait(self, data: bytes) -> None:
        """Queue ``data`` once it fits: a client that reads slowly slows its own feed."""
        while not self.put(data):
            if self._room.is_set():
                self._room = anyio.Event()
            await self._room.wait()

    def end(self) -> None:
        """The feed is over: the writer writes what is queued, then returns."""
        self._ended = True
        self._ready.set()

    def take(self) -> tuple[list[bytes], int]:
        """Queued events, up to about ``WRITE_SIZE`` bytes (one at least), and their size."""
        queue = self._queue
        parts = [queue.popleft()]
        size = len(parts[0])
        while queue and size < WRITE_SIZE:
            data = queue.popleft()
            parts.append(data)
            size += len(data)
        return parts, size

    def release(self, n: int) -> None:
        """``n`` held bytes were written (or dropped)."""
        self._held -= n
        self._gauge.add(-n)
        self._room.set()

    def close(self) -> None:
        """The response ended: whatever is still held is dropped."""
        self._queue.clear()
        self.release(self._held)

    async def next(self) -> Literal["data", "ping", "end"]:
        """Wait for the writer's next job: queued data first, then a due ping, then the end."""
        while True:
            if self._queue:
                return "data"
            if self._ping:
                self._ping = False
                return "ping"
            if self._ended:
                return "end"
            if self._ready.is_set():
                self._ready = anyio.Event()
            await self._ready.wait()

    def writing(self) -> None:
        """A write to the client begins."""
        self._writing = True
        self._writes += 1

    def written(self) -> None:
        """The write returned."""
        self._writing = False

    async def tick(
        self, ping: float, stalled_after: float, scope: anyio.CancelScope, session_id: str
    ) -> None:
        """Pings and the stall watchdog, one wake-up per half of the shorter of the two periods.

        A response that wrote nothing during a whole tick gets a ping (so an idle stream
        carries one about every ``ping`` seconds, never a gap much longer); one whose write has
        been blocked for ``stalled_after`` seconds is cancelled through ``scope``: pings cannot
        reveal a client that stopped reading (they would queue behind the blocked write).
        """
        period = min(ping, stalled_after) / 2
        writes = self._writes
        stuck = 0  # ticks during which the same write stayed in progress
        while True:
            await anyio.sleep(period)
            if self._writing:
                # A write that began after the last tick has been blocked for less than a
                # period; one in progress at k ticks in a row, for k periods at least.
                stuck = stuck + 1 if self._writes == writes else 0
                if stuck * period >= stalled_after:
                    log.warning(
                        "client of %r read nothing for %gs; its response ends (it resumes "
                        "with its cursor)",
                        session_id,
                        stalled_after,
                    )
                    scope.cancel()
                    return
            else:
                stuck = 0
                if self._writes == writes and not self._queue:
                    self._ping = True
                    self._ready.set()
            writes = self._writes


def held_bytes(queues: Iterable[int], out: Gauge) -> int:
    """Bytes of ``queues`` (producers' and subscribers') and of SSE output buffers."""
    return sum(queues) + out.value
