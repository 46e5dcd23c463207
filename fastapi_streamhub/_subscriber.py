"""Subscriptions: replay from a cursor, then follow live, with no gap and no duplicate.

The hand-off works because the live listener is registered *before* the store is read: every
chunk is either already in the store when the replay reads it, or arrives on the listener
afterwards, or both. Offsets are consecutive within a generation, so a duplicate is dropped by
comparing offsets and a gap (a lost or overflowed live message) is noticed at once and repaired
by reading the store from the last delivered offset. Those decisions are made by the pure
:class:`~._position.Position`; a Subscription does the reads and yields.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._codec import ChunksMsg
from ._errors import LimitExceeded, SessionNotFound, StreamClosed
from ._fanout import QueueListener
from ._position import Closing, Decision, Deliver, Finish, Gap, Position, Repair, Step, runs
from ._trusted import trusted_batch
from ._types import (
    Chunk,
    Cursor,
    Item,
    Metadata,
    Reset,
    SessionInfo,
    Snapshot,
    State,
)
from .backends.base import Backend, ReadResult

if TYPE_CHECKING:
    from ._config import Settings
    from ._telemetry import Telemetry

__all__ = ["SubscriberHost", "SubscriberSlots", "Subscription", "read_snapshot"]


class SubscriberHost(Protocol):
    """What a subscription uses of its hub (the hub passes its services)."""

    @property
    def backend(self) -> Backend: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def telemetry(self) -> Telemetry: ...

    def subscriber_slot(self, session_id: str) -> AbstractAsyncContextManager[None]:
        """Hold one of the session's ``max_subscribers`` places on this instance."""

    def watch(
        self, session_id: str, generation: int, lease_remaining: float, listener: QueueListener
    ) -> None:
        """Have the lease keeper check the lease of a session followed here."""

    def unwatch(self, session_id: str, listener: QueueListener) -> None:
        """Stop the check :meth:`watch` asked for ``listener``."""


class SubscriberSlots:
    """How many subscriptions each session has on this instance, up to ``max_subscribers``."""

    def __init__(self, limit: int, telemetry: Telemetry) -> None:
        self._limit = limit
        self._telemetry = telemetry
        self.counts: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        """Hold one of the session's places while the context runs; LimitExceeded when none is left."""
        count = self.counts.get(session_id, 0)
        if count >= self._limit:
            raise LimitExceeded(
                f"session {session_id!r} already has {count} subscribers on this instance"
            )
        self.counts[session_id] = count + 1
        self._telemetry.subscribers(1)
        try:
            yield
        finally:
            self._telemetry.subscribers(-1)
            left = self.counts[session_id] - 1
            if left:
                self.counts[session_id] = left
            else:
                del self.counts[session_id]


