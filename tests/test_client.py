"""The Python client (``fastapi_streamhub.client``) against real app instances on a real Redis.

Two uvicorn instances of ``tests/http_app.py`` share the session's redis-server: the producer
runs on A (``GET /gen/{sid}`` starts it, detached from the request), the client under test
reads from B, most often through a TCP proxy (``tests/support/proxy.py``) that gives B a fixed
address, so a test can cut the network or kill B and bring it back on another port while the
client keeps its URL. Nothing is mocked.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from http_app import expected_items
from support.apps import HOST, App, start_apps
from support.proxy import TCPProxy
from support.redis_server import RedisServer
from support.sids import new_sid
from support.sse_client import as_rebuilt, cursor_key

from fastapi_streamhub import InvalidSessionId
from fastapi_streamhub.client import (
    Backoff,
    Chunk,
    End,
    Metadata,
    ReconnectFailed,
    Reset,
    ResponseError,
    SessionNotFound,
    State,
    StreamClient,
    SyncStreamClient,
)

pytestmark = pytest.mark.anyio

# Quick retries: the server's retry: (1 s) is the base; the cap keeps waits short.
FAST = Backoff(cap=0.3, max_attempts=200, max_elapsed=40)


def pair(chunk: Chunk) -> tuple[str, Any]:
    """A chunk as ``sse_client.as_rebuilt`` describes a generator item."""
    return (chunk.event or chunk.kind, chunk.data)


def expected(n: int, kind: str = "text", pad: int = 0) -> list[tuple[str, Any]]:
    return [as_rebuilt(item) for item in expected_items(n, kind, pad)]


def expected_text(n: int, pad: int = 0) -> str:
    return "".join(expected_items(n, "text", pad))


def assert_exact(chunks: list[Chunk], want: list[tuple[str, Any]]) -> None:
    """Every chunk once, in order, ids strictly increasing within one generation."""
    assert [pair(c) for c in chunks] == want
    keys = [cursor_key(c.id) for c in chunks]
    assert keys == sorted(set(keys)), "a cursor repeated or went back"


class Recorder:
    """httpx request hook: what each request asked for, and when."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, str, str | None]] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.requests.append(
            (time.monotonic(), request.url.path, request.headers.get("last-event-id"))
        )


@pytest.fixture(scope="module")
def apps(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[App, App]]:
    env = {"REDIS_URL": redis_server.url, "LEASE_TTL": "5", "PING_INTERVAL": "0.5"}
    log_dir = tmp_path_factory.mktemp("client-apps")
    a, b = App("A", env, log_dir), App("B", env, log_dir)
    try:
        start_apps([a, b])
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def proxy(apps: tuple[App, App]) -> Iterator[TCPProxy]:
    """A fixed address for B."""
    with TCPProxy(HOST, apps[1].port) as p:
        yield p


def proxy_url(proxy: TCPProxy) -> str:
    return f"http://{HOST}:{proxy.port}"


async def start_producer(a: App, sid: str, **params: Any) -> None:
    """Start ``gen`` on A and return once its first chunk is stored (the producer goes on)."""
    async with StreamClient(a.url) as client, client.start(f"/gen/{sid}", params) as stream:
        async for item in stream:
            if isinstance(item, Chunk | End):
                return


async def read_all(stream: Any) -> list[Any]:
    return [item async for item in stream]


def chunks_of(items: list[Any]) -> list[Chunk]:
    return [i for i in items if isinstance(i, Chunk)]


async def test_start_then_replay_on_another_instance_rebuilds_every_chunk(
    apps: tuple[App, App],
) -> None:
    a, b = apps
    sid = new_sid("cl")
    with anyio.fail_after(30):
        async with StreamClient(a.url) as client:
            stream = client.start(f"/gen/{sid}", {"n": 42, "kind": "mixed", "meta": "true"})
            items = await read_all(stream)
        async with StreamClient(b.url) as replayer:
            replay = replayer.stream(sid)
            replayed = await read_all(replay)
    assert isinstance(items[0], Metadata) and items[0].value == {"model": "test", "n": 42}
    assert items[-1] == End(State.DONE, None) == stream.end == replay.end
    assert_exact(chunks_of(items), expected(42, "mixed"))
    assert chunks_of(replayed) == chunks_of(items)
    assert stream.text == replay.text == "".join(v for k, v in expected(42, "mixed") if k == "text")
    assert stream.metadata == replay.metadata == {"model": "test", "n": 42}
    assert stream.reconnects == 0 and stream.retry == 1.0
    assert stream.cursor == chunks_of(items)[-1].id


