"""Shared by test_limits, test_security and test_fuzz: ``security_app`` servers and checks.

A server is a real uvicorn subprocess (``AppServer`` of ``support.apps``) on the session's real
redis-server; a test module starts the ones it needs once (module scope) and every test uses
its own session ids. :func:`checked_client` fails a test whose requests made the server log an
error (a 500, a crashed task) or die.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from test_http import check_log

from support.apps import AppServer, start_servers
from support.redis_server import RedisServer
from support.sse_client import SSEResult

APP = "security_app:app"
LIMITS = {"MAX_CHUNK_BYTES": "1000", "MAX_METADATA_BYTES": "500", "MAX_SUBSCRIBERS": "3"}

# What an answer may never contain: a sign that an exception escaped into the response.
LEAK_MARKERS = ("Traceback", 'File "', "Exception", "fastapi_streamhub/", "site-packages")


@contextmanager
def app_server(
    name: str, redis_server: RedisServer, log_dir: Path, **env: str
) -> Iterator[AppServer]:
    """One ``security_app`` server on ``redis_server``, stopped on exit."""
    server = AppServer(
        name,
        {"REDIS_URL": redis_server.url, "PING_INTERVAL": "0.5", "AUTH": "none", **LIMITS, **env},
        log_dir,
        app=APP,
    )
    try:
        start_servers([server])
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def checked_client(server: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``server``; on exit, the server must be alive with a clean log."""
    mark = len(server.log())
    async with httpx.AsyncClient(
        base_url=server.url, timeout=httpx.Timeout(15.0), trust_env=False
    ) as client:
        yield client
    assert server.alive(), f"app {server.name} died:\n{server.log()}"
    check_log(server.name, server.log()[mark:])


def assert_clean_error(resp: httpx.Response, *statuses: int) -> Any:
    """A 4xx JSON ``{"detail": ...}`` with one of ``statuses`` and no leaked internals."""
    assert resp.status_code in statuses, (
        resp.request.method,
        resp.url,
        resp.status_code,
        resp.text,
    )
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict) and body.get("detail"), body
    assert_no_leak(resp.text)
    return body["detail"]


def assert_no_leak(text: str) -> None:
    for marker in LEAK_MARKERS:
        assert marker not in text, f"answer leaks {marker!r}: {text[:500]}"


def library_keys(redis_server: RedisServer) -> list[bytes]:
    """Every key of the library (prefix ``streamhub``) in ``redis_server``, by SCAN."""
    keys: list[bytes] = []
    cursor = b"0"
    while True:
        reply = redis_server.execute("SCAN", cursor, "MATCH", "streamhub*", "COUNT", 1000)
        assert isinstance(reply, list)
        cursor, batch = reply
        keys.extend(batch)
        if cursor == b"0":
            return sorted(keys)


def assert_ended(res: SSEResult, state: str) -> dict[str, Any]:
    """The stream answered 200 and ended with exactly one ``end`` of ``state``; that end."""
    assert res.status_code == 200, res.body[:500]
    assert res.eof and len(res.ends) == 1 and res.events[-1].type == "end", res.events[-3:]
    end: dict[str, Any] = res.ends[0]
    assert end["state"] == state, end
    return end
