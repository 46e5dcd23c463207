"""Shared fixtures: real redis-server processes (see tests/support/redis_server.py).

- ``redis_server`` (session): one server shared by the whole run.
- ``redis_url`` (function): that server's URL, FLUSHALLed and with zeroed
  command stats before each test.
- ``fresh_redis`` (function): a private server a test may kill, pause or restart.
- ``make_redis`` (function): factory for private servers with custom settings,
  e.g. ``make_redis(appendonly=True)``; all are closed after the test.
- ``redis_cluster`` (session): a 3-primary Redis Cluster (see tests/support/cluster.py) shared by the
  run; ``cluster_url`` (function): its ``redis+cluster://`` URL, every primary flushed first.
- ``make_cluster`` (function): factory for private clusters a test may reshape or break.
- ``postgres_server`` (session): one private PostgreSQL server (tests/support/postgres_server.py);
  ``postgres_url`` (function): its URL, with an empty ``public`` schema and no connection left by
  an earlier test; ``fresh_postgres`` (function): a private server a test may break.

With ``STREAMHUB_REQUIRE_TOOLS=1`` (CI sets it), a missing tool that tests would otherwise skip
for (Node, npm, Chromium) stops the run before any test: CI must not pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import redis
from support.cluster import Cluster
from support.postgres_server import PostgresServer, bindir
from support.redis_server import RedisServer

from fastapi_streamhub.backends._bus import require_sharded_pubsub


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("STREAMHUB_REQUIRE_TOOLS") != "1":
        return
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    missing = [tool for tool in ("node", "npm", "redis-server") if shutil.which(tool) is None]
    if bindir() is None:
        missing.append("initdb (postgresql)")
    if not os.access(chromium, os.X_OK):
        missing.append(chromium)
    if missing:
        raise pytest.UsageError(
            f"STREAMHUB_REQUIRE_TOOLS=1 but these are missing: {', '.join(missing)}"
        )


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


Server = TypeVar("Server", RedisServer, PostgresServer)


def _session_server(server: Server) -> Iterator[Server]:
    """A server process for the whole session, closed at its end."""
    server.start()
    try:
        yield server
    finally:
        server.close()


def _healed(server: Server) -> Server:
    """The shared server, running again if an earlier test stopped, killed or froze it by
    mistake."""
    if server.paused:
        server.resume()
    if not server.running:
        server.start()
    return server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from _session_server(RedisServer())


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    _healed(redis_server)
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    redis_server.reset_stats()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from _session_server(PostgresServer())


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    _healed(postgres_server).reset()
    return postgres_server.url


@pytest.fixture
def fresh_postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server a test may stop, freeze or restart."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.close()


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


def _skip_without_sharded_pubsub() -> None:
    """``scripts/test --lowest`` runs redis-py 5.2, below the ``cluster`` extra's floor."""
    try:
        require_sharded_pubsub()
    except ValueError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    _skip_without_sharded_pubsub()
    cluster = Cluster(primaries=3).start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def cluster_url(redis_cluster: Cluster) -> str:
    for node in redis_cluster.nodes:
        node.execute("FLUSHALL")
        node.execute("CONFIG", "RESETSTAT")
    return redis_cluster.url


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., Cluster]]:
    _skip_without_sharded_pubsub()
    clusters: list[Cluster] = []

    def factory(**kwargs: object) -> Cluster:
        cluster = Cluster(**kwargs)  # type: ignore[arg-type]
        clusters.append(cluster)
        return cluster.start()

    try:
        yield factory
    finally:
        for cluster in clusters:
            cluster.close()
