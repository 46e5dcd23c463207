"""The client's I/O-free parts: the SSE parser and rebuild rules, and the backoff policy.

The parser is checked against the WHATWG rules one by one, then against the library's own
encoder: whatever chunks and control items are encoded, and however the bytes are split into
network reads, the client rebuilds exactly the same items.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sse import chunks, json_values, states, texts

from fastapi_streamhub import Chunk, Cursor, End, Metadata, Reset
from fastapi_streamhub._client.follow import Backoff, Retrier
from fastapi_streamhub._client.sse_decode import EventParser, SSEEvent, rebuild
from fastapi_streamhub._http.sse import PING, encode_item, encode_retry
from fastapi_streamhub.client import ProtocolError, ReconnectFailed

_SETTINGS = settings(deadline=None, max_examples=100)


def parse(raw: bytes, *, splits: list[int] | None = None) -> list[SSEEvent]:
    """Feed ``raw`` cut at ``splits`` (or byte by byte), then close."""
    parser = EventParser()
    cuts = sorted(set(splits)) if splits is not None else list(range(1, len(raw)))
    events: list[SSEEvent] = []
    start = 0
    for cut in [*cuts, len(raw)]:
        events += parser.feed(raw[start:cut])
        start = cut
    return events + parser.close()


# ------------------------------------------------------------------------------ WHATWG rules


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending_and_data_joining(eol: bytes) -> None:
    raw = eol.join([b"data: a", b"data:b", b"data:  c", b"", b""])
    assert parse(raw) == [SSEEvent("message", "a\nb\n c")]
    assert parse(raw, splits=[]) == parse(raw)


def test_bom_only_at_the_start() -> None:
    raw = b"\xef\xbb\xbfdata: x\n\n\xef\xbb\xbfdata: y\n\n"
    # The second BOM is part of a field name that is not "data": the line is ignored.
    assert parse(raw) == [SSEEvent("message", "x")]


def test_cr_at_the_end_of_a_read_waits_for_a_possible_lf() -> None:
    parser = EventParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n\r") == []
    assert parser.feed(b"\n") == [SSEEvent("message", "x")]
    assert parser.feed(b"data: y\r\r") == []
    assert parser.close() == [SSEEvent("message", "y")]  # the last CR ends the blank line


def test_fields_id_retry_comments_and_unterminated_events() -> None:
    parser = EventParser()
    raw = (
        b": hello\n"
        b"retry: 250\nretry: 12x\nretry:\n"
        b"id: 1-1\nevent: json\ndata: 1\n\n"
        b"id: bad\0id\ndata: two\n\n"
        b"event: end\n\n"  # no data: nothing dispatched
        b"unknown: field\nid\ndata\n\n"
        b"data: never dispatched"
    )
    events = parser.feed(raw) + parser.close()
    assert events == [
        SSEEvent("json", "1", "1-1"),
        SSEEvent("message", "two"),
        SSEEvent("message", "", ""),
    ]
    assert parser.retry == 250
    assert parser.last_event_id == ""
    assert parser.activity == 4  # one comment and three events


def test_utf8_split_across_reads_and_invalid_bytes() -> None:
    raw = "data: é🌍\n\n".encode() + b"data: \xff\n\n"
    assert parse(raw) == [SSEEvent("message", "é🌍"), SSEEvent("message", "\ufffd")]


def test_rebuild_refuses_what_the_format_does_not_allow() -> None:
    for event in (
        SSEEvent("message", "x"),  # a chunk needs its cursor
        SSEEvent("message", "x", "7"),
        SSEEvent("json", "{", "1-1"),
        SSEEvent("end", '{"state": "paused"}'),
        SSEEvent("reset", "[]"),
    ):
        with pytest.raises(ProtocolError):
            rebuild(event)


# ------------------------------------------------------------- round trip through the encoder


def canonical(item: Any) -> Any:
    """An item as comparable JSON (so that 1 and True and 1.0 stay apart)."""
    if isinstance(item, Chunk):
        item = dataclasses.replace(item, producer=None)  # never sent
    return orjson.dumps(dataclasses.asdict(item), option=orjson.OPT_NON_STR_KEYS)


# What the codec can store: a str is always a text chunk, anything else a JSON chunk.
stored_chunks = chunks.filter(lambda c: (c.kind == "text") == isinstance(c.data, str))
controls = st.one_of(
    st.builds(Metadata, json_values),
    st.builds(Reset, texts, st.integers(1, 2**63)),
    st.builds(End, states, st.none() | texts),
)


@_SETTINGS
@given(
    items=st.lists(st.one_of(stored_chunks, controls), max_size=8),
    splits=st.lists(st.integers(0, 4000), max_size=12),
    bom=st.booleans(),
)
def test_client_rebuilds_what_the_library_encodes(
    items: list[Any], splits: list[int], bom: bool
) -> None:
    raw = (b"\xef\xbb\xbf" if bom else b"") + encode_retry(1000) + PING
    raw += b"".join(encode_item(item) for item in items)
    rebuilt = [rebuild(event) for event in parse(raw, splits=splits)]
    assert [canonical(i) for i in rebuilt] == [canonical(i) for i in items]


def test_a_named_chunk_keeps_its_name_and_its_data_type() -> None:
    text = Chunk(Cursor(2, 1), "note", "text", "note")
    value = Chunk(Cursor(2, 2), ["note"], "json", "note")
    events = parse(encode_item(text) + encode_item(value))
    assert [rebuild(e) for e in events] == [text, value]


# ---------------------------------------------------------------------------------- backoff


def test_backoff_bounds_grow_to_the_cap_and_honour_the_server_base() -> None:
    retrier = Retrier(Backoff(base=0.5, cap=4.0, max_attempts=50), "t", random.Random(1))
    bounds = []
    for _ in range(6):
        retrier.failed(ConnectionError("x"))
        samples = [retrier.pause() for _ in range(300)]
        assert all(s >= 0 for s in samples)
        bounds.append(max(samples))
    # Full jitter: each bound is min(cap, base * 2**(n-1)); the maximum of 300 draws is near it.
    for got, want in zip(bounds, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0], strict=True):
        assert want * 0.9 <= got <= want
    retrier.server_base = 0.02
    retrier.progress()
    retrier.failed(ConnectionError("x"))
    assert max(retrier.pause() for _ in range(300)) <= 0.02


def test_backoff_gives_up_after_max_attempts_and_max_elapsed() -> None:
    retrier = Retrier(
        Backoff(base=0.01, max_attempts=2, jitter=False), "stream 'x'", random.Random()
    )
    waits = retrier.waits()
    assert next(waits) == 0.0
    retrier.failed(OSError("refused"))
    assert next(waits) == 0.01
    retrier.failed(OSError("refused again"))
    with pytest.raises(ReconnectFailed, match="stream 'x': gave up after 2") as gave_up:
        next(waits)
    assert isinstance(gave_up.value.__cause__, OSError)
    timed = Retrier(Backoff(max_attempts=None, max_elapsed=1e-9), "t", random.Random())
    timed.failed(OSError("x"))
    with pytest.raises(ReconnectFailed):
        timed.pause()


def test_retry_after_is_a_floor() -> None:
    retrier = Retrier(Backoff(base=0.01, cap=10), "t", random.Random())
    retrier.answered(503, {"retry-after": "3"}, b'{"detail": "busy"}', not_found=True)
    assert retrier.pause() >= 3.0
    assert str(retrier.error) == "HTTP 503: busy"


@pytest.mark.parametrize(
    "options",
    [
        {"base": 0},
        {"cap": -1},
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"max_elapsed": 0},
        {"max_attempts": None, "max_elapsed": None},
    ],
)
def test_backoff_refuses_bad_settings(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**options)
