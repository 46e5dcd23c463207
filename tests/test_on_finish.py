"""The ``on_finish`` hook: once per generation across instances, at least once across crashes.

Two (or three) uvicorn processes of ``tests/finish_app.py`` share a real redis-server; their
hooks append one JSON line per call to a file this test reads. "Exactly once" is checked
without waiting for a call that should not come: once the hook's line is there and the store
holds the generation's settled mark (and its index entry is gone), no instance can claim it
again, so the line count is final. The memory backend runs the same checks in process, with two
hubs sharing one :class:`MemoryBackend` (as the conformance suite runs "two instances").
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
from support.apps import AppServer, start_servers
from support.redis_server import RedisServer
from support.sids import new_sid
from support.sse_client import read_sse, wait_until

from fastapi_streamhub import FinishedGeneration, MemoryBackend, State, StreamHub

pytestmark = pytest.mark.anyio


def lines(rec: Path, sid: str, *, started: bool = False) -> list[dict[str, Any]]:
    """The hook calls recorded for ``sid``, in order (``started``: the lines calls write when
    they start, with ``hold_on``)."""
    if not rec.exists():
        return []
    out = [json.loads(line) for line in rec.read_text().splitlines() if line]
    return [line for line in out if line["sid"] == sid and ("started" in line) == started]


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("finish") / "calls.jsonl"


def _server(name: str, redis_url: str, rec: Path, log_dir: Path, **env: str) -> AppServer:
    base = {"REDIS_URL": redis_url, "FINISH_REC": str(rec), "INSTANCE": name, "LEASE_TTL": "1"}
    return AppServer(name, {**base, **env}, log_dir, "finish_app:app")


@contextmanager
def serving(*servers: AppServer) -> Iterator[None]:
    """The servers started together, and stopped (if still running) on the way out."""
    try:
        start_servers(servers)
        yield
    finally:
        for server in servers:
            server.stop()


@contextmanager
def instance(
    name: str, redis_url: str, rec: Path, log_dir: Path, **env: str
) -> Iterator[AppServer]:
    """One more instance of the app for the length of a test (see :func:`_server`)."""
    server = _server(name, redis_url, rec, log_dir, **env)
    with serving(server):
        yield server


@pytest.fixture(scope="module")
def pair(
    redis_server: RedisServer, rec: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AppServer, AppServer]]:
    log_dir = tmp_path_factory.mktemp("finish-logs")
    a = _server("A", redis_server.url, rec, log_dir)
    b = _server("B", redis_server.url, rec, log_dir)
    with serving(a, b):
        yield a, b


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        yield client


async def killed_mid_answer(http: httpx.AsyncClient, server: AppServer, sid: str) -> None:
    """Start a long answer on ``server``, read its first chunks, then SIGKILL the server: no
    close, no shutdown, the lease is left to lapse."""
    params = {"n": 5000, "delay": 0.02}
    await read_sse(http, f"{server.url}/gen/{sid}", params=params, stop_after_chunks=3)
    assert server.proc is not None
    server.proc.kill()


async def settled_once(store: aioredis.Redis, rec: Path, sid: str) -> dict[str, Any]:
    """Wait until the generation's hook succeeded and the store marked it settled; then the
    calls are final: exactly one, and it succeeded."""

    async def done() -> bool:
        if not any(line["ok"] for line in lines(rec, sid)):
            return False
        gen = lines(rec, sid)[0]["gen"]
        marked = await store.hget(f"streamhub:{{{sid}}}:meta", "settled") == "1"
        indexed = await store.zscore("streamhub:finish", f"{gen}:{sid}")
        return marked and indexed is None

    await wait_until(done, within=20, what=f"the settled hook of {sid}")
    calls = lines(rec, sid)
    assert len(calls) == 1, calls
    assert calls[0]["ok"]
    return calls[0]


async def test_done_runs_once_with_the_whole_output(
    pair: tuple[AppServer, AppServer], rec: Path, store: aioredis.Redis, http: httpx.AsyncClient
) -> None:
    a, _ = pair
    sid = new_sid("fin-done")
    res = await read_sse(http, f"{a.url}/gen/{sid}", params={"n": 3})
    assert res.ends[0]["state"] == "done"
    call = await settled_once(store, rec, sid)
    assert call["state"] == "done" and call["reason"] is None
    assert call["text"] == "t0 t1 t2 " and call["chunks"] == [{"type": "usage", "n": 3}]
    assert call["truncated"] is False
    assert call["metadata"] == {"fails": 0, "hold": 0.0, "hold_on": ""}
    assert call["instance"] == "A" and call["hook"] == "hub"


async def test_a_route_hook_replaces_the_hubs(
    pair: tuple[AppServer, AppServer], rec: Path, store: aioredis.Redis, http: httpx.AsyncClient
) -> None:
    a, _ = pair
    sid = new_sid("fin-route")
    await read_sse(http, f"{a.url}/gen/{sid}", params={"n": 2, "route": "true"})
    call = await settled_once(store, rec, sid)
    assert call["hook"] == "route" and call["text"] == "t0 t1 "


async def test_cancel_from_the_other_instance_runs_once_on_the_producer(
    pair: tuple[AppServer, AppServer], rec: Path, store: aioredis.Redis, http: httpx.AsyncClient
) -> None:
    a, b = pair
    sid = new_sid("fin-cancel")
    params = {"n": 2000, "delay": 0.02}
    await read_sse(http, f"{a.url}/gen/{sid}", params=params, stop_after_chunks=2)
    answer = await http.post(f"{b.url}/streams/{sid}/cancel", params={"wait": 10})
    assert answer.json()["state"] == "cancelled", answer.text
    call = await settled_once(store, rec, sid)
    assert call["state"] == "cancelled" and call["truncated"] is True
    assert call["instance"] == "A"
    assert call["text"].startswith("t0 t1 ") and call["chunks"] == []


async def test_client_disconnect_runs_once_when_the_generation_ends(
    pair: tuple[AppServer, AppServer], rec: Path, store: aioredis.Redis, http: httpx.AsyncClient
) -> None:
    a, _ = pair
    sid = new_sid("fin-gone")
    params = {"n": 10, "delay": 0.02}
    await read_sse(http, f"{a.url}/gen/{sid}", params=params, stop_after_chunks=1)
    call = await settled_once(store, rec, sid)
    assert call["state"] == "done" and call["truncated"] is False
    assert call["text"] == "".join(f"t{i} " for i in range(10))


async def test_generator_error_runs_once_as_failed(
    pair: tuple[AppServer, AppServer], rec: Path, store: aioredis.Redis, http: httpx.AsyncClient
) -> None:
    _, b = pair
    sid = new_sid("fin-error")
    res = await read_sse(http, f"{b.url}/gen/{sid}", params={"n": 5, "fail_at": 2})
    assert res.ends[0]["state"] == "failed"
    call = await settled_once(store, rec, sid)
    assert call["state"] == "failed" and call["truncated"] is True
    assert "boom at 2" in call["reason"] and call["text"] == "t0 t1 "
    assert call["instance"] == "B"


async def test_a_hook_that_raises_twice_is_called_again_and_succeeds(
    pair: tuple[AppServer, AppServer], rec: Path, store: aioredis.Redis, http: httpx.AsyncClient
) -> None:
    a, _ = pair
    sid = new_sid("fin-retry")
    await read_sse(http, f"{a.url}/gen/{sid}", params={"n": 2, "fails": 2})

    async def settled() -> bool:
        return await store.hget(f"streamhub:{{{sid}}}:meta", "settled") == "1"

    await wait_until(settled, within=20, what="the settled mark")
    calls = lines(rec, sid)
    assert [c["ok"] for c in calls] == [False, False, True], calls
    assert {c["instance"] for c in calls} == {"A"}
    assert "hook failure 1 of 2" in a.log() and "attempt 1 of 5" in a.log()


@pytest.mark.timeout(90)
async def test_sigkill_of_the_producer_runs_the_hook_on_the_survivor(
    pair: tuple[AppServer, AppServer],
    redis_server: RedisServer,
    rec: Path,
    store: aioredis.Redis,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    """Nobody follows the session: a survivor's sweep fails the lapsed lease and runs it."""
    a, b = pair
    with instance("C", redis_server.url, rec, tmp_path) as c:
        sid = new_sid("fin-kill")
        await killed_mid_answer(http, c, sid)
        call = await settled_once(store, rec, sid)
    assert call["state"] == "failed" and call["reason"] == "lease_expired"
    # Run by a survivor: either instance's sweep may get to it first.
    assert call["truncated"] is True and call["instance"] in {"A", "B"}
    assert call["text"].startswith("t0 t1 t2 ")
    assert a.alive() and b.alive()