async def test_resume_across_kills_and_restarts_of_the_subscriber_instance(
    apps: tuple[App, App], redis_server: RedisServer, tmp_path: Path
) -> None:
    a = apps[0]
    env = {"REDIS_URL": redis_server.url, "LEASE_TTL": "5", "PING_INTERVAL": "0.5"}
    b = App("B-killed", env, tmp_path)
    await anyio.to_thread.run_sync(start_apps, [b])
    sid, n = new_sid("cl"), 400
    states_at_kill: list[State] = []
    proxy: TCPProxy  # bound by the with below; restart() runs inside it

    def restart() -> None:
        b.spawn()
        assert b.wait_ready()
        proxy.target = (HOST, b.port)

    try:
        with TCPProxy(HOST, b.port) as proxy, anyio.fail_after(50):
            await start_producer(a, sid, n=n, delay=0.025)
            hooks = Recorder()
            http = httpx.AsyncClient(event_hooks={"request": [hooks]})
            async with (
                StreamClient(proxy_url(proxy), httpx_client=http, backoff=FAST) as client,
                StreamClient(a.url) as control,
                anyio.create_task_group() as tg,
            ):
                stream = client.stream(sid)
                items = []
                async for item in stream:
                    items.append(item)
                    if len(chunks_of(items)) in (60, 180) and isinstance(item, Chunk):
                        states_at_kill.append((await control.status(sid)).state)
                        b.kill()
                        tg.start_soon(anyio.to_thread.run_sync, restart)
            await http.aclose()
    finally:
        b.stop()
    assert states_at_kill == [State.ACTIVE, State.ACTIVE]
    assert_exact(chunks_of(items), expected(n))
    assert stream.end == End(State.DONE, None)
    assert stream.text == expected_text(n)
    assert stream.reconnects >= 2
    resumed = [cursor for _, _, cursor in hooks.requests[1:]]
    assert all(c is not None for c in resumed), "every reconnect carried Last-Event-ID"
    print(f"resume across 2 kills: {n} chunks, {stream.reconnects} reconnects, exact")


async def test_network_drop_reconnects_with_last_event_id(
    apps: tuple[App, App], proxy: TCPProxy
) -> None:
    a = apps[0]
    sid, n = new_sid("cl"), 150
    hooks = Recorder()
    with anyio.fail_after(30):
        await start_producer(a, sid, n=n, delay=0.01)
        http = httpx.AsyncClient(event_hooks={"request": [hooks]})
        async with StreamClient(proxy_url(proxy), httpx_client=http, backoff=FAST) as client:
            stream = client.stream(sid)
            items = []
            cursors_before_reconnect: list[str | None] = []
            async for item in stream:
                items.append(item)
                if len(chunks_of(items)) == 30 and isinstance(item, Chunk):
                    assert proxy.drop() == 1
                cursors_before_reconnect.append(stream.cursor)
        await http.aclose()
    assert_exact(chunks_of(items), expected(n))
    assert stream.reconnects == 1
    (_, _, first), (_, _, second) = hooks.requests
    assert first is None
    # The reconnect asked for exactly what came after the last chunk it had delivered.
    before = [c.id for c in chunks_of(items) if cursor_key(c.id) <= cursor_key(second or "")]
    assert second is not None and before[-1] == second and len(before) >= 30


