"""A producer's write buffer: queued chunks bounded in count and bytes, and the batch in flight
that the hub's writer takes from it (group commit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from ._errors import StreamHubError
from ._trusted import trusted_cursor
from ._types import Cursor
from .backends.base import Append, Lost, SharedAppend

if TYPE_CHECKING:
    from ._config import Settings
    from ._writer import Writer

__all__ = ["Ack", "ChunkBuffer"]

Taken = tuple[int, int]
"""Chunks taken for a batch: the number of the first (counting every chunk accepted) and how
many."""


class Ack:
    """Where :meth:`Producer.publish` waits for its chunk: stored at ``cursor``, or ``error``."""

    __slots__ = ("cursor", "error", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.cursor: Cursor | None = None
        self.error: BaseException | None = None


class ChunkBuffer:
    """One producer's queue, the writer's view of it (``pending_bytes``, ``next_size``,
    ``take_batch``, ``on_committed``).

    ``on_failed(result, batch)`` is the producer's: the batch in flight was not stored
    (``result`` says why); it decides what that means for the producer and calls :meth:`fail`.
    """

    def __init__(
        self,
        session_id: str,
        generation: int,
        settings: Settings,
        writer: Writer,
        on_failed: Callable[[Lost | StreamHubError, Taken], None],
    ) -> None:
        self._session_id = session_id
        self._generation = generation
        self._settings = settings
        self._writer = writer
        self._on_failed = on_failed
        # The queued payloads; the acknowledgements of publish() aside, by chunk number (a
        # send() has none): a queued chunk costs one list slot, no object of its own.
        self._pending: list[bytes] = []
        self._acks: dict[int, Ack] = {}
        self._pending_bytes = 0  # payload bytes in _pending (max_pending_bytes)
        self._inflight: list[bytes] | None = None
        self._inflight_from = 0  # number of the in-flight batch's first chunk
        self._taken = 0  # chunks taken by the writer (or dropped): the next one's number
        self._queued = False
        self._next = 1
        self._max_pending = settings.max_pending
        self._max_pending_bytes = settings.max_pending_bytes
        self._max_batch = settings.max_batch
        # Events set only when someone waits on them (a set() per batch is measurable).
        self._room = anyio.Event()
        self._room_wanted = False
        self._idle = anyio.Event()
        self._idle_wanted = False
        self._last = 0  # offset of the last stored chunk
        self._last_cursor = Cursor(generation, 0)
        """Cursor of the last stored chunk (offset 0 before the first)."""
        # Chunks accepted (put), and those dropped unwritten: what the producer's close claims
        # is stored, for the store to check (see claim).
        self.sent = 0
        self.dropped = 0
        self.part: tuple[str, str] | None = None
        """Once several producers write the session (fan-in): this one's part (name, token);
        the store assigns the offsets of its batches from then on."""
        self.seq = 0
        """Batches taken as a part: the number of the last one (the store's exactly-once check)."""

    @property
    def pending_bytes(self) -> int:
        """Bytes of the chunks queued and not yet taken by the writer."""
        return self._pending_bytes

    @property
    def busy(self) -> bool:
        """Chunks are queued or in flight."""
        return bool(self._pending) or self._inflight is not None

    def offer(self, payload: bytes, ack: Ack | None) -> bool:
        """Queue one chunk if there is room now (a producer's every chunk comes here first:
        no coroutine, no wait)."""
        pending = self._pending
        if len(pending) >= self._max_pending or (
            # A chunk bigger than the whole byte budget still goes, alone, once nothing waits.
            self._pending_bytes and self._pending_bytes + len(payload) > self._max_pending_bytes
        ):
            return False
        pending.append(payload)
        if ack is not None:
            self._acks[self.sent] = ack
        self.sent += 1
        self._pending_bytes += len(payload)
        if self._inflight is None and not self._queued:
            self._queued = True
            self._writer.ready(self)
        return True

    async def put(self, payload: bytes, ack: Ack | None, check_open: Callable[[], None]) -> None:
        """Queue one chunk once there is room (``check_open`` again after each wait)."""
        settings = self._settings
        while len(self._pending) >= settings.max_pending or (
            # A chunk bigger than the whole byte budget still goes, alone, once nothing waits.
            self._pending_bytes and self._pending_bytes + len(payload) > settings.max_pending_bytes
        ):
            # Every waiter waits on the same event (a second one must not orphan the first's).
            if self._room.is_set():
                self._room = anyio.Event()
            self._room_wanted = True
            await self._room.wait()
            check_open()
        self._pending.append(payload)
        if ack is not None:
            self._acks[self.sent] = ack
        self.sent += 1
        self._pending_bytes += len(payload)
        if self._inflight is None and not self._queued:
            self._queued = True
            self._writer.ready(self)

    @property
    def last(self) -> Cursor:
        """Cursor of the last stored chunk (offset 0 before the first)."""
        if self._last_cursor.offset != self._last:
            self._last_cursor = trusted_cursor(self._generation, self._last)
        return self._last_cursor

    async def wait_idle(self) -> None:
        """Until the next change: a batch stored, or the buffer failed."""
        if self._idle.is_set():
            self._idle = anyio.Event()
        self._idle_wanted = True
        await self._idle.wait()

    def _wake_room(self) -> None:
        if self._room_wanted:
            self._room_wanted = False
            self._room.set()

    def _wake_idle(self) -> None:
        if self._idle_wanted:
            self._idle_wanted = False
            self._idle.set()

    def _fits(self, budget: int) -> int:
        """How many pending chunks the next batch takes: up to ``max_batch`` and ``budget``
        bytes (one at least, whatever its size)."""
        pending = self._pending
        n = min(len(pending), self._settings.max_batch)
        if self._pending_bytes <= budget:
            return n
        size = 0
        for i in range(n):
            size += len(pending[i])
            if size > budget and i:
                return i
        return n

    def next_size(self, budget: int) -> int:
        """Bytes of the batch :meth:`take_batch` would build within ``budget``."""
        return sum(map(len, self._pending[: self._fits(budget)]))

    def take_batch(self, budget: int) -> Append:
        """The next batch (up to ``budget`` bytes, one chunk at least), for the hub's writer;
        it stays in flight until :meth:`on_committed`."""
        self._queued = False
        pending = self._pending
        if len(pending) <= self._max_batch and self._pending_bytes <= budget:
            # All of it (the common case: an LLM-paced stream has one chunk waiting).
            batch, self._pending, self._pending_bytes = pending, [], 0
        else:
            n = self._fits(budget)
            batch = pending[:n]
            del pending[:n]
            self._pending_bytes -= sum(map(len, batch))
        if self._room_wanted:
            self._wake_room()
        self._inflight = batch
        self._inflight_from = self._taken
        self._taken += len(batch)
        # The batch's list is its Append's payloads (nobody changes either).
        if self.part is not None:
            self.seq += 1
            name, token = self.part
            return SharedAppend(self._session_id, self._generation, 0, batch, name, token, self.seq)
        first = self._next
        self._next += len(batch)
        return Append(self._session_id, self._generation, first, batch)

    def on_committed(self, result: Lost | StreamHubError | None, first: int | None = None) -> None:
        """The writer's report on the batch in flight (``first``: its offset, when the store
        assigned it)."""
        batch, self._inflight = self._inflight or [], None
        if result is not None:
            self._on_failed(result, (self._inflight_from, len(batch)))
            return
        if first is None:
            first = self._next - len(batch)
        acks = self._acks
        if acks:
            generation, number = self._generation, self._inflight_from
            for i in range(len(batch)):
                ack = acks.pop(number + i, None)
                if ack is not None:
                    # Numbers the store assigned: no constructor checks per acknowledged chunk.
                    ack.cursor = trusted_cursor(generation, first + i)
                    ack.event.set()
        self._last = first + len(batch) - 1
        if self._pending:
            self._queued = True
            self._writer.ready(self)
        else:
            self._wake_idle()

    def fail(self, error: StreamHubError, taken: Taken = (0, 0)) -> None:
        """Fail the ``taken`` chunks (taken, not stored) and everything queued with ``error``."""
        self._fail_acks(*taken, error)
        self.fail_pending(error)
        self._wake_idle()

    def fail_pending(self, error: StreamHubError) -> None:
        """Drop the queued chunks (they fail with ``error``); the batch in flight goes on."""
        pending, self._pending = self._pending, []
        self.dropped += len(pending)
        self._pending_bytes = 0
        self._fail_acks(self._taken, len(pending), error)
        self._taken += len(pending)
        self._wake_room()

    def _fail_acks(self, number: int, count: int, error: StreamHubError) -> None:
        """Tell the publish() calls waiting on chunks ``number`` .. ``number + count - 1``."""
        acks = self._acks
        if not acks:
            return
        for i in range(number, number + count):
            ack = acks.pop(i, None)
            if ack is not None:
                ack.error = error
                ack.event.set()

    def claim(self) -> int:
        """What was written, for the store to check: the chunk count or, once offsets are
        store-assigned (fan-in), the batch count (one more if chunks were dropped unsent, a
        count the store can never match)."""
        if self.part is None:
            return self.sent
        return self.seq + (1 if self.dropped else 0)
