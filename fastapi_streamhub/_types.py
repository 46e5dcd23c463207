"""Value types shared by the hub, the backends and the HTTP layer."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import InvalidCursor, InvalidSessionId

__all__ = [
    "SESSION_ID_PATTERN",
    "SESSION_ID_RULE",
    "SNAPSHOT_SHAPE",
    "STATUS_SHAPE",
    "Batch",
    "Chunk",
    "Cursor",
    "End",
    "Event",
    "GenerationEnd",
    "GenerationStart",
    "Item",
    "Metadata",
    "Reset",
    "SessionInfo",
    "Snapshot",
    "State",
    "WireField",
    "validate_session_id",
    "validate_turn",
]

# 1-200 characters of [A-Za-z0-9._:-], but not "." or "..": browsers, URL parsers and proxies
# collapse those path segments, so such a session could not be reached (or a wrong path would
# be). Spelled without a lookahead so pydantic's Rust regex engine can run it too; every check
# of a session id (the router's path and body models, the examples) uses this one pattern.
SESSION_ID_PATTERN = (
    r"^(?:[A-Za-z0-9_:-]|[A-Za-z0-9._:-][A-Za-z0-9_:-]|[A-Za-z0-9_:-]\.|[A-Za-z0-9._:-]{3,200})$"
)
SESSION_ID_RULE = "1-200 characters of letters, digits and . _ : - (not . or ..)"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)
# A cursor is "<generation>-<offset>"; both parts fit a Redis stream id (64-bit unsigned).
_CURSOR = re.compile(r"([1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})")
_U64 = 2**64 - 1


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it is 1-200 characters of ``[A-Za-z0-9._:-]`` other than
    ``.`` and ``..``, else raise."""
    if not isinstance(session_id, str) or _SESSION_ID.fullmatch(session_id) is None:
        raise InvalidSessionId(f"session id must be {SESSION_ID_RULE}")
    return session_id


MAX_TURN = 200  # characters of a claim's turn


def validate_turn(turn: object) -> None:
    """Raise ValueError unless ``turn`` is None or a string of 1-200 characters."""
    if turn is not None and (not isinstance(turn, str) or not 0 < len(turn) <= MAX_TURN):
        raise ValueError(f"turn must be a string of 1 to {MAX_TURN} characters")


class State(enum.StrEnum):
    """Lifecycle state of a session."""

    ACTIVE = "active"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        """True for every state but ``active``."""
        return self is not State.ACTIVE


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """Position after one chunk: ``<generation>-<offset>``; offset 0 is before the first chunk."""

    generation: int
    offset: int

    def __post_init__(self) -> None:
        # A cursor built by hand (not parsed) must not reach the store either: a negative or
        # oversized offset is not a valid stream id and would fail there with a raw error.
        g, o = self.generation, self.offset
        if type(g) is not int or type(o) is not int or not (0 < g <= _U64 and 0 <= o <= _U64):
            raise InvalidCursor(
                "cursor needs an integer generation in 1..2**64-1 and offset in 0..2**64-1, "
                f"got {g!r} and {o!r}"
            )

    def __str__(self) -> str:
        return f"{self.generation}-{self.offset}"

    @classmethod
    def parse(cls, value: str) -> Cursor:
        """Parse ``"<generation>-<offset>"`` or raise :class:`InvalidCursor`."""
        match = _CURSOR.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise InvalidCursor(
                "cursor must look like '<generation>-<offset>' (two decimal integers)"
            )
        generation, offset = int(match[1]), int(match[2])
        if generation > _U64 or offset > _U64:
            raise InvalidCursor("cursor is out of range")
        return cls(generation, offset)


@dataclass(frozen=True, slots=True)
class Event:
    """Wraps a chunk to send it under a custom SSE event name (``data`` is sent as JSON)."""

    data: Any
    event: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """One persisted chunk as a subscriber receives it."""

    cursor: Cursor
    data: Any
    kind: Literal["text", "json"] = "text"
    event: str | None = None
    producer: str | None = None

    @property
    def id(self) -> str:
        """The cursor as sent in the SSE ``id:`` field."""
        return str(self.cursor)


@dataclass(frozen=True, slots=True)
class GenerationStart:
    """A conversation's next generation starts (its items follow); cursor ``<generation>-0``.
    ``turn``: what the generation answers (``claim(turn=...)``), None when it was not given."""

    generation: int
    turn: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationEnd:
    """A conversation's generation ended as ``end``; its end marker sits at ``offset`` (one past
    its last chunk), and ``<generation>-<offset>`` is the cursor after it."""

    generation: int
    offset: int
    end: End


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive chunks in one item: a page of a replay (``subscribe(batch_replay=True)``),
    or one write received live (``subscribe(batch=True)``)."""

    chunks: tuple[Chunk, ...]
    cursor: Cursor

    @property
    def text(self) -> str:
        """The plain text chunks joined (named events are not text to an SSE client)."""
        return "".join(c.data for c in self.chunks if c.kind == "text" and c.event is None)


@dataclass(frozen=True, slots=True)
class Metadata:
    """The session's metadata, sent on subscribe and whenever the producer sets it."""

    value: Any


