"""Security: authorization on every path, the owner-only pattern of the README, no session
enumeration, no SSE injection, no Redis name built from unchecked input.

HTTP tests run ``tests/security_app.py`` in real uvicorn servers on the session's real Redis;
SSE bodies are parsed by the spec-faithful parser of ``support/sse_client.py`` and, when Node is there,
by Node's own ``EventSource`` (undici, behind ``--experimental-eventsource``).
test_http.py already checks that ``AUTH=1`` refuses intruders with 403 on every endpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from fastapi.sse import ServerSentEvent
from security_app import HOSTILE_ITEMS, HOSTILE_METADATA, HOSTILE_REASON
from support.apps import AppServer
from support.redis_server import RedisServer
from support.security import (
    app_server,
    assert_clean_error,
    assert_ended,
    checked_client,
    library_keys,
)
from support.sids import new_sid
from support.sse_client import SSEResult, as_rebuilt, cursor_key, read_sse, wait_until

from fastapi_streamhub import Event, InvalidSessionId, StreamHub, StreamHubError

pytestmark = pytest.mark.anyio

TESTS_DIR = Path(__file__).resolve().parent
NODE = shutil.which("node")

# Ids that must never reach a key or a channel name: wrong length, characters outside
# [A-Za-z0-9._:-] (hash-tag braces, glob characters, separators, whitespace, NUL, non-ASCII
# look-alikes, a lone surrogate), and values that are not strings at all.
HOSTILE_IDS: list[Any] = [
    "",
    "x" * 201,
    "a b",
    "a\nb",
    "a\r\n",
    "a\x00b",
    "%00",
    ".",  # dot segments: browsers and proxies collapse them, so they name no reachable path
    "..",
    "../x",
    "a/b",
    "a\\b",
    "*",
    "a*",
    "?",
    "[ab]",
    "{x}",
    "x}:meta",
    "}{",
    "streamhub:{x}:meta",
    "caf\u00e9",
    "\u212a",  # KELVIN SIGN: lowercases to "k"
    "\uff41",  # FULLWIDTH "a"
    "\u0661",  # ARABIC-INDIC DIGIT ONE
    "a\u2028b",
    "\ufeffa",
    "a\ud800",
    None,
    1,
    b"abc",
    ["a"],
]


# --------------------------------------------------------------------------- Python API


@pytest.fixture(params=["memory", "redis"])
async def hub(request: pytest.FixtureRequest) -> AsyncIterator[StreamHub]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    async with StreamHub.from_url(url, shutdown_grace=0.5) as hub:
        yield hub


def _calls(hub: StreamHub, bad: Any) -> dict[str, Any]:
    """Every public hub method that takes a session id, called with ``bad``."""
    return {
        "register": lambda: hub.register(bad),
        "register-restart": lambda: hub.register(bad, restart=True, metadata={"a": 1}),
        "status": lambda: hub.status(bad),
        "get": lambda: hub.get(bad),
        "active": lambda: hub.active([bad]),
        "active-mixed": lambda: hub.active(["fine", bad]),
        "metadata": lambda: hub.metadata(bad),
        "state": lambda: hub.state(bad),
        "done": lambda: hub.done(bad),
        "cancel": lambda: hub.cancel(bad),
        "cancel-wait": lambda: hub.cancel(bad, wait=0.1),
        "snapshot": lambda: hub.snapshot(bad),
        "delete": lambda: hub.delete(bad),
    }


async def test_hostile_ids_are_refused_by_every_hub_method_and_create_nothing(
    hub: StreamHub, request: pytest.FixtureRequest
) -> None:
    for bad in HOSTILE_IDS:
        for name, call in _calls(hub, bad).items():
            try:
                with anyio.fail_after(5):
                    await call()
            except InvalidSessionId:
                continue
            raise AssertionError(f"{name}({bad!r}) did not raise InvalidSessionId")
        with pytest.raises(InvalidSessionId):
            hub.subscribe(bad)
    if "redis" in request.node.callspec.id:
        server: RedisServer = request.getfixturevalue("redis_server")
        assert library_keys(server) == []
        assert server.execute("DBSIZE") == 0
        channels = server.execute("PUBSUB", "CHANNELS", "*")
        assert isinstance(channels, list)
        # Only the shared buses: nothing was subscribed for a hostile id.
        assert set(channels) <= {b"streamhub:bus:ctl", b"streamhub:bus:data"}, channels
    else:
        assert hub.backend._records == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize("sid", ["...", ".a", "a.", ":", "a:b", "-", "_", "a.b:c-d_e", "x" * 200])
async def test_odd_but_valid_ids_are_plain_names_in_their_own_hash_tag(
    redis_url: str, redis_server: RedisServer, sid: str
) -> None:
    """``...`` is just a name (no path is ever built from an id); every key is exactly
    ``streamhub:{<id>}:...``, so no valid id can reach another session's keys."""
    async with StreamHub.from_url(redis_url, shutdown_grace=0.5) as hub:
        reg = await hub.register(sid)
        assert reg.producer is not None
        async with reg.producer as producer:
            await producer.publish("x")
        assert (await hub.snapshot(sid))["text"] == "x"
        keys = library_keys(redis_server)
        assert keys == sorted(f"streamhub:{{{sid}}}:{k}".encode() for k in ("log", "meta"))
        assert await hub.delete(sid)
        assert library_keys(redis_server) == []


