"""Driving an app's generator into its producer: the task a response spawns once it produces.

Engine logic, not HTTP: it knows the producer and the generator, never a request, so any
front end (the responses in ``_http``, a worker, a test) runs generators the same way.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

import anyio

from ._ending import describe
from ._errors import OwnershipLost
from ._producer import Producer
from ._steering import StreamContext

__all__ = ["GeneratorFactory", "close_unused", "run_factory", "run_generator"]

log = logging.getLogger("fastapi_streamhub")

# A generator factory: called with the producer's context once this instance is the producer.
GeneratorFactory = Callable[[StreamContext], AsyncIterable[Any]]


async def run_generator(producer: Producer, generator: AsyncIterable[Any]) -> None:
    """Drive ``generator`` into ``producer`` until it ends, raises, or is cancelled."""
    iterator = generator.__aiter__()
    try:
        async with producer:
            try:
                async for item in iterator:
                    await producer.send(item)
            finally:
                # The generator's own cleanup runs before the end is recorded (which may take
                # up to outage_timeout when Redis is gone).
                await close_unused(iterator)
    except OwnershipLost as exc:
        # Deleted or taken over: the generator is stopped on purpose, nothing to record.
        log.info("generator of session %r stopped: %s", producer.session_id, exc)
    except Exception as exc:
        # The producer already recorded the session as failed with this reason.
        log.warning(
            "generator of session %r failed: %s", producer.session_id, describe(exc), exc_info=exc
        )
    finally:
        await close_unused(iterator)


async def run_factory(producer: Producer, factory: GeneratorFactory) -> None:
    """Build the generator with the producer's context, then :func:`run_generator`."""
    try:
        generator = factory(StreamContext(producer))
        if not hasattr(generator, "__aiter__"):
            raise TypeError(
                f"the generator factory returned {type(generator).__name__}, not an async iterable"
            )
    except Exception as exc:
        log.warning("generator factory of session %r failed: %s", producer.session_id, exc)
        await producer.close_after(exc)
        return
    await producer.load_stored_messages()
    await run_generator(producer, generator)


async def close_unused(generator: Any) -> None:
    """Close an async generator the producer will not drive (or has stopped driving)."""
    aclose: Callable[[], Awaitable[None]] | None = getattr(generator, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            try:
                await aclose()
            except Exception as exc:
                log.warning("closing a generator raised: %s", describe(exc))
