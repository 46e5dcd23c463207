"""The one rule for how a generation ends: which state and reason its record and ``end`` get.

Every way a producer can stop (``close()``, ``async with``, an exception in the body, a
cancel, the hub's shutdown, a lost lease, a sub-producer ending its part, a generator factory
that raised) describes what it saw as an :class:`Exit` and asks :func:`final_state`. So the
same situation stores the same record and sends the same ``end`` whichever path ended it.

A reason is public: every reader receives it. Backend failures are therefore named by class
(``backend: the store did not answer within 30s``), never with the driver's text, which can
hold a server's address; the full message goes to the log where the failure is seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import anyio

from ._errors import BackendUnavailable, StreamHubError
from ._types import State

__all__ = ["Exit", "backend_reason", "describe", "final_state"]

# Reasons the library itself writes (besides a generator's own exception and "lease_expired",
# which the store writes when a lease lapses).
SHUTDOWN = "shutdown"
CANCELLED = "cancelled"

_WITHIN = re.compile(r"within (\d+(?:\.\d+)?s)")
_FOR = re.compile(r"unreachable for (\d+(?:\.\d+)?s)")
# The driver's error class (OutOfMemoryError, NoPermissionError, ...), else the code a Redis
# error reply starts with (OOM, NOPERM, READONLY, ...).
_CODE = re.compile(r"\b([A-Za-z]+Error)\b|\b([A-Z][A-Z_]{1,19}) ")


@dataclass(frozen=True, slots=True)
class Exit:
    """What a producer saw when it stopped; :func:`final_state` turns it into the record."""

    requested: State | None = None
    """The state passed to ``close()`` (None: let the rule decide)."""
    reason: str | None = None
    """The reason passed with ``requested``."""
    cancel_reason: str | None = None
    """Set once the producer's cancel fired (``cancelled``, ``shutdown``, ``error``, ...)."""
    error: StreamHubError | None = None
    """A write of this producer failed: a chunk it accepted may not be stored."""
    lost: bool = False
    """Another generation owns the session, or it was deleted: nothing may be written."""
    shutdown: bool = False
    """The hub's shutdown grace ran out while the producer was running."""
    exc: BaseException | None = None
    """What the producer's body raised (None when it returned, or its cancel was absorbed)."""


def final_state(seen: Exit) -> tuple[State | None, str | None]:
    """``(state, reason)`` to store for a generation that stopped as ``seen`` describes.

    ``(None, None)`` means write nothing: the session is not this producer's any more.
    In order: lost; a failed write (a stream missing chunks is never ``done``, whatever was
    requested); shutdown; an exception from the body; an explicit request; a cancel; ``done``.
    """
    if seen.lost:
        return None, None
    if seen.error is not None:
        return State.FAILED, backend_reason(seen.error)
    if seen.shutdown:
        return State.FAILED, SHUTDOWN
    exc = seen.exc
    cancelled_exc = exc is not None and isinstance(exc, anyio.get_cancelled_exc_class())
    if exc is not None and not cancelled_exc:
        return State.FAILED, describe(exc)
    if seen.requested is State.FAILED:
        return State.FAILED, seen.reason
    if seen.requested is State.CANCELLED:
        return State.CANCELLED, seen.reason or seen.cancel_reason or CANCELLED
    if seen.requested is State.DONE:
        return State.DONE, seen.reason
    if seen.cancel_reason is not None or cancelled_exc:
        return State.CANCELLED, seen.cancel_reason or CANCELLED
    return State.DONE, None


def backend_reason(error: StreamHubError) -> str:
    """The public reason for a failed write: the failure's class, never the driver's text."""
    text = str(error)
    if isinstance(error, BackendUnavailable):
        if match := _WITHIN.search(text):
            return f"backend: the store did not answer within {match.group(1)}"
        if match := _FOR.search(text):
            return f"backend: the store was unreachable for {match.group(1)}"
        if match := _CODE.search(text):
            return f"backend: the store refused the write ({match.group(1) or match.group(2)})"
        return "backend: the write was not stored"
    return f"backend: the write was not stored ({type(error).__name__})"


def describe(exc: BaseException) -> str:
    """A short, single-line reason for a failure."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = text.replace("\r", " ").replace("\n", " ")[:500]
    # Lone surrogates cannot be stored or sent (UTF-8): escape them rather than fail the close.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
