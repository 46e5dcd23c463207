"""Binary encoding of chunks in the store and of live messages on pub/sub.

A stored chunk is one bytes payload whose first byte says what it holds:

- ``t`` + UTF-8 text
- ``j`` + JSON
- ``x`` + JSON ``[kind, data, event, producer]`` for a chunk with an event name or a producer name

A log entry holds one appended batch: its value is the batch's payloads, each framed as
``<len>:<payload>`` (:func:`frame`), and its id is ``<generation>-<offset of the batch's last
chunk>``.

Live messages travel on a bus channel shared by all sessions. One message holds one or more
records: a tag byte, the session id and a body, each length-prefixed, so a
process skips records of sessions it does not follow without decoding them, and decodes the
others once for all its local subscribers. Tags: ``C`` chunks (``<gen>:<first>:<frames>``),
``E`` end (``<gen>:<offset>:<state>\n<reason>``), ``M`` metadata (``<gen>:<json>``), ``X``
cancel (``<gen>``), ``L`` lost (``<gen>:stale|lease_expired``), ``D`` deleted (``<gen>``),
``G`` steering message stored (``<gen>:<seq>``), ``S`` chunks stored up to an offset
(``<gen>:<last>``), sent instead of ``C`` for a batch over ``max_publish_bytes``.
Lengths are byte lengths.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ._errors import InvalidChunk, LimitExceeded
from ._trusted import trusted_chunk, trusted_cursor
from ._types import Chunk, Cursor, Event, State

__all__ = [
    "CancelMsg",
    "ChunksMsg",
    "DeletedMsg",
    "EndMsg",
    "HubClosingMsg",
    "LostMsg",
    "Message",
    "MetadataMsg",
    "ResyncMsg",
    "SteerMsg",
    "StoredMsg",
    "chunks_head",
    "decode_chunks",
    "decode_end",
    "decode_entry",
    "decode_payload",
    "decode_record",
    "dumps_json",
    "encode_chunk",
    "frame",
    "frame_count",
    "frame_spans",
    "iter_records",
    "records",
    "stored_record",
    "unframe",
]

_EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
# The SSE event names of the stream itself (``generation`` and ``generation-end``: a
# conversation, ``GET /{sid}?follow=conversation``); a chunk cannot be sent under them.
RESERVED_EVENTS = frozenset(
    {"message", "json", "metadata", "end", "reset", "part", "generation", "generation-end"}
)


def dumps_json(value: Any, *, what: str) -> bytes:
    """orjson with a clear error for values it cannot encode (NaN and infinities included)."""
    try:
        blob = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidChunk(f"{what} is not JSON-serialisable: {exc}") from None
    # orjson writes NaN and infinities as null; look for them only when a null was written.
    if b"null" in blob and _non_finite(value):
        raise InvalidChunk(f"{what} holds NaN or an infinity, which JSON cannot represent")
    return blob


def encode_metadata(value: Any, limit: int) -> bytes:
    """A session's metadata as stored: JSON, at most ``limit`` bytes (else LimitExceeded)."""
    blob = dumps_json(value, what="metadata")
    if len(blob) > limit:
        raise LimitExceeded(f"metadata of {len(blob)} bytes is over max_metadata_bytes ({limit})")
    return blob


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    return False


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidChunk(f"{what} cannot be encoded as UTF-8: {exc.reason}") from None


def _check_event_name(name: object) -> str:
    if not isinstance(name, str) or _EVENT_NAME.fullmatch(name) is None:
        raise InvalidChunk(
            "event name must be 1-64 characters of letters, digits and _ . : -, "
            "starting with a letter"
        )
    if name in RESERVED_EVENTS:
        raise InvalidChunk(f"event name {name!r} is reserved by streamhub")
    return name