# --------------------------------------------------------------------------- HTTP servers


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security-apps")


@pytest.fixture(scope="module")
def open_server(redis_server: RedisServer, log_dir: Path) -> Iterator[AppServer]:
    """``AUTH=none``: authorize allows everything and records every call."""
    with app_server("open", redis_server, log_dir) as srv:
        yield srv


@pytest.fixture
async def client(
    anyio_backend: str, open_server: AppServer, redis_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with checked_client(open_server) as c:
        yield c


# --------------------------------------------------------------------------- authorize


async def test_authorize_is_called_with_the_right_action_on_every_endpoint(
    client: httpx.AsyncClient,
) -> None:
    sid = new_sid("act")

    async def log() -> list[str]:
        return list((await client.get(f"/_authlog/{sid}")).json())

    start = await read_sse(client, f"/slow/{sid}", params={"n": 3})
    assert_ended(start, "done")
    assert await log() == ["GET read"]
    steps: list[tuple[str, str, dict[str, Any], str]] = [
        ("GET", f"/streams/{sid}", {}, "GET read"),
        ("GET", f"/streams/{sid}", {"headers": {"Last-Event-ID": start.ids[0]}}, "GET read"),
        ("GET", f"/streams/{sid}/status", {}, "GET status"),
        ("GET", f"/streams/{sid}/snapshot", {}, "GET read"),
        ("POST", f"/streams/{sid}/cancel", {}, "POST cancel"),
        ("POST", "/streams/active", {"json": {"session_ids": [sid, sid]}}, "POST status"),
        # A resume through ResumableStreamingResponse of a finished session.
        ("GET", f"/slow/{sid}", {"headers": {"Last-Event-ID": start.ids[1]}}, "GET read"),
        ("DELETE", f"/streams/{sid}", {}, "DELETE delete"),
        ("GET", f"/streams/{sid}/status", {}, "GET status"),
    ]
    want = ["GET read"]
    for method, url, kwargs, action in steps:
        resp = await client.request(method, url, **kwargs)
        assert resp.status_code in (200, 202, 204, 404), (method, url, resp.status_code)
        want.append(action)
        assert await log() == want, (method, url)


async def test_resume_of_a_running_session_through_the_generator_route_is_authorized(
    client: httpx.AsyncClient,
) -> None:
    """The second request on the generator route does not start a producer: it resumes the
    running one, and authorize is asked for it too."""
    sid = new_sid("res")
    async with anyio.create_task_group() as tg:
        first = SSEResult()
        tg.start_soon(
            lambda: read_sse(client, f"/slow/{sid}", params={"n": 100, "delay": 0.02}, result=first)
        )
        await wait_until(lambda: len(first.chunks) >= 2, within=15, what="two chunks")
        resumed = await read_sse(
            client, f"/slow/{sid}", headers={"Last-Event-ID": first.ids[0]}, within=20
        )
    assert_ended(first, "done")
    assert_ended(resumed, "done")
    assert resumed.ids == first.ids[1:]
    assert (await client.get(f"/_authlog/{sid}")).json() == ["GET read", "GET read"]


@pytest.fixture(scope="module", params=["owner", "prefix"])
def guarded(
    request: pytest.FixtureRequest, redis_server: RedisServer, log_dir: Path
) -> Iterator[AppServer]:
    with app_server(request.param, redis_server, log_dir, AUTH=request.param) as srv:
        yield srv


def endpoint_requests(sid: str) -> list[tuple[str, str, dict[str, Any]]]:
    path = f"/streams/{quote(sid, safe='')}"
    return [
        ("GET", path, {}),
        ("GET", path, {"headers": {"Last-Event-ID": "1-1"}}),
        ("GET", f"{path}/status", {}),
        ("GET", f"{path}/snapshot", {}),
        ("POST", f"{path}/cancel", {}),
        ("POST", f"{path}/cancel", {"params": {"wait": 1}}),
        ("DELETE", path, {}),
        ("GET", f"/chat/{quote(sid, safe='')}", {}),
    ]


def as_user(user: dict[str, str], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**kwargs, "headers": {**kwargs.get("headers", {}), **user}}


async def test_only_the_owner_may_read_cancel_or_delete(
    anyio_backend: str, guarded: AppServer, redis_url: str
) -> None:
    """The README's two owner-only patterns. Another user's session answers exactly what an
    unknown session answers (404), so ids cannot be probed; POST /active leaves it out."""
    alice, bob = {"X-User": "alice"}, {"X-User": "bob"}
    sid = f"alice:{new_sid('chat')}" if guarded.name == "prefix" else new_sid("chat")
    unknown = f"alice:{new_sid('none')}" if guarded.name == "prefix" else new_sid("none")
    async with checked_client(guarded) as client, anyio.create_task_group() as tg:
        owner_view = SSEResult()
        tg.start_soon(
            lambda: read_sse(client, f"/chat/{sid}", headers=alice, result=owner_view, within=30)
        )
        await wait_until(lambda: len(owner_view.chunks) >= 1, within=15, what="a chunk")

        for headers in ({}, {"X-User": ""}):
            for method, url, kwargs in endpoint_requests(sid):
                resp = await client.request(method, url, **as_user(headers, kwargs))
                assert_clean_error(resp, 401)
        for method, url, kwargs in endpoint_requests(sid):
            if url.startswith("/chat/") and guarded.name == "owner":
                continue  # an unknown id may be created by anyone: compared below
            theirs = await client.request(method, url, **as_user(bob, kwargs))
            other_url = url.replace(quote(sid, safe=""), quote(unknown, safe=""))
            nobody = await client.request(method, other_url, **as_user(bob, kwargs))
            detail = assert_clean_error(theirs, 404)
            assert nobody.status_code == theirs.status_code, (method, url)
            assert detail == nobody.json()["detail"].replace(unknown, sid), (method, url)
        if guarded.name == "owner":
            # Bob resuming alice's session on the generator route: refused like the rest.
            assert_clean_error(await client.get(f"/chat/{sid}", headers=bob), 404)
        resp = await client.post(
            "/streams/active", json={"session_ids": [sid, unknown]}, headers=bob
        )
        assert resp.status_code == 200 and resp.json() == {"active": []}, resp.text

        # Alice's stream went on, untouched by bob's cancel and delete.
        status = await client.get(f"/streams/{sid}/status", headers=alice)
        assert status.status_code == 200 and status.json()["state"] == "active"
        resp = await client.post("/streams/active", json={"session_ids": [sid]}, headers=alice)
        assert resp.json() == {"active": [sid]}
        assert (await client.get(f"/streams/{sid}/snapshot", headers=alice)).status_code == 200
        cancel = await client.post(f"/streams/{sid}/cancel", params={"wait": 5}, headers=alice)
        assert cancel.status_code == 200 and cancel.json() == {"state": "cancelled"}
    assert_ended(owner_view, "cancelled")
    async with checked_client(guarded) as client:
        assert (await client.delete(f"/streams/{sid}", headers=alice)).status_code == 204


# --------------------------------------------------------------------------- no enumeration


async def test_no_endpoint_lists_or_reveals_sessions(client: httpx.AsyncClient) -> None:
    sids = [new_sid("secret") for _ in range(3)]
    for sid in sids:
        assert_ended(await read_sse(client, f"/slow/{sid}", params={"n": 1}), "done")
    prefix = sids[0][:9]
    probes: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/streams", {}),
        ("GET", "/streams/", {}),
        ("GET", "/streams/*", {}),
        ("GET", "/streams/%2A", {}),
        ("GET", "/streams/*/status", {}),
        ("GET", f"/streams/{prefix}*/status", {}),
        ("GET", f"/streams/{prefix}%2A/snapshot", {}),
        ("GET", "/streams/%3F", {}),
        ("GET", "/streams/[a-z]*", {}),
        ("GET", "/streams/.*", {}),
        ("GET", "/streams/active", {}),
        ("GET", "/streams/all", {}),
        ("GET", "/streams/list", {}),
        ("GET", "/streams/%00", {}),
        ("GET", "/streams/%2F", {}),
        ("GET", "/streams/..%2F..%2F", {}),
        ("GET", "/streams/%2E%2E/status", {}),
        ("DELETE", "/streams/*", {}),
        ("POST", "/streams/*/cancel", {}),
        ("POST", "/streams/active", {"json": {"session_ids": []}}),
        ("POST", "/streams/active", {"json": {"session_ids": ["*"]}}),
        ("POST", "/streams/active", {"json": {"session_ids": [f"{prefix}*"]}}),
        ("POST", "/streams/active", {"json": {}}),
        ("GET", "/openapi.json", {}),
        ("GET", "/docs", {}),
    ]
    for method, url, kwargs in probes:
        resp = await client.request(method, url, **kwargs)
        assert resp.status_code < 500, (method, url, resp.status_code, resp.text)
        for sid in sids:
            assert sid not in resp.text, (method, url, resp.text[:300])
        if resp.status_code == 200 and url.startswith("/streams"):
            body = resp.json()
            assert body in ({"active": []},), (method, url, body)


