"""The engine's fast paths build exactly what the slow, checked paths build.

- ``_trusted``: chunks, cursors and batches built without their constructors are ordinary
  frozen instances (equal, hashable, frozen, pickled, replaced like any other).
- ``ChunksMsg.stored`` and ``ChunksMsg.framed`` (a bus record's bytes, split lazily): a live
  write decoded lazily holds the chunks ``decode_chunks`` gives.
- ``encode_stored``: the SSE bytes framed from stored payloads are byte for byte those of
  ``encode_chunk`` on the decoded chunks, for any chunk a producer can send.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastapi_streamhub import Event
from fastapi_streamhub._codec import (
    ChunksMsg,
    decode_chunks,
    decode_entry,
    encode_chunk,
    frame,
    frame_count,
    unframe,
)
from fastapi_streamhub._http.sse import encode_chunk as sse_chunk
from fastapi_streamhub._http.sse import encode_stored
from fastapi_streamhub._trusted import trusted_batch, trusted_chunk, trusted_cursor
from fastapi_streamhub._types import Batch, Chunk, Cursor

pytestmark = pytest.mark.timeout(60)


def test_trusted_objects_are_ordinary_frozen_instances() -> None:
    cursor = trusted_cursor(3, 9)
    chunk = trusted_chunk(cursor, {"a": [1]}, "json", "tool", "agent")
    batch = trusted_batch((chunk,), cursor)
    assert type(cursor) is Cursor and type(chunk) is Chunk and type(batch) is Batch
    assert cursor == Cursor(3, 9) and hash(cursor) == hash(Cursor(3, 9))
    assert cursor < Cursor(3, 10) and str(cursor) == "3-9"
    assert chunk == Chunk(Cursor(3, 9), {"a": [1]}, "json", "tool", "agent")
    assert batch == Batch((chunk,), Cursor(3, 9))
    assert repr(chunk) == repr(Chunk(Cursor(3, 9), {"a": [1]}, "json", "tool", "agent"))
    assert pickle.loads(pickle.dumps(chunk)) == chunk
    assert dataclasses.replace(chunk, data="x").data == "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cursor.offset = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        chunk.data = "changed"  # type: ignore[misc]


_text = st.text(st.characters(codec="utf-8"), max_size=40)
_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_items = st.lists(
    _text
    | _json.map(lambda v: {"v": v})
    | st.builds(Event, _json, st.sampled_from(["tool", "a.b:c-d_e"])),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(items=_items, producer=st.none() | st.just("agent"), first=st.integers(1, 2**40))
@example(items=["plain", "two\nlines\n", "", "cr\rhere", "nul\0", "é漢😀"], producer=None, first=1)
def test_stored_messages_decode_and_frame_like_the_checked_path(
    items: list[Any], producer: str | None, first: int
) -> None:
    payloads = [encode_chunk(item, producer) for item in items]
    framed = frame(payloads)
    msg = ChunksMsg.stored(7, first, unframe(framed), len(framed))
    expected = decode_chunks(7, first, payloads)
    assert (msg.first, msg.last, msg.count) == (first, first + len(items) - 1, len(items))
    assert encode_stored(msg) == b"".join(sse_chunk(c) for c in expected)
    assert list(msg.chunks) == expected
    assert [c.cursor for c in msg.chunks] == [Cursor(7, first + i) for i in range(len(items))]
    # A message built from chunks (the memory backend's) frames the same bytes.
    assert encode_stored(ChunksMsg(7, tuple(expected))) == encode_stored(msg)
    # So does one kept as the bus record's bytes, split only when read.
    lazy = ChunksMsg.framed(7, first, framed)
    assert (lazy.first, lazy.last, lazy.size) == (msg.first, msg.last, msg.size)
    assert encode_stored(lazy) == encode_stored(msg)
    assert lazy.payloads == payloads
    assert frame_count(framed) == len(payloads)
    assert ChunksMsg.framed(7, first, framed).chunks == msg.chunks


@settings(max_examples=200, deadline=None)
@given(items=_items, producer=st.none() | st.just("agent"), skip=st.integers(0, 8))
def test_a_stored_entry_decodes_like_decode_chunks(
    items: list[Any], producer: str | None, skip: int
) -> None:
    """A log entry (a row on PostgreSQL) read after a cursor inside it: only what follows."""
    payloads = [encode_chunk(item, producer) for item in items]
    last = 40 + len(items) - 1  # the entry holds offsets 40..last
    expected = [c for c in decode_chunks(3, 40, payloads) if c.cursor.offset > 40 + skip - 1]
    after = 40 + skip - 1 if skip else 0
    assert decode_entry(3, last, frame(payloads), after) == expected
