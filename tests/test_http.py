"""HTTP contract tests (DESIGN.md sections 3-4) against real uvicorn servers.

Two app instances, A and B (``tests/http_app.py`` in uvicorn subprocesses), share one real
redis-server; a third one, C, builds its router with ``create_router(authorize=...)``. Clients
are real httpx clients; SSE bodies are parsed by the spec-faithful parser of ``support/sse_client.py``.
The servers live for the whole module (starting them per test would dominate the run time);
every test uses its own session ids, and ``redis_url`` flushes the shared server before each.

The test generator (``http_app.gen``) records in Redis how often it started, how many items it
produced and whether its ``finally`` ran, so the tests see from outside whether a generator ran
once, and whether it stopped after a cancel or a delete.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
import redis
from anyio.abc import TaskGroup
from http_app import RECORD_PREFIX, expected_items
from support.apps import AppServer, decode_record, start_servers
from support.redis_server import RedisServer
from support.sids import new_sid
from support.sse_client import (
    SSEParser,
    SSEResult,
    as_rebuilt,
    cursor_key,
    parse_sse,
    read_sse,
    wait_until,
)

pytestmark = pytest.mark.anyio

PING_INTERVAL = 0.3

STATUS_KEYS = {
    "session_id",
    "state",
    "generation",
    "chunks",
    "last_event_id",
    "metadata",
    "created_at",
    "updated_at",
}
# Not in the contract's list: the implementation adds the failure/cancel reason.
STATUS_EXTRA_KEYS = {"reason", "turn"}
SNAPSHOT_KEYS = {"session_id", "state", "text", "last_event_id", "metadata", "turn"}

# Commands that say nothing about a request touching the store.
NOT_DATA_COMMANDS = {
    "info",
    "ping",
    "subscribe",
    "unsubscribe",
    "ssubscribe",
    "sunsubscribe",
    "psubscribe",
    "punsubscribe",
}

# Lines of a server log that mean a request or a background task blew up.
SERVER_ERROR_MARKERS = (
    "ERROR:",
    "Exception in ASGI application",
    "Task exception was never retrieved",
    "Exception ignored",
    "lease keeper round failed",
    "on_cancel callback",
)


# --------------------------------------------------------------------------- app servers


@pytest.fixture(scope="module")
def app_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http-apps")


def _env(redis_server: RedisServer, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_server.url,
        "LEASE_TTL": "5.0",
        "PING_INTERVAL": str(PING_INTERVAL),
        "SHUTDOWN_GRACE": "1.0",
        "AUTH": "0",
        # Tests here count Redis commands: no background compaction of earlier tests' sessions.
        "COMPACT": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def servers(redis_server: RedisServer, app_log_dir: Path) -> Iterator[tuple[AppServer, AppServer]]:
    a = AppServer("A", _env(redis_server), app_log_dir)
    b = AppServer("B", _env(redis_server), app_log_dir)
    try:
        start_servers([a, b])
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture(scope="module")
def auth_server(redis_server: RedisServer, app_log_dir: Path) -> Iterator[AppServer]:
    c = AppServer("C", _env(redis_server, AUTH="1"), app_log_dir)
    try:
        start_servers([c])
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def store(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@dataclass
class Env:
    a: AppServer
    b: AppServer
    ca: httpx.AsyncClient
    cb: httpx.AsyncClient
    store: redis.Redis
    redis_server: RedisServer
    # Set by a test that provokes a known server error (an xfail'd bug) on purpose.
    allow_server_errors: bool = False

    def rec(self, sid: str) -> dict[str, Any]:
        """What the generator of ``sid`` recorded (numbers as int)."""
        return decode_record(self.store.hgetall(RECORD_PREFIX + sid))

    def data_commands(self) -> dict[str, int]:
        """Redis command counters, without INFO (our own probe) and pub/sub housekeeping."""
        return {
            name: calls
            for name, calls in self.redis_server.command_stats().items()
            if name not in NOT_DATA_COMMANDS
        }

    def session_keys(self, sid: str) -> list[str]:
        """Every key of the library that mentions ``sid`` (the test's own record excluded)."""
        return sorted(
            k for k in self.store.scan_iter(match=f"*{sid}*") if not k.startswith(RECORD_PREFIX)
        )


def _client(server: AppServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(15.0), trust_env=False)


@pytest.fixture
async def env(
    anyio_backend: str,
    servers: tuple[AppServer, AppServer],
    redis_url: str,
    redis_server: RedisServer,
    store: redis.Redis,
) -> AsyncIterator[Env]:
    a, b = servers
    assert redis_url == a.env["REDIS_URL"], "the apps must share the test's Redis"
    marks = {s.name: len(s.log()) for s in (a, b)}
    async with _client(a) as ca, _client(b) as cb:
        env = Env(a, b, ca, cb, store, redis_server)
        yield env
        # A test that failed half-way may leave a long generator running on a server: stop it
        # so that it does not load the machine during the next tests.
        for key in store.scan_iter(match=RECORD_PREFIX + "*"):
            rec = store.hgetall(key)
            if int(rec.get("runs", 0)) > int(rec.get("finally", 0)):
                sid = quote(key[len(RECORD_PREFIX) :], safe="")
                await ca.post(f"/streams/{sid}/cancel", params={"wait": 5})
    for server in (a, b):
        assert server.alive(), f"app {server.name} died:\n{server.log()}"
        if not env.allow_server_errors:
            check_log(server.name, server.log()[marks[server.name] :])


def check_log(name: str, text: str) -> None:
    """Fail on server-side errors: a 500, a crashed task, a failed lease round. (A generator
    that raises on purpose is logged as a warning with its traceback: not an error.)"""
    for marker in SERVER_ERROR_MARKERS:
        assert marker not in text, f"app {name} logged an error:\n{text}"


# --------------------------------------------------------------------------- helpers


def expected(n: int, kind: str = "text") -> list[tuple[str, Any]]:
    return [as_rebuilt(item) for item in expected_items(n, kind)]


def assert_increasing(ids: list[str]) -> None:
    keys = [cursor_key(i) for i in ids]
    assert all(x < y for x, y in itertools.pairwise(keys)), ids


def assert_complete(res: SSEResult, state: str = "done") -> None:
    """A response that ended by itself with exactly one terminal event, last."""
    assert res.status_code == 200, res.body[:500]
    assert res.eof
    assert len(res.ends) == 1, res.ends
    assert res.ends[0]["state"] == state, res.ends
    assert res.events[-1].type == "end"


def assert_json_error(resp: httpx.Response, status: int) -> Any:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict) and body.get("detail"), body
    return body["detail"]


