"""The HTTP edge of the hostile review (M3, M4, M5, L1, L2, L3, L6): what a cross-site page,
a flood of messages, a huge body or an outage gets from the router.

Each test runs ``tests/security_app.py`` in a real uvicorn on a real redis-server, with the
settings it needs (``support.security.app_server``), and talks to it over real HTTP.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from support.apps import AppServer
from support.redis_server import RedisServer
from support.security import app_server, assert_clean_error, checked_client
from support.sids import new_sid
from support.sse_client import SSEResult, read_sse, wait_until

from fastapi_streamhub import InvalidSessionId, StreamHub, create_router
from fastapi_streamhub._budget import request_bound, retry_budget
from fastapi_streamhub._runner import run_factory
from fastapi_streamhub._steering import StreamContext
from fastapi_streamhub._types import validate_session_id

pytestmark = pytest.mark.anyio

EVIL = "http://evil.example"
FRONTEND = "http://app.example"


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edge-apps")


@pytest.fixture(scope="module")
def server(redis_server: RedisServer, log_dir: Path) -> Iterator[AppServer]:
    env = {"MAX_MESSAGES": "3", "MAX_MESSAGES_BYTES": "400", "ALLOWED_ORIGINS": FRONTEND}
    with app_server("E", redis_server, log_dir, **env) as srv:
        yield srv


@pytest.fixture
async def client(anyio_backend: str, server: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    async with checked_client(server) as c:
        yield c


async def running(client: httpx.AsyncClient, tag: str) -> str:
    """A session whose producer keeps running (for a minute) after this returns."""
    sid = new_sid(tag)
    res = await read_sse(
        client, f"/slow/{sid}", params={"n": 1200, "delay": 0.05}, stop_after_chunks=1
    )
    assert res.status_code == 200, res.body[:300]
    return sid


async def state_of(client: httpx.AsyncClient, sid: str) -> str:
    resp = await client.get(f"/streams/{sid}/status")
    assert resp.status_code == 200, resp.text
    state: str = resp.json()["state"]
    return state


# --------------------------------------------------------------------------- M3: cross-site


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "*/*",
        None,
    ],
)
async def test_messages_refuse_what_a_form_can_send(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    """A body a cross-site page can send without a preflight is refused with 415, unread."""
    sid = await running(client, "ct")
    headers = {} if content_type is None else {"content-type": content_type}
    resp = await client.post(
        f"/streams/{sid}/messages", content=b'{"message": "steer"}', headers=headers
    )
    assert "application/json" in assert_clean_error(resp, 415)
    await client.post(f"/streams/{sid}/cancel")


@pytest.mark.parametrize("content_type", ["application/json", "application/merge-patch+json"])
async def test_messages_take_json_content_types(
    client: httpx.AsyncClient, content_type: str
) -> None:
    sid = await running(client, "json")
    resp = await client.post(
        f"/streams/{sid}/messages",
        content=b'{"message": "steer"}',
        headers={"content-type": f"{content_type}; charset=utf-8"},
    )
    assert resp.status_code == 202, resp.text
    await client.post(f"/streams/{sid}/cancel")


CROSS_SITE = [
    {"origin": EVIL},
    {"origin": "null"},
    {"origin": EVIL, "sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site", "origin": "http://sub.127.0.0.1"},
]


@pytest.mark.parametrize(
    "headers", CROSS_SITE, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items())
)
async def test_cross_site_writes_are_refused(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """Cancel (a bodiless form post), delete and messages from another site: 403, and the
    session runs on untouched. Reads stay open to any origin (CORS guards what they return)."""
    sid = await running(client, "xs")
    json_headers = {**headers, "content-type": "application/json"}
    for method, path, extra in (
        ("POST", f"/streams/{sid}/cancel", headers),
        ("DELETE", f"/streams/{sid}", headers),
        ("POST", f"/streams/{sid}/messages", json_headers),
    ):
        body = b'{"message": "x"}' if path.endswith("messages") else None
        resp = await client.request(method, path, headers=extra, content=body)
        assert "cross-origin" in assert_clean_error(resp, 403), (method, path)
    active = await client.post("/streams/active", json={"session_ids": [sid]}, headers=headers)
    assert_clean_error(active, 403)
    read = await client.get(f"/streams/{sid}/status", headers=headers)
    assert read.status_code == 200 and read.json()["state"] == "active"
    assert (await client.post(f"/streams/{sid}/cancel")).status_code in (200, 202)


async def test_same_origin_and_allowed_origins_may_write(
    client: httpx.AsyncClient, server: AppServer
) -> None:
    """The browser helper's own requests (same origin), an origin of ``allowed_origins`` and
    clients that are not browsers (no Origin) go through."""
    for headers in (
        {"origin": server.url},
        {"origin": server.url, "sec-fetch-site": "same-origin"},
        {"sec-fetch-site": "same-origin"},
        {"sec-fetch-site": "none"},
        {"origin": FRONTEND, "sec-fetch-site": "cross-site"},
        {},
    ):
        sid = await running(client, "ok")
        resp = await client.post(
            f"/streams/{sid}/messages",
            json={"message": "hi"},
            headers=headers,
        )
        assert resp.status_code == 202, (headers, resp.text)
        cancel = await client.post(f"/streams/{sid}/cancel", headers=headers)
        assert cancel.status_code in (200, 202), (headers, cancel.text)


def test_allowed_origins_are_validated() -> None:
    with pytest.raises(ValueError, match="list of origins"):
        create_router(allowed_origins="http://app.example")
    with pytest.raises(ValueError, match="allowed_origins"):
        create_router(allowed_origins=["http://app.example", ""])


# --------------------------------------------------------------------------- M4: message caps


async def test_messages_per_generation_are_capped_in_count(client: httpx.AsyncClient) -> None:
    sid = await running(client, "cap")
    for i in range(3):
        sent = await client.post(f"/streams/{sid}/messages", json={"message": i, "id": f"k{i}"})
        assert sent.status_code == 202, sent.text
    refused = await client.post(f"/streams/{sid}/messages", json={"message": 3})
    assert "max_messages" in assert_clean_error(refused, 413)
    # A retry of a stored message still gets its first receipt.
    again = await client.post(f"/streams/{sid}/messages", json={"message": 0, "id": "k0"})
    assert again.status_code == 202 and again.json()["duplicate"] is True, again.text
    await client.post(f"/streams/{sid}/cancel")


async def test_messages_per_generation_are_capped_in_bytes(
    client: httpx.AsyncClient, redis_server: RedisServer
) -> None:
    sid = await running(client, "bytes")
    blob = "x" * 150  # 152 bytes of JSON: two fit in 400, a third does not
    for _ in range(2):
        assert (
            await client.post(f"/streams/{sid}/messages", json={"message": blob})
        ).status_code == 202
    refused = await client.post(f"/streams/{sid}/messages", json={"message": blob})
    assert "max_messages_bytes" in assert_clean_error(refused, 413)
    # The refused message was not stored.
    assert redis_server.execute("XLEN", f"streamhub:{{{sid}}}:msgs") == 2
    await client.post(f"/streams/{sid}/cancel")


# --------------------------------------------------------------------------- M5: /active


async def test_active_refuses_an_oversized_body_early(client: httpx.AsyncClient) -> None:
    big = b'{"session_ids": ["' + b"x" * 400_000 + b'"]}'
    declared = await client.post(
        "/streams/active", content=big, headers={"content-type": "application/json"}
    )
    assert_clean_error(declared, 413)

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 16384):
            yield big[i : i + 16384]

    streamed = await client.post(
        "/streams/active", content=chunked(), headers={"content-type": "application/json"}
    )
    assert "transfer-encoding" in streamed.request.headers
    assert_clean_error(streamed, 413)


async def test_active_422_does_not_echo_the_input(client: httpx.AsyncClient) -> None:
    value = "y" * 100_000
    resp = await client.post("/streams/active", json={"session_ids": [value]})
    detail = assert_clean_error(resp, 422)
    assert len(resp.content) < 1000 and value[:50] not in resp.text, resp.text[:300]
    assert "session_ids" in detail
    for body in ({"session_ids": ["ok"], "extra": value}, {"session_ids": ["ok"], value: 1}):
        extra = await client.post("/streams/active", json=body)
        assert_clean_error(extra, 422)
        assert len(extra.content) < 1000, extra.text[:300]
    plain = await client.post(
        "/streams/active", content=b'{"session_ids": []}', headers={"content-type": "text/plain"}
    )
    assert_clean_error(plain, 415)
    fine = await client.post("/streams/active", json={"session_ids": ["a" * 200] * 1000})
    assert fine.status_code == 200 and fine.json() == {"active": []}, fine.text[:300]


# --------------------------------------------------------------------------- L2, L3: values


async def test_deep_and_big_number_messages_get_422(client: httpx.AsyncClient) -> None:
    sid = await running(client, "val")
    deep = b'{"message": ' + b"[" * 300 + b"1" + b"]" * 300 + b"}"
    for body in (
        deep,
        b'{"message": 18446744073709551616}',
        b'{"message": [-' + b"9" * 200 + b"]}",
    ):
        resp = await client.post(
            f"/streams/{sid}/messages", content=body, headers={"content-type": "application/json"}
        )
        assert_clean_error(resp, 422)
    # The edges that are kept exactly, and floats written as floats.
    for body in (
        b'{"message": 18446744073709551615}',
        b'{"message": [1e20, -9223372036854775808]}',
    ):
        resp = await client.post(
            f"/streams/{sid}/messages", content=body, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 202, (body, resp.text)
    await client.post(f"/streams/{sid}/cancel")


# --------------------------------------------------------------------------- L6: dot ids


async def raw_request(server: AppServer, request: bytes) -> tuple[int, bytes]:
    """One request over a plain socket: no client library collapses dot segments."""
    host, port = server.url.removeprefix("http://").split(":")
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(request)
        data = b""
        with anyio.fail_after(10):
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize("sid", [".", "..", "%2E", "%2e%2E"])
async def test_dot_session_ids_are_refused(server: AppServer, sid: str) -> None:
    for method, path in (("GET", f"{sid}/status"), ("POST", f"{sid}/cancel"), ("GET", sid)):
        request = f"{method} /streams/{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        status, data = await raw_request(server, request.encode())
        assert status == 422, data[:300]
    with pytest.raises(InvalidSessionId):
        validate_session_id(sid.replace("%2E", ".").replace("%2e", "."))
    assert validate_session_id("...") == "..."


async def test_active_refuses_dot_ids(client: httpx.AsyncClient) -> None:
    resp = await client.post("/streams/active", json={"session_ids": ["a", ".."]})
    assert_clean_error(resp, 422)


# --------------------------------------------------------------------------- L1: outages


async def test_outage_answers_fast_without_internals(
    anyio_backend: str, fresh_redis: RedisServer, log_dir: Path
) -> None:
    """Redis gone: every endpoint answers 503 with Retry-After within about request_timeout,
    and the body names neither the Redis address nor the driver's error."""
    env = {"OUTAGE_TIMEOUT": "30", "REQUEST_TIMEOUT": "1"}
    with app_server("O", fresh_redis, log_dir, **env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=20.0, trust_env=False) as client:
            fresh_redis.stop()
            json = {"content-type": "application/json"}
            for method, path, body, headers in (
                ("GET", "/streams/s1/status", None, {}),
                ("GET", "/streams/s1/snapshot", None, {}),
                ("GET", "/streams/s1", None, {}),
                ("POST", "/streams/s1/cancel", None, {}),
                ("DELETE", "/streams/s1", None, {}),
                ("POST", "/streams/s1/messages", b'{"message": 1}', json),
                ("POST", "/streams/active", b'{"session_ids": ["s1"]}', json),
                ("GET", "/slow/s1", None, {}),
            ):
                started = time.monotonic()
                resp = await client.request(method, path, content=body, headers=headers)
                took = time.monotonic() - started
                assert resp.status_code == 503, (path, resp.text)
                assert took < 6, (path, took)
                assert resp.headers.get("retry-after", "").isdigit(), resp.headers
                text = resp.text
                assert str(fresh_redis.port) not in text and "Error" not in text, text
                assert resp.json() == {"detail": "the store is unavailable; retry later"}
        # The details went to the log instead.
        assert str(fresh_redis.port) in server.log()


