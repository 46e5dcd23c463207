"""Where a subscription stands, and what each live message or stored page means for it (pure).

A :class:`Subscription` (``_subscriber.py``) does the I/O: it reads the record and the log,
takes live messages and yields items. Every decision about them is made here, without I/O and
without anyio, so that it can be tested as a table (``tests/test_position.py``): what to
deliver, what to drop as a duplicate, when a gap needs a repair read of the store, when a reset
is due and when the subscription is over. Offsets are consecutive within a generation, so a
duplicate is an offset at or below the position and a gap is one beyond the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._codec import (
    ChunksMsg,
    DeletedMsg,
    EndMsg,
    HubClosingMsg,
    MetadataMsg,
    ResyncMsg,
    StoredMsg,
)
from ._types import Chunk, Cursor, End, Metadata, SessionInfo, State

__all__ = [
    "Closing",
    "Decision",
    "Deliver",
    "Finish",
    "Gap",
    "Position",
    "Repair",
    "Step",
    "runs",
]


@dataclass(frozen=True, slots=True)
class Gap:
    """A reset to announce: the cursor could not be honoured (``cause`` ``generation`` or
    ``lost``), and the consumer follows ``generation`` from the position now held."""

    cause: str
    reason: str
    generation: int


@dataclass(slots=True)  # not frozen: one per live message, the cheapest to build
class Deliver:
    """Chunks to deliver, duplicates already dropped; the position is past them."""

    chunks: Sequence[Chunk]


@dataclass(frozen=True, slots=True)
class Repair:
    """Read the store from the position (``check``: read the record first, to notice a
    deletion, lost data or a new generation)."""

    check: bool


@dataclass(frozen=True, slots=True)
class Finish:
    """The subscription is over: deliver ``end`` last."""

    end: End


@dataclass(frozen=True, slots=True)
class Closing:
    """This process's hub is shutting down: stop, the client resumes elsewhere."""


# What a live message asks for; None: nothing (a duplicate, or another generation's news).
# A ChunksMsg: deliver the whole live message (the common case, nothing to copy).
Decision = ChunksMsg | Deliver | Repair | Finish | Metadata | Closing | None
# What the record or a stored page asks the subscription to yield, in order.
Step = Gap | End