async def start_reader(
    tg: TaskGroup,
    client: httpx.AsyncClient,
    url: str,
    *,
    min_chunks: int = 1,
    within: float = 25.0,
    **kwargs: Any,
) -> SSEResult:
    """Follow ``url`` in the background; return once ``min_chunks`` chunks arrived."""
    res = SSEResult()
    tg.start_soon(lambda: read_sse(client, url, result=res, within=within, **kwargs))
    await wait_until(
        lambda: len(res.chunks) >= min_chunks or res.eof,
        within=15,
        what=f"{min_chunks} chunks from {url}",
    )
    assert not res.eof, (res.status_code, res.body[:500])
    return res


# --------------------------------------------------------------------------- 1. resume


@pytest.mark.parametrize("endpoint", ["streams", "gen"])
@pytest.mark.parametrize("via", ["header", "query"])
async def test_resume_on_other_instance_is_exact(env: Env, via: str, endpoint: str) -> None:
    """Read part of a stream on A, disconnect, resume on B with the last id: before + after is
    exactly the output, no duplicate, one ``end`` (done); the generator ran once, to the end."""
    sid = new_sid("resume")
    n, delay = 40, 0.03
    gen_params = {"n": n, "delay": delay}
    before = await read_sse(env.ca, f"/gen/{sid}", params=gen_params, stop_after_chunks=10)
    assert before.status_code == 200
    assert not before.eof and before.ends == []
    assert len(before.chunks) >= 10
    cursor = before.last_id
    assert cursor is not None

    headers = {"Last-Event-ID": cursor} if via == "header" else None
    params: dict[str, Any] = {"last_event_id": cursor} if via == "query" else {}
    if endpoint == "gen":
        url = f"/gen/{sid}"
        params |= gen_params
    else:
        url = f"/streams/{sid}"
    after = await read_sse(env.cb, url, headers=headers, params=params)
    assert_complete(after, "done")
    assert after.ends == [{"state": "done", "reason": None}]
    assert after.resets == []

    assert before.values + after.values == expected(n)
    ids = before.ids + after.ids
    assert len(ids) == n == len(set(ids))
    assert_increasing(ids)
    assert cursor_key(after.ids[0]) == (cursor_key(cursor)[0], cursor_key(cursor)[1] + 1)

    rec = env.rec(sid)
    assert rec == {"runs": 1, "produced": n, "finally": 1, "exit": "done"}


async def test_header_cursor_wins_over_query_and_empty_means_start(env: Env) -> None:
    sid = new_sid("cursors")
    full = await read_sse(env.ca, f"/gen/{sid}", params={"n": 8})
    assert_complete(full, "done")
    ids = full.ids
    res = await read_sse(
        env.cb,
        f"/streams/{sid}",
        headers={"Last-Event-ID": ids[5]},
        params={"last_event_id": ids[1]},
    )
    assert_complete(res, "done")
    assert res.ids == ids[6:] and res.values == full.values[6:]
    # An empty header falls back to the query parameter, then to the start.
    res = await read_sse(
        env.cb, f"/streams/{sid}", headers={"Last-Event-ID": ""}, params={"last_event_id": ids[1]}
    )
    assert res.ids == ids[2:]
    res = await read_sse(env.ca, f"/streams/{sid}", headers={"Last-Event-ID": ""})
    assert res.ids == ids and res.values == expected(8)
    # The last id of a finished stream: nothing but the end.
    res = await read_sse(env.ca, f"/streams/{sid}", params={"last_event_id": ids[-1]})
    assert_complete(res, "done")
    assert res.chunks == [] and res.resets == []


# --------------------------------------------------------------------------- 2. concurrency


async def test_concurrent_starts_on_two_instances_run_the_generator_once(env: Env) -> None:
    """Ten simultaneous starts of one session, split over A and B: one producer, and every
    client receives the exact full output."""
    sid = new_sid("conc")
    n = 30
    results: list[SSEResult] = [SSEResult() for _ in range(10)]

    async def one(i: int) -> None:
        client = env.ca if i % 2 == 0 else env.cb
        await read_sse(
            client, f"/gen/{sid}", params={"n": n, "delay": 0.02}, result=results[i], within=30
        )

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(one, i)

    full = expected(n)
    first_ids = results[0].ids
    for res in results:
        assert_complete(res, "done")
        assert res.resets == []
        assert res.values == full
        assert res.ids == first_ids  # one generation, the same cursors for everyone
    assert_increasing(first_ids)
    assert env.rec(sid) == {"runs": 1, "produced": n, "finally": 1, "exit": "done"}
    status = (await env.cb.get(f"/streams/{sid}/status")).json()
    assert status["state"] == "done" and status["chunks"] == n


