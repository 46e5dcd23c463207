"""fastapi-streamhub: resumable, cancellable LLM token streams for FastAPI, persisted in Redis."""

from .__about__ import __version__
from ._errors import (
    BackendUnavailable,
    InvalidChunk,
    InvalidCursor,
    InvalidSessionId,
    LeaseExpired,
    LimitExceeded,
    OwnershipLost,
    SessionDeleted,
    SessionNotFound,
    StaleGeneration,
    StreamClosed,
    StreamHubError,
)
from ._hub import Registration, Session, StreamHub
from ._producer import Producer
from ._subscriber import Subscription
from ._types import Batch, Chunk, Cursor, End, Event, Metadata, Reset, SessionInfo, State
from .backends.base import Backend
from .backends.memory import MemoryBackend

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Batch",
    "Chunk",
    "Cursor",
    "End",
    "Event",
    "InvalidChunk",
    "InvalidCursor",
    "InvalidSessionId",
    "LeaseExpired",
    "LimitExceeded",
    "MemoryBackend",
    "Metadata",
    "OwnershipLost",
    "Producer",
    "Registration",
    "Reset",
    "Session",
    "SessionDeleted",
    "SessionInfo",
    "SessionNotFound",
    "StaleGeneration",
    "State",
    "StreamClosed",
    "StreamHub",
    "StreamHubError",
    "Subscription",
    "__version__",
]
