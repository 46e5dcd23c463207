"""Server-sent event framing: the exact bytes a subscriber receives.

Every function here is pure: it turns an item into UTF-8 ``text/event-stream`` bytes and does no
I/O. Lines end with ``\\n`` and every event ends with a blank line. Within an event the fields are
written in the order ``event:``, ``data:``, ``id:``, and each field name is followed by exactly one
space, which an SSE parser strips, so a value's own leading spaces survive.

Chunks carry ``id: <generation>-<offset>`` (the cursor after that chunk); a client that reconnects
sends it back as ``Last-Event-ID`` (or the ``last_event_id`` query parameter) to resume after it.
Each item is one event:

- a text chunk without ``\\r`` or NUL: no ``event:`` line (so the event type is ``message``) and
  one ``data:`` line per ``\\n``-separated line of the text;
- a text chunk containing ``\\r`` or NUL: ``event: json`` and the text as a JSON string;
- a JSON chunk: ``event: json`` and the value as JSON on one line;
- a chunk with an event name: ``event: <name>`` and the data as JSON on one line (text too);
- a chunk of a named producer (fan-in): ``event: part`` and the JSON object
  ``{"producer": <name>, "data": <data>}``, plus ``"event": <name>`` when the chunk has one;
- metadata: ``event: metadata`` and the value as JSON;
- a reset: ``event: reset`` and ``{"reason": <str>, "generation": <int>}``;
- the end: ``event: end`` and ``{"state": <str>, "reason": <str or null>}``;
- in a conversation (``?follow=conversation``), instead of ``end``: a generation's start,
  ``event: generation`` with ``id: <generation>-0`` and ``{"generation": <int>}``, and its end,
  ``event: generation-end`` with ``id: <generation>-<last offset + 1>`` and ``{"generation",
  "state", "reason"}``; their ids are cursors too (before the first chunk; after the end).

``metadata``, ``reset`` and ``end`` events carry no ``id:``, so they never move the client's
resume point. Keep-alives are the comment ``: ping`` and the reconnection delay is sent as
``retry: <ms>``; neither dispatches an event.

How a standard SSE client rebuilds every chunk exactly:

- a ``message`` event (no ``event:`` line) is a text chunk and its data is the text;
- a ``json`` event whose value is a JSON string is a text chunk (the text held a carriage return
  or a NUL, which SSE parsers would turn into line breaks or some clients mishandle); any other
  value is a JSON chunk (the codec stores every ``str`` as text, so no JSON chunk holds a
  string);
- a ``part`` event is a chunk of the producer ``producer`` (fan-in): ``data`` is text when it is
  a JSON string, else JSON, and ``event``, when present, is the chunk's own event name;
- an event under any other name that is not ``metadata``, ``reset`` or ``end`` is a chunk the
  producer sent under that name; its data is always JSON, text included.

Chunks without a producer name are encoded exactly as they were before fan-in existed, so a
client that knows nothing of it still reads single-producer sessions unchanged.

A text chunk is sent as plain data only when that is lossless: SSE splits lines on ``\\r``,
``\\r\\n`` and ``\\n`` alike and rejoins them with ``\\n``, so only ``\\n`` survives the trip.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from .._codec import RESERVED_EVENTS, ChunksMsg, decode_payload
from .._errors import InvalidChunk, InvalidCursor
from .._trusted import trusted_cursor
from .._types import Batch, Chunk, Cursor, End, Metadata, Reset, State

__all__ = [
    "PING",
    "encode_chunk",
    "encode_end",
    "encode_generation",
    "encode_generation_end",
    "encode_item",
    "encode_metadata",
    "encode_reset",
    "encode_retry",
    "encode_stored",
    "parse_last_event_id",
]

# Same bytes as fastapi.sse.KEEPALIVE_COMMENT; spelled out so the wire format is fixed here.
PING: bytes = b": ping\n\n"

# The codec validates names on the way in; they are re-checked on the way out because a name
# that broke the line or took a reserved name would let stored data forge protocol events.
_EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
# Longer than any valid cursor (20 digits, "-", 20 digits); refuse before running the regex.
_MAX_CURSOR_CHARS = 64
# HTTP optional whitespace plus line breaks that may arrive percent-encoded in a query string.
_WHITESPACE = " \t\r\n"


def _event_name(name: str) -> bytes:
    if _EVENT_NAME.fullmatch(name) is None or name in RESERVED_EVENTS:
        raise InvalidChunk(f"cannot send a chunk under the event name {name!r}")
    return name.encode("ascii")


def encode_chunk(chunk: Chunk) -> bytes:
    """Encode one chunk as an SSE event with ``id: <cursor>``.

    Text without ``\\r`` or NUL goes out as plain ``data:`` lines (default ``message`` event);
    other text and JSON values go out as an ``event: json`` with one JSON ``data:`` line; a chunk
    with an event name goes out under that name with its data as JSON; a chunk with a producer
    name goes out as ``event: part`` with ``{"producer", "data"[, "event"]}``. Raises
    :class:`InvalidChunk` for an event name that is not safe to send.
    """
    tail = b"\nid: " + str(chunk.cursor).encode("ascii") + b"\n\n"
    if chunk.producer is not None:
        return b"event: part\ndata: " + _part(chunk) + tail
    if chunk.event is not None:
        return b"event: " + _event_name(chunk.event) + b"\ndata: " + orjson.dumps(chunk.data) + tail
    if chunk.kind == "text":
        text: str = chunk.data
        if "\r" not in text and "\0" not in text:
            # Each "\n" starts a new data line; the parser rejoins them with "\n", so the text
            # (including empty lines and a trailing "\n") comes back unchanged.
            return b"data: " + text.replace("\n", "\ndata: ").encode("utf-8") + tail
    # orjson escapes every control character, so the JSON always fits on one line.
    return b"event: json\ndata: " + orjson.dumps(chunk.data) + tail


def encode_stored(msg: ChunksMsg) -> bytes:
    """:func:`encode_chunk` of each chunk of a live write, from its stored payloads.

    Plain text (``t`` + UTF-8, already checked when it was stored) without ``\r`` or NUL is
    framed as is: no chunk object, no decoding; anything else takes :func:`encode_chunk`.
    """
    payloads = msg.payloads
    if payloads is None:
        return b"".join([encode_chunk(c) for c in msg.chunks])
    generation = msg.generation
    out = []
    for offset, payload in enumerate(payloads, msg.first):
        if payload[:1] == b"t" and b"\r" not in payload and b"\0" not in payload:
            out.append(
                b"data: %s\nid: %d-%d\n\n"
                % (payload[1:].replace(b"\n", b"\ndata: "), generation, offset)
            )
        else:
            out.append(encode_chunk(decode_payload(payload, trusted_cursor(generation, offset))))
    return b"".join(out)


def _part(chunk: Chunk) -> bytes:
    body: dict[str, Any] = {"producer": chunk.producer, "data": chunk.data}
    if chunk.event is not None:
        _event_name(chunk.event)
        body["event"] = chunk.event
    # One line: orjson escapes every control character.
    return orjson.dumps(body)


def encode_metadata(value: Any) -> bytes:
    """Encode the session's metadata as ``event: metadata`` with JSON data and no id."""
    return b"event: metadata\ndata: " + orjson.dumps(value) + b"\n\n"