# --------------------------------------------------------------------------- 3. replay


async def test_finished_session_is_replayed_not_restarted(env: Env) -> None:
    sid = new_sid("replay")
    first = await read_sse(env.ca, f"/gen/{sid}", params={"n": 6})
    assert_complete(first, "done")
    assert first.values == expected(6)
    assert env.rec(sid)["runs"] == 1

    # Other parameters, other instance: still the stored output, generator not run.
    again = await read_sse(env.cb, f"/gen/{sid}", params={"n": 50, "fail_at": 0})
    assert_complete(again, "done")
    assert again.values == first.values and again.ids == first.ids
    # Resuming a finished session from a cursor replays the rest only.
    rest = await read_sse(
        env.ca, f"/gen/{sid}", params={"n": 50}, headers={"Last-Event-ID": first.ids[2]}
    )
    assert_complete(rest, "done")
    assert rest.values == first.values[3:] and rest.ids == first.ids[3:]
    assert env.rec(sid) == {"runs": 1, "produced": 6, "finally": 1, "exit": "done"}

    # Starting over is explicit: restart=True runs a new generation.
    fresh = await read_sse(env.cb, f"/gen/{sid}", params={"n": 3, "restart": True})
    assert_complete(fresh, "done")
    assert fresh.values == expected(3)
    assert cursor_key(fresh.ids[0])[0] > cursor_key(first.ids[0])[0]
    assert env.rec(sid)["runs"] == 2


# --------------------------------------------------------------------------- 4. cancel


async def test_cancel_with_wait_on_b_stops_the_generator_running_on_a(env: Env) -> None:
    sid = new_sid("cancel")
    n = 1500  # ~30 s at 20 ms per token: only a cancel ends it within the test
    async with anyio.create_task_group() as tg:
        on_a = await start_reader(
            tg, env.ca, f"/gen/{sid}", params={"n": n, "delay": 0.02}, min_chunks=5
        )
        on_b = await start_reader(tg, env.cb, f"/streams/{sid}", min_chunks=1)
        assert env.rec(sid)["runs"] == 1

        resp = await env.cb.post(f"/streams/{sid}/cancel", params={"wait": 5})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"state": "cancelled"}

        # The generator's finally ran before the stream was closed (the cancel is delivered
        # inside the generator), so it is visible as soon as the cancel answers.
        rec = env.rec(sid)
        assert rec["finally"] == 1 and rec["exit"] == "cancelled", rec
        produced = rec["produced"]
        assert 5 <= produced < n
        # The subject here is "nothing more was produced during a window": 25 token delays.
        await anyio.sleep(0.5)
        assert env.rec(sid) == rec

    status = (await env.ca.get(f"/streams/{sid}/status")).json()
    assert status["state"] == "cancelled"
    assert status["chunks"] == produced
    for res in (on_a, on_b):
        assert_complete(res, "cancelled")
        assert res.values == expected(produced)
        assert res.ids[-1] == status["last_event_id"]


async def test_cancel_answers(env: Env) -> None:
    """202 while active (signal sent), 200 with the final state once finished, idempotent;
    200 with its state for a finished session; 404 (and no key created) for an unknown one."""
    sid = new_sid("cancel202")
    async with anyio.create_task_group() as tg:
        reader = await start_reader(
            tg, env.ca, f"/gen/{sid}", params={"n": 1500, "delay": 0.02}, min_chunks=3
        )
        resp = await env.cb.post(f"/streams/{sid}/cancel")
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"state": "active"}

        async def finished() -> bool:
            body = (await env.cb.get(f"/streams/{sid}/status")).json()
            return bool(body["state"] == "cancelled")

        await wait_until(finished, within=10, what="the cancel to take effect")
        await wait_until(lambda: env.rec(sid).get("finally") == 1, within=5, what="finally")
    assert_complete(reader, "cancelled")
    assert env.rec(sid)["exit"] == "cancelled"

    for params in ({}, {"wait": 5}, {"wait": 0}):
        again = await env.ca.post(f"/streams/{sid}/cancel", params=params)
        assert again.status_code == 200, again.text
        assert again.json() == {"state": "cancelled"}

    done = new_sid("cancel-done")
    assert_complete(await read_sse(env.ca, f"/gen/{done}", params={"n": 3}), "done")
    for client in (env.ca, env.cb):
        resp = await client.post(f"/streams/{done}/cancel", params={"wait": 1})
        assert resp.status_code == 200 and resp.json() == {"state": "done"}
    assert (await env.cb.get(f"/streams/{done}/status")).json()["state"] == "done"
    assert env.rec(done) == {"runs": 1, "produced": 3, "finally": 1, "exit": "done"}

    unknown = new_sid("cancel-unknown")
    for params in ({}, {"wait": 1}):
        assert_json_error(await env.cb.post(f"/streams/{unknown}/cancel", params=params), 404)
    assert env.session_keys(unknown) == []
    assert_json_error(await env.ca.get(f"/streams/{unknown}/status"), 404)


