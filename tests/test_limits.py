"""Bad input and limits: typed errors in the Python API, clear 4xx JSON over HTTP, nothing
stored and nothing lost for other sessions.

The Python API tests run on both backends (a real redis-server for ``redis``); the HTTP tests
run ``tests/security_app.py`` in a real uvicorn on the session's Redis, with small limits
(``support.security.LIMITS``: chunks of 1000 bytes, metadata of 500 bytes, 3 subscribers).
test_http.py already covers invalid session ids and malformed cursors on every endpoint,
unknown sessions, bad ``POST /active`` bodies and bad ``wait`` values; this module adds the
limits, the cursors that parse but cannot be honoured, wrong methods and bodies, and
generators that yield what cannot be streamed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from security_app import bad_items
from support.apps import AppServer
from support.redis_server import RedisServer
from support.security import (
    LIMITS,
    app_server,
    assert_clean_error,
    assert_ended,
    checked_client,
    library_keys,
)
from support.sids import new_sid
from support.sse_client import SSEResult, read_sse, wait_until

from fastapi_streamhub import (
    Chunk,
    Cursor,
    End,
    Event,
    InvalidChunk,
    InvalidCursor,
    LimitExceeded,
    Metadata,
    Reset,
    State,
    StreamHub,
    StreamHubError,
)

pytestmark = pytest.mark.anyio

MAX_CHUNK = int(LIMITS["MAX_CHUNK_BYTES"])
MAX_META = int(LIMITS["MAX_METADATA_BYTES"])
MAX_SUBS = int(LIMITS["MAX_SUBSCRIBERS"])
_U64 = 2**64 - 1


# --------------------------------------------------------------------------- Python API


@pytest.fixture(params=["memory", "redis"])
async def hub(request: pytest.FixtureRequest) -> AsyncIterator[StreamHub]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    async with StreamHub.from_url(
        url,
        max_chunk_bytes=64,
        max_metadata_bytes=64,
        max_subscribers=2,
        shutdown_grace=0.5,
    ) as hub:
        yield hub


async def collect(hub: StreamHub, sid: str, after: Cursor | str | None = None) -> list[Any]:
    items: list[Any] = []
    with anyio.fail_after(10):
        async with hub.subscribe(sid, after=after) as sub:
            async for item in sub:
                items.append(item)
    return items


def data(items: list[Any]) -> list[Any]:
    return [item.data for item in items if isinstance(item, Chunk)]


async def test_chunk_over_max_chunk_bytes_is_refused_and_nothing_is_stored(
    hub: StreamHub,
) -> None:
    reg = await hub.register(new_sid())
    producer = reg.producer
    assert producer is not None
    async with producer:
        await producer.publish("x" * 64)  # exactly the limit
        for too_big in (
            "x" * 65,
            "\u00e9" * 33,  # 66 bytes of UTF-8 in 33 characters: the limit is in bytes
            b"y" * 65,
            ["x" * 62],  # JSON: 66 bytes with brackets and quotes
            Event("x" * 60, "note"),  # the stored payload counts the event name too
        ):
            with pytest.raises(LimitExceeded, match="max_chunk_bytes"):
                await producer.publish(too_big)
            with pytest.raises(LimitExceeded):
                await producer.send(too_big)
        # The producer is not poisoned: later chunks are stored right after the first one.
        cursor = await producer.publish("after")
        assert cursor == Cursor(reg.generation, 2)
    items = await collect(hub, producer.session_id)
    assert data(items) == ["x" * 64, "after"]
    assert items[-1] == End(State.DONE)


async def test_metadata_over_max_metadata_bytes_is_refused(
    hub: StreamHub, request: pytest.FixtureRequest
) -> None:
    sid = new_sid()
    big = {"pad": "x" * 64}
    with pytest.raises(LimitExceeded, match="max_metadata_bytes"):
        await hub.register(sid, metadata=big)
    assert await hub.status(sid) is None  # nothing claimed
    if "redis" in request.node.callspec.id:
        server: RedisServer = request.getfixturevalue("redis_server")
        assert library_keys(server) == []

    fits = {"p": "x" * 56}  # exactly 64 bytes of JSON
    reg = await hub.register(sid, metadata=fits)
    producer = reg.producer
    assert producer is not None
    async with producer:
        await producer.publish("a")
        with pytest.raises(LimitExceeded, match="max_metadata_bytes"):
            await producer.set_metadata(big)
        assert await hub.metadata(sid) == fits  # unchanged
        await producer.set_metadata({"ok": 1})
        await producer.publish("b")
    items = await collect(hub, sid)
    assert data(items) == ["a", "b"]
    assert [i.value for i in items if isinstance(i, Metadata)] == [{"ok": 1}]
    assert items[-1] == End(State.DONE)


async def test_subscribers_over_max_subscribers_are_refused_per_session(hub: StreamHub) -> None:
    sid, other = new_sid(), new_sid()
    producers = []
    for s in (sid, other):
        reg = await hub.register(s)
        assert reg.producer is not None
        await reg.producer.publish("x")
        producers.append(reg.producer)
    first, second = hub.subscribe(sid), hub.subscribe(sid)
    with anyio.fail_after(10):
        assert isinstance(await first.__anext__(), Chunk)
        assert isinstance(await second.__anext__(), Chunk)
        third = hub.subscribe(sid)
        with pytest.raises(LimitExceeded, match="subscribers"):
            await third.__anext__()
        await third.aclose()
        # Another session is not affected by this one's subscribers.
        async with hub.subscribe(other) as sub:
            assert isinstance(await sub.__anext__(), Chunk)
        # A slot freed is a slot available again.
        await second.aclose()
        async with hub.subscribe(sid) as again:
            assert isinstance(await again.__anext__(), Chunk)
        await first.aclose()
        for producer in producers:
            await producer.close()


@pytest.mark.parametrize(
    ("generation", "offset"),
    [(0, 0), (-1, 1), (1, -1), (_U64 + 1, 0), (1, _U64 + 1), (True, 1), (1, False), ("1", 2)],
)
def test_cursor_refuses_out_of_range_values(generation: Any, offset: Any) -> None:
    """A hand-built Cursor is checked like a parsed one (before: ``Cursor(g, -1)`` reached
    Redis and failed there with a raw ``ResponseError`` instead of ``InvalidCursor``)."""
    with pytest.raises(InvalidCursor):
        Cursor(generation, offset)


async def test_cursors_that_parse_but_cannot_be_honoured_reset(hub: StreamHub) -> None:
    sid = new_sid()
    reg = await hub.register(sid)
    assert reg.producer is not None
    async with reg.producer as producer:
        await producer.publish("a")
        await producer.publish("b")
    gen = reg.generation
    for after in (
        Cursor(gen, 3),  # ahead of the stored stream
        Cursor(gen, _U64),
        Cursor(gen + 1, 0),  # a future generation
        Cursor(_U64, _U64),
        Cursor(1, 1),  # an ancient generation
        f"{gen - 1}-2",
    ):
        items = await collect(hub, sid, after)
        assert isinstance(items[0], Reset), (after, items)
        assert data(items) == ["a", "b"], after
        assert items[-1] == End(State.DONE)
    for bad in ("-1", f"{gen}--1", f"{gen}-{_U64 + 1}", 12, b"1-1", "\uff11-1", ""):
        with pytest.raises(InvalidCursor):
            hub.subscribe(sid, after=bad)  # type: ignore[arg-type]
    assert data(await collect(hub, sid, Cursor(gen, 1))) == ["b"]


@pytest.mark.parametrize("case", list(bad_items(64)))
async def test_unstreamable_items_are_refused_with_a_typed_error(hub: StreamHub, case: str) -> None:
    item = bad_items(64)[case]
    reg = await hub.register(new_sid())
    assert reg.producer is not None
    async with reg.producer as producer:
        with pytest.raises((InvalidChunk, LimitExceeded)):
            await producer.publish(item)
        await producer.publish("fine")
    assert data(await collect(hub, producer.session_id)) == ["fine"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [float("-inf")]])
async def test_non_finite_floats_are_refused_not_silently_changed(
    hub: StreamHub, value: Any
) -> None:
    reg = await hub.register(new_sid())
    assert reg.producer is not None
    async with reg.producer as producer:
        with pytest.raises(InvalidChunk):
            await producer.publish(value)


async def test_generator_error_with_unencodable_message_ends_failed_at_once(
    hub: StreamHub, request: pytest.FixtureRequest
) -> None:
    sid = new_sid()
    reg = await hub.register(sid)
    assert reg.producer is not None
    with pytest.raises(RuntimeError):
        async with reg.producer as producer:
            await producer.publish("a")
            raise RuntimeError("bad \ud800 message")
    info = await hub.status(sid)
    assert info is not None and info.state is State.FAILED
    assert info.reason is not None and "RuntimeError" in info.reason


# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("limits-apps")


@pytest.fixture(scope="module")
def server(redis_server: RedisServer, log_dir: Path) -> Iterator[AppServer]:
    with app_server("L", redis_server, log_dir) as srv:
        yield srv


@pytest.fixture
async def client(
    anyio_backend: str, server: AppServer, redis_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with checked_client(server) as c:
        yield c


async def start_follow(
    tg: anyio.abc.TaskGroup, client: httpx.AsyncClient, url: str, **kwargs: Any
) -> SSEResult:
    res = SSEResult()
    tg.start_soon(lambda: read_sse(client, url, result=res, **kwargs))
    await wait_until(lambda: res.chunks or res.eof, within=15, what=f"a chunk from {url}")
    assert not res.eof, (res.status_code, res.body[:300])
    return res


@pytest.mark.parametrize("case", list(bad_items(MAX_CHUNK)))
async def test_generator_yielding_an_unstreamable_item_ends_failed_with_a_clear_reason(
    client: httpx.AsyncClient, case: str
) -> None:
    """What was yielded before stays; the end names the error; a concurrent session on the same
    instance is unaffected."""
    sid, other = new_sid("bad"), new_sid("other")
    async with anyio.create_task_group() as tg:
        follower = await start_follow(tg, client, f"/slow/{other}", params={"n": 30, "delay": 0.01})
        res = await read_sse(client, f"/bad/{sid}", params={"case": case, "good": 2})
    end = assert_ended(res, "failed")
    assert any(name in end["reason"] for name in ("InvalidChunk", "LimitExceeded")), end
    assert res.values == [("text", "g0 "), ("text", "g1 ")]
    status = (await client.get(f"/streams/{sid}/status")).json()
    assert (status["state"], status["chunks"]) == ("failed", 2)
    assert_ended(follower, "done")
    assert follower.text == "".join(f"c{i} " for i in range(30))


async def test_chunk_limit_counts_bytes_over_http(client: httpx.AsyncClient) -> None:
    res = await read_sse(client, f"/bad/{new_sid()}", params={"case": "too-big-multibyte"})
    end = assert_ended(res, "failed")
    assert f"over max_chunk_bytes ({MAX_CHUNK})" in end["reason"]


async def test_oversized_metadata_is_a_clear_4xx_and_creates_nothing(
    client: httpx.AsyncClient, redis_server: RedisServer
) -> None:
    sid = new_sid("meta")
    detail = assert_clean_error(
        await client.get(f"/big-meta/{sid}", params={"size": MAX_META}), 413, 429
    )
    assert "max_metadata_bytes" in detail
    assert_clean_error(await client.get(f"/streams/{sid}/status"), 404)
    assert library_keys(redis_server) == []
    ok = await read_sse(client, f"/big-meta/{sid}", params={"size": MAX_META - 20})
    assert_ended(ok, "done")


async def test_subscribers_over_the_limit_get_a_clear_4xx(
    anyio_backend: str, server: AppServer, redis_url: str
) -> None:
    mark = len(server.log())
    sid = new_sid("subs")
    async with httpx.AsyncClient(base_url=server.url, timeout=10, trust_env=False) as client:
        async with anyio.create_task_group() as tg:
            followers = [
                await start_follow(
                    tg, client, f"/slow/{sid}", params={"n": 400, "delay": 0.02}, within=30
                )
            ]
            for _ in range(MAX_SUBS - 1):
                followers.append(await start_follow(tg, client, f"/streams/{sid}", within=30))
            try:
                for url in (f"/streams/{sid}", f"/slow/{sid}"):
                    with anyio.fail_after(10):
                        resp = await client.get(url)
                    assert_clean_error(resp, 429, 503)
            finally:
                await client.post(f"/streams/{sid}/cancel", params={"wait": 5})
        for follower in followers:
            assert_ended(follower, "cancelled")
    assert "Exception in ASGI application" not in server.log()[mark:]


ENDPOINTS = [
    ("GET", "/streams/{sid}"),
    ("DELETE", "/streams/{sid}"),
    ("GET", "/streams/{sid}/status"),
    ("GET", "/streams/{sid}/snapshot"),
    ("POST", "/streams/{sid}/cancel"),
    ("POST", "/streams/active"),
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def test_wrong_methods_are_405_on_every_endpoint(client: httpx.AsyncClient) -> None:
    """Before the fix a valid id with a wrong method was answered 422 'invalid session id'
    (``POST /streams/x``, ``GET /streams/x/cancel``): the catch-all route swallowed it."""
    sid = new_sid("m")
    assert_ended(await read_sse(client, f"/slow/{sid}", params={"n": 2}), "done")
    allowed: dict[str, set[str]] = {}
    for method, path in ENDPOINTS:
        allowed.setdefault(path, set()).add(method)
    # GET and DELETE /streams/active are those of the session named "active".
    allowed["/streams/active"] |= {"GET", "DELETE"}
    for path, methods in allowed.items():
        url = path.format(sid=sid)
        # Allow names every method of the path, HEAD wherever GET; the document's
        # /streams/active is POST only.
        want = methods | ({"HEAD"} if "GET" in methods else set())
        if path == "/streams/active":
            want = {"POST"}
        for method in (m for m in METHODS if m not in methods):
            resp = await client.request(method, url)
            detail = assert_clean_error(resp, 405)
            assert detail == "Method Not Allowed", (method, url)
            allow = set(resp.headers.get("allow", "").replace(" ", "").split(","))
            assert allow == want, (method, url, resp.headers.get("allow"))
        # HEAD answers as GET does (the session "active" is unknown); elsewhere a 405.
        head = await client.head(url)
        if "GET" not in methods:
            assert head.status_code == 405
        else:
            assert head.status_code == (404 if path == "/streams/active" else 200), url
    assert (await client.get(f"/streams/{sid}/status")).json()["state"] == "done"


async def test_bodies_on_endpoints_that_take_none_are_ignored(client: httpx.AsyncClient) -> None:
    sid = new_sid("body")
    assert_ended(await read_sse(client, f"/slow/{sid}", params={"n": 2}), "done")
    for content, ctype in (
        (b'{"session_ids": ["x"]}', "application/json"),
        (b"\xff\x00garbage", "application/octet-stream"),
        (b"x" * 100_000, "text/plain"),
    ):
        kw: dict[str, Any] = {"content": content, "headers": {"content-type": ctype}}
        status = await client.request("GET", f"/streams/{sid}/status", **kw)
        assert status.status_code == 200 and status.json()["state"] == "done"
        snap = await client.request("GET", f"/streams/{sid}/snapshot", **kw)
        assert snap.status_code == 200 and snap.json()["text"] == "c0 c1 "
        cancel = await client.request("POST", f"/streams/{sid}/cancel", **kw)
        assert cancel.status_code == 200 and cancel.json() == {"state": "done"}
        async with client.stream("GET", f"/streams/{sid}", **kw) as resp:
            assert resp.status_code == 200
            assert b"event: end" in await resp.aread()
    assert (await client.request("DELETE", f"/streams/{sid}", content=b"{}")).status_code == 204
    assert_clean_error(await client.get(f"/streams/{sid}/status"), 404)


async def test_active_body_types_and_sizes(client: httpx.AsyncClient) -> None:
    """Before the fix, a lone surrogate in the JSON body (``"\\ud800"``) and a body that is
    not UTF-8 sent without a content type were answered 500: the 422 echoes the input."""
    for content, ctype in (
        (b"\x80", None),
        (b"\xff\xfe{", None),
        (b'{"session_ids": ["\xe9"]}', None),
        (b'{"session_ids": ["a"]}', "text/plain"),
        (b"session_ids=a", "application/x-www-form-urlencoded"),
        (b'{"session_ids": ["a"]}' + b" " * 2_000_000, "application/json"),
        (b"[" * 10_000 + b"]" * 10_000, "application/json"),
        (b'{"session_ids": ["\\ud800"]}', "application/json"),
        (b'{"session_ids": "\\u0000"}', "application/json"),
    ):
        headers = {} if ctype is None else {"content-type": ctype}
        resp = await client.post("/streams/active", content=content, headers=headers)
        if resp.status_code == 200:
            assert resp.json() == {"active": []}
        else:
            assert_clean_error(resp, 400, 413, 415, 422)


CURSOR_CASES = {
    "negative-offset": "{gen}--1",
    "negative-generation": "-{gen}-1",
    "offset-over-u64": "{gen}-18446744073709551616",
    "generation-over-u64": "18446744073709551616-1",
    "huge": "9" * 60 + "-1",
    "very-long": "1-" + "1" * 10_000,
    "space-inside": "{gen} -1",
    "plus": "+{gen}-1",
    "hex": "0x1-1",
    "exponent": "1e3-1",
    "unicode-digits": "\u0661-\u0661",
    "nul": "{gen}-1\x00",
    "json": '{{"gen":1}}',
}


@pytest.mark.parametrize("via", ["header", "query"])
async def test_malformed_cursors_are_400_on_resume(client: httpx.AsyncClient, via: str) -> None:
    sid = new_sid("cur")
    first = await read_sse(client, f"/slow/{sid}", params={"n": 3})
    assert_ended(first, "done")
    gen = first.ids[0].split("-")[0]
    for name, template in CURSOR_CASES.items():
        cursor = template.format(gen=gen)
        for url in (f"/streams/{sid}", f"/slow/{sid}"):
            if via == "header":
                raw = cursor.encode("utf-8")
                if b"\x00" in raw:
                    continue  # not sendable in a header (h11 refuses it)
                resp = await client.get(url, headers=[(b"Last-Event-ID", raw)])
            else:
                resp = await client.get(url, params={"last_event_id": cursor})
            detail = assert_clean_error(resp, 400)
            assert "cursor" in detail, (name, detail)
    # A Latin-1 byte that is not UTF-8 in the header.
    resp = await client.get(f"/streams/{sid}", headers=[(b"Last-Event-ID", b"1-\xff")])
    assert_clean_error(resp, 400)
    # None of it started anything or changed the session.
    status = (await client.get(f"/streams/{sid}/status")).json()
    assert (status["state"], status["chunks"]) == ("done", 3)


async def test_cursors_that_parse_but_cannot_be_honoured_reset_over_http(
    client: httpx.AsyncClient,
) -> None:
    sid = new_sid("fut")
    first = await read_sse(client, f"/slow/{sid}", params={"n": 3})
    assert_ended(first, "done")
    gen = int(first.ids[0].split("-")[0])
    for cursor in (f"{gen}-4", f"{gen}-{_U64}", f"{gen + 1}-0", f"{_U64}-{_U64}", "1-1"):
        for kwargs in (
            {"headers": {"Last-Event-ID": cursor}},
            {"params": {"last_event_id": cursor}},
        ):
            res = await read_sse(client, f"/streams/{sid}", **kwargs)  # type: ignore[arg-type]
            assert_ended(res, "done")
            assert res.events[0].type == "reset", (cursor, res.events[:2])
            assert res.ids == first.ids and res.text == first.text


async def test_api_errors_derive_from_the_root(hub: StreamHub) -> None:
    """Every refusal above is a StreamHubError a caller can catch in one place."""
    for exc in (LimitExceeded, InvalidChunk, InvalidCursor):
        assert issubclass(exc, StreamHubError)
    with pytest.raises(StreamHubError):
        Cursor(0, 0)
