"""The Durable Streams protocol's pure parts: offsets, header grammars, cursor, ETag, JSON
framing and the SSE events (no I/O; tests/test_durable_protocol.py).

An offset is ``%016d_%016d``: a zero epoch, then the byte position in the stream (JSON
streams: in their stored form, one compact JSON text and ``\\n`` per message). Fixed width, so
offsets sort as strings in stream order, as the protocol requires.
"""

from __future__ import annotations

import base64
import json
import random
import re
from datetime import datetime
from typing import Any

from ...backends._ds import DsProducer, is_json_type

__all__ = [
    "CURSOR_EPOCH",
    "CURSOR_INTERVAL",
    "JSON_TYPE",
    "MAX_PRODUCER_NUMBER",
    "OFFSET_ZERO",
    "ProtocolError",
    "control_event",
    "data_event",
    "etag",
    "format_offset",
    "is_binary",
    "is_json",
    "join_json",
    "json_messages",
    "normalize_type",
    "parse_closed",
    "parse_epoch_offset",
    "parse_expires_at",
    "parse_offset",
    "parse_producer",
    "parse_sub_offset",
    "parse_ttl",
    "stream_cursor",
]

JSON_TYPE = "application/json"
OFFSET_ZERO = "0000000000000000_0000000000000000"
_OFFSET = re.compile(r"(\d{16})_(\d{16})")
_TTL = re.compile(r"0|[1-9][0-9]*")
_UINT = re.compile(r"0|[1-9][0-9]*")
MAX_PRODUCER_NUMBER = 2**53 - 1
CURSOR_EPOCH = 1728432000  # 2024-10-09T00:00:00Z, the protocol's default cursor epoch
CURSOR_INTERVAL = 20  # seconds


class ProtocolError(ValueError):
    """A request the protocol refuses: ``status`` (400 unless said) and a message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def format_offset(position: int, epoch: int = 0) -> str:
    """The offset token of byte ``position`` (of a session's view: chunk ``position`` of
    generation ``epoch``)."""
    return f"{epoch:016d}_{position:016d}"


def parse_epoch_offset(text: str | None) -> tuple[int, int] | None:
    """A session view's offset as ``(generation, chunks)``; ``(0, 0)`` for ``-1``/absent (the
    start of the current generation), None for ``now``."""
    if text is None or text == "-1":
        return 0, 0
    if text == "now":
        return None
    match = _OFFSET.fullmatch(text)
    if match is None:
        raise ProtocolError(f"invalid offset {text!r}")
    return int(match.group(1)), int(match.group(2))


def parse_offset(text: str | None) -> int | None:
    """A byte position from an ``offset`` parameter; None for ``now``; 0 for ``-1``/absent."""
    if text is None or text == "-1":
        return 0
    if text == "now":
        return None
    match = _OFFSET.fullmatch(text)
    if match is None or match.group(1) != "0" * 16:
        raise ProtocolError(f"invalid offset {text!r}")
    return int(match.group(2))


def parse_ttl(text: str) -> int:
    """``Stream-TTL``: a non-negative decimal integer without sign, zeros or exponent."""
    if not _TTL.fullmatch(text):
        raise ProtocolError("Stream-TTL must be a non-negative integer (seconds)")
    return int(text)


def parse_expires_at(text: str) -> int:
    """``Stream-Expires-At`` (RFC 3339, with a time zone) in Unix milliseconds."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ProtocolError("Stream-Expires-At must be an RFC 3339 timestamp") from None
    if moment.tzinfo is None or "T" not in text.upper():
        raise ProtocolError("Stream-Expires-At must be an RFC 3339 timestamp with a time zone")
    return int(moment.timestamp() * 1000)


def parse_sub_offset(text: str) -> int:
    """``Stream-Fork-Sub-Offset``: a non-negative decimal integer without sign or zeros."""
    if not _UINT.fullmatch(text):
        raise ProtocolError("Stream-Fork-Sub-Offset must be a non-negative integer")
    return int(text)


def parse_closed(text: str | None) -> bool:
    """``Stream-Closed``: ``true`` (any case) closes; anything else does not."""
    return text is not None and text.strip().lower() == "true"