# --------------------------------------------------------------------------- 5. failure


async def test_generator_exception_ends_failed_with_reason(env: Env) -> None:
    sid = new_sid("fail")
    res = await read_sse(env.ca, f"/gen/{sid}", params={"n": 10, "fail_at": 3})
    assert_complete(res, "failed")
    assert res.values == expected(3)
    reason = res.ends[0]["reason"]
    assert isinstance(reason, str) and "GeneratorBoom" in reason and "boom at 3" in reason

    status = (await env.cb.get(f"/streams/{sid}/status")).json()
    assert status["state"] == "failed"
    assert status["chunks"] == 3
    assert status["last_event_id"] == res.last_id

    replay = await read_sse(env.cb, f"/streams/{sid}")
    assert_complete(replay, "failed")
    assert replay.values == res.values and replay.ends == res.ends

    snapshot = (await env.cb.get(f"/streams/{sid}/snapshot")).json()
    assert snapshot["state"] == "failed" and snapshot["text"] == "t0 t1 t2 "

    cancel = await env.cb.post(f"/streams/{sid}/cancel")
    assert cancel.status_code == 200 and cancel.json() == {"state": "failed"}
    assert env.rec(sid) == {"runs": 1, "produced": 3, "finally": 1, "exit": "failed"}


# --------------------------------------------------------------------------- 6. bad input

BAD_IDS = {
    "too-long": "x" * 201,
    "space": "a b",
    "unicode": "caf\u00e9",
    "percent": "a%b",
    "nul": "a\x00b",
    "newline": "a\nb",
    "plus": "a+b",
    "trailing-newline": "ab\n",
}
# Ids the router cannot even route: the path has no segment for them.
UNROUTABLE_IDS = {"empty": "", "slash": "a/b"}


def endpoint_requests(sid: str) -> list[tuple[str, str, dict[str, Any]]]:
    path = f"/streams/{quote(sid, safe='')}"
    return [
        ("GET", path, {}),
        ("GET", f"{path}/status", {}),
        ("GET", f"{path}/snapshot", {}),
        ("POST", f"{path}/cancel", {}),
        ("POST", f"{path}/cancel", {"params": {"wait": 1}}),
        ("DELETE", path, {}),
        ("POST", f"{path}/messages", {"json": {"message": "x"}}),
    ]


@pytest.mark.parametrize("bad", list(BAD_IDS.values()), ids=list(BAD_IDS))
async def test_invalid_session_ids_are_422_everywhere(env: Env, bad: str) -> None:
    """422 with a JSON detail, answered before any backend call (no Redis data command)."""
    before = env.data_commands()
    for method, url, kwargs in endpoint_requests(bad):
        resp = await env.ca.request(method, url, **kwargs)
        assert_json_error(resp, 422)
    # The generator route: ResumableStreamingResponse validates the id itself. (Starlette's
    # ``:path`` convertor does not route a newline: the test app's limit, not the library's.)
    if "\n" not in bad:
        assert_json_error(await env.cb.get(f"/gen/{quote(bad, safe='')}"), 422)
    assert_json_error(await env.ca.post("/streams/active", json={"session_ids": [bad]}), 422)
    assert env.data_commands() == before
    assert env.rec(bad) == {}


@pytest.mark.parametrize("bad", list(UNROUTABLE_IDS.values()), ids=list(UNROUTABLE_IDS))
async def test_unroutable_session_ids_are_client_errors(env: Env, bad: str) -> None:
    """Never a 500; the generator route (a ``:path`` parameter) answers 422."""
    for method, url, kwargs in endpoint_requests(bad):
        resp = await env.ca.request(method, url, **kwargs)
        assert resp.status_code in (404, 405, 422), (url, resp.status_code, resp.text)
        assert resp.json().get("detail"), resp.text
    assert_json_error(await env.cb.get(f"/gen/{quote(bad, safe='')}"), 422)
    assert_json_error(await env.ca.post("/streams/active", json={"session_ids": [bad]}), 422)


@pytest.mark.parametrize("bad", list(UNROUTABLE_IDS.values()), ids=list(UNROUTABLE_IDS))
async def test_unroutable_session_ids_are_422_on_the_router(env: Env, bad: str) -> None:
    for method, url, kwargs in endpoint_requests(bad):
        resp = await env.ca.request(method, url, **kwargs)
        assert resp.status_code == 422, (method, url, resp.status_code, resp.text)


BAD_CURSORS = [
    "abc",
    "1-",
    "-1",
    "1-2-3",
    "1" * 100,
    "0-1",
    "1-01",
    "1--2",
    "1 -2",
    "\uff11-\uff12",
]


def _cursor_cases() -> list[Any]:
    cases = []
    for via in ("header", "query"):
        for cursor in BAD_CURSORS:
            if via == "header" and not cursor.isascii():
                continue  # not sendable as an HTTP header by httpx
            cases.append(pytest.param(via, cursor, id=f"{via}-{cursor[:12]}"))
    return cases


@pytest.mark.parametrize(("via", "cursor"), _cursor_cases())
async def test_malformed_cursor_is_400_on_the_stream_endpoint(
    env: Env, via: str, cursor: str
) -> None:
    sid = new_sid("cur")
    assert_complete(await read_sse(env.ca, f"/gen/{sid}", params={"n": 2}), "done")
    kwargs: dict[str, Any] = (
        {"headers": {"Last-Event-ID": cursor}}
        if via == "header"
        else {"params": {"last_event_id": cursor}}
    )
    assert_json_error(await env.cb.get(f"/streams/{sid}", **kwargs), 400)


