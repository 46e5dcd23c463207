"""Quick checks of the redis-server test fixtures themselves."""

from __future__ import annotations

import socket

import pytest
import redis
import redis.asyncio
from support.redis_server import RedisServer, RedisServerError


def test_shared_server_answers(redis_url: str, redis_server: RedisServer) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping() is True
        client.set("leftover", "x")


def test_redis_url_starts_empty(redis_url: str) -> None:
    # Whichever order the tests run in, each one gets a flushed database.
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


def test_command_stats_counts_a_set(redis_url: str, redis_server: RedisServer) -> None:
    before = redis_server.command_stats()
    with redis.Redis.from_url(redis_url) as client:
        client.set("k", "v")
        client.set("k2", "v")
        client.get("k")
    after = redis_server.command_stats()
    assert after.get("set", 0) - before.get("set", 0) == 2
    assert after.get("get", 0) - before.get("get", 0) == 1
    assert redis_server.total_commands() >= sum(after.values())


def test_restart_keeps_port_and_aof_data(make_redis: object) -> None:
    assert callable(make_redis)
    server: RedisServer = make_redis(appendonly=True)
    port, pid = server.port, server.pid
    server.execute("SET", "durable", "yes")
    server.restart()
    assert server.port == port
    assert server.pid != pid
    assert server.execute("GET", "durable") == b"yes"


def test_kill_pause_resume(fresh_redis: RedisServer) -> None:
    server = fresh_redis
    server.execute("SET", "k", "v")

    server.pause()
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=0.2) as sock,
        pytest.raises(TimeoutError),
    ):
        sock.sendall(b"PING\r\n")
        sock.recv(16)
    server.resume()
    assert server.ping()

    server.kill()
    assert not server.running
    assert not server.ping()
    with pytest.raises(RedisServerError):
        server.pause()
    server.start()
    assert server.execute("PING") == b"PONG"
    assert server.execute("GET", "k") is None  # no persistence by default


def test_stop_while_paused(fresh_redis: RedisServer) -> None:
    fresh_redis.pause()
    fresh_redis.stop()
    assert not fresh_redis.running


@pytest.mark.anyio
async def test_async_client_under_anyio(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()