def encode_chunk(chunk: object, producer: str | None = None) -> bytes:
    """Encode one generator item as a stored payload, or raise :class:`InvalidChunk`."""
    if type(chunk) is str and producer is None:
        try:
            return b"t" + chunk.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidChunk(f"text chunk cannot be encoded as UTF-8: {exc.reason}") from None
    event: str | None = None
    if isinstance(chunk, Event):
        event = _check_event_name(chunk.event)
        chunk = chunk.data
    elif _is_fastapi_sse(chunk):
        chunk, event = _from_fastapi_sse(chunk)
    if isinstance(chunk, bytes | bytearray | memoryview):
        try:
            chunk = bytes(chunk).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidChunk(f"bytes chunk is not valid UTF-8: {exc.reason}") from None
    if isinstance(chunk, str):
        kind = "t"
        if event is None and producer is None:
            return b"t" + _utf8(chunk, "text chunk")
        _utf8(chunk, "text chunk")
    elif chunk is None or isinstance(chunk, dict | list | tuple | int | float | bool):
        kind = "j"
        if event is None and producer is None:
            return b"j" + dumps_json(chunk, what="chunk")
    else:
        raise InvalidChunk(
            f"cannot stream a chunk of type {type(chunk).__name__}: yield str, bytes (UTF-8), "
            "a JSON-able value (dict, list, number, bool, None) or streamhub.Event"
        )
    return b"x" + dumps_json([kind, chunk, event, producer], what="chunk")


def _is_fastapi_sse(chunk: object) -> bool:
    cls = type(chunk)
    return cls.__name__ == "ServerSentEvent" and cls.__module__ == "fastapi.sse"


def _from_fastapi_sse(sse: Any) -> tuple[Any, str | None]:
    if sse.id is not None or sse.retry is not None or sse.comment is not None:
        raise InvalidChunk("ServerSentEvent id, retry and comment are managed by streamhub")
    event = None if sse.event is None else _check_event_name(sse.event)
    if sse.raw_data is not None:
        return sse.raw_data, event
    return sse.data, event


def decode_payload(payload: bytes, cursor: Cursor) -> Chunk:
    """Decode a stored payload into the :class:`Chunk` at ``cursor``."""
    tag = payload[:1]
    if tag == b"t":
        return trusted_chunk(cursor, payload[1:].decode("utf-8"), "text", None, None)
    if tag == b"j":
        return trusted_chunk(cursor, orjson.loads(payload[1:]), "json", None, None)
    if tag == b"x":
        kind, data, event, producer = orjson.loads(payload[1:])
        return trusted_chunk(cursor, data, "text" if kind == "t" else "json", event, producer)
    raise ValueError(f"unknown payload tag {tag!r}")


def decode_end(value: bytes) -> tuple[State, str | None]:
    """Decode the stored end marker ``state\\nreason``."""
    state, _, reason = value.decode("utf-8").partition("\n")
    return State(state), reason or None


class ChunksMsg:
    """Chunks appended in one batch, at consecutive offsets ``first`` to ``last``.

    A plain class: one is built per batch on the live path and shared, read-only, by every
    listener of the process. A message read off the bus keeps the stored bytes (the framed
    payloads, one ``bytes`` object: a message waiting in a subscriber's queue holds no list
    for the garbage collector to scan) and splits and decodes them only when :attr:`payloads`
    or :attr:`chunks` is first read, so an SSE response can encode the stored bytes directly
    (``_http/sse.encode_stored``).
    """

    __slots__ = ("_chunks", "_framed", "_payloads", "first", "generation", "last", "size")

    def __init__(
        self,
        generation: int,
        chunks: tuple[Chunk, ...] | None,
        size: int = 0,
        first: int = -1,
        payloads: list[bytes] | None = None,
        framed: bytes = b"",
    ) -> None:
        self.generation = generation
        self._chunks = chunks
        self._payloads = payloads
        self._framed = framed
        self.size = size  # bytes of the chunks' payloads (bounds a subscriber's queue in bytes)
        if chunks is not None:
            if first < 0:
                first = chunks[0].cursor.offset
            count = len(chunks)
        elif payloads is not None:
            count = len(payloads)
        else:
            assert framed, "chunks, payloads or framed"
            count = frame_count(framed)
        self.first = first
        self.last = first + count - 1

    @classmethod
    def stored(cls, generation: int, first: int, payloads: list[bytes], size: int) -> ChunksMsg:
        """The message of stored ``payloads`` (decoded when :attr:`chunks` is first read)."""
        return cls(generation, None, size, first, payloads)

    @classmethod
    def framed(cls, generation: int, first: int, framed: bytes) -> ChunksMsg:
        """The message of :func:`frame`'s output ``framed`` (split when first read)."""
        return cls(generation, None, len(framed), first, None, framed)

    @property
    def payloads(self) -> list[bytes] | None:
        """The stored payloads (None for a message built from chunk objects)."""
        payloads = self._payloads
        if payloads is None and self._framed:
            payloads = self._payloads = unframe(self._framed)
        return payloads

    @property
    def chunks(self) -> tuple[Chunk, ...]:
        """The chunks, decoded once."""
        chunks = self._chunks
        if chunks is None:
            framed = self._framed
            if framed and self.last == self.first:
                # One chunk (an LLM-paced write): no list of spans.
                payload = framed[framed.index(b":") + 1 :]
                chunks = (decode_payload(payload, trusted_cursor(self.generation, self.first)),)
            elif framed:
                chunks = tuple(decode_entry(self.generation, self.last, framed))
            else:
                assert self._payloads is not None
                chunks = tuple(decode_chunks(self.generation, self.first, self._payloads))
            self._chunks = chunks
        return chunks

    @property
    def count(self) -> int:
        """How many chunks."""
        return self.last - self.first + 1

    def __repr__(self) -> str:
        return f"ChunksMsg(generation={self.generation}, first={self.first}, last={self.last})"


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """Chunks of ``generation`` up to ``last`` are stored but too big to send live: read them."""

    generation: int
    last: int


