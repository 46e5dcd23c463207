"""Steering messages over HTTP, across two real instances (``tests/http_app.py`` under uvicorn).

Each instance reaches the shared redis-server through its own TCP proxy (``support/proxy.py``), so a
test can reset or refuse one instance's Redis connections while clients keep sending. The
generator route ``/steer/{sid}`` echoes every steering message it receives as a chunk, so the
SSE output is exactly what the producer received, in the order it received it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
from support.apps import App, start_apps
from support.proxy import TCPProxy
from support.redis_server import RedisServer
from support.sids import new_sid
from support.sse_client import SSEResult, read_sse, wait_until

pytestmark = pytest.mark.anyio


class Two:
    """Instances A and B, each behind its own proxy to Redis, and a client for each."""

    def __init__(self, apps: list[App], proxies: dict[str, TCPProxy]) -> None:
        self.a, self.b = apps
        self.proxies = proxies
        self.ca: httpx.AsyncClient
        self.cb: httpx.AsyncClient


@pytest.fixture
async def two(
    request: pytest.FixtureRequest,
    anyio_backend: str,
    tmp_path: Path,
    redis_url: str,
    redis_server: RedisServer,
) -> AsyncIterator[Two]:
    """Apps A and B, each reaching the store through its own TCP proxy; the store is Redis, or
    PostgreSQL when the test asks for it (``indirect`` parameter ``"postgres"``)."""
    backend = getattr(request, "param", "redis")
    host, port = redis_server.host, redis_server.port
    if backend == "postgres":
        request.getfixturevalue("postgres_url")  # an empty schema
        pg = request.getfixturevalue("postgres_server")
        host, port = pg.host, pg.port
    proxies = {name: TCPProxy(host, port).start() for name in "AB"}
    settings = {
        "REC_URL": redis_url,
        "LEASE_TTL": "5",
        "PING_INTERVAL": "0.5",
        "SHUTDOWN_GRACE": "1.0",
        "OUTAGE_TIMEOUT": "20",
    }

    def url(proxy: TCPProxy) -> str:
        if backend == "postgres":
            return f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
        return proxy.url

    apps = [App(name, {**settings, "REDIS_URL": url(proxies[name])}, tmp_path) for name in "AB"]
    try:
        await anyio.to_thread.run_sync(start_apps, apps)
        env = Two(apps, proxies)
        async with _client(env.a) as ca, _client(env.b) as cb:
            env.ca, env.cb = ca, cb
            yield env
        for app in apps:
            assert app.alive(), f"app {app.name} died:\n{app.log()}"
            assert app.errors() == [], app.log()
    finally:
        for app in apps:
            await anyio.to_thread.run_sync(app.stop)
        for proxy in proxies.values():
            proxy.close()


def _client(app: App) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=app.url, timeout=httpx.Timeout(20.0), trust_env=False)


async def send(
    client: httpx.AsyncClient, sid: str, data: Any, key: str, within: float = 40.0
) -> dict[str, Any]:
    """POST a message as a careful client does: the same idempotency key on every retry, and
    retries on a transport error or a 503 (the answer may have been lost after the store)."""
    deadline = time.monotonic() + within
    while True:
        try:
            resp = await client.post(
                f"/streams/{sid}/messages",
                json={"message": data},
                headers={"Idempotency-Key": key},
            )
            if resp.status_code != 503:
                assert resp.status_code == 202, resp.text
                body: dict[str, Any] = resp.json()
                return body
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"message {key} not accepted within {within}s"
        await anyio.sleep(0.1)


async def _up_after(proxy: TCPProxy, delay: float) -> None:
    await anyio.sleep(delay)
    proxy.up()


@pytest.mark.parametrize("two", ["redis", "postgres"], indirect=True)
async def test_messages_sent_to_b_reach_the_producer_on_a_in_order_exactly_once_across_drops(
    two: Two,
) -> None:
    sid = new_sid("steer")
    n = 24
    # What breaks before message i: B's Redis connections (the sender's side) or A's (the
    # producer's: its control-bus subscription too, so the live signals sent meanwhile are
    # missed and the messages must come from the store).
    faults = {
        5: ("B", "drop"),
        9: ("A", "drop"),
        13: ("B", "down"),
        17: ("A", "down"),
        20: ("B", "drop"),
    }
    receipts: list[dict[str, Any]] = []
    res = SSEResult()
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: read_sse(two.ca, f"/steer/{sid}", params={"n": n}, result=res, within=90)
        )
        await wait_until(lambda: res.chunks or res.eof, within=15, what="the stream's start")
        assert res.values[:1] == [("text", "ready")], res.body[:300]
        for i in range(n):
            if i in faults:
                name, fault = faults[i]
                proxy = two.proxies[name]
                if fault == "drop":
                    cut = proxy.drop()
                else:
                    cut = proxy.down()
                    tg.start_soon(_up_after, proxy, 0.7)
                assert cut > 0, f"no connection of {name} to cut"  # the fault did hit
            key = f"{sid}.{i}"
            receipt = await send(two.cb, sid, {"i": i}, key)
            if i % 4 == 0:
                # A client whose answer was lost sends again: the same receipt, nothing new.
                again = await send(two.cb, sid, {"i": i}, key)
                assert again == {**receipt, "duplicate": True}
            receipts.append(receipt)
        await wait_until(lambda: res.eof, within=40, what="the end of the stream")
    assert res.status_code == 200
    echoed = [value for kind, value in res.values[1:]]
    assert [e["data"] for e in echoed] == [{"i": i} for i in range(n)]
    assert [e["id"] for e in echoed] == [r["id"] for r in receipts]
    generation = receipts[0]["generation"]
    assert [r["id"] for r in receipts] == [f"{generation}-{i}" for i in range(1, n + 1)]
    assert not any(r["duplicate"] for r in receipts)
    assert res.ends == [{"state": "done", "reason": None}]
    # The generation is over: no more messages (a retry of an earlier one still gets its receipt).
    late = await two.cb.post(f"/streams/{sid}/messages", json={"message": "late"})
    assert late.status_code == 409, late.text
    assert (await send(two.ca, sid, {"i": 0}, f"{sid}.0")) == {**receipts[0], "duplicate": True}


async def test_message_endpoint_answers(two: Two, redis_url: str) -> None:
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    sid = new_sid("answers")
    url = f"/streams/{sid}/messages"
    try:
        # Unknown: 404, and nothing is created.
        resp = await two.cb.post(url, json={"message": "hi", "id": "k1"})
        assert resp.status_code == 404 and resp.json()["detail"], resp.text
        assert list(store.scan_iter(match=f"*{sid}*")) == []

        res = SSEResult()
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: read_sse(two.ca, f"/steer/{sid}", params={"n": 2}, result=res, within=30)
            )
            await wait_until(lambda: res.chunks or res.eof, within=15, what="the stream's start")
            for body in (
                b"not json",
                b"[1, 2]",
                b'{"msg": 1}',
                b'{"message": 1, "extra": 2}',
                b'{"message": 1, "id": "has space"}',
                b'"\\ud800"',
            ):
                resp = await two.cb.post(
                    url, content=body, headers={"content-type": "application/json"}
                )
                assert resp.status_code == 422, (body, resp.status_code, resp.text)
                assert resp.json()["detail"]
            resp = await two.cb.post(url, json={"message": 1}, headers={"Idempotency-Key": "a b"})
            assert resp.status_code == 422, resp.text
            resp = await two.cb.post(
                url, json={"message": 1, "id": "one"}, headers={"Idempotency-Key": "two"}
            )
            assert resp.status_code == 422, resp.text
            resp = await two.cb.post(url, json={"message": "x" * 70_000})
            assert resp.status_code == 413, resp.text

            first = await two.cb.post(url, json={"message": {"a": [1, None]}, "id": "m-1"})
            assert first.status_code == 202, first.text
            assert set(first.json()) == {"id", "generation", "duplicate"}
            again = await two.ca.post(
                url, json={"message": {"a": [1, None]}}, headers={"Idempotency-Key": "m-1"}
            )
            assert again.json() == {**first.json(), "duplicate": True}
            second = await two.ca.post(url, json={"message": None})
            assert second.status_code == 202, second.text
            await wait_until(lambda: res.eof, within=15, what="the end of the stream")
        assert [v for _, v in res.values[1:]] == [
            {"id": first.json()["id"], "data": {"a": [1, None]}},
            {"id": second.json()["id"], "data": None},
        ]
        resp = await two.cb.post(url, json={"message": "late"})
        assert resp.status_code == 409 and resp.json()["detail"], resp.text
    finally:
        store.close()
