"""The JSON bodies of the router's endpoints as pydantic models (they document /openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .._steering import MESSAGE_KEY_PATTERN
from .._types import SESSION_ID_PATTERN

__all__ = [
    "ActiveIn",
    "ActiveOut",
    "ErrorOut",
    "MessageIn",
    "MessageOut",
    "SessionIdItem",
    "SnapshotOut",
    "StateOut",
    "StatusOut",
]

SessionIdItem = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]


class StatusOut(BaseModel):
    """``GET /{sid}/status``."""

    session_id: str
    state: str
    generation: int
    chunks: int
    last_event_id: str | None
    metadata: Any = None
    created_at: float
    updated_at: float
    reason: str | None = None


class SnapshotOut(BaseModel):
    """``GET /{sid}/snapshot``."""

    session_id: str
    state: str
    text: str
    last_event_id: str | None
    metadata: Any = None


class StateOut(BaseModel):
    """The state after a cancel."""

    state: str


class ActiveIn(BaseModel):
    """``POST /active`` body."""

    model_config = ConfigDict(extra="forbid")
    session_ids: Annotated[list[SessionIdItem], Field(max_length=1000)]


class ActiveOut(BaseModel):
    """``POST /active`` answer."""

    active: list[str]


class MessageIn(BaseModel):
    """``POST /{sid}/messages`` body."""

    model_config = ConfigDict(extra="forbid")
    message: Any = Field(description="Any JSON value; the producer receives it as is.")
    id: Annotated[str, StringConstraints(pattern=MESSAGE_KEY_PATTERN)] | None = Field(
        None,
        description="Idempotency key (or the `Idempotency-Key` header): a retry with the same "
        "key is answered with the first message's receipt instead of sending it again.",
    )


class MessageOut(BaseModel):
    """``POST /{sid}/messages`` answer."""

    id: str
    generation: int
    duplicate: bool


class ErrorOut(BaseModel):
    """An error answer."""

    detail: Any