@pytest.mark.parametrize("via", ["header", "query"])
async def test_malformed_cursor_is_400_before_any_work_on_the_generator_route(
    env: Env, via: str
) -> None:
    """ResumableStreamingResponse refuses a bad cursor before any backend call: nothing is
    claimed, the generator never starts."""
    for cursor in BAD_CURSORS:
        if via == "header" and not cursor.isascii():
            continue
        sid = new_sid("curgen")
        kwargs: dict[str, Any] = (
            {"headers": {"Last-Event-ID": cursor}}
            if via == "header"
            else {"params": {"last_event_id": cursor}}
        )
        before = env.data_commands()
        assert_json_error(await env.ca.get(f"/gen/{sid}", **kwargs), 400)
        assert env.data_commands() == before
        assert env.rec(sid) == {}
        assert_json_error(await env.cb.get(f"/streams/{sid}/status"), 404)


async def test_unknown_session_is_404(env: Env) -> None:
    sid = new_sid("unknown")
    for client in (env.ca, env.cb):
        for method, url, kwargs in endpoint_requests(sid):
            resp = await client.request(method, url, **kwargs)
            if method == "DELETE":
                assert resp.status_code == 204, resp.text  # idempotent
            else:
                detail = assert_json_error(resp, 404)
                assert sid in detail
        # With a (valid) cursor too.
        resp = await client.get(f"/streams/{sid}", headers={"Last-Event-ID": "1-1"})
        assert_json_error(resp, 404)
    assert env.session_keys(sid) == []


ACTIVE_BAD_BODIES = {
    "missing-field": {},
    "null": {"session_ids": None},
    "string": {"session_ids": "abc"},
    "ints": {"session_ids": [1, 2]},
    "nested": {"session_ids": [["a"]]},
    "bad-id": {"session_ids": ["a b"]},
    "empty-id": {"session_ids": [""]},
    "long-id": {"session_ids": ["x" * 201]},
    "too-many": {"session_ids": [f"s{i}" for i in range(1001)]},
    "too-many-duplicates": {"session_ids": ["same"] * 1001},
    "extra-field": {"session_ids": [], "more": 1},
    "list-body": ["a"],
}


@pytest.mark.parametrize("body", list(ACTIVE_BAD_BODIES.values()), ids=list(ACTIVE_BAD_BODIES))
async def test_active_bad_body_is_422(env: Env, body: Any) -> None:
    assert_json_error(await env.ca.post("/streams/active", json=body), 422)


async def test_active_unparsable_bodies_are_422(env: Env) -> None:
    for content, ctype in (
        (b"not json", "application/json"),
        (b"", "application/json"),
        (b'{"session_ids": [', "application/json"),
        (b"\xff\xfe", "application/json"),
    ):
        resp = await env.ca.post(
            "/streams/active", content=content, headers={"content-type": ctype}
        )
        assert_json_error(resp, 422)
    # No body and no content type: not JSON, like a form post (see test_edge.py).
    assert_json_error(await env.ca.post("/streams/active"), 415)
    # The limit itself is accepted.
    ok = await env.ca.post("/streams/active", json={"session_ids": [f"s{i}" for i in range(1000)]})
    assert ok.status_code == 200 and ok.json() == {"active": []}


@pytest.mark.parametrize("wait", ["-1", "abc", "61", "inf", "nan", "", "1e999"])
async def test_bad_cancel_wait_is_422(env: Env, wait: str) -> None:
    sid = new_sid("wait")
    assert_complete(await read_sse(env.ca, f"/gen/{sid}", params={"n": 1}), "done")
    assert_json_error(await env.cb.post(f"/streams/{sid}/cancel", params={"wait": wait}), 422)


async def test_cursor_of_an_older_generation_gets_reset(env: Env) -> None:
    """A session that failed is reclaimed by the next start; a cursor of the failed generation
    is answered with ``event: reset`` first, then the new generation from its start."""
    sid = new_sid("reset")
    failed = await read_sse(env.ca, f"/gen/{sid}", params={"n": 10, "fail_at": 2})
    assert_complete(failed, "failed")
    old_cursor = failed.last_id
    assert old_cursor is not None

    # Restart (the failed session is reclaimable) while resuming with the old cursor.
    restarted = await read_sse(
        env.cb, f"/gen/{sid}", params={"n": 4}, headers={"Last-Event-ID": old_cursor}
    )
    assert_complete(restarted, "done")
    assert restarted.events[0].type == "reset"
    reset = restarted.resets
    assert len(reset) == 1 and reset[0]["reason"]
    new_generation = cursor_key(restarted.ids[0])[0]
    assert new_generation > cursor_key(old_cursor)[0]
    assert reset[0]["generation"] == new_generation
    assert restarted.values == expected(4)
    assert env.rec(sid)["runs"] == 2

    # Following the finished session with the old cursor, header or query, on A or B.
    cases: list[tuple[httpx.AsyncClient, dict[str, Any]]] = [
        (env.ca, {"headers": {"Last-Event-ID": old_cursor}}),
        (env.cb, {"params": {"last_event_id": old_cursor}}),
    ]
    for client, kwargs in cases:
        res = await read_sse(client, f"/streams/{sid}", **kwargs)
        assert_complete(res, "done")
        assert res.events[0].type == "reset"
        assert res.values == expected(4) and res.ids == restarted.ids

    # A cursor of the current generation but beyond the stored data: reset, never a gap.
    ahead = f"{new_generation}-99"
    res = await read_sse(env.ca, f"/streams/{sid}", headers={"Last-Event-ID": ahead})
    assert_complete(res, "done")
    assert res.events[0].type == "reset"
    assert res.values == expected(4)


