"""Reading server-sent events back: the client side of :mod:`.._http.sse`.

:class:`EventParser` is an incremental ``text/event-stream`` parser that follows the WHATWG
algorithm (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
one leading BOM is dropped, lines end with CRLF, CR or LF (a CR at the end of what arrived so far
waits for the next bytes, as it may be half of a CRLF), ``:`` lines are comments, one space
after a field's colon is dropped, ``data`` lines are joined with LF, an ``id`` holding a NUL is
ignored, ``retry`` counts only when it is all ASCII digits, a blank line dispatches, an event
without data dispatches nothing, and an event left unterminated at the end is discarded.

Lines are split on bytes, before decoding: CR and LF never occur inside a multi-byte UTF-8
sequence, so a character split across two network reads is decoded whole.

:func:`rebuild` turns a dispatched event into the item the server encoded, by the rules written
in :mod:`.._http.sse`: the same :class:`Chunk`, :class:`Metadata`, :class:`Reset` and :class:`End`
types that :meth:`StreamHub.subscribe` yields in-process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .._errors import InvalidCursor, StreamHubError
from .._types import (
    Chunk,
    Cursor,
    End,
    GenerationEnd,
    GenerationStart,
    Metadata,
    Reset,
    State,
)

__all__ = ["EventParser", "ProtocolError", "SSEEvent", "rebuild"]

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class ProtocolError(StreamHubError):
    """The server sent something the streamhub wire format does not allow."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its type, its data, and the ``id`` given in its own block."""

    type: str
    data: str
    id: str | None = None


class EventParser:
    """Incremental parser: :meth:`feed` bytes as they arrive, get the events they complete.

    ``retry`` holds the last valid ``retry:`` value (milliseconds) and ``last_event_id`` the
    spec's last event id; ``activity`` counts events and comments (keep-alives included), so a
    caller can tell a live connection from a silent one.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._first_line = True
        self._data: list[str] = []
        self._type = ""
        self._id: str | None = None
        self.last_event_id = ""
        self.retry: int | None = None
        self.activity = 0

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Parse ``data``; the events completed by it, in order."""
        buffer = self._buffer + data if self._buffer else data
        events: list[SSEEvent] = []
        start = 0
        for match in _EOL.finditer(buffer):
            if match.end() == len(buffer) and match.group() == b"\r":
                break  # maybe the first half of a CRLF: decide with the next bytes
            self._line(buffer[start : match.start()], events)
            start = match.end()
        self._buffer = buffer[start:]
        return events

    def close(self) -> list[SSEEvent]:
        """The end of the stream: a pending CR ends its line; an unterminated event is dropped."""
        events: list[SSEEvent] = []
        if self._buffer.endswith(b"\r"):
            self._line(self._buffer[:-1], events)
        self._buffer = b""
        self._data, self._type, self._id = [], "", None
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        if self._first_line:
            self._first_line = False
            raw = raw.removeprefix(_BOM)
        if not raw:
            self._dispatch(events)
            return
        if raw.startswith(b":"):
            self.activity += 1
            return
        name, colon, value = raw.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id = self.last_event_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():  # bytes: ASCII digits only, False when empty
            self.retry = int(value)
        # Any other field is ignored, as the spec says.

    def _dispatch(self, events: list[SSEEvent]) -> None:
        data, event_type, own_id = self._data, self._type, self._id
        self._data, self._type, self._id = [], "", None
        if data:
            self.activity += 1
            events.append(SSEEvent(event_type or "message", "\n".join(data), own_id))


# GenerationStart and GenerationEnd only in a conversation (``stream(..., conversation=True)``
# or ``turns=True``).
Item = Chunk | Metadata | Reset | End | GenerationStart | GenerationEnd


def _json(event: SSEEvent) -> Any:
    try:
        return orjson.loads(event.data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"{event.type!r} event data is not JSON: {exc}") from None


def _cursor(event: SSEEvent) -> Cursor:
    if event.id is None:
        raise ProtocolError(f"a {event.type!r} chunk arrived without an id")
    try:
        return Cursor.parse(event.id)
    except InvalidCursor:
        raise ProtocolError(f"a chunk arrived with the id {event.id!r}, not a cursor") from None


def rebuild(event: SSEEvent) -> Item:
    """The item ``event`` carries (see :mod:`.._http.sse` for the rules); raises ProtocolError."""
    if event.type == "message":
        return Chunk(_cursor(event), event.data, "text")
    value = _json(event)
    if event.type == "metadata":
        return Metadata(value)
    if event.type in ("reset", "end"):
        if not isinstance(value, dict):
            raise ProtocolError(f"{event.type!r} event data is not an object")
        try:
            if event.type == "reset":
                return Reset(str(value["reason"]), int(value.get("generation") or 0))
            return End(State(value["state"]), value.get("reason"))
        except (KeyError, ValueError, TypeError) as exc:
            raise ProtocolError(f"malformed {event.type!r} event: {exc}") from None
    if event.type == "part":
        return _part(event, value)
    if event.type in ("generation", "generation-end"):
        return _generation(event, value)
    # The codec stores every str as text, so a JSON string is a text chunk (sent as JSON
    # because it held a CR or a NUL, or because it carries an event name).
    kind: Literal["text", "json"] = "text" if isinstance(value, str) else "json"
    return Chunk(_cursor(event), value, kind, None if event.type == "json" else event.type)


def _generation(event: SSEEvent, value: Any) -> GenerationStart | GenerationEnd:
    """A conversation's ``generation`` (start) or ``generation-end`` event; its id is a cursor."""
    cursor = _cursor(event)
    if not isinstance(value, dict) or value.get("generation") != cursor.generation:
        raise ProtocolError(f"{event.type!r} event data does not match its id {event.id!r}")
    if event.type == "generation":
        turn = value.get("turn")
        if turn is not None and not isinstance(turn, str):
            raise ProtocolError(f"malformed 'generation' event: turn {turn!r}")
        return GenerationStart(cursor.generation, turn)
    try:
        end = End(State(value["state"]), value.get("reason"))
    except (KeyError, ValueError) as exc:
        raise ProtocolError(f"malformed 'generation-end' event: {exc}") from None
    return GenerationEnd(cursor.generation, cursor.offset, end)


def _part(event: SSEEvent, value: Any) -> Chunk:
    """A chunk of a named producer (fan-in): ``{"producer", "data"[, "event"]}``."""
    if not isinstance(value, dict) or not isinstance(value.get("producer"), str):
        raise ProtocolError("'part' event data is not an object with a producer name")
    name = value.get("event")
    if name is not None and not isinstance(name, str):
        raise ProtocolError("'part' event names a non-string event")
    data = value.get("data")
    kind: Literal["text", "json"] = "text" if isinstance(data, str) else "json"
    return Chunk(_cursor(event), data, kind, name, value["producer"])