class Position:
    """The generation followed and the offset of the last chunk delivered (0: none yet).

    ``ended`` turns True with the decision that delivers the end (or a deletion).
    """

    __slots__ = ("ended", "generation", "offset")

    def __init__(self, generation: int = 0) -> None:
        self.generation = generation
        self.offset = 0
        self.ended = False

    @property
    def cursor(self) -> Cursor | None:
        """Cursor of the last chunk delivered (None before the first)."""
        return Cursor(self.generation, self.offset) if self.offset else None

    def open(self, after: Cursor | None, info: SessionInfo) -> Gap | None:
        """Take the session's record at the start: resume after ``after`` if it still holds,
        else a reset (and the replay starts from the generation's beginning)."""
        self.generation = info.generation
        if after is None:
            return None
        if after.generation != info.generation:
            return Gap(
                "generation",
                f"cursor {after} belongs to generation {after.generation}; "
                f"the session is at generation {info.generation}",
                info.generation,
            )
        if after.offset > info.chunks:
            return Gap(
                "lost",
                f"cursor {after} is ahead of the stored stream ({info.chunks} chunks); "
                "data was lost",
                info.generation,
            )
        self.offset = after.offset
        return None

    def keeps(self, read_from: tuple[int, int], chunks: Sequence[Chunk]) -> bool:
        """Whether a page read optimistically from ``read_from`` (generation, offset), before
        the record was known, continues the replay from the position."""
        if read_from != (self.generation, self.offset):
            return False  # read from a position the cursor check did not keep
        # Another generation's data: the replay reads it again and resets.
        return all(c.cursor.generation == self.generation for c in chunks)

    def live(self, msg: object) -> Decision:
        """What the live message ``msg`` means at this position."""
        if type(msg) is ChunksMsg:
            return self._chunks(msg)
        if isinstance(msg, HubClosingMsg):
            return Closing()
        if isinstance(msg, StoredMsg):
            # A batch too big for pub/sub: read it (and anything before it) from the store.
            if msg.generation > self.generation or (
                msg.generation == self.generation and msg.last > self.offset
            ):
                return Repair(check=msg.generation != self.generation)
            return None
        if isinstance(msg, EndMsg):
            if msg.generation == self.generation and msg.offset == self.offset + 1:
                self.ended = True
                return Finish(End(msg.state, msg.reason))
            if msg.generation >= self.generation:
                # Chunks before the end are still on their way (or were missed): read them.
                return Repair(check=True)
            return None
        if isinstance(msg, MetadataMsg):
            return Metadata(msg.value) if msg.generation == self.generation else None
        if isinstance(msg, DeletedMsg):
            self.ended = True
            return Finish(End(State.CANCELLED, "deleted"))
        if isinstance(msg, ResyncMsg):
            return Repair(check=True)
        return None

    def _chunks(self, msg: ChunksMsg) -> ChunksMsg | Deliver | Repair | None:
        if msg.generation == self.generation and msg.first == self.offset + 1:
            # The common case first: the next chunks, all of the message.
            self.offset = msg.last
            return msg
        if msg.generation < self.generation:
            return None  # a stale producer's late message: its appends were refused
        if msg.generation != self.generation or msg.first > self.offset + 1:
            return Repair(check=True)
        chunks = tuple(c for c in msg.chunks if c.cursor.offset > self.offset)
        if not chunks:
            return None
        self.offset = chunks[-1].cursor.offset
        return Deliver(chunks)

    def checked(self, info: SessionInfo | None) -> list[Step]:
        """The record read before a checked repair: the end when the session is gone, a reset
        when it restarted as another generation (followed from its start), or when the store
        holds fewer chunks than were delivered (they were lost, e.g. in a failover to a
        replica that had not received them): the reader starts over from what is stored."""
        if info is None:
            self.ended = True
            return [End(State.FAILED, "the session is no longer stored (deleted, expired or lost)")]
        if info.generation != self.generation:
            return [self.restart(info.generation)]
        if info.chunks < self.offset:
            delivered, self.offset = self.offset, 0
            return [
                Gap(
                    "lost",
                    f"the stored stream holds {info.chunks} chunks, fewer than the {delivered} "
                    "delivered; data was lost",
                    self.generation,
                )
            ]
        return []

    def restart(self, generation: int) -> Gap:
        """The session restarted as ``generation``: follow that one from its start."""
        self.generation, self.offset = generation, 0
        return Gap("generation", f"the session restarted as generation {generation}", generation)

    def run(self, run: Sequence[Chunk]) -> list[Gap]:
        """Take a run of consecutive stored chunks, to be delivered after the resets returned."""
        gaps: list[Gap] = []
        head = run[0].cursor
        if head.generation != self.generation:
            gaps.append(self.restart(head.generation))
        if head.offset != self.offset + 1:
            # Trimmed by maxlen, or lost (e.g. written to a primary that failed before its
            # replica had it): said, never skipped silently.
            gaps.append(
                Gap(
                    "lost",
                    f"chunks {self.offset + 1}-{head.offset - 1} are no longer stored "
                    "(trimmed or lost)",
                    self.generation,
                )
            )
        self.offset = run[-1].cursor.offset
        return gaps

    def stored_end(self, generation: int, end: End) -> list[Step]:
        """The end marker a page reached: the subscription ends with ``end``."""
        steps: list[Step] = []
        if generation != self.generation:
            steps.append(self.restart(generation))
        self.ended = True
        steps.append(end)
        return steps

    def settle(self, info: SessionInfo | None) -> list[Step]:
        """After the log was read to its last page without an end marker: compare with the
        record read before it (``info``; None: not read). Chunks it counts beyond the position
        are lost; a finished session ends here instead of waiting live for nothing."""
        if info is None or info.generation != self.generation:
            return []
        steps: list[Step] = []
        if info.chunks > self.offset:
            steps.append(
                Gap(
                    "lost",
                    f"chunks {self.offset + 1}-{info.chunks} are no longer stored (data lost)",
                    self.generation,
                )
            )
            self.offset = info.chunks
        if info.state.finished:
            self.ended = True
            steps.append(End(info.state, info.reason))
        return steps


def runs(chunks: Sequence[Chunk]) -> list[Sequence[Chunk]]:
    """Chunks of a page split where offsets jump (a hole in the log), usually just one run."""
    if not chunks:
        return []
    first, last = chunks[0].cursor, chunks[-1].cursor
    if last.generation == first.generation and last.offset - first.offset + 1 == len(chunks):
        return [chunks]
    found: list[Sequence[Chunk]] = []
    start = 0
    for i in range(1, len(chunks)):
        a, b = chunks[i - 1].cursor, chunks[i].cursor
        if b.generation != a.generation or b.offset != a.offset + 1:
            found.append(chunks[start:i])
            start = i
    found.append(chunks[start:])
    return found