# --------------------------------------------------------------------------- 7. status/snapshot


async def test_status_and_snapshot_shapes_and_values(env: Env) -> None:
    sid = new_sid("shape")
    n = 80
    async with anyio.create_task_group() as tg:
        live = await start_reader(
            tg, env.ca, f"/gen/{sid}", params={"n": n, "delay": 0.04, "meta": True}, min_chunks=5
        )
        status = (await env.cb.get(f"/streams/{sid}/status")).json()
        snap = (await env.cb.get(f"/streams/{sid}/snapshot")).json()
        assert status["state"] == "active" and snap["state"] == "active"
        assert 5 <= status["chunks"] < n
        assert snap["text"] == "".join(
            f"t{i} " for i in range(cursor_key(snap["last_event_id"])[1])
        )
        assert snap["metadata"] == {"model": "test", "n": n}
    assert_complete(live, "done")

    status_resp = await env.cb.get(f"/streams/{sid}/status")
    assert status_resp.status_code == 200
    assert status_resp.headers["content-type"].startswith("application/json")
    status = status_resp.json()
    assert STATUS_KEYS <= set(status) <= STATUS_KEYS | STATUS_EXTRA_KEYS, set(status)
    assert status["session_id"] == sid
    assert status["state"] == "done"
    assert live.last_id is not None
    assert status["generation"] == cursor_key(live.last_id)[0]
    assert status["chunks"] == n
    assert status["last_event_id"] == live.last_id
    assert status["metadata"] == {"model": "test", "n": n}
    assert isinstance(status["created_at"], float) and isinstance(status["updated_at"], float)
    assert status["created_at"] <= status["updated_at"]
    assert abs(time.time() - status["created_at"]) < 120

    snap_resp = await env.ca.get(f"/streams/{sid}/snapshot")
    assert snap_resp.status_code == 200
    snap = snap_resp.json()
    assert set(snap) == SNAPSHOT_KEYS
    assert snap == {
        "session_id": sid,
        "state": "done",
        "text": live.text,
        "last_event_id": live.last_id,
        "metadata": {"model": "test", "n": n},
        "turn": None,
    }
    assert snap["text"] == "".join(f"t{i} " for i in range(n))


async def test_snapshot_of_mixed_chunks_joins_text_exactly(env: Env) -> None:
    """Text with CR LF / NUL / newlines / non-ASCII, JSON chunks and named JSON events: the
    snapshot's text is exactly the text an SSE client rebuilds."""
    sid = new_sid("snapmix")
    res = await read_sse(env.ca, f"/gen/{sid}", params={"n": 21, "kind": "rich"})
    assert_complete(res, "done")
    assert res.values == expected(21, "rich")
    snap = (await env.cb.get(f"/streams/{sid}/snapshot")).json()
    want = "".join(v for k, v in expected(21, "rich") if k == "text")
    assert snap["text"] == want == res.text
    assert snap["last_event_id"] == res.last_id
    status = (await env.cb.get(f"/streams/{sid}/status")).json()
    assert status["last_event_id"] == res.last_id and status["metadata"] is None


async def test_snapshot_text_equals_streamed_text_with_named_text_events(env: Env) -> None:
    sid = new_sid("snapnamed")
    res = await read_sse(env.ca, f"/gen/{sid}", params={"n": 4, "kind": "named"})
    assert_complete(res, "done")
    assert res.values == [("text", "t0 "), ("note", "note 1"), ("text", "t2 "), ("note", "note 3")]
    assert res.text == "t0 t2 "
    snap = (await env.cb.get(f"/streams/{sid}/snapshot")).json()
    assert snap["text"] == res.text


# --------------------------------------------------------------------------- 8. delete


async def test_delete_stops_the_producer_ends_streams_and_removes_the_session(env: Env) -> None:
    sid = new_sid("delete")
    async with anyio.create_task_group() as tg:
        on_a = await start_reader(
            tg, env.ca, f"/gen/{sid}", params={"n": 1500, "delay": 0.02}, min_chunks=5
        )
        on_b = await start_reader(tg, env.cb, f"/streams/{sid}", min_chunks=1)
        resp = await env.cb.delete(f"/streams/{sid}")
        assert resp.status_code == 204 and resp.content == b""
        await wait_until(lambda: env.rec(sid).get("finally") == 1, within=10, what="finally")
        rec = env.rec(sid)
        # Cancelled inside (at its await), or closed at its yield when the producer learnt of
        # the deletion from a refused write first: either way it stopped, and its finally ran.
        assert rec["exit"] in ("cancelled", "closed") and rec["runs"] == 1, rec
        await anyio.sleep(0.5)  # the subject: nothing more produced during a window
        assert env.rec(sid) == rec

    for res in (on_a, on_b):
        assert_complete(res, "cancelled")
        assert res.values == expected(len(res.values))
    for client in (env.ca, env.cb):
        assert_json_error(await client.get(f"/streams/{sid}/status"), 404)
        assert_json_error(await client.get(f"/streams/{sid}/snapshot"), 404)
        assert_json_error(await client.get(f"/streams/{sid}"), 404)
        assert_json_error(await client.post(f"/streams/{sid}/cancel"), 404)
    assert env.session_keys(sid) == []
    assert (await env.ca.delete(f"/streams/{sid}")).status_code == 204