def encode_reset(reason: str, generation: int) -> bytes:
    """Encode ``event: reset`` with data ``{"reason": ..., "generation": ...}`` and no id."""
    data = orjson.dumps({"reason": reason, "generation": generation})
    return b"event: reset\ndata: " + data + b"\n\n"


def encode_end(state: State, reason: str | None) -> bytes:
    """Encode ``event: end`` with data ``{"state": ..., "reason": ...}`` and no id."""
    data = orjson.dumps({"state": state.value, "reason": reason})
    return b"event: end\ndata: " + data + b"\n\n"


def encode_generation(generation: int, turn: str | None = None) -> bytes:
    """Encode ``event: generation`` (a conversation's next generation starts, and the turn it
    answers) with its cursor."""
    data = orjson.dumps({"generation": generation, "turn": turn})
    return b"event: generation\ndata: " + data + b"\nid: %d-0\n\n" % generation


def encode_generation_end(generation: int, offset: int, state: State, reason: str | None) -> bytes:
    """Encode ``event: generation-end``; its id is the cursor of the end marker (``offset``)."""
    data = orjson.dumps({"generation": generation, "state": state.value, "reason": reason})
    return b"event: generation-end\ndata: " + data + b"\nid: %d-%d\n\n" % (generation, offset)


def encode_retry(ms: int) -> bytes:
    """Encode ``retry: <ms>``, the client's reconnection delay in milliseconds."""
    # Parsers ignore a retry value that is not all ASCII digits, so refuse to send one.
    if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
        raise ValueError(f"retry must be a non-negative integer of milliseconds, not {ms!r}")
    return b"retry: %d\n\n" % ms


def encode_item(item: Chunk | Batch | Metadata | Reset | End) -> bytes:
    """Encode any subscription item; a :class:`Batch` becomes its chunks' events in order."""
    if isinstance(item, Chunk):
        return encode_chunk(item)
    if isinstance(item, Batch):
        return b"".join(encode_chunk(c) for c in item.chunks)
    if isinstance(item, Metadata):
        return encode_metadata(item.value)
    if isinstance(item, Reset):
        return encode_reset(item.reason, item.generation)
    if isinstance(item, End):
        return encode_end(item.state, item.reason)
    raise TypeError(f"cannot encode a {type(item).__name__} as a server-sent event")


def parse_last_event_id(header: str | None, query: str | None) -> Cursor | None:
    """Return the cursor a client resumes from, or None when it sent none.

    The ``Last-Event-ID`` header wins when it is non-empty after stripping surrounding
    whitespace; otherwise the ``last_event_id`` query parameter is used. Raises
    :class:`InvalidCursor` for a value that is not ``<generation>-<offset>``.
    """
    value = header.strip(_WHITESPACE) if header is not None else ""
    if not value and query is not None:
        value = query.strip(_WHITESPACE)
    if not value:
        return None
    if len(value) > _MAX_CURSOR_CHARS:
        raise InvalidCursor("cursor is too long")
    return Cursor.parse(value)