# --------------------------------------------------------------------------- SSE injection


def expected_hostile() -> list[tuple[str, Any]]:
    out = []
    for item in HOSTILE_ITEMS:
        if isinstance(item, ServerSentEvent):
            value = item.raw_data if item.raw_data is not None else item.data
            out.append((item.event, value) if item.event else ("text", value))
        else:
            out.append(as_rebuilt(item))
    return out


def check_hostile_stream(res: SSEResult, first_id: str | None = None) -> None:
    """Exactly the hostile chunks, nothing forged: one event per chunk, each with its own id;
    ``metadata`` first and ``end`` last without ids; no ``retry:`` but the server's."""
    assert_ended(res, "done")
    types = [e.type for e in res.events]
    assert types[0] == "metadata" and types[-1] == "end"
    assert res.events[0].own_id is None and res.events[-1].own_id is None
    assert res.control("metadata") == [HOSTILE_METADATA]
    chunk_events = res.events[1:-1]
    assert all(e.own_id is not None for e in chunk_events)
    assert res.values == expected_hostile()
    ids = res.ids
    assert len(ids) == len(HOSTILE_ITEMS) and len(set(ids)) == len(ids)
    keys = [cursor_key(i) for i in ids]
    assert keys == sorted(keys) and len({k[0] for k in keys}) == 1
    assert [k[1] for k in keys] == list(range(1, len(ids) + 1))
    assert res.retries == [1000]
    assert all(c == " ping" for c in res.comments)


