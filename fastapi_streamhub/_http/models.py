"""The JSON bodies of the router's endpoints as pydantic models (they document /openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from .._steering import MESSAGE_KEY_PATTERN
from .._types import SESSION_ID_PATTERN, SNAPSHOT_SHAPE, STATUS_SHAPE, WireField

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


def _wire_model(name: str, doc: str, shape: tuple[WireField, ...]) -> type[BaseModel]:
    """A response model built from a kernel wire shape, so the documented answer cannot drift
    from what the engine writes and the client reads."""
    fields: dict[str, Any] = {f.name: (f.type, None if f.optional else ...) for f in shape}
    return create_model(name, __doc__=doc, **fields)


StatusOut = _wire_model("StatusOut", "``GET /{sid}/status``.", STATUS_SHAPE)
SnapshotOut = _wire_model("SnapshotOut", "``GET /{sid}/snapshot``.", SNAPSHOT_SHAPE)


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