class Subscription:
    """An async iterator of :data:`Item` (chunks, metadata, resets) ending with one :class:`End`.

    Use ``async for item in hub.subscribe(...)``; leaving the loop early releases the live
    listener when the iterator is closed (``async with`` closes it deterministically).
    """

    def __init__(
        self,
        hub: SubscriberHost,
        session_id: str,
        *,
        after: Cursor | None,
        buffer: int,
        batch_replay: bool,
        batch: bool = False,
    ) -> None:
        self.session_id = session_id
        self._hub = hub
        self._after = after
        self._batch_replay = batch_replay or batch
        self._batch_live = batch
        self.listener = QueueListener(buffer, hub.settings.subscriber_buffer_bytes)
        self._position = Position(after.generation if after else 0)
        self.opened = anyio.Event()  # set once the session is found and followed live
        self._stored = False
        self._iter = self._run()

    def stored_items(self) -> AsyncIterator[Item | ChunksMsg]:
        """The items, each whole live write as the backend's ``ChunksMsg`` rather than a
        :class:`Batch` (batch mode only; instead of iterating the subscription itself): its
        stored payloads, which the SSE response encodes without building a chunk object
        (``_http/sse.encode_stored``)."""
        assert self._batch_live, "batch mode only"
        self._stored = True
        return self._iter

    @property
    def generation(self) -> int:
        """The generation being followed (known once ``opened`` is set; 0 before)."""
        return self._position.generation

    @property
    def cursor(self) -> Cursor | None:
        """Cursor of the last chunk delivered (None before the first)."""
        return self._position.cursor

    def __aiter__(self) -> AsyncIterator[Item]:
        # The generator itself: ``async for`` then skips the __anext__ frame below per item.
        return self._iter

    async def __anext__(self) -> Item:
        return await self._iter.__anext__()

    async def aclose(self) -> None:
        """Stop following and release the listener."""
        await self._iter.aclose()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[Item, None]:
        hub = self._hub
        listener = self.listener
        position = self._position
        async with (
            hub.subscriber_slot(self.session_id),
            hub.backend.listen(self.session_id, listener),
        ):
            # The record and, optimistically, the first page after the cursor in one round trip.
            after = self._after
            guess = (after.generation, after.offset) if after else (0, 0)
            first = hub.backend.first_page
            if first and guess[1] == 0:
                first += 1  # from a generation's start: its start marker is an entry too
            size = min(first or hub.settings.replay_batch, hub.settings.replay_batch)
            opening = hub.backend.open(self.session_id, guess, size)
            if after is not None and hub.telemetry.enabled:
                opening = hub.telemetry.resume(self.session_id, after, opening)
            info, page = await opening
            if info is None:
                raise SessionNotFound(f"session {self.session_id!r} not found")
            gap = position.open(after, info)
            self.opened.set()
            if gap is not None:
                yield self._reset(gap)
            if info.metadata is not None:
                yield Metadata(info.metadata)
            watched = info.state is State.ACTIVE
            if watched:
                hub.watch(self.session_id, info.generation, info.lease_remaining, listener)
            if after is None and info.state.finished:
                # A full replay of a finished log: the page read from its first entry is the
                # start of the generation in the record, whatever its number (a page of a newer
                # one is dropped by keeps()). An active session's first page is read again,
                # whole, before it goes live (a 2-entry page would need a second read anyway).
                guess = (position.generation, 0)
            if page is not None and not position.keeps(guess, page.chunks):
                page = None
            try:
                replay = self._repair(check=False, first_page=size, prefetched=page, info=info)
                async for items in replay:
                    for item in items:
                        yield item
                stored, batch_live = self._stored, self._batch_live
                while not position.ended:
                    decision = position.live(await listener.get())
                    if type(decision) is ChunksMsg:
                        if stored:
                            yield decision  # type: ignore[misc]  # see stored_items()
                        elif batch_live:
                            chunks = decision.chunks
                            yield trusted_batch(chunks, chunks[-1].cursor)
                        else:
                            for item in decision.chunks:
                                yield item
                    elif type(decision) is Deliver:
                        for item in _items(decision.chunks, self._batch_live):
                            yield item
                    elif decision is not None:
                        async for items in self._act(decision):
                            for item in items:
                                yield item
            finally:
                if watched:
                    hub.unwatch(self.session_id, listener)

    async def _act(self, decision: Decision) -> AsyncGenerator[Sequence[Item], None]:
        """Carry out what :meth:`Position.live` decided, other than a plain delivery (its items
        in sequences, as :meth:`_repair` hands them out)."""
        if isinstance(decision, Repair):
            async for items in self._repair(check=decision.check):
                yield items
        elif isinstance(decision, Finish):
            yield (decision.end,)
        elif isinstance(decision, Metadata):
            yield (decision,)
        elif isinstance(decision, Closing):
            raise StreamClosed("the hub is shutting down; resume from the last cursor elsewhere")

    def _reset(self, gap: Gap) -> Reset:
        """A reset for the consumer, counted by cause (``generation`` or ``lost``)."""
        self._hub.telemetry.reset(gap.cause)
        return Reset(gap.reason, gap.generation)

    def _steps(self, steps: list[Step]) -> list[Item]:
        """The items of what the record or a page asked for: resets counted, ends as they are."""
        return [self._reset(step) if isinstance(step, Gap) else step for step in steps]

    async def _repair(
        self,
        *,
        check: bool,
        first_page: int = 0,
        prefetched: ReadResult | None = None,
        info: SessionInfo | None = None,
    ) -> AsyncGenerator[Sequence[Item], None]:
        """Deliver what the store holds after the current position: its items in sequences (a
        run of a page at a time), so a replayed chunk passes one generator, not two.

        With ``check``, the session record is read first and compared afterwards, to notice
        deletion, lost data and new generations. Reading the record *before* the log matters:
        every chunk it counts was appended before the log read, so a chunk missing from the log
        is really gone rather than appended in between. Without ``check``, ``info`` (read just
        before) serves the same comparison: a finished session whose log lost its end ends
        here instead of waiting live for nothing.
        """
        hub = self._hub
        position = self._position
        if check:
            info = (await hub.backend.info([self.session_id]))[0]
            steps = self._steps(position.checked(info))
            if steps:
                yield steps
            if position.ended:
                return
        page_size = hub.settings.replay_batch
        # A small first page when resuming, so the first bytes go out before the big reads.
        size = min(first_page or page_size, page_size)
        # Its first batch small too: a stored entry may hold hundreds of chunks (group commit,
        # compaction), which the response would encode before its first byte.
        head = _FIRST_BATCH if self._batch_replay and size < page_size else 0
        while True:
            if prefetched is not None:
                page, prefetched = prefetched, None
            else:
                read_from = (position.generation, position.offset)
                page = await hub.backend.read(self.session_id, read_from, size)
            size = page_size
            for run in runs(page.chunks):
                gaps = position.run(run)
                if gaps:
                    yield [self._reset(gap) for gap in gaps]
                if head and len(run) > head:
                    yield (trusted_batch(tuple(run[:head]), run[head - 1].cursor),)
                    run = run[head:]
                head = 0
                yield _items(run, self._batch_replay)
            if page.end is not None:
                yield self._steps(position.stored_end(*page.end))
                return
            if not page.more:
                break
        steps = self._steps(position.settle(info))
        if steps:
            yield steps


_FIRST_BATCH = 64
"""Chunks in the first batch a resumed replay hands out (the rest of its page follows)."""


def _items(chunks: Sequence[Chunk], batch: bool) -> Sequence[Item]:
    """Consecutive chunks as the subscriber takes them: one :class:`Batch`, or one by one."""
    if batch:
        return (trusted_batch(tuple(chunks), chunks[-1].cursor),)
    return chunks


async def read_snapshot(backend: Backend, page_size: int, info: SessionInfo) -> dict[str, Any]:
    """:meth:`StreamHub.snapshot` of the session ``info`` describes: its generation's chunks
    read page by page, the text chunks joined."""
    session_id = info.session_id
    parts: list[str] = []
    last: Cursor | None = None
    position = (info.generation, 0)
    while True:
        page = await backend.read(session_id, position, page_size)
        for chunk in page.chunks:
            if chunk.cursor.generation != info.generation:
                break
            if chunk.kind == "text" and chunk.event is None:
                parts.append(chunk.data)
            last = chunk.cursor
            position = (last.generation, last.offset)
        if page.end is not None or not page.more:
            break
    return Snapshot(
        session_id=session_id,
        state=info.state,
        text="".join(parts),
        last_event_id=None if last is None else str(last),
        metadata=info.metadata,
        turn=info.turn,
    ).as_dict()