async def test_delete_of_a_finished_session_allows_a_fresh_start(env: Env) -> None:
    sid = new_sid("delete-done")
    first = await read_sse(env.ca, f"/gen/{sid}", params={"n": 3})
    assert_complete(first, "done")
    assert (await env.cb.delete(f"/streams/{sid}")).status_code == 204
    assert env.session_keys(sid) == []
    assert_json_error(await env.ca.get(f"/streams/{sid}/status"), 404)
    again = await read_sse(env.cb, f"/gen/{sid}", params={"n": 5})
    assert_complete(again, "done")
    assert again.values == expected(5)
    assert env.rec(sid)["runs"] == 2


# --------------------------------------------------------------------------- 9. active


async def test_active_lists_running_sessions_only(env: Env) -> None:
    running, done, failed, unknown = (new_sid(t) for t in ("run", "done", "failed", "unknown"))
    assert_complete(await read_sse(env.ca, f"/gen/{done}", params={"n": 2}), "done")
    assert_complete(
        await read_sse(env.ca, f"/gen/{failed}", params={"n": 2, "fail_at": 1}), "failed"
    )
    async with anyio.create_task_group() as tg:
        reader = await start_reader(
            tg, env.ca, f"/gen/{running}", params={"n": 1500, "delay": 0.02}, min_chunks=1
        )
        ids = [done, running, unknown, failed, running]
        for client in (env.ca, env.cb):
            resp = await client.post("/streams/active", json={"session_ids": ids})
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"active": [running]}
        empty = await env.cb.post("/streams/active", json={"session_ids": []})
        assert empty.status_code == 200 and empty.json() == {"active": []}

        cancel = await env.cb.post(f"/streams/{running}/cancel", params={"wait": 5})
        assert cancel.status_code == 200 and cancel.json() == {"state": "cancelled"}
        resp = await env.ca.post("/streams/active", json={"session_ids": ids})
        assert resp.json() == {"active": []}
    assert_complete(reader, "cancelled")
    assert env.session_keys(unknown) == []


# --------------------------------------------------------------------------- 10. SSE format


def check_sse_format(res: SSEResult) -> None:
    assert res.status_code == 200
    assert res.headers is not None
    assert res.headers["content-type"].split(";")[0].strip() == "text/event-stream"
    assert res.headers["cache-control"] == "no-cache"
    assert res.headers["x-accel-buffering"] == "no"
    assert "content-length" not in res.headers
    assert res.records[0][0] == "retry", res.records[:3]
    assert len(res.retries) == 1 and res.retries[0] >= 0
    for event in res.events:
        if event.type in ("metadata", "reset", "end"):
            assert event.own_id is None, event  # never moves the resume point
        else:
            assert event.own_id, event
    assert_increasing(res.ids)
    # The incremental parser agrees with parsing the whole body, and with byte-by-byte input.
    assert parse_sse(res.body) == res.records
    parser = SSEParser()
    records: list[Any] = []
    for i in range(len(res.body)):
        records += parser.feed(res.body[i : i + 1])
    records += parser.feed(b"", final=True)
    assert records == res.records


async def test_sse_format_and_exact_round_trip_of_every_kind_of_chunk(env: Env) -> None:
    sid = new_sid("format")
    n = 28  # four rounds of the seven kinds of http_app.item
    live = await read_sse(
        env.ca, f"/gen/{sid}", params={"n": n, "kind": "mixed", "meta": True, "delay": 0.005}
    )
    replay = await read_sse(env.cb, f"/streams/{sid}")
    want = expected(n, "mixed")
    for res in (live, replay):
        assert_complete(res, "done")
        check_sse_format(res)
        assert res.values == want
        # metadata comes first (before any chunk), once.
        assert res.events[0].type == "metadata"
        assert res.control("metadata") == [{"model": "test", "n": n}]
        chunk_events = [e for e in res.events if e.type not in ("metadata", "reset", "end")]
        for event, item in zip(chunk_events, expected_items(n, "mixed"), strict=True):
            if isinstance(item, str):
                plain = "\r" not in item and "\0" not in item
                assert event.type == ("message" if plain else "json"), (event, item)
            elif isinstance(item, dict):
                assert event.type == "json"
                assert json.loads(event.data) == item
            else:  # Event(...)
                assert event.type == item.event and json.loads(event.data) == item.data
    assert replay.ids == live.ids
    # The raw bytes: a text chunk holding CR LF and NUL travels as a JSON string, so no raw CR
    # or NUL reaches the client; multi-line text is several data lines.
    assert b"\r" not in live.body and b"\0" not in live.body
    assert b"data: multi\ndata: line 4\ndata: \ndata: \nid: " in live.body


async def test_pings_while_idle(env: Env) -> None:
    sid = new_sid("ping")
    # A token, 0.7 s of silence (>2 ping intervals), a token, 0.7 s of silence, the end.
    res = await read_sse(env.ca, f"/gen/{sid}", params={"n": 2, "delay": 0.7})
    assert_complete(res, "done")
    check_sse_format(res)
    assert res.values == expected(2)
    assert res.comments, res.body
    assert set(res.comments) == {" ping"}
    assert b"\n\n: ping\n\n" in res.body
    # A follower on the other instance is pinged too.
    sid2 = new_sid("ping2")
    async with anyio.create_task_group() as tg:
        start = await start_reader(
            tg, env.ca, f"/gen/{sid2}", params={"n": 2, "delay": 0.7}, min_chunks=1
        )
        follow = await read_sse(env.cb, f"/streams/{sid2}")
    assert_complete(follow, "done")
    assert " ping" in follow.comments and follow.values == expected(2)
    assert_complete(start, "done")