async def test_reset_when_the_session_restarted_while_disconnected(
    apps: tuple[App, App], proxy: TCPProxy
) -> None:
    a = apps[0]
    sid = new_sid("cl")
    with anyio.fail_after(40):
        await start_producer(a, sid, n=2000, delay=0.01)
        async with (
            StreamClient(proxy_url(proxy), backoff=FAST) as client,
            StreamClient(a.url) as control,
        ):
            stream = client.stream(sid)
            items = []
            async for item in stream:
                items.append(item)
                if len(chunks_of(items)) == 20 and isinstance(item, Chunk):
                    text_before = stream.text
                    proxy.down()
                    # A new generation of the session, while the client cannot reach B.
                    await control.delete(sid)
                    await read_all(control.start(f"/gen/{sid}", {"n": 15, "pad": 2}))
                    proxy.up()
    resets = [i for i in items if isinstance(i, Reset)]
    assert len(resets) == 1 and resets[0].reason
    after_reset = chunks_of(items[items.index(resets[0]) :])
    assert_exact(after_reset, expected(15, pad=2))
    assert text_before == expected_text(20)
    assert stream.text == expected_text(15, pad=2)
    assert stream.end == End(State.DONE, None)


async def test_end_state_and_reason_of_failed_and_cancelled_streams(apps: tuple[App, App]) -> None:
    a, b = apps
    failing, cancelled = new_sid("cl"), new_sid("cl")
    with anyio.fail_after(30):
        async with StreamClient(a.url) as client, StreamClient(b.url) as other:
            failed_stream = client.start(f"/gen/{failing}", {"n": 10, "fail_at": 4})
            failed_items = await read_all(failed_stream)
            await start_producer(a, cancelled, n=2000, delay=0.02)
            stream = other.stream(cancelled)
            seen = 0
            async for item in stream:
                seen += isinstance(item, Chunk)
                if seen == 5 and isinstance(item, Chunk):
                    assert await other.cancel(cancelled, wait=10) is State.CANCELLED
    assert failed_stream.end is not None and failed_stream.end.state is State.FAILED
    assert failed_stream.end.reason and "boom at 4" in failed_stream.end.reason
    assert failed_items[-1] == failed_stream.end
    assert failed_stream.text == expected_text(4)
    assert stream.end is not None and stream.end.state is State.CANCELLED
    assert seen >= 5


async def test_status_snapshot_active_cancel_delete(apps: tuple[App, App]) -> None:
    a, b = apps
    done, running = new_sid("cl"), new_sid("cl")
    with anyio.fail_after(30):
        async with StreamClient(a.url) as client, StreamClient(b.url) as other:
            stream = client.start(f"/gen/{done}", {"n": 12, "meta": "true"})
            await read_all(stream)
            await start_producer(a, running, n=2000, delay=0.02)

            info = await other.status(done)
            assert (info.session_id, info.state, info.chunks) == (done, State.DONE, 12)
            assert info.last_event_id == stream.cursor
            assert info.metadata == {"model": "test", "n": 12}
            assert info.created_at <= info.updated_at
            snapshot = await other.snapshot(done)
            assert snapshot.text == expected_text(12) and snapshot.state is State.DONE
            assert snapshot.last_event_id == stream.cursor

            assert await other.active([done, running, new_sid("cl")]) == [running]
            assert (await other.status(running)).state is State.ACTIVE
            assert await other.cancel(done) is State.DONE  # already finished: its state
            assert await other.cancel(running, wait=10) is State.CANCELLED
            assert (await client.status(running)).state is State.CANCELLED

            await other.delete(done)
            await other.delete(done)  # idempotent
            with pytest.raises(SessionNotFound):
                await client.status(done)
            with pytest.raises(SessionNotFound):
                await client.snapshot(done)


async def test_unknown_session_and_refusals_fail_at_once(apps: tuple[App, App]) -> None:
    b = apps[1]
    hooks = Recorder()
    http = httpx.AsyncClient(event_hooks={"request": [hooks]})
    sid = new_sid("cl")
    with anyio.fail_after(20):
        async with StreamClient(b.url, httpx_client=http) as client:
            with pytest.raises(SessionNotFound, match="not found"):
                await read_all(client.stream(sid))
            assert len(hooks.requests) == 1, "a 404 is not retried"
            with pytest.raises(SessionNotFound):
                await client.cancel(sid)
            with pytest.raises(ResponseError) as refused:
                await read_all(client.stream(sid, after="not-a-cursor"))
            assert refused.value.status_code == 400 and "cursor" in refused.value.detail
            assert len(hooks.requests) == 3
            with pytest.raises(InvalidSessionId):
                client.stream("no spaces")
            with pytest.raises(ResponseError) as missing:
                await read_all(client.start("/no-such-route/x"))
            assert missing.value.status_code == 404
    assert not http.is_closed, "a client passed in is left open"
    await http.aclose()


