"""Binary encoding of chunks in the store and of live messages on pub/sub.

A stored chunk is one bytes payload whose first byte says what it holds:

- ``t`` + UTF-8 text
- ``j`` + JSON
- ``x`` + JSON ``[kind, data, event, producer]`` for a chunk with an event name or a producer name

Live messages carry the same payloads, so a process decodes each message once and shares the
resulting :class:`Chunk` objects among all its local subscribers. Lengths are byte lengths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from ._errors import InvalidChunk
from ._types import Chunk, Cursor, Event, State

__all__ = [
    "CancelMsg",
    "ChunksMsg",
    "DeletedMsg",
    "EndMsg",
    "HubClosingMsg",
    "Message",
    "MetadataMsg",
    "ResyncMsg",
    "decode_end",
    "decode_message",
    "decode_payload",
    "dumps_json",
    "encode_chunk",
]

_EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
RESERVED_EVENTS = frozenset({"message", "json", "metadata", "end", "reset"})


def dumps_json(value: Any, *, what: str) -> bytes:
    """orjson with a clear error for values it cannot encode."""
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidChunk(f"{what} is not JSON-serialisable: {exc}") from None


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
        return Chunk(cursor, payload[1:].decode("utf-8"), "text")
    if tag == b"j":
        return Chunk(cursor, orjson.loads(payload[1:]), "json")
    if tag == b"x":
        kind, data, event, producer = orjson.loads(payload[1:])
        return Chunk(cursor, data, "text" if kind == "t" else "json", event, producer)
    raise ValueError(f"unknown payload tag {tag!r}")


def decode_end(value: bytes) -> tuple[State, str | None]:
    """Decode the stored end marker ``state\\nreason``."""
    state, _, reason = value.decode("utf-8").partition("\n")
    return State(state), reason or None


@dataclass(frozen=True, slots=True)
class ChunksMsg:
    """Chunks appended in one batch."""

    generation: int
    chunks: tuple[Chunk, ...]

    @property
    def first(self) -> int:
        """Offset of the first chunk."""
        return self.chunks[0].cursor.offset

    @property
    def last(self) -> int:
        """Offset of the last chunk."""
        return self.chunks[-1].cursor.offset


@dataclass(frozen=True, slots=True)
class EndMsg:
    """The generation ended."""

    generation: int
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
class DeletedMsg:
    """The session was deleted."""


@dataclass(frozen=True, slots=True)
class ResyncMsg:
    """Live messages may have been missed (reconnect, overflow): read the store to repair."""


@dataclass(frozen=True, slots=True)
class HubClosingMsg:
    """This process's hub is shutting down: local subscriptions stop (clients resume elsewhere)."""


Message = ChunksMsg | EndMsg | MetadataMsg | CancelMsg | DeletedMsg | ResyncMsg | HubClosingMsg


def decode_message(raw: bytes | str) -> Message:
    """Decode one pub/sub message (as published by the backend's scripts)."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    tag = data[:1]
    if tag == b"C":
        header, _, body = data[1:].partition(b"\n")
        gen_s, first_s, count_s = header.split(b":")
        generation, offset, count = int(gen_s), int(first_s), int(count_s)
        chunks = []
        pos = 0
        for _ in range(count):
            colon = body.index(b":", pos)
            size = int(body[pos:colon])
            start = colon + 1
            chunks.append(decode_payload(body[start : start + size], Cursor(generation, offset)))
            offset += 1
            pos = start + size
        return ChunksMsg(generation, tuple(chunks))
    if tag == b"E":
        header, _, rest = data[1:].partition(b":")
        state, reason = decode_end(rest)
        return EndMsg(int(header), state, reason)
    if tag == b"M":
        header, _, rest = data[1:].partition(b":")
        return MetadataMsg(int(header), orjson.loads(rest))
    if tag == b"X":
        return CancelMsg(int(data[1:]))
    if tag == b"D":
        return DeletedMsg()
    raise ValueError(f"unknown message tag {tag!r}")


def encode_chunks_msg(generation: int, first: int, payloads: list[bytes]) -> bytes:
    """The live message of one appended batch (the memory backend's twin of append.lua)."""
    parts = [b"C%d:%d:%d\n" % (generation, first, len(payloads))]
    for p in payloads:
        parts.append(b"%d:" % len(p))
        parts.append(p)
    return b"".join(parts)
