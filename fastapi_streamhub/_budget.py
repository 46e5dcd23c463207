"""How long a store call may keep retrying through an outage.

A producer rides out an outage for ``outage_timeout`` (30 s by default): its chunks are worth
the wait. A client waiting for an HTTP answer is not: while a request is being answered, calls
retry for ``request_timeout`` at most, so every endpoint answers 503 within a few seconds
instead of holding the connection for the whole outage. The bound lives in a context variable
(the backends need no new parameter) and ends with the request's setup, also for tasks started
meanwhile: a producer started by a request keeps the full budget.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVarTuple

__all__ = ["detached", "request_bound", "retry_budget"]

Ts = TypeVarTuple("Ts")


class _Bound:
    __slots__ = ("open", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.open = True


_BOUND: ContextVar[_Bound | None] = ContextVar("streamhub_request_bound", default=None)


def retry_budget(outage_timeout: float) -> float:
    """Seconds a call started now may retry: ``outage_timeout``, or less inside a request."""
    bound = _BOUND.get()
    if bound is None or not bound.open:
        return outage_timeout
    return min(outage_timeout, bound.seconds)


@contextmanager
def request_bound(seconds: float) -> Iterator[None]:
    """Calls made inside (and by tasks started inside, until it exits) retry ``seconds`` at
    most."""
    bound = _Bound(seconds)
    token = _BOUND.set(bound)
    try:
        yield
    finally:
        # Tasks that copied this context (a subscription's reader) go back to the full budget.
        bound.open = False
        _BOUND.reset(token)


async def detached(fn: Callable[[*Ts], Awaitable[Any]], *args: *Ts) -> None:
    """Run ``fn(*args)`` with the full budget, whatever request started it (a producer)."""
    _BOUND.set(None)  # this task's own copy of the context
    await fn(*args)
