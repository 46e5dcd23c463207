"""The subscription's position-and-gap rules (fastapi_streamhub._position), pure: no store, no
event loop. Each live message or stored page is checked for what it delivers, drops, repairs,
resets and ends; a property test then plays live messages lost, repeated and reordered against
a store and checks the consumer gets every chunk once, in order."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_streamhub._codec import (
    ChunksMsg,
    DeletedMsg,
    EndMsg,
    HubClosingMsg,
    MetadataMsg,
    ResyncMsg,
    StoredMsg,
)
from fastapi_streamhub._position import (
    Closing,
    Decision,
    Deliver,
    Finish,
    Gap,
    Position,
    Repair,
    runs,
)
from fastapi_streamhub._types import Chunk, Cursor, End, Metadata, SessionInfo, State


def chunks(generation: int, first: int, last: int) -> tuple[Chunk, ...]:
    return tuple(Chunk(Cursor(generation, o), f"t{o}") for o in range(first, last + 1))


def info(generation: int = 2, count: int = 5, state: State = State.ACTIVE) -> SessionInfo:
    return SessionInfo("s", state, generation, count, None, 0.0, 0.0, reason="why")


def at(generation: int, offset: int) -> Position:
    position = Position(generation)
    position.offset = offset
    return position


def offsets(decision: Decision) -> list[int]:
    assert type(decision) in (Deliver, ChunksMsg)
    return [c.cursor.offset for c in decision.chunks]  # type: ignore[union-attr]


def plain(decision: object) -> object:
    """A delivery as the offsets it delivers (a whole message is delivered as itself)."""
    return offsets(decision) if type(decision) in (Deliver, ChunksMsg) else decision  # type: ignore[arg-type]


# At generation 2, offset 5 delivered: (message, what it decides, position afterwards).
LIVE: list[tuple[object, Decision, tuple[int, int]]] = [
    (ChunksMsg(2, chunks(2, 6, 8)), Deliver(chunks(2, 6, 8)), (2, 8)),
    (ChunksMsg(2, chunks(2, 4, 7)), Deliver(chunks(2, 6, 7)), (2, 7)),
    (ChunksMsg(2, chunks(2, 3, 5)), None, (2, 5)),
    (ChunksMsg(2, chunks(2, 7, 8)), Repair(check=True), (2, 5)),
    (ChunksMsg(1, chunks(1, 6, 8)), None, (2, 5)),
    (ChunksMsg(3, chunks(3, 1, 2)), Repair(check=True), (2, 5)),
    (StoredMsg(2, 9), Repair(check=False), (2, 5)),
    (StoredMsg(2, 5), None, (2, 5)),
    (StoredMsg(1, 9), None, (2, 5)),
    (StoredMsg(3, 1), Repair(check=True), (2, 5)),
    (EndMsg(2, 6, State.DONE, None), Finish(End(State.DONE, None)), (2, 5)),
    (EndMsg(2, 8, State.DONE, None), Repair(check=True), (2, 5)),
    (EndMsg(3, 1, State.FAILED, "x"), Repair(check=True), (2, 5)),
    (EndMsg(1, 9, State.DONE, None), None, (2, 5)),
    (MetadataMsg(2, {"a": 1}), Metadata({"a": 1}), (2, 5)),
    (MetadataMsg(1, {"a": 1}), None, (2, 5)),
    (DeletedMsg(), Finish(End(State.CANCELLED, "deleted")), (2, 5)),
    (ResyncMsg(), Repair(check=True), (2, 5)),
    (HubClosingMsg(), Closing(), (2, 5)),
]


@pytest.mark.parametrize(("msg", "decision", "after"), LIVE, ids=[repr(r[0])[:48] for r in LIVE])
def test_live_decisions(msg: object, decision: Decision, after: tuple[int, int]) -> None:
    """Each live message is delivered (duplicates cut off), dropped, repaired or ends it."""
    position = at(2, 5)
    assert plain(position.live(msg)) == plain(decision)
    assert (position.generation, position.offset) == after
    assert position.ended is isinstance(decision, Finish)


def test_the_next_whole_message_is_delivered_as_it_is() -> None:
    """The common case copies nothing: the message itself is the delivery."""
    msg = ChunksMsg.stored(2, 6, [b"ta", b"tb"], 4)
    position = at(2, 5)
    assert position.live(msg) is msg
    assert [c.data for c in msg.chunks] == ["a", "b"] and msg.chunks[1].cursor == Cursor(2, 7)


def test_open_without_cursor_follows_the_record_generation() -> None:
    position = Position()
    assert position.open(None, info(generation=4)) is None
    assert (position.generation, position.offset, position.cursor) == (4, 0, None)


@pytest.mark.parametrize(
    ("after", "gap", "offset"),
    [
        (Cursor(2, 3), None, 3),
        (Cursor(2, 5), None, 5),
        (Cursor(1, 3), "generation", 0),
        (Cursor(2, 6), "lost", 0),
    ],
)
def test_open_with_cursor(after: Cursor, gap: str | None, offset: int) -> None:
    """A cursor of another generation, or beyond the stored chunks, is a reset to the start."""
    position = Position(after.generation)
    found = position.open(after, info(generation=2, count=5))
    assert (found.cause if found else None) == gap
    if found is not None:
        assert found.generation == 2 and str(after) in found.reason
    assert (position.generation, position.offset) == (2, offset)


@pytest.mark.parametrize(
    ("read_from", "page", "kept"),
    [
        ((2, 3), chunks(2, 4, 5), True),
        ((2, 0), chunks(2, 4, 5), False),
        ((2, 3), chunks(3, 1, 1), False),
        ((2, 3), (), True),
    ],
)
def test_keeps_a_prefetched_page(
    read_from: tuple[int, int], page: tuple[Chunk, ...], kept: bool
) -> None:
    """A page read before the record was known is used only when it continues the position."""
    assert at(2, 3).keeps(read_from, page) is kept


def test_runs_split_where_offsets_jump() -> None:
    page = chunks(2, 1, 3) + chunks(2, 6, 7) + chunks(3, 1, 2)
    assert [[c.cursor.offset for c in r] for r in runs(page)] == [[1, 2, 3], [6, 7], [1, 2]]
    assert runs(()) == []


def test_run_after_a_hole_says_lost_then_moves_past_it() -> None:
    position = at(2, 3)
    assert position.run(chunks(2, 4, 6)) == []
    assert position.run(chunks(2, 9, 9)) == [
        Gap("lost", "chunks 7-8 are no longer stored (trimmed or lost)", 2)
    ]
    assert position.offset == 9


def test_run_of_a_new_generation_restarts_from_its_start() -> None:
    position = at(2, 3)
    gaps = position.run(chunks(3, 2, 4))
    assert [g.cause for g in gaps] == ["generation", "lost"]
    assert gaps[1].reason == "chunks 1-1 are no longer stored (trimmed or lost)"
    assert (position.generation, position.offset) == (3, 4)


def test_checked_record() -> None:
    """Before a checked repair: gone ends the subscription, a new generation restarts it, a
    store behind the position resets it."""
    gone = at(2, 3)
    assert gone.checked(None) == [
        End(State.FAILED, "the session is no longer stored (deleted, expired or lost)")
    ]
    assert gone.ended
    same = at(2, 3)
    assert same.checked(info(generation=2)) == [] and not same.ended
    newer = at(2, 3)
    assert newer.checked(info(generation=5)) == [
        Gap("generation", "the session restarted as generation 5", 5)
    ]
    assert (newer.generation, newer.offset, newer.ended) == (5, 0, False)
    # The store holds fewer chunks than were delivered (lost in a failover): a reset, and the
    # reader starts over from what is stored.
    behind = at(2, 8)
    assert behind.checked(info(generation=2, count=5)) == [
        Gap(
            "lost", "the stored stream holds 5 chunks, fewer than the 8 delivered; data was lost", 2
        )
    ]
    assert (behind.generation, behind.offset, behind.ended) == (2, 0, False)
    level = at(2, 5)
    assert level.checked(info(generation=2, count=5)) == [] and level.offset == 5


def test_stored_end() -> None:
    position = at(2, 3)
    end = End(State.DONE, None)
    assert position.stored_end(2, end) == [end] and position.ended
    other = at(2, 3)
    steps = other.stored_end(4, end)
    assert [type(s) for s in steps] == [Gap, End] and other.generation == 4


@pytest.mark.parametrize(
    ("record", "expected", "offset", "ended"),
    [
        (None, [], 3, False),
        (info(generation=1, count=9), [], 3, False),
        (info(count=3), [], 3, False),
        (info(count=5), ["lost"], 5, False),
        (info(count=3, state=State.DONE), [End(State.DONE, "why")], 3, True),
        (info(count=4, state=State.FAILED), ["lost", End(State.FAILED, "why")], 4, True),
    ],
)
def test_settle_after_the_last_page(
    record: SessionInfo | None, expected: list[object], offset: int, ended: bool
) -> None:
    """Chunks the record counts beyond what the log held are lost; a finished record ends."""
    position = at(2, 3)
    steps = position.settle(record)
    assert [s.cause if isinstance(s, Gap) else s for s in steps] == expected
    assert (position.offset, position.ended) == (offset, ended)


def test_cursor_is_the_last_delivered_chunk() -> None:
    position = Position(7)
    assert position.cursor is None
    position.live(ChunksMsg(7, chunks(7, 1, 2)))
    assert position.cursor == Cursor(7, 2)


def _deliveries(
    store: int, batches: Sequence[tuple[int, int]], page_size: int
) -> tuple[list[int], int]:
    """Play live messages (first, last) against a store holding chunks 1..store, repairing by
    reading pages as a Subscription does; then the end. What was delivered, and the repairs."""
    position = Position(1)
    delivered: list[int] = []
    repairs = 0

    def repair() -> None:
        nonlocal repairs
        repairs += 1
        while position.offset < store:
            start = position.offset + 1
            for run in runs(chunks(1, start, min(store, start + page_size - 1))):
                assert position.run(run) == []
                delivered.extend(c.cursor.offset for c in run)

    for first, last in [*batches, (store + 1, store + 1)]:
        if first > store:
            decision = position.live(EndMsg(1, store + 1, State.DONE, None))
        else:
            decision = position.live(ChunksMsg(1, chunks(1, first, min(last, store))))
        if type(decision) in (Deliver, ChunksMsg):
            delivered.extend(offsets(decision))
        elif isinstance(decision, Repair):
            repair()
            if first > store:
                decision = position.live(EndMsg(1, store + 1, State.DONE, None))
        if isinstance(decision, Finish):
            break
    assert position.ended
    return delivered, repairs


@settings(max_examples=300, deadline=None)
@given(
    store=st.integers(1, 40),
    batches=st.lists(st.tuples(st.integers(1, 40), st.integers(0, 5)), max_size=30),
    page_size=st.integers(1, 7),
)
def test_lost_repeated_and_reordered_live_messages_deliver_each_chunk_once(
    store: int, batches: list[tuple[int, int]], page_size: int
) -> None:
    """Whatever live messages arrive (any subset, repeated, out of order), the consumer gets
    chunks 1..n exactly once and in order, then the end; in order and complete, no repair."""
    live = [(first, first + extra) for first, extra in batches]
    delivered, _ = _deliveries(store, live, page_size)
    assert delivered == list(range(1, store + 1))


@given(store=st.integers(1, 40), sizes=st.lists(st.integers(1, 5), min_size=1, max_size=40))
def test_in_order_live_messages_need_no_repair(store: int, sizes: list[int]) -> None:
    batches, first = [], 1
    for size in sizes:
        if first > store:
            break
        batches.append((first, first + size - 1))
        first += size
    if first <= store:
        batches.append((first, store))
    delivered, repairs = _deliveries(store, batches, 3)
    assert delivered == list(range(1, store + 1)) and repairs == 0