def _producer_number(name: str, text: str) -> int:
    if not _UINT.fullmatch(text.strip()):
        raise ProtocolError(f"{name} must be a non-negative integer")
    value = int(text)
    if value > MAX_PRODUCER_NUMBER:
        raise ProtocolError(f"{name} must be at most 2^53-1")
    return value


def parse_producer(pid: str | None, epoch: str | None, seq: str | None) -> DsProducer | None:
    """The idempotent-producer headers: all three or none."""
    if pid is None and epoch is None and seq is None:
        return None
    if pid is None or epoch is None or seq is None:
        raise ProtocolError("Producer-Id, Producer-Epoch and Producer-Seq go together")
    if not pid:
        raise ProtocolError("Producer-Id must not be empty")
    return DsProducer(
        pid,
        _producer_number("Producer-Epoch", epoch),
        _producer_number("Producer-Seq", seq),
    )


def normalize_type(value: str | None) -> str:
    """A content type as stored and compared: media type lower-cased, parameters kept."""
    if not value or not value.strip():
        return "application/octet-stream"
    media, sep, params = value.partition(";")
    return media.strip().lower() + (";" + params.strip() if sep and params.strip() else "")


def _media(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def is_json(content_type: str) -> bool:
    """Whether a stream of this type keeps JSON message boundaries."""
    return is_json_type(content_type)


def is_binary(content_type: str) -> bool:
    """Whether SSE must carry this type's bytes in base64 (neither ``text/*`` nor JSON)."""
    media = _media(content_type)
    return not (media.startswith("text/") or media == JSON_TYPE)


def stream_cursor(now: float, client: str | None, rng: random.Random | None = None) -> str:
    """``Stream-Cursor``: the current 20 s interval since the cursor epoch, and strictly above
    a cursor the client echoes that is not below it (by 1-3600 s of jitter)."""
    interval = int((now - CURSOR_EPOCH) // CURSOR_INTERVAL)
    if client is not None and client.isdigit():
        echoed = int(client)
        if echoed >= interval:
            jitter = (rng or random).randint(1, 3600)
            return str(echoed + max(1, jitter // CURSOR_INTERVAL))
    return str(interval)


def etag(stream_id: str, start: int, end: int, closed: bool) -> str:
    """The ETag of a read from ``start`` to ``end`` (quoted, ``:c`` once closed)."""
    return f'"{stream_id}:{format_offset(start)}:{format_offset(end)}{":c" if closed else ""}"'


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_messages(body: bytes, *, allow_empty: bool) -> bytes:
    """A JSON body as stored messages: one array level flattened, each message compact + ``\\n``.

    The standard library parser keeps integers of any size and floats as written closely
    enough (shortest repr); compact text has no raw newline, so ``\\n`` ends a message.
    """
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from None
    items = value if isinstance(value, list) else [value]
    if not items and not allow_empty:
        raise ProtocolError("an empty JSON array appends nothing")
    return b"".join(
        json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        for item in items
    )


def join_json(stored: bytes) -> bytes:
    """Stored messages (each ending in ``\\n``) as one JSON array."""
    return b"[" + stored.rstrip(b"\n").replace(b"\n", b",") + b"]"


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def data_event(payload: bytes, content_type: str) -> bytes:
    """One ``event: data``: JSON as an array, text as it is, anything else in base64; every
    line of the payload gets its own ``data:`` (a CR or LF cannot start a new field)."""
    if is_json(content_type):
        text = join_json(payload).decode()
    elif is_binary(content_type):
        text = base64.b64encode(payload).decode()
    else:
        text = payload.decode("utf-8", errors="replace")
    lines = _LINE_BREAK.split(text)
    return b"event: data\n" + "".join(f"data:{line}\n" for line in lines).encode() + b"\n"


def control_event(
    next_offset: int | str, cursor: str | None, *, up_to_date: bool, closed: bool
) -> bytes:
    """One ``event: control``: the next offset (a position or a token), the cursor (none once
    closed), the flags."""
    token = next_offset if isinstance(next_offset, str) else format_offset(next_offset)
    body: dict[str, Any] = {"streamNextOffset": token}
    if closed:
        body["streamClosed"] = True
    elif cursor is not None:
        body["streamCursor"] = cursor
    if up_to_date:
        body["upToDate"] = True
    return b"event: control\ndata:" + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
