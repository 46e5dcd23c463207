"""Subscriptions: replay from a cursor, then follow live, with no gap and no duplicate.

The hand-off works because the live listener is registered *before* the store is read: every
chunk is either already in the store when the replay reads it, or arrives on the listener
afterwards, or both. Offsets are consecutive within a generation, so a duplicate is dropped by
comparing offsets and a gap (a lost or overflowed live message) is noticed at once and repaired
by reading the store from the last delivered offset.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._codec import (
    ChunksMsg,
    DeletedMsg,
    EndMsg,
    HubClosingMsg,
    MetadataMsg,
    ResyncMsg,
    StoredMsg,
)
from ._errors import SessionNotFound, StreamClosed
from ._fanout import QueueListener
from ._types import (
    Batch,
    Chunk,
    Cursor,
    End,
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

__all__ = ["SubscriberHost", "Subscription", "read_snapshot"]


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
        self._generation = after.generation if after else 0
        self._pos = 0
        self._ended = False
        self.opened = anyio.Event()  # set once the session is found and followed live
        self._iter = self._run()

    @property
    def generation(self) -> int:
        """The generation being followed (known once ``opened`` is set; 0 before)."""
        return self._generation

    @property
    def cursor(self) -> Cursor | None:
        """Cursor of the last chunk delivered (None before the first)."""
        return Cursor(self._generation, self._pos) if self._pos else None

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

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
            self._generation = info.generation
            self.opened.set()
            if after is not None:
                if after.generation != info.generation:
                    yield self._reset(
                        "generation",
                        f"cursor {after} belongs to generation {after.generation}; "
                        f"the session is at generation {info.generation}",
                        info.generation,
                    )
                elif after.offset > info.chunks:
                    yield self._reset(
                        "lost",
                        f"cursor {after} is ahead of the stored stream ({info.chunks} chunks); "
                        "data was lost",
                        info.generation,
                    )
                else:
                    self._pos = after.offset
            if info.metadata is not None:
                yield Metadata(info.metadata)
            watched = info.state is State.ACTIVE
            if watched:
                hub.watch(self.session_id, info.generation, info.lease_remaining, listener)
            if after is None and info.state.finished:
                # A full replay of a finished log: the page read from its first entry is the
                # start of the generation in the record, whatever its number (a page of a newer
                # one is dropped just below). An active session's first page is read again,
                # whole, before it goes live (a 2-entry page would need a second read anyway).
                guess = (self._generation, 0)
            if page is not None and guess != (self._generation, self._pos):
                page = None  # read from a position the cursor check did not keep
            if page is not None and any(
                c.cursor.generation != self._generation for c in page.chunks
            ):
                page = None  # another generation's data: the replay reads it again and resets
            try:
                replay = self._repair(check=False, first_page=size, prefetched=page, info=info)
                async for item in replay:
                    yield item
                while not self._ended:
                    msg = await listener.get()
                    if (
                        type(msg) is ChunksMsg
                        and msg.generation == self._generation
                        and msg.first == self._pos + 1
                    ):
                        # The common case, without the generator below: the next chunks.
                        self._pos = msg.chunks[-1].cursor.offset
                        for item in _items(msg.chunks, self._batch_live):
                            yield item
                        continue
                    async for item in self._on_live(msg):
                        yield item
            finally:
                if watched:
                    hub.unwatch(self.session_id, listener)

    async def _on_live(self, msg: object) -> AsyncGenerator[Item, None]:
        if isinstance(msg, HubClosingMsg):
            raise StreamClosed("the hub is shutting down; resume from the last cursor elsewhere")
        if isinstance(msg, ChunksMsg):
            if msg.generation < self._generation:
                return  # a stale producer's late message: its appends were refused
            if msg.generation != self._generation or msg.first > self._pos + 1:
                async for item in self._repair(check=True):
                    yield item
                return
            chunks = msg.chunks
            if chunks[0].cursor.offset <= self._pos:
                chunks = tuple(c for c in chunks if c.cursor.offset > self._pos)
                if not chunks:
                    return
            self._pos = chunks[-1].cursor.offset
            for item in _items(chunks, self._batch_live):
                yield item
        elif isinstance(msg, StoredMsg):
            # A batch too big for pub/sub: read it (and anything before it) from the store.
            if msg.generation > self._generation or (
                msg.generation == self._generation and msg.last > self._pos
            ):
                async for item in self._repair(check=msg.generation != self._generation):
                    yield item
        elif isinstance(msg, EndMsg):
            if msg.generation == self._generation and msg.offset == self._pos + 1:
                self._ended = True
                yield End(msg.state, msg.reason)
            elif msg.generation >= self._generation:
                # Chunks before the end are still on their way (or were missed): read them.
                async for item in self._repair(check=True):
                    yield item
        elif isinstance(msg, MetadataMsg):
            if msg.generation == self._generation:
                yield Metadata(msg.value)
        elif isinstance(msg, DeletedMsg):
            self._ended = True
            yield End(State.CANCELLED, "deleted")
        elif isinstance(msg, ResyncMsg):
            async for item in self._repair(check=True):
                yield item

    def _reset(self, cause: str, reason: str, generation: int) -> Reset:
        """A reset for the consumer, counted by cause (``generation`` or ``lost``)."""
        self._hub.telemetry.reset(cause)
        return Reset(reason, generation)

    def _restarted(self, generation: int) -> Reset:
        """The session restarted as ``generation``: follow that one from its start."""
        self._generation, self._pos = generation, 0
        return self._reset(
            "generation", f"the session restarted as generation {generation}", generation
        )

    async def _repair(
        self,
        *,
        check: bool,
        first_page: int = 0,
        prefetched: ReadResult | None = None,
        info: SessionInfo | None = None,
    ) -> AsyncGenerator[Item, None]:
        """Deliver what the store holds after the current position.

        With ``check``, the session record is read first and compared afterwards, to notice
        deletion, lost data and new generations. Reading the record *before* the log matters:
        every chunk it counts was appended before the log read, so a chunk missing from the log
        is really gone rather than appended in between. Without ``check``, ``info`` (read just
        before) serves the same comparison: a finished session whose log lost its end ends
        here instead of waiting live for nothing.
        """
        hub = self._hub
        if check:
            info = (await hub.backend.info([self.session_id]))[0]
            if info is None:
                self._ended = True
                yield End(
                    State.FAILED, "the session is no longer stored (deleted, expired or lost)"
                )
                return
            if info.generation != self._generation:
                yield self._restarted(info.generation)
        page_size = hub.settings.replay_batch
        # A small first page when resuming, so the first bytes go out before the big reads.
        size = min(first_page or page_size, page_size)
        while True:
            if prefetched is not None:
                page, prefetched = prefetched, None
            else:
                page = await hub.backend.read(self.session_id, (self._generation, self._pos), size)
            size = page_size
            for run in _runs(page.chunks):
                head = run[0].cursor
                if head.generation != self._generation:
                    yield self._restarted(head.generation)
                if head.offset != self._pos + 1:
                    # Trimmed by maxlen, or lost (e.g. written to a primary that failed before
                    # its replica had it): said, never skipped silently.
                    yield self._reset(
                        "lost",
                        f"chunks {self._pos + 1}-{head.offset - 1} are no longer stored "
                        "(trimmed or lost)",
                        self._generation,
                    )
                self._pos = run[-1].cursor.offset
                for item in _items(run, self._batch_replay):
                    yield item
            if page.end is not None:
                generation, end = page.end
                if generation != self._generation:
                    yield self._restarted(generation)
                self._ended = True
                yield end
                return
            if not page.more:
                break
        if info is None or info.generation != self._generation:
            return
        if info.chunks > self._pos:
            yield self._reset(
                "lost",
                f"chunks {self._pos + 1}-{info.chunks} are no longer stored (data lost)",
                self._generation,
            )
            self._pos = info.chunks
        if info.state.finished:
            self._ended = True
            yield End(info.state, info.reason)


def _runs(chunks: Sequence[Chunk]) -> list[Sequence[Chunk]]:
    """Chunks of a page split where offsets jump (a hole in the log), usually just one run."""
    if not chunks:
        return []
    first, last = chunks[0].cursor, chunks[-1].cursor
    if last.generation == first.generation and last.offset - first.offset + 1 == len(chunks):
        return [chunks]
    runs: list[Sequence[Chunk]] = []
    start = 0
    for i in range(1, len(chunks)):
        a, b = chunks[i - 1].cursor, chunks[i].cursor
        if b.generation != a.generation or b.offset != a.offset + 1:
            runs.append(chunks[start:i])
            start = i
    runs.append(chunks[start:])
    return runs


def _items(chunks: Sequence[Chunk], batch: bool) -> Sequence[Item]:
    """Consecutive chunks as the subscriber takes them: one :class:`Batch`, or one by one."""
    if batch:
        return (Batch(tuple(chunks), chunks[-1].cursor),)
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
    ).as_dict()
