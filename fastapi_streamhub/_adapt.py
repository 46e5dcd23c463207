"""What StreamHub accepts as its store: a Backend, or a redis-py client it wraps."""

from __future__ import annotations

from typing import Any

from .backends.base import Backend
from .backends.memory import MemoryBackend

__all__ = ["as_backend"]


def as_backend(backend: Any) -> Backend:
    """``backend`` as a Backend: None is a new memory backend; raises TypeError."""
    if backend is None:
        return MemoryBackend()
    if isinstance(backend, Backend):
        return backend
    from redis.asyncio import Redis, RedisCluster

    if isinstance(backend, (Redis, RedisCluster)):
        from .backends.redis import RedisBackend

        return RedisBackend(backend)
    raise TypeError(
        "StreamHub takes a redis.asyncio.Redis or RedisCluster client or a Backend instance "
        f"(got {type(backend).__name__}); use StreamHub.from_url for URLs"
    )
