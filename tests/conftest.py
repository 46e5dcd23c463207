"""Shared fixtures: real redis-server processes (see tests/_redis.py).

- ``redis_server`` (session): one server shared by the whole run.
- ``redis_url`` (function): that server's URL, FLUSHALLed and with zeroed
  command stats before each test.
- ``fresh_redis`` (function): a private server a test may kill, pause or restart.
- ``make_redis`` (function): factory for private servers with custom settings,
  e.g. ``make_redis(appendonly=True)``; all are closed after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from _redis import RedisServer


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    # Heal the shared server if an earlier test killed or froze it by mistake.
    if redis_server.paused:
        redis_server.resume()
    if not redis_server.running:
        redis_server.start()
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    redis_server.reset_stats()
    return redis_server.url


@pytest.fixture
def make_redis() -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []

    def factory(**kwargs: object) -> RedisServer:
        server = RedisServer(**kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def fresh_redis(make_redis: Callable[..., RedisServer]) -> RedisServer:
    return make_redis()
