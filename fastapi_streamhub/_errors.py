"""The error tree of fastapi-streamhub.

Every error the library raises on purpose derives from one root, so callers can catch
``StreamHubError`` and nothing else. Builtins are subclassed where the meaning matches::

    StreamHubError
    ├── SessionNotFound (LookupError)       no record: never created, deleted or expired
    ├── InvalidSessionId (ValueError)       the id is not 1-200 characters of [A-Za-z0-9._:-]
    ├── InvalidCursor (ValueError)          a cursor that is not of the form "<generation>-<offset>"
    ├── InvalidChunk (TypeError)            a chunk of an unsupported type, or text that is not UTF-8
    ├── LimitExceeded (ValueError)          a chunk, metadata or subscriber count over its limit
    ├── OwnershipLost                       this producer may no longer write
    │   ├── StaleGeneration                 another generation owns the session now
    │   ├── LeaseExpired                    the lease ran out before the write; the session is failed
    │   └── SessionDeleted                  the session was deleted while the producer ran
    ├── StreamClosed                        the producer already closed the stream
    ├── SessionFinished                     a steering message for a session that is not running
    ├── BackendUnavailable (ConnectionError) the store could not be reached within the retry budget
    └── adapters.UpstreamError              an LLM provider reported an error inside its stream

Domain errors stay free of HTTP; the router maps them to status codes.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "InvalidChunk",
    "InvalidCursor",
    "InvalidSessionId",
    "LeaseExpired",
    "LimitExceeded",
    "OwnershipLost",
    "SessionDeleted",
    "SessionFinished",
    "SessionNotFound",
    "StaleGeneration",
    "StreamClosed",
    "StreamHubError",
]


class StreamHubError(Exception):
    """Root of every error raised by fastapi-streamhub."""


class SessionNotFound(StreamHubError, LookupError):
    """The session has no record: never created, deleted, or past its retention."""


class InvalidSessionId(StreamHubError, ValueError):
    """A session id that is not 1-200 characters of ``[A-Za-z0-9._:-]``."""


class InvalidCursor(StreamHubError, ValueError):
    """A cursor that cannot be parsed as ``<generation>-<offset>``."""


class InvalidChunk(StreamHubError, TypeError):
    """A chunk of an unsupported type, or text that cannot be encoded as UTF-8."""


class LimitExceeded(StreamHubError, ValueError):
    """A configured limit (chunk size, metadata size, subscribers) would be exceeded."""


class OwnershipLost(StreamHubError):
    """The producer no longer owns the session; nothing it writes is accepted."""


class StaleGeneration(OwnershipLost):
    """Another generation owns the session now; this producer's writes are rejected."""


class LeaseExpired(OwnershipLost):
    """The producer's lease ran out before this write; the session was marked failed."""


class SessionDeleted(OwnershipLost):
    """The session was deleted while its producer was running."""


class StreamClosed(StreamHubError):
    """The producer already closed this stream."""


class SessionFinished(StreamHubError):
    """The session's generation finished: it takes no more steering messages."""


class BackendUnavailable(StreamHubError, ConnectionError):
    """The store could not be reached within the retry budget."""