@pytest.mark.timeout(90)
async def test_a_hook_cut_by_a_crash_runs_again_on_another_instance(
    pair: tuple[AppServer, AppServer],
    redis_server: RedisServer,
    rec: Path,
    store: aioredis.Redis,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    """The instance that ended the generation dies while its hook runs: once its claim
    lapses (``finish_claim_ttl``, 5 s here), a survivor claims the hook and runs it."""
    with instance("C", redis_server.url, rec, tmp_path) as c:
        sid = new_sid("fin-crash")
        params = {"n": 2, "hold": 60, "hold_on": "C"}
        res = await read_sse(http, f"{c.url}/gen/{sid}", params=params)
        assert res.ends[0]["state"] == "done"
        await wait_until(lambda: lines(rec, sid, started=True), within=10, what="C's call")
        assert c.proc is not None
        c.proc.kill()  # in the middle of its hook
        call = await settled_once(store, rec, sid)
    assert call["state"] == "done" and call["text"] == "t0 t1 " and call["instance"] in {"A", "B"}
    assert lines(rec, sid, started=True)[0]["started"] == "C"


async def test_end_waits_for_the_hook_with_finish_before_end(
    redis_server: RedisServer, rec: Path, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The hook takes 0.5 s: with ``finish_before_end`` the ``end`` event arrives after its
    line is written, so a page reloaded after ``end`` finds the saved message."""
    with instance("D", redis_server.url, rec, tmp_path, BEFORE_END="5") as d:
        sid = new_sid("fin-before")
        res = await read_sse(http, f"{d.url}/gen/{sid}", params={"n": 2, "hold": 0.5})
        assert res.ends[0]["state"] == "done"
        calls = lines(rec, sid)  # read at once: no waiting
    assert len(calls) == 1 and calls[0]["ok"] and calls[0]["text"] == "t0 t1 ", calls


# -- generations replaced before their hook settled (kept by the claim) ------------------------


async def settled_generations(
    store: aioredis.Redis, rec: Path, sid: str, count: int, prefix: str = "streamhub"
) -> dict[int, dict[str, Any]]:
    """Wait until the hooks of ``count`` generations of ``sid`` succeeded, the store holds no
    kept generation nor index entry of them and marked the current one settled; then the calls
    are final: one per generation, each succeeded. By generation."""
    base = f"{prefix}:{{{sid}}}"

    async def done() -> bool:
        gens = {line["gen"] for line in lines(rec, sid) if line["ok"]}
        if len(gens) < count or await store.exists(f"{base}:kept", f"{base}:klog"):
            return False
        for gen in gens:
            if await store.zscore(f"{prefix}:finish", f"{gen}:{sid}") is not None:
                return False
        return bool(await store.hget(f"{base}:meta", "settled") == "1")

    await wait_until(done, within=20, what=f"the settled hooks of {sid}")
    calls = lines(rec, sid)
    assert len(calls) == count and all(c["ok"] for c in calls), calls
    return {c["gen"]: c for c in calls}


async def test_a_superseding_turn_runs_the_old_answers_hook_once_on_its_instance(
    pair: tuple[AppServer, AppServer], rec: Path, store: aioredis.Redis, http: httpx.AsyncClient
) -> None:
    """A new chat message on B while A streams the answer to the previous one: the partial
    answer is saved (by A, whose producer was superseded), and the new one (by B)."""
    a, b = pair
    sid = new_sid("fin-turn")
    params = {"n": 2000, "delay": 0.02, "turn": "q1"}
    await read_sse(http, f"{a.url}/gen/{sid}", params=params, stop_after_chunks=3)
    res = await read_sse(http, f"{b.url}/gen/{sid}", params={"n": 2, "turn": "q2"})
    assert res.ends[0]["state"] == "done"
    calls = await settled_generations(store, rec, sid, 2)
    old, new = (calls[gen] for gen in sorted(calls))
    assert (old["state"], old["reason"], old["truncated"]) == ("cancelled", "superseded", True)
    assert old["text"].startswith("t0 t1 t2 ") and old["chunks"] == []
    assert old["instance"] == "A"
    assert (new["state"], new["text"], new["truncated"]) == ("done", "t0 t1 ", False)
    assert new["instance"] == "B" and new["chunks"] == [{"type": "usage", "n": 2}]


async def test_restart_right_after_the_end_runs_both_hooks_once(
    pair: tuple[AppServer, AppServer], rec: Path, store: aioredis.Redis, http: httpx.AsyncClient
) -> None:
    """``restart=True`` on B as soon as A's stream ended (A's hook may not have run yet)."""
    a, b = pair
    sid = new_sid("fin-restart")
    first = await read_sse(http, f"{a.url}/gen/{sid}", params={"n": 3})
    assert first.ends[0]["state"] == "done"
    again = await read_sse(http, f"{b.url}/gen/{sid}", params={"n": 1, "restart": "true"})
    assert again.ends[0]["state"] == "done"
    calls = await settled_generations(store, rec, sid, 2)
    old, new = (calls[gen] for gen in sorted(calls))
    assert (old["state"], old["text"], old["truncated"]) == ("done", "t0 t1 t2 ", False)
    assert old["instance"] == "A" and old["chunks"] == [{"type": "usage", "n": 3}]
    assert (new["state"], new["text"], new["instance"]) == ("done", "t0 ", "B")


@pytest.mark.timeout(90)
async def test_sigkill_then_a_claim_before_any_sweep_still_runs_the_failed_hook(
    redis_server: RedisServer,
    rec: Path,
    store: aioredis.Redis,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    """The producing instance is SIGKILLed; a user's retry claims the session again (failing
    the lapsed generation) before any survivor swept it. The claim keeps the failed generation;
    a survivor started afterwards runs its hook once. Instances under a prefix of their own:
    no other sweep can get there first."""
    prefix = new_sid("kp")
    env = {"KEY_PREFIX": prefix}
    sid = new_sid("fin-retry-kill")
    base = f"{prefix}:{{{sid}}}"
    with instance("C", redis_server.url, rec, tmp_path, **env) as c:
        await killed_mid_answer(http, c, sid)
    gen = int(await store.hget(f"{base}:meta", "gen") or 0)

    async def lapsed() -> bool:
        return not await store.exists(f"{base}:lease")

    await wait_until(lapsed, within=10, what="the lease lapsing")
    async with StreamHub.from_url(redis_server.url, key_prefix=prefix) as retry:  # no hook
        reg = await retry.register(sid)  # fails the lapsed generation, keeps it, claims
        assert reg.producer is not None and reg.generation > gen
        assert await store.hget(f"{base}:kept", "gens") == str(gen)
        assert await store.hget(f"{base}:kept", f"{gen}:state") == "failed"
        await reg.producer.send("retried")
        assert await reg.producer.close() is State.DONE

    async def ran() -> bool:
        settled = not await store.exists(f"{base}:kept", f"{base}:klog")
        return settled and await store.zscore(f"{prefix}:finish", f"{gen}:{sid}") is None

    with instance("D", redis_server.url, rec, tmp_path, **env):
        await wait_until(ran, within=20, what="the kept generation's hook")
    calls = lines(rec, sid)
    assert len(calls) == 1 and calls[0]["ok"], calls
    call = calls[0]
    assert (call["gen"], call["state"], call["reason"]) == (gen, "failed", "lease_expired")
    assert call["truncated"] is True and call["instance"] == "D"
    assert call["text"].startswith("t0 t1 t2 ")


# -- the memory backend, two hubs in one process ----------------------------------------------


async def test_memory_backend_runs_once_per_generation_across_two_hubs() -> None:
    backend = MemoryBackend()
    calls: list[tuple[str, FinishedGeneration]] = []
    arrived = anyio.Event()
    failures = {"left": 2}

    def recorder(name: str) -> Any:
        async def hook(done: FinishedGeneration) -> None:
            calls.append((name, done))
            if done.metadata == "flaky" and failures["left"]:
                failures["left"] -= 1
                raise RuntimeError("not yet")
            arrived.set()

        return hook

    options: dict[str, Any] = {"lease_ttl": 1.0, "finish_backoff": 0.01}
    async with (
        StreamHub(backend, on_finish=recorder("A"), **options) as a,
        StreamHub(backend, on_finish=recorder("B"), **options) as b,
    ):
        # done
        reg = await a.register("m-done")
        assert reg.producer is not None
        await reg.producer.send("hello ")
        await reg.producer.send({"type": "usage"})
        await reg.producer.send("world")
        assert await reg.producer.close() is State.DONE
        await wait_until(arrived.is_set, within=5)
        # cancelled from the other hub
        arrived = anyio.Event()
        reg = await a.register("m-cancel")
        producer = reg.producer
        assert producer is not None

        async def produce() -> None:
            async with producer:
                while True:
                    await producer.send("x")
                    await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            assert await b.cancel("m-cancel", wait=5) is State.CANCELLED
        await wait_until(arrived.is_set, within=5)
        # a hook that raises twice
        arrived = anyio.Event()
        reg = await b.register("m-flaky", metadata="flaky")
        assert reg.producer is not None
        await reg.producer.close(State.FAILED, "given up")
        await wait_until(arrived.is_set, within=5)

    by_sid = [(name, done.session_id) for name, done in calls]
    assert by_sid == [
        ("A", "m-done"),
        ("A", "m-cancel"),
        ("B", "m-flaky"),
        ("B", "m-flaky"),
        ("B", "m-flaky"),
    ]
    done = calls[0][1]
    assert (done.text, done.chunks, done.truncated) == ("hello world", ({"type": "usage"},), False)
    cancelled = calls[1][1]
    assert cancelled.state is State.CANCELLED and cancelled.truncated
    assert cancelled.text == "x" * len(cancelled.text) and cancelled.text
    flaky = calls[-1][1]
    assert (flaky.state, flaky.reason, flaky.truncated) == (State.FAILED, "given up", True)
    assert await backend.unsettled(10, 0) == []  # every index entry removed


async def test_shutdown_runs_the_hook_of_a_running_generation_before_the_hub_stops() -> None:
    calls: list[FinishedGeneration] = []

    def hook(done: FinishedGeneration) -> None:  # sync: runs in a worker thread
        calls.append(done)

    hub = StreamHub(MemoryBackend(), on_finish=hook, shutdown_grace=0.2)
    async with hub:
        reg = await hub.register("m-shutdown")
        producer = reg.producer
        assert producer is not None
        await producer.publish("cut ")
        started = anyio.Event()

        async def produce() -> None:
            async with producer:
                started.set()
                await anyio.sleep_forever()

        hub.spawn(produce)
        await started.wait()
    assert [(c.state, c.reason, c.text, c.truncated) for c in calls] == [
        (State.FAILED, "shutdown", "cut ", True)
    ]
