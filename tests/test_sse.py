"""SSE framing: exact wire bytes, and round trips through a spec-faithful EventSource parser.

The parser below follows the WHATWG "parse an event stream" / "interpret an event stream"
algorithm (https://html.spec.whatwg.org/multipage/server-sent-events.html); ``rebuild`` then
applies the client rules documented in ``fastapi_streamhub._http.sse``. The property tests check that
what a standard client sees is exactly what the producer sent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from fastapi.sse import KEEPALIVE_COMMENT
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastapi_streamhub._client.sse_decode import EventParser, ProtocolError
from fastapi_streamhub._client.sse_decode import SSEEvent as DecodedEvent
from fastapi_streamhub._client.sse_decode import rebuild as rebuild_item
from fastapi_streamhub._codec import RESERVED_EVENTS
from fastapi_streamhub._errors import InvalidChunk, InvalidCursor
from fastapi_streamhub._http.sse import (
    PING,
    encode_chunk,
    encode_end,
    encode_item,
    encode_metadata,
    encode_reset,
    encode_retry,
    parse_last_event_id,
)
from fastapi_streamhub._types import Batch, Chunk, Cursor, End, Metadata, Reset, State

# --------------------------------------------------------------------------- reference parser

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass
class SSEEvent:
    type: str
    data: str
    last_event_id: str
    # Not part of the spec's event object: the id field seen in this event's own block, if any,
    # so tests can tell "carries an id" from "inherits the previous one".
    own_id: str | None = None


@dataclass
class Parsed:
    events: list[SSEEvent] = field(default_factory=list)
    retries: list[int] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    last_event_id: str = ""


def parse_sse(raw: bytes) -> Parsed:
    """Parse a complete ``text/event-stream`` body the way an EventSource does."""
    text = raw.decode("utf-8")  # strict on purpose: the server must send valid UTF-8
    text = text.removeprefix("\ufeff")
    lines = _LINE_BREAK.split(text)
    # Whatever follows the last line break is an unterminated line; at end of stream the spec
    # discards it (and any event that was not dispatched by a blank line).
    assert lines.pop() == "", "stream does not end with a line break"

    out = Parsed()
    data = ""
    event_type = ""
    own_id: str | None = None
    for line in lines:
        if line == "":
            out_id = out.last_event_id
            if data == "":
                event_type, own_id = "", None
                continue
            data = data.removesuffix("\n")
            out.events.append(SSEEvent(event_type or "message", data, out_id, own_id))
            data, event_type, own_id = "", "", None
            continue
        if line.startswith(":"):
            out.comments.append(line[1:])
            continue
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                out.last_event_id = value
                own_id = value
        elif name == "retry" and value and all("0" <= c <= "9" for c in value):
            out.retries.append(int(value))
        # any other field is ignored
    return out


# (kind, value, event name, own id, producer name)
Rebuilt = tuple[str, Any, str | None, str | None, str | None]


def rebuild(events: list[SSEEvent]) -> list[Rebuilt]:
    """Apply the documented client rules: ``(kind, value, event name, own id, producer)``."""
    result: list[Rebuilt] = []
    for ev in events:
        if ev.type == "message":
            result.append(("text", ev.data, None, ev.own_id, None))
        elif ev.type == "json":
            value = json.loads(ev.data)
            kind = "text" if isinstance(value, str) else "json"
            result.append((kind, value, None, ev.own_id, None))
        elif ev.type == "part":
            part = json.loads(ev.data)
            name = part.get("event")
            value = part["data"]
            kind = "custom" if name else "text" if isinstance(value, str) else "json"
            result.append((kind, value, name, ev.own_id, part["producer"]))
        elif ev.type in ("metadata", "reset", "end"):
            result.append((ev.type, json.loads(ev.data), None, ev.own_id, None))
        else:
            result.append(("custom", json.loads(ev.data), ev.type, ev.own_id, None))
    return result


def expected(chunk: Chunk) -> Rebuilt:
    if chunk.event is not None:
        return ("custom", chunk.data, chunk.event, str(chunk.cursor), chunk.producer)
    return (chunk.kind, chunk.data, None, str(chunk.cursor), chunk.producer)


def strict(value: Any) -> Any:
    """Tag every JSON value with its type so that 1 != True and 1 != 1.0 in comparisons."""
    if isinstance(value, list | tuple):
        return ("list", [strict(v) for v in value])
    if isinstance(value, dict):
        return ("dict", {k: strict(v) for k, v in value.items()})
    return (type(value).__name__, value)


def strict_all(items: list[Rebuilt]) -> list[Any]:
    return [(kind, strict(value), name, id_, p) for kind, value, name, id_, p in items]


# --------------------------------------------------------------------------------- strategies

_U64 = 2**64 - 1
_SETTINGS = settings(deadline=None, max_examples=100)

# Pieces that stress SSE framing: line breaks, NUL, field names, colons, leading spaces, BOM and
# Unicode line separators that SSE must *not* treat as line breaks.
_HOSTILE_PIECES = [
    "\n",
    "\r",
    "\r\n",
    "\0",
    " ",
    ":",
    "data:",
    "data: ",
    "id: ",
    "id: 9-9",
    "event: end",
    "event: json",
    "retry: 1",
    "\ufeff",
    "\u2028",
    "\x85",
    "\x0b",
    "é",
    "🌍",
    "x",
]

plain_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]))
hostile_text = st.lists(st.sampled_from(_HOSTILE_PIECES), max_size=12).map("".join)
texts = st.one_of(plain_text, hostile_text)

cursors = st.builds(Cursor, st.integers(1, _U64), st.integers(0, _U64))

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(texts, children, max_size=4),
    ),
    max_leaves=10,
)
# The codec stores every str as a text chunk, so a JSON chunk never holds a bare string.
json_chunk_values = json_values.filter(lambda v: not isinstance(v, str))

_NAME_TAIL = "abcxyzABZ0189_.:-"
event_names = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from("aAzZjm"),
    st.text(alphabet=_NAME_TAIL, max_size=63),
).filter(lambda n: n not in RESERVED_EVENTS)
producers = st.none() | st.text(max_size=10)

text_chunks = st.builds(Chunk, cursors, texts, st.just("text"), st.none(), producers)
json_chunks = st.builds(Chunk, cursors, json_chunk_values, st.just("json"), st.none(), producers)
named_chunks = st.one_of(
    st.builds(Chunk, cursors, texts, st.just("text"), event_names, producers),
    st.builds(Chunk, cursors, json_values, st.just("json"), event_names, producers),
)
chunks = st.one_of(text_chunks, json_chunks, named_chunks)
states = st.sampled_from(list(State))

# -------------------------------------------------------------------------- exact wire bytes

C = Cursor(3, 7)


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("hello", b"data: hello\nid: 3-7\n\n"),
        ("a\nb", b"data: a\ndata: b\nid: 3-7\n\n"),
        ("", b"data: \nid: 3-7\n\n"),
        ("a\n", b"data: a\ndata: \nid: 3-7\n\n"),
        ("\n", b"data: \ndata: \nid: 3-7\n\n"),
        ("  two spaces", b"data:   two spaces\nid: 3-7\n\n"),
        ("k: v", b"data: k: v\nid: 3-7\n\n"),
        ("héllo 🌍", "data: héllo 🌍\nid: 3-7\n\n".encode()),
        ("a\rb", b'event: json\ndata: "a\\rb"\nid: 3-7\n\n'),
        ("a\r\nb", b'event: json\ndata: "a\\r\\nb"\nid: 3-7\n\n'),
        ("a\0b", b'event: json\ndata: "a\\u0000b"\nid: 3-7\n\n'),
    ],
)
def test_text_chunk_wire(text: str, wire: bytes) -> None:
    assert encode_chunk(Chunk(C, text)) == wire


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ({"a": [1, 2.5, None, True]}, b'event: json\ndata: {"a":[1,2.5,null,true]}\nid: 3-7\n\n'),
        (None, b"event: json\ndata: null\nid: 3-7\n\n"),
        (0, b"event: json\ndata: 0\nid: 3-7\n\n"),
        ([], b"event: json\ndata: []\nid: 3-7\n\n"),
        ({"s": "x\ny"}, b'event: json\ndata: {"s":"x\\ny"}\nid: 3-7\n\n'),
    ],
)
def test_json_chunk_wire(value: Any, wire: bytes) -> None:
    assert encode_chunk(Chunk(C, value, "json")) == wire


def test_named_chunk_is_always_json() -> None:
    assert encode_chunk(Chunk(C, "hi", "text", "token")) == b'event: token\ndata: "hi"\nid: 3-7\n\n'
    assert encode_chunk(Chunk(C, {"n": 1}, "json", "tool.call")) == (
        b'event: tool.call\ndata: {"n":1}\nid: 3-7\n\n'
    )


@pytest.mark.parametrize(
    "name", ["", " token", "a\nb", "a\rb", "a\0b", "1abc", "x" * 65, *sorted(RESERVED_EVENTS)]
)
def test_unsafe_event_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidChunk):
        encode_chunk(Chunk(C, "hi", "text", name))


def test_chunk_of_a_named_producer_is_a_part_event() -> None:
    tail = b"\nid: " + str(C).encode() + b"\n\n"
    assert encode_chunk(Chunk(C, "hi\r", producer="agent-1")) == (
        b'event: part\ndata: {"producer":"agent-1","data":"hi\\r"}' + tail
    )
    assert encode_chunk(Chunk(C, {"a": 1}, "json", producer="a")) == (
        b'event: part\ndata: {"producer":"a","data":{"a":1}}' + tail
    )
    assert encode_chunk(Chunk(C, "hi", "text", "tok", "a")) == (
        b'event: part\ndata: {"producer":"a","data":"hi","event":"tok"}' + tail
    )
    # Without a producer, the bytes of before fan-in.
    assert encode_chunk(Chunk(C, "hi")) == b"data: hi" + tail
    with pytest.raises(InvalidChunk):
        encode_chunk(Chunk(C, "hi", "text", "end", "a"))


def test_control_events_wire() -> None:
    assert encode_metadata({"model": "m"}) == b'event: metadata\ndata: {"model":"m"}\n\n'
    assert encode_metadata(None) == b"event: metadata\ndata: null\n\n"
    assert encode_reset("cursor_ahead", 4) == (
        b'event: reset\ndata: {"reason":"cursor_ahead","generation":4}\n\n'
    )
    assert encode_end(State.DONE, None) == b'event: end\ndata: {"state":"done","reason":null}\n\n'
    assert encode_end(State.FAILED, "boom\n") == (
        b'event: end\ndata: {"state":"failed","reason":"boom\\n"}\n\n'
    )


def test_retry_and_ping() -> None:
    assert encode_retry(0) == b"retry: 0\n\n"
    assert encode_retry(1500) == b"retry: 1500\n\n"
    assert PING == KEEPALIVE_COMMENT == b": ping\n\n"
    parsed = parse_sse(encode_retry(1500) + PING)
    assert parsed.events == []
    assert parsed.retries == [1500]
    assert parsed.comments == [" ping"]


@pytest.mark.parametrize("ms", [-1, True, 1.5, "10"])
def test_retry_refuses_non_integers(ms: Any) -> None:
    with pytest.raises(ValueError):
        encode_retry(ms)


def test_encode_item_dispatch() -> None:
    a, b = Chunk(Cursor(1, 1), "a"), Chunk(Cursor(1, 2), {"b": 2}, "json")
    assert encode_item(a) == encode_chunk(a)
    assert encode_item(Batch((a, b), Cursor(1, 2))) == encode_chunk(a) + encode_chunk(b)
    assert encode_item(Batch((), Cursor(1, 0))) == b""
    assert encode_item(Metadata([1])) == encode_metadata([1])
    assert encode_item(Reset("gone", 2)) == encode_reset("gone", 2)
    assert encode_item(End(State.CANCELLED, "user")) == encode_end(State.CANCELLED, "user")
    with pytest.raises(TypeError):
        encode_item("text")  # type: ignore[arg-type]


def test_every_event_is_terminated_and_utf8() -> None:
    items: list[Any] = [
        Chunk(C, "x"),
        Chunk(C, "x\r"),
        Chunk(C, 1, "json"),
        Chunk(C, 1, "json", "e"),
        Metadata(1),
        Reset("r", 1),
        End(State.DONE),
    ]
    for item in items:
        wire = encode_item(item)
        assert wire.endswith(b"\n\n")
        assert b"\r" not in wire
        wire.decode("utf-8")
    assert b"id:" not in encode_item(Metadata({"id": "id: 1-1"})).replace(b'"id: 1-1"', b"")


# ------------------------------------------------------------------------- round-trip properties


@_SETTINGS
@given(chunk=text_chunks)
@example(chunk=Chunk(C, ""))
@example(chunk=Chunk(C, "\n"))
@example(chunk=Chunk(C, " lead\n  both \n"))
@example(chunk=Chunk(C, "\n\nevent: end\ndata: x\n\n"))
@example(chunk=Chunk(C, "id: 9-9"))
@example(chunk=Chunk(C, "\r\nid: 1-1\r\n\r\n"))
@example(chunk=Chunk(C, "\r"))
@example(chunk=Chunk(C, "\0"))
@example(chunk=Chunk(C, "\ufeffbom"))
@example(chunk=Chunk(C, "\u2028\x85\x0b\x0c"))
@example(chunk=Chunk(Cursor(_U64, _U64), "max"))
def test_text_chunk_round_trips(chunk: Chunk) -> None:
    parsed = parse_sse(encode_chunk(chunk))
    assert len(parsed.events) == 1
    assert parsed.last_event_id == str(chunk.cursor)
    assert strict_all(rebuild(parsed.events)) == strict_all([expected(chunk)])


@_SETTINGS
@given(chunk=text_chunks)
def test_plain_text_is_sent_as_message_only_when_lossless(chunk: Chunk) -> None:
    (event,) = parse_sse(encode_chunk(chunk)).events
    needs_json = "\r" in chunk.data or "\0" in chunk.data
    if chunk.producer is not None:
        assert event.type == "part"
    else:
        assert event.type == ("json" if needs_json else "message")


@_SETTINGS
@given(chunk=json_chunks)
def test_json_chunk_round_trips(chunk: Chunk) -> None:
    (event,) = parse_sse(encode_chunk(chunk)).events
    assert event.type == ("json" if chunk.producer is None else "part")
    assert "\n" not in event.data
    assert strict_all(rebuild([event])) == strict_all([expected(chunk)])


@_SETTINGS
@given(value=json_values)
def test_any_json_value_round_trips_through_json_event(value: Any) -> None:
    (event,) = parse_sse(encode_chunk(Chunk(C, value, "json"))).events
    assert event.type == "json"
    assert strict(json.loads(event.data)) == strict(value)


@_SETTINGS
@given(chunk=named_chunks)
def test_named_chunk_round_trips(chunk: Chunk) -> None:
    (event,) = parse_sse(encode_chunk(chunk)).events
    assert event.type == (chunk.event if chunk.producer is None else "part")
    assert strict_all(rebuild([event])) == strict_all([expected(chunk)])


@_SETTINGS
@given(chunk_list=st.lists(chunks, max_size=8))
@example(
    chunk_list=[
        Chunk(Cursor(1, 1), "\n\nevent: end\ndata: x\n\n"),
        Chunk(Cursor(1, 2), "id: 9-9"),
        Chunk(Cursor(1, 3), "\r\nid: 1-1\r\n\r\n"),
        Chunk(Cursor(1, 4), ""),
        Chunk(Cursor(1, 5), "data: forged\n\nevent: reset"),
        Chunk(Cursor(1, 6), "\n"),
    ]
)
def test_concatenated_chunks_parse_to_the_same_chunks(chunk_list: list[Chunk]) -> None:
    wire = b"".join(encode_chunk(c) for c in chunk_list)
    parsed = parse_sse(wire)
    assert strict_all(rebuild(parsed.events)) == strict_all([expected(c) for c in chunk_list])
    assert parsed.retries == []
    assert parsed.comments == []
    assert parsed.last_event_id == (str(chunk_list[-1].cursor) if chunk_list else "")
    # Equivalent through a Batch item.
    if chunk_list:
        assert encode_item(Batch(tuple(chunk_list), chunk_list[-1].cursor)) == wire


_controls = st.one_of(
    st.builds(Metadata, json_values),
    st.builds(Reset, texts, st.integers(1, _U64)),
    st.builds(End, states, st.none() | texts),
    st.just("ping"),
    st.integers(0, 10**9),
)


@_SETTINGS
@given(items=st.lists(st.one_of(chunks, _controls), max_size=8))
def test_mixed_stream_parses_in_order(items: list[Any]) -> None:
    wire = b""
    want: list[Rebuilt] = []
    retries: list[int] = []
    last_id = ""
    for item in items:
        if item == "ping":
            wire += PING
        elif isinstance(item, int):
            wire += encode_retry(item)
            retries.append(item)
        else:
            wire += encode_item(item)
            if isinstance(item, Chunk):
                want.append(expected(item))
                last_id = str(item.cursor)
            elif isinstance(item, Metadata):
                want.append(("metadata", item.value, None, None, None))
            elif isinstance(item, Reset):
                want.append(
                    (
                        "reset",
                        {"reason": item.reason, "generation": item.generation},
                        None,
                        None,
                        None,
                    )
                )
            else:
                end = {"state": item.state.value, "reason": item.reason}
                want.append(("end", end, None, None, None))
    parsed = parse_sse(wire)
    assert strict_all(rebuild(parsed.events)) == strict_all(want)
    assert parsed.retries == retries
    assert parsed.last_event_id == last_id


@_SETTINGS
@given(value=json_values)
def test_metadata_event(value: Any) -> None:
    (event,) = parse_sse(encode_metadata(value)).events
    assert (event.type, event.own_id) == ("metadata", None)
    assert strict(json.loads(event.data)) == strict(value)


@_SETTINGS
@given(reason=texts, generation=st.integers(1, _U64))
def test_reset_event(reason: str, generation: int) -> None:
    (event,) = parse_sse(encode_reset(reason, generation)).events
    assert (event.type, event.own_id) == ("reset", None)
    assert json.loads(event.data) == {"reason": reason, "generation": generation}


@_SETTINGS
@given(state=states, reason=st.none() | texts)
def test_end_event(state: State, reason: str | None) -> None:
    (event,) = parse_sse(encode_end(state, reason)).events
    assert (event.type, event.own_id) == ("end", None)
    assert json.loads(event.data) == {"state": state.value, "reason": reason}


# ------------------------------------------------------------------------ parse_last_event_id


@pytest.mark.parametrize(
    ("header", "query", "want"),
    [
        (None, None, None),
        ("", None, None),
        (None, "", None),
        ("", "", None),
        ("  \t", " ", None),
        ("1-2", None, Cursor(1, 2)),
        (None, "1-2", Cursor(1, 2)),
        ("1-2", "3-4", Cursor(1, 2)),
        ("", "3-4", Cursor(3, 4)),
        ("   ", "3-4", Cursor(3, 4)),
        (" 1-0 ", None, Cursor(1, 0)),
        (None, "\t5-6\r\n", Cursor(5, 6)),
        (f"{_U64}-{_U64}", None, Cursor(_U64, _U64)),
    ],
)
def test_parse_last_event_id(header: str | None, query: str | None, want: Cursor | None) -> None:
    assert parse_last_event_id(header, query) == want


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "1-",
        "-1",
        "1-2-3",
        "01-2",
        "1-02",
        "0-1",
        "1 - 2",
        "1-2\0",
        "\uff11-2",  # FULLWIDTH DIGIT ONE: str.isdigit() accepts it, a cursor must not
        "+1-2",
        "99999999999999999999999-1",
        f"{_U64 + 1}-1",
        f"1-{_U64 + 1}",
        "1-" + "1" * 63,
        "1" * 10_000,
        "1-2" * 1000,
    ],
)
def test_parse_last_event_id_rejects_malformed(bad: str) -> None:
    with pytest.raises(InvalidCursor):
        parse_last_event_id(bad, None)
    with pytest.raises(InvalidCursor):
        parse_last_event_id(None, bad)


def test_malformed_header_is_not_rescued_by_query() -> None:
    with pytest.raises(InvalidCursor):
        parse_last_event_id("abc", "1-2")


@_SETTINGS
@given(cursor=cursors, pad=st.sampled_from(["", " ", "\t", " \t "]), query=st.none() | texts)
def test_header_cursor_round_trips_and_wins(cursor: Cursor, pad: str, query: str | None) -> None:
    assert parse_last_event_id(pad + str(cursor) + pad, query) == cursor


@_SETTINGS
@given(header=st.none() | texts, query=st.none() | texts)
def test_parse_last_event_id_never_fails_otherwise(header: str | None, query: str | None) -> None:
    try:
        result = parse_last_event_id(header, query)
    except InvalidCursor:
        return
    if result is not None:
        used = header if header and header.strip(" \t\r\n") else query
        assert used is not None
        assert str(result) == used.strip(" \t\r\n")


@_SETTINGS
@given(chunk=chunks)
def test_library_client_rebuilds_every_chunk_with_its_producer(chunk: Chunk) -> None:
    """``_client.sse_decode.rebuild`` (the Python client's) gives back the very chunk, producer too."""
    (event,) = EventParser().feed(encode_chunk(chunk))
    # The codec stores every str as text, so a string is text whatever kind the strategy drew.
    kind: Literal["text", "json"] = "text" if isinstance(chunk.data, str) else "json"
    got = rebuild_item(event)
    assert isinstance(got, Chunk)
    assert (got.cursor, got.kind, got.event, got.producer) == (
        chunk.cursor,
        kind,
        chunk.event,
        chunk.producer,
    )
    assert strict(got.data) == strict(chunk.data)
    with pytest.raises(ProtocolError):
        rebuild_item(DecodedEvent("part", '{"data": 1}', "1-1"))