async def test_hostile_chunks_and_metadata_cannot_forge_events_over_http(
    client: httpx.AsyncClient,
) -> None:
    sid = new_sid("inj")
    live = await read_sse(client, f"/hostile/{sid}")
    check_hostile_stream(live)
    replay = await read_sse(client, f"/streams/{sid}")
    check_hostile_stream(replay)
    assert replay.ids == live.ids
    # Resuming after every id gives exactly the suffix: the ids the client saw are real.
    for i, cursor in enumerate(live.ids):
        resumed = await read_sse(client, f"/streams/{sid}", headers={"Last-Event-ID": cursor})
        assert_ended(resumed, "done")
        assert resumed.values == expected_hostile()[i + 1 :]
        assert resumed.resets == []


async def test_hostile_failure_reason_stays_inside_the_end_event(
    client: httpx.AsyncClient,
) -> None:
    sid = new_sid("injfail")
    res = await read_sse(client, f"/hostile-fail/{sid}")
    assert_ended(res, "failed")
    assert res.values == [("text", "one "), ("text", "two ")]
    assert [e.type for e in res.events] == ["message", "message", "end"]
    reason = res.ends[0]["reason"]
    assert reason.startswith("HostileError: boom")
    # The reason is one line (CR and LF become spaces), every other character kept as is.
    assert reason == "HostileError: " + HOSTILE_REASON.replace("\r", " ").replace("\n", " ")
    status = (await client.get(f"/streams/{sid}/status")).json()
    assert status["reason"] == reason