@dataclass(frozen=True, slots=True)
class EndMsg:
    """The generation ended; its end marker sits at ``offset`` (one past the last chunk)."""

    generation: int
    offset: int
    state: State
    reason: str | None


@dataclass(frozen=True, slots=True)
class MetadataMsg:
    """The producer set new metadata."""

    generation: int
    value: Any


@dataclass(frozen=True, slots=True)
class CancelMsg:
    """Someone asked the producer of ``generation`` to stop."""

    generation: int


@dataclass(frozen=True, slots=True)
class LostMsg:
    """The producer of ``generation`` lost the session: ``stale`` (claimed again) or ``lease_expired``."""

    generation: int
    why: str


@dataclass(frozen=True, slots=True)
class SteerMsg:
    """A steering message ``seq`` was stored for the producer of ``generation``."""

    generation: int
    seq: int


@dataclass(frozen=True, slots=True)
class DeletedMsg:
    """The session was deleted."""


@dataclass(frozen=True, slots=True)
class ResyncMsg:
    """Live messages may have been missed (reconnect, overflow): read the store to repair."""


@dataclass(frozen=True, slots=True)
class HubClosingMsg:
    """This process's hub is shutting down: local subscriptions stop (clients resume elsewhere)."""


Message = (
    ChunksMsg
    | EndMsg
    | MetadataMsg
    | CancelMsg
    | LostMsg
    | DeletedMsg
    | ResyncMsg
    | HubClosingMsg
    | SteerMsg
    | StoredMsg
)


def frame(payloads: list[bytes]) -> bytes:
    """Length-prefix and join payloads: ``<len>:<payload>`` each (a log entry's value)."""
    if len(payloads) == 1:  # an LLM-paced batch: one chunk
        return b"%d:%s" % (len(payloads[0]), payloads[0])
    return b"".join([b"%d:%s" % (len(p), p) for p in payloads])


def unframe(data: bytes) -> list[bytes]:
    """The payloads of :func:`frame`'s output."""
    return [data[start:stop] for start, stop in frame_spans(data)]


def frame_spans(framed: bytes) -> list[tuple[int, int]]:
    """Where each payload of :func:`frame`'s output starts and stops.

    Every frame is walked (a length prefix says where the next begins), also those a reader
    skips, so the walk is the replay's largest cost per stored chunk: a one- or two-digit
    length (most LLM tokens) is read from its bytes, without a search nor an ``int()``.
    """
    spans: list[tuple[int, int]] = []
    append = spans.append
    pos = 0
    end = len(framed)
    index = framed.index
    while pos < end:
        if framed[pos + 1] == 58:  # b":"
            start = pos + 2
            pos = start + framed[pos] - 48
        elif framed[pos + 2] == 58:
            start = pos + 3
            pos = start + (framed[pos] - 48) * 10 + framed[pos + 1] - 48
        else:
            colon = index(b":", pos)
            start = colon + 1
            pos = start + int(framed[pos:colon])
        append((start, pos))
    return spans