async def test_streams_and_producers_keep_the_full_outage_budget(
    anyio_backend: str, fresh_redis: RedisServer, log_dir: Path
) -> None:
    """``request_timeout`` bounds only the wait for an answer: a stream that already started,
    and the producer its request started, ride out an outage longer than it (2 s > 0.5 s)."""
    env = {"OUTAGE_TIMEOUT": "20", "REQUEST_TIMEOUT": "0.5"}
    with app_server("P", fresh_redis, log_dir, **env) as server:
        async with checked_client(server) as client:
            sid = new_sid("ride")
            res = SSEResult()
            async with anyio.create_task_group() as tg:
                url = f"/slow/{sid}"
                params = {"n": 40, "delay": 0.05}

                async def follow() -> None:
                    await read_sse(client, url, params=params, result=res, within=40)

                tg.start_soon(follow)
                await wait_until(lambda: len(res.chunks) >= 5, what="first chunks")
                fresh_redis.pause()
                try:
                    await anyio.sleep(2.0)
                finally:
                    fresh_redis.resume()
            assert res.text == "".join(f"c{i} " for i in range(40))
            assert [e["state"] for e in res.ends] == ["done"], res.ends
            status = await client.get(f"/streams/{sid}/status")
            assert status.json()["chunks"] == 40


