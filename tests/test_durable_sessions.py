"""Our sessions read through the Durable Streams protocol (``sessions_view=True``), read-only:
over plain HTTP, and followed live by the official TypeScript client (``@durable-streams/client``,
SSE and long-poll) while a ``ResumableStreamingResponse`` produces them, on memory, Redis and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ds_app import item
from support.apps import AppServer, serving
from support.node import NODE, node_modules, run_node
from support.postgres_server import PostgresServer
from support.redis_server import RedisServer
from support.sids import new_sid
from test_durable_streams import PACKAGE, SUITE_DIR

from fastapi_streamhub import Event

N = 6


def expected(n: int) -> list[Any]:
    """The JSON messages of a ``/gen`` session of ``n`` items."""
    out: list[Any] = []
    for i in range(n):
        value = item(i)
        out.append(
            {"event": value.event, "data": value.data} if isinstance(value, Event) else value
        )
    return out


@pytest.fixture(scope="module", params=["memory", "redis", "postgres"])
def app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    redis = RedisServer().start() if request.param == "redis" else None
    pg = PostgresServer().start() if request.param == "postgres" else None
    env = {"REDIS_URL": redis.url if redis else pg.url if pg else "memory://"}
    server = AppServer(
        f"ds-view-{request.param}", env, tmp_path_factory.mktemp("ds-view"), "ds_app:app"
    )
    try:
        with serving(server):
            yield server
    finally:
        if redis is not None:
            redis.close()
        if pg is not None:
            pg.close()


@pytest.fixture
def client(app: AppServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.url, timeout=10.0, trust_env=False) as http:
        yield http


def _produce(client: httpx.Client, sid: str, n: int, delay: float) -> threading.Thread:
    """Run ``/gen/{sid}`` to its end in a thread (the producer lives in the app)."""

    def run() -> None:
        with client.stream("GET", f"/gen/{sid}", params={"n": n, "delay": delay}) as answer:
            for _ in answer.iter_bytes():
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_finished_session_reads_as_a_closed_json_stream(client: httpx.Client) -> None:
    sid = new_sid()
    _produce(client, sid, N, 0.0).join(timeout=20)
    head = client.head(f"/v1/stream/{sid}")
    assert head.status_code == 200 and head.headers["stream-closed"] == "true"
    assert head.headers["content-type"] == "application/json"
    read = client.get(f"/v1/stream/{sid}", params={"offset": "-1"})
    assert read.status_code == 200 and read.json() == expected(N)
    assert read.headers["stream-closed"] == "true" and read.headers["stream-up-to-date"] == "true"
    tail = read.headers["stream-next-offset"]
    assert tail == head.headers["stream-next-offset"]
    # Resuming from the middle returns the rest; from the tail, nothing and closed.
    first = client.get(f"/v1/stream/{sid}", params={"offset": "-1"}).headers
    assert first["etag"]
    poll = client.get(f"/v1/stream/{sid}", params={"offset": tail, "live": "long-poll"})
    assert poll.status_code == 204 and poll.headers["stream-closed"] == "true"
    # Read-only: appends and deletes are refused, and the session is untouched.
    refused = client.post(
        f"/v1/stream/{sid}", content=b"[1]", headers={"Content-Type": "application/json"}
    )
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    assert client.delete(f"/v1/stream/{sid}").status_code == 405
    assert client.put(f"/v1/stream/{sid}").status_code == 409
    assert client.get(f"/streams/{sid}/status").json()["state"] == "done"
    # An offset of another generation is gone.
    other = "0000000000000001_0000000000000001"
    assert client.get(f"/v1/stream/{sid}", params={"offset": other}).status_code == 410


def test_an_unknown_name_is_404(client: httpx.Client) -> None:
    assert client.get(f"/v1/stream/{new_sid()}").status_code == 404
    assert client.head(f"/v1/stream/{new_sid()}").status_code == 404


@pytest.mark.skipif(NODE is None, reason="node is not installed")
@pytest.mark.parametrize("live", ["sse", "long-poll"])
@pytest.mark.timeout(90)
def test_the_official_client_follows_a_live_session(
    client: httpx.Client, app: AppServer, live: str, tmp_path: Path
) -> None:
    node_modules(SUITE_DIR, PACKAGE)
    sid = new_sid()
    producer = _produce(client, sid, N, 0.2)
    # Follow as soon as the session exists (it is active: the client must wait for the rest).
    for _ in range(200):
        if client.head(f"/v1/stream/{sid}").status_code == 200:
            break
        threading.Event().wait(0.02)
    result = run_node(
        SUITE_DIR,
        "follow.mjs",
        live,
        {"url": f"{app.url}/v1/stream/{sid}", "offset": "-1"},
        tmp_path / "follow.log",
        timeout=60,
    )
    producer.join(timeout=20)
    assert result["items"] == expected(N), json.dumps(result)
    assert result["closed"] is True
