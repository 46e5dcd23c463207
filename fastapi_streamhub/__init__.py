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
    SessionFinished,
    SessionNotFound,
    StaleGeneration,
    StreamClosed,
    StreamHubError,
)
from ._fanin import Grant, SubProducer
from ._finish import FinishedGeneration
from ._http.deps import get_hub
from ._http.durable import create_durable_streams_router
from ._http.response import ResumableStreamingResponse, SessionStreamResponse
from ._http.router import create_router, streamhub_router
from ._hub import Registration, Session, StreamHub
from ._producer import Producer
from ._steering import MessageReceipt, SteeringMessage, StreamContext
from ._subscriber import Subscription
from ._types import (
    Batch,
    Chunk,
    Cursor,
    End,
    Event,
    GenerationEnd,
    GenerationStart,
    Metadata,
    Reset,
    SessionInfo,
    State,
)
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
    "FinishedGeneration",
    "GenerationEnd",
    "GenerationStart",
    "Grant",
    "InvalidChunk",
    "InvalidCursor",
    "InvalidSessionId",
    "LeaseExpired",
    "LimitExceeded",
    "MemoryBackend",
    "MessageReceipt",
    "Metadata",
    "OwnershipLost",
    "Producer",
    "Registration",
    "Reset",
    "ResumableStreamingResponse",
    "Session",
    "SessionDeleted",
    "SessionFinished",
    "SessionInfo",
    "SessionNotFound",
    "SessionStreamResponse",
    "StaleGeneration",
    "State",
    "SteeringMessage",
    "StreamClosed",
    "StreamContext",
    "StreamHub",
    "StreamHubError",
    "SubProducer",
    "Subscription",
    "__version__",
    "create_durable_streams_router",
    "create_router",
    "get_hub",
    "streamhub_router",
]