def frame_count(framed: bytes) -> int:
    """How many payloads :func:`frame`'s output holds: the walk of :func:`frame_spans`, with
    nothing kept (a live record is counted when it arrives, and decoded later if at all)."""
    count = pos = 0
    end = len(framed)
    while pos < end:
        if framed[pos + 1] == 58:  # b":" after one digit: skip 2 + (digit - 48) bytes
            pos += framed[pos] - 46
        elif framed[pos + 2] == 58:  # after two digits: 3 + the two-digit number
            pos += framed[pos] * 10 + framed[pos + 1] - 525
        else:
            colon = framed.index(b":", pos)
            pos = colon + 1 + int(framed[pos:colon])
        count += 1
    return count


def decode_chunks(generation: int, first: int, payloads: list[bytes]) -> list[Chunk]:
    """Chunks at consecutive offsets from ``first``."""
    return [
        decode_payload(p, trusted_cursor(generation, offset))
        for offset, p in enumerate(payloads, first)
    ]


def decode_entry(generation: int, last: int, framed: bytes, after: int = 0) -> list[Chunk]:
    """The chunks of one stored log entry (its last offset ``last``), those after offset
    ``after`` only: ``decode_chunks`` of ``unframe`` in one pass, the replay's hot path."""
    spans = frame_spans(framed)
    offset = last - len(spans) + 1
    if offset <= after:
        spans = spans[after - offset + 1 :]
        offset = after + 1
    out = []
    for start, stop in spans:
        cursor = trusted_cursor(generation, offset)
        if framed[start] == 116:  # b"t": plain text, the common case
            out.append(trusted_chunk(cursor, framed[start + 1 : stop].decode(), "text", None, None))
        else:
            out.append(decode_payload(framed[start:stop], cursor))
        offset += 1
    return out


def chunks_head(session_id: bytes, generation: int, first: int, size: int) -> bytes:
    """The live record of a batch up to its frames (``size`` bytes of them follow); the Python
    twin of ``record`` in ``_lib.lua`` for the one record the client builds."""
    numbers = b"%d:%d:" % (generation, first)
    return b"C%d:%s%d:%s" % (len(session_id), session_id, len(numbers) + size, numbers)


def stored_record(session_id: bytes, generation: int, last: int) -> bytes:
    """The live record that says a batch up to ``last`` is stored (``S``, see above)."""
    body = b"%d:%d" % (generation, last)
    return b"S%d:%s%d:%s" % (len(session_id), session_id, len(body), body)


def records(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """Split a bus message into ``(tag, session id, body)`` records."""
    return list(iter_records(data))


def iter_records(data: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """:func:`records`, one at a time (a message of many records builds no list of them)."""
    pos = 0
    end = len(data)
    index = data.index
    while pos < end:
        colon = index(b":", pos + 1)
        sid_end = colon + 1 + int(data[pos + 1 : colon])
        body_start = index(b":", sid_end) + 1
        body_end = body_start + int(data[sid_end : body_start - 1])
        yield data[pos : pos + 1], data[colon + 1 : sid_end], data[body_start:body_end]
        pos = body_end


def decode_record(tag: bytes, body: bytes) -> Message:
    """Decode the body of one bus record."""
    if tag == b"C":
        gen_s, first_s, framed = body.split(b":", 2)
        return ChunksMsg.framed(int(gen_s), int(first_s), framed)
    if tag == b"S":
        gen_s, _, last_s = body.partition(b":")
        return StoredMsg(int(gen_s), int(last_s))
    if tag == b"E":
        gen_s, offset_s, rest = body.split(b":", 2)
        state, reason = decode_end(rest)
        return EndMsg(int(gen_s), int(offset_s), state, reason)
    if tag == b"M":
        gen_s, _, rest = body.partition(b":")
        return MetadataMsg(int(gen_s), orjson.loads(rest))
    if tag == b"X":
        return CancelMsg(int(body))
    if tag == b"L":
        gen_s, _, why = body.partition(b":")
        return LostMsg(int(gen_s), why.decode())
    if tag == b"D":
        return DeletedMsg()
    if tag == b"G":
        gen_s, _, seq_s = body.partition(b":")
        return SteerMsg(int(gen_s), int(seq_s))
    raise ValueError(f"unknown record tag {tag!r}")