async def test_sync_client_end_to_end_across_a_network_drop(
    apps: tuple[App, App], proxy: TCPProxy
) -> None:
    sid, n = new_sid("cl"), 120

    def run() -> tuple[Any, list[Any]]:
        items: list[Any] = []
        with SyncStreamClient(proxy_url(proxy), backoff=FAST) as client:
            stream = client.start(f"/gen/{sid}", {"n": n, "delay": 0.01, "kind": "mixed"})
            with stream:
                for item in stream:
                    items.append(item)
                    if len(chunks_of(items)) == 25 and isinstance(item, Chunk):
                        assert proxy.drop() == 1
            info = client.status(sid)
            snapshot = client.snapshot(sid)
            assert client.cancel(sid, wait=1) is State.DONE
            assert client.active([sid]) == []
            client.delete(sid)
            with pytest.raises(SessionNotFound):
                client.status(sid)
            return (stream, info, snapshot), items

    with anyio.fail_after(30):
        (stream, info, snapshot), items = await anyio.to_thread.run_sync(run)
    assert_exact(chunks_of(items), expected(n, "mixed"))
    assert stream.end == End(State.DONE, None) and stream.reconnects == 1
    assert info.chunks == n and snapshot.text == stream.text


async def test_server_retry_is_the_backoff_base(apps: tuple[App, App], proxy: TCPProxy) -> None:
    a = apps[0]
    sid = new_sid("cl")
    hooks = Recorder()
    # Without the server's retry: the client would wait its own base, 0.05 s.
    policy = Backoff(base=0.05, cap=5.0, jitter=False)
    with anyio.fail_after(30):
        await start_producer(a, sid, n=200, delay=0.01)
        http = httpx.AsyncClient(event_hooks={"request": [hooks]})
        async with StreamClient(proxy_url(proxy), httpx_client=http, backoff=policy) as client:
            stream = client.stream(sid)
            dropped_at = 0.0
            async for item in stream:
                if isinstance(item, Chunk) and item.cursor.offset == 10:
                    dropped_at = time.monotonic()
                    proxy.drop()
        await http.aclose()
    assert stream.retry == 1.0  # the server's retry: 1000
    assert stream.reconnects == 1 and stream.end == End(State.DONE, None)
    waited = hooks.requests[1][0] - dropped_at
    assert 0.95 <= waited < 3.0, waited


async def test_gives_up_when_the_budget_is_spent(apps: tuple[App, App], proxy: TCPProxy) -> None:
    a = apps[0]
    sid = new_sid("cl")
    await start_producer(a, sid, n=3)
    proxy.down()
    policy = Backoff(base=0.01, cap=0.05, max_attempts=3)
    with anyio.fail_after(20):
        async with StreamClient(proxy_url(proxy), backoff=policy) as client:
            with pytest.raises(ReconnectFailed) as gave_up:
                await read_all(client.stream(sid))
            assert gave_up.value.attempts == 3
            assert isinstance(gave_up.value.__cause__, httpx.TransportError)
            with pytest.raises(ReconnectFailed, match="status of"):
                await client.status(sid)


def test_import_without_httpx_says_how_to_install() -> None:
    code = "import sys; sys.modules['httpx'] = None; import fastapi_streamhub.client"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "pip install 'fastapi-streamhub[client]'" in done.stderr


@pytest.mark.parametrize("mode", [[], ["--sync"]], ids=["async", "sync"])
def test_example_client_prints_the_chat_answer(tmp_path: Path, mode: list[str]) -> None:
    from test_examples import PROMPT, ROOT, AppProcess, chat_env

    from examples.chat.app import fake_answer

    chat = AppProcess("examples.chat", tmp_path / "chat.log", env=chat_env()).start()
    try:
        argv = [sys.executable, "-m", "examples.client", "--url", chat.url, *mode]
        done = subprocess.run(
            [*argv, "--session", "ex1", PROMPT],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        chat.stop()
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"[session ex1]\n{fake_answer(PROMPT)}\n[done; 0 reconnects]\n"