async def test_request_bound_reaches_only_the_requests_own_setup(anyio_backend: str) -> None:
    """Inside ``request_bound`` store calls retry ``request_timeout``; a task the request
    started (a subscription's reader) goes back to ``outage_timeout`` once the bound ends, and
    a task given to the hub (a producer) never has it."""
    seen: dict[str, list[float]] = {"reader": [], "producer": []}
    bound_over = anyio.Event()

    async def watch(name: str) -> None:
        seen[name].append(retry_budget(30.0))
        await bound_over.wait()
        seen[name].append(retry_budget(30.0))

    async with StreamHub.from_url("memory://") as hub, anyio.create_task_group() as tg:
        with request_bound(1.5):
            assert retry_budget(30.0) == 1.5
            assert retry_budget(0.5) == 0.5  # never longer than outage_timeout
            tg.start_soon(watch, "reader")
            hub.spawn(watch, "producer")
            await wait_until(lambda: seen["reader"] and seen["producer"], what="tasks started")
        assert retry_budget(30.0) == 30.0
        bound_over.set()
    assert seen == {"reader": [1.5, 30.0], "producer": [30.0, 30.0]}


# --------------------------------------------------------------------------- ctx messages


@pytest.fixture(params=["memory", "redis"])
async def hub(request: pytest.FixtureRequest) -> AsyncIterator[StreamHub]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    async with StreamHub.from_url(url, shutdown_grace=0.5) as hub:
        yield hub


async def test_first_messages_nowait_returns_messages_already_stored(hub: StreamHub) -> None:
    """Messages sent between the claim and the generator's start are in its first call."""
    sid = new_sid("nowait")
    reg = await hub.register(sid)
    producer = reg.producer
    assert producer is not None
    await hub.send_message(sid, {"n": 1})
    await hub.send_message(sid, "two")
    seen: list[Any] = []

    async def gen(ctx: StreamContext) -> AsyncIterator[str]:
        seen.append([m.data for m in ctx.messages_nowait()])
        yield "x"

    with anyio.fail_after(10):
        await run_factory(producer, gen)
    assert seen == [[{"n": 1}, "two"]]
    assert (await hub.status(sid)) is not None