NODE_READER = r"""
const url = process.env.STREAM_URL;
const es = new EventSource(url);
const out = [];
const types = ["message", "json", "metadata", "end", "reset", "note", "tool:call.v2-x", "fastapi_sse"];
for (const type of types) {
  es.addEventListener(type, (e) => {
    out.push({ type: e.type, data: e.data, lastEventId: e.lastEventId });
    if (type === "end") {
      es.close();
      process.stdout.write(JSON.stringify(out));
      process.exit(0);
    }
  });
}
es.onerror = () => { process.stderr.write("eventsource error\n"); process.exit(2); };
setTimeout(() => { process.stderr.write("timeout\n"); process.exit(3); }, 20000);
"""


def _node_has_eventsource() -> bool:
    if NODE is None:
        return False
    probe = subprocess.run(
        [
            NODE,
            "--experimental-eventsource",
            "-e",
            "process.exit(typeof EventSource === 'function' ? 0 : 1)",
        ],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not _node_has_eventsource(), reason="needs Node with --experimental-eventsource"
)
async def test_hostile_chunks_through_nodes_eventsource(
    open_server: AppServer, client: httpx.AsyncClient
) -> None:
    """A browser-grade EventSource (undici's, shipped with Node) rebuilds exactly the same
    events: same types, data and lastEventId as the reference parser."""
    sid = new_sid("node")
    reference = await read_sse(client, f"/hostile/{sid}")
    check_hostile_stream(reference)
    assert NODE is not None
    proc = await anyio.run_process(
        [NODE, "--experimental-eventsource", "-e", NODE_READER],
        check=False,
        env={**os.environ, "STREAM_URL": f"{open_server.url}/streams/{sid}"},
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    seen = json.loads(proc.stdout)
    want = [
        {"type": e.type, "data": e.data, "lastEventId": e.last_event_id} for e in reference.events
    ]
    assert seen == want


async def test_named_events_cannot_take_protocol_names(hub: StreamHub) -> None:
    """Event names are checked at publish: reserved names and names that would break the line
    are refused, so a producer cannot send ``end``, ``reset`` or an ``id:`` line."""
    reg = await hub.register(new_sid())
    assert reg.producer is not None
    async with reg.producer as producer:
        for name in ("end", "reset", "metadata", "json", "message", "x\nid: 1-1", "x\r", "é", ""):
            with pytest.raises(StreamHubError):
                await producer.publish(Event("data", name))
        await producer.publish(Event("data", "end2"))
