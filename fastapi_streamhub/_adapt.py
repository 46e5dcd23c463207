"""What StreamHub accepts as its store: a Backend, a redis-py client or a psycopg pool it
wraps, or a URL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .backends.base import Backend
from .backends.memory import MemoryBackend

__all__ = ["Opened", "as_backend", "open_url"]


@dataclass(frozen=True, slots=True)
class Opened:
    """What :func:`open_url` made: the store, and the clients the hub closes at its exit."""

    store: Any
    owned: list[Any] = field(default_factory=list)


def open_url(url: str) -> Opened:
    """The store a URL names (see :meth:`StreamHub.from_url`); raises ValueError."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "memory":
        return Opened(MemoryBackend())
    if scheme in ("postgresql", "postgres"):
        from .backends.postgres import PostgresBackend

        return Opened(PostgresBackend.from_url(url))
    from .backends._urls import redis_client

    client, owned = redis_client(url)
    return Opened(client, owned)


def as_backend(backend: Any) -> tuple[Backend, list[Any]]:
    """``backend`` as a Backend (None is a new memory backend), with the clients to close at
    exit (those :func:`open_url` made); raises TypeError."""
    if isinstance(backend, Opened):
        return as_backend(backend.store)[0], backend.owned
    if backend is None:
        return MemoryBackend(), []
    if isinstance(backend, Backend):
        return backend, []
    if type(backend).__module__.startswith("psycopg_pool"):
        from .backends.postgres import PostgresBackend

        return PostgresBackend(backend), []
    from redis.asyncio import Redis, RedisCluster

    if isinstance(backend, (Redis, RedisCluster)):
        from .backends.redis import RedisBackend

        return RedisBackend(backend), []
    raise TypeError(
        "StreamHub takes a redis.asyncio.Redis or RedisCluster client, a "
        "psycopg_pool.AsyncConnectionPool or a Backend instance "
        f"(got {type(backend).__name__}); use StreamHub.from_url for URLs"
    )