# --------------------------------------------------------------------------- 11. authorization


async def test_authorize_refuses_with_403_on_every_endpoint(
    anyio_backend: str, auth_server: AppServer, redis_url: str, store: redis.Redis
) -> None:
    owner = {"X-User": "owner"}
    mark = len(auth_server.log())
    sid = new_sid("auth")
    try:
        await _check_authorization(auth_server, store, sid, owner)
    finally:
        async with _client(auth_server) as client:
            await client.post(f"/streams/{sid}/cancel", params={"wait": 5}, headers=owner)
    assert auth_server.alive()
    check_log("C", auth_server.log()[mark:])


async def _check_authorization(
    auth_server: AppServer, store: redis.Redis, sid: str, owner: dict[str, str]
) -> None:
    async with _client(auth_server) as client:
        intruders: list[dict[str, str]] = [{}, {"X-User": "other"}, {"X-User": "OWNER"}]

        # The generator route (ResumableStreamingResponse(authorize=...)): nothing started.
        for headers in intruders:
            assert_json_error(await client.get(f"/gen/{sid}", headers=headers), 403)
        assert store.hgetall(RECORD_PREFIX + sid) == {}
        assert_json_error(await client.get(f"/streams/{sid}/status", headers=owner), 404)

        async with anyio.create_task_group() as tg:
            reader = await start_reader(
                tg, client, f"/gen/{sid}", headers=owner, params={"n": 1500, "delay": 0.02}
            )
            for headers in intruders:
                for method, url, kwargs in endpoint_requests(sid):
                    resp = await client.request(method, url, headers=headers, **kwargs)
                    assert_json_error(resp, 403)
                # Refused before the existence check: an unknown session is not revealed.
                for method, url, kwargs in endpoint_requests(new_sid("auth-unknown")):
                    resp = await client.request(method, url, headers=headers, **kwargs)
                    assert_json_error(resp, 403)
                # POST /active filters what the caller may not see (it does not reveal it).
                resp = await client.post(
                    "/streams/active", json={"session_ids": [sid]}, headers=headers
                )
                assert resp.status_code == 403 or resp.json() == {"active": []}, resp.text
            # Still running, untouched by the refused cancel/delete.
            status = await client.get(f"/streams/{sid}/status", headers=owner)
            assert status.status_code == 200 and status.json()["state"] == "active"
            resp = await client.post("/streams/active", json={"session_ids": [sid]}, headers=owner)
            assert resp.json() == {"active": [sid]}

            # The owner gets through everywhere.
            for url in (f"/streams/{sid}/status", f"/streams/{sid}/snapshot"):
                assert (await client.get(url, headers=owner)).status_code == 200
            follow = await start_reader(tg, client, f"/streams/{sid}", headers=owner)
            cancel = await client.post(f"/streams/{sid}/cancel", params={"wait": 5}, headers=owner)
            assert cancel.status_code == 200 and cancel.json() == {"state": "cancelled"}
        assert_complete(reader, "cancelled")
        assert_complete(follow, "cancelled")
        assert (await client.delete(f"/streams/{sid}", headers=owner)).status_code == 204
        assert_json_error(await client.get(f"/streams/{sid}/status", headers=owner), 404)


# --------------------------------------------------------------------------- 12. OpenAPI


async def test_openapi_json_is_served(env: Env) -> None:
    """The app declares its own routes with ``ResumableStreamingResponse`` (``http_app``)."""
    resp = await env.ca.get("/openapi.json")
    assert resp.status_code == 200, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/json")


async def test_openapi_documents_every_endpoint(env: Env) -> None:
    resp = await env.ca.get("/openapi.json")
    assert resp.status_code == 200, resp.text[:500]
    doc = resp.json()
    paths = doc["paths"]
    want = {
        ("get", "/streams/{session_id}"),
        ("delete", "/streams/{session_id}"),
        ("get", "/streams/{session_id}/status"),
        ("get", "/streams/{session_id}/snapshot"),
        ("post", "/streams/{session_id}/cancel"),
        ("post", "/streams/active"),
        ("post", "/streams/{session_id}/messages"),
    }
    got = {
        (method, path)
        for path, ops in paths.items()
        if path.startswith("/streams")
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert got == want
    for method, path in want:
        op = paths[path][method]
        assert isinstance(op.get("summary"), str) and op["summary"].strip(), (method, path)
    stream = paths["/streams/{session_id}"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert "text/event-stream" in stream.get("description", "")
    params = {p["name"]: p for p in stream["parameters"]}
    assert "last_event_id" in params and params["last_event_id"]["in"] == "query"
    assert any(name.lower() == "last-event-id" for name in params)
    session_param = params["session_id"]["schema"]
    assert session_param.get("pattern") and session_param.get("maxLength") == 200
    cancel = paths["/streams/{session_id}/cancel"]["post"]
    assert {"200", "202", "404"} <= set(cancel["responses"])
    for path in ("/streams/{session_id}/status", "/streams/{session_id}/snapshot"):
        assert "404" in paths[path]["get"]["responses"]