@dataclass(frozen=True, slots=True)
class Reset:
    """The subscriber's cursor could not be honoured; what follows starts from the stored start."""

    reason: str
    generation: int


@dataclass(frozen=True, slots=True)
class End:
    """The terminal item of every subscription."""

    state: State
    reason: str | None = None


Item = Chunk | Batch | Metadata | Reset | End


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A snapshot of a session's record."""

    session_id: str
    state: State
    generation: int
    chunks: int
    metadata: Any
    created_at: float
    updated_at: float
    reason: str | None = None
    cancel_requested: bool = False
    lease_remaining: float = field(default=0.0, compare=False)
    turn: str | None = None  # what the generation answers (``claim(turn=...)``), if given

    @property
    def last_event_id(self) -> str | None:
        """Cursor of the last chunk, or None when there is none yet."""
        return str(Cursor(self.generation, self.chunks)) if self.chunks else None

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``GET /{sid}/status`` (the fields of :data:`STATUS_SHAPE`)."""
        return _as_dict(self, STATUS_SHAPE)

    @classmethod
    def from_dict(cls, body: Any) -> SessionInfo:
        """The inverse of :meth:`as_dict`, for clients: KeyError names a missing field,
        ValueError or TypeError a malformed one."""
        return cls(
            session_id=validate_session_id(_field(body, "session_id")),
            state=State(_field(body, "state")),
            generation=int(_field(body, "generation")),
            chunks=int(_field(body, "chunks")),
            metadata=body.get("metadata"),
            created_at=float(_field(body, "created_at")),
            updated_at=float(_field(body, "updated_at")),
            reason=body.get("reason"),
            turn=body.get("turn"),
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole output of the current generation so far in one value (``GET /{sid}/snapshot``):
    ``text`` joins its text chunks."""

    session_id: str
    state: State
    text: str
    last_event_id: str | None
    metadata: Any = None
    turn: str | None = None  # what the generation answers, as in SessionInfo

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``GET /{sid}/snapshot`` (the fields of :data:`SNAPSHOT_SHAPE`)."""
        return _as_dict(self, SNAPSHOT_SHAPE)

    @classmethod
    def from_dict(cls, body: Any) -> Snapshot:
        """The inverse of :meth:`as_dict`, for clients (errors as :meth:`SessionInfo.from_dict`)."""
        return cls(
            session_id=str(_field(body, "session_id")),
            state=State(_field(body, "state")),
            text=str(_field(body, "text")),
            last_event_id=body.get("last_event_id"),
            metadata=body.get("metadata"),
            turn=body.get("turn"),
        )


@dataclass(frozen=True, slots=True)
class WireField:
    """One field of a JSON answer: its name, its JSON type, and whether the documented schema
    lets it be absent (``optional``: a default of None)."""

    name: str
    type: Any
    optional: bool = False


# The JSON answers of the status and snapshot endpoints, defined once: the engine's ``as_dict``
# writes these fields in this order, the router's pydantic models (``_http/models.py``) are built
# from them, and ``from_dict`` beside each class reads them back for the HTTP client.
STATUS_SHAPE: tuple[WireField, ...] = (
    WireField("session_id", str),
    WireField("state", str),
    WireField("generation", int),
    WireField("chunks", int),
    WireField("last_event_id", str | None),
    WireField("metadata", Any, optional=True),
    WireField("created_at", float),
    WireField("updated_at", float),
    WireField("reason", str | None, optional=True),
    WireField("turn", str | None, optional=True),
)
SNAPSHOT_SHAPE: tuple[WireField, ...] = (
    WireField("session_id", str),
    WireField("state", str),
    WireField("text", str),
    WireField("last_event_id", str | None),
    WireField("metadata", Any, optional=True),
    WireField("turn", str | None, optional=True),
)


def _as_dict(value: SessionInfo | Snapshot, shape: tuple[WireField, ...]) -> dict[str, Any]:
    out = {f.name: getattr(value, f.name) for f in shape}
    out["state"] = value.state.value
    return out


def _field(body: Any, name: str) -> Any:
    try:
        return body[name]
    except (KeyError, TypeError):
        # A body that is not an object lacks every field, as far as a client can tell.
        raise KeyError(name) from None
