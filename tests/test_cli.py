"""The command line, ``python -m fastapi_streamhub``, as a subprocess against a real Redis.

Sessions are made by a hub in the test process (the library's producer API) on the test's
redis-server; the CLI only sees them through Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import orjson
import pytest
from support.redis_server import free_port
from support.sids import new_sid

from fastapi_streamhub import Producer, State, StreamHub

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-m", "fastapi_streamhub"]


async def cli(
    *args: str, redis: str | None, within: float = 30
) -> subprocess.CompletedProcess[str]:
    argv = [*CLI, *(["--redis", redis] if redis else []), *args]
    with anyio.fail_after(within):
        done = await anyio.run_process(argv, check=False, env=_env())
    return subprocess.CompletedProcess(
        argv, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("STREAMHUB_REDIS_URL", None)
    return env


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamhub: ") and text in lines[0], lines


@pytest.fixture
async def hub(redis_url: str) -> AsyncIterator[StreamHub]:
    async with StreamHub.from_url(redis_url, lease_ttl=5) as running:
        yield running


async def producing(hub: StreamHub, sid: str, *chunks: Any, metadata: Any = None) -> Producer:
    registration = await hub.register(sid, metadata=metadata)
    assert registration.producer is not None
    for chunk in chunks:
        await registration.producer.publish(chunk)
    return registration.producer


async def test_status_prints_the_record_as_json(hub: StreamHub, redis_url: str) -> None:
    sid = new_sid("cli")
    producer = await producing(hub, sid, "a", "b", metadata={"model": "m"})
    done = await cli("status", sid, redis=redis_url)
    assert done.returncode == 0 and done.stderr == ""
    record = orjson.loads(done.stdout)
    assert record["session_id"] == sid and record["state"] == "active"
    assert record["chunks"] == 2 and record["metadata"] == {"model": "m"}
    assert record["last_event_id"] == str(producer.cursor)
    await producer.close()
    assert orjson.loads((await cli("status", sid, redis=redis_url)).stdout)["state"] == "done"

    assert_one_line_error(await cli("status", "nope", redis=redis_url), 3, "'nope' not found")
    assert_one_line_error(await cli("status", "bad id", redis=redis_url), 2, "session id")


async def test_tail_follows_live_and_exits_by_the_final_state(
    hub: StreamHub, redis_url: str
) -> None:
    sid = new_sid("cli")
    producer = await producing(hub, sid, "hello ", "wor")
    argv = [*CLI, "--redis", redis_url, "tail", sid]
    with anyio.fail_after(30):
        async with await anyio.open_process(argv, env=_env()) as process:
            assert process.stdout is not None and process.stderr is not None
            seen = b""
            while b"wor" not in seen:
                seen += await process.stdout.receive()
            # Live: these are published only once tail has printed the replay.
            await producer.publish("ld\n")
            await producer.publish({"tool": 1})
            await producer.publish("end")
            await producer.close()
            async for data in process.stdout:
                seen += data
            code = await process.wait()
    assert code == 0
    assert seen.decode() == 'hello world\n{"tool":1}\nend'

    # --from prints only what follows the cursor.
    cursor = f"{producer.generation}-2"
    after = await cli("tail", sid, "--from", cursor, redis=redis_url)
    assert (after.returncode, after.stdout) == (0, 'ld\n{"tool":1}\nend')
    assert_one_line_error(await cli("tail", sid, "--from", "x", redis=redis_url), 2, "cursor")
    assert_one_line_error(await cli("tail", new_sid("cli"), redis=redis_url), 3, "not found")

    failed = new_sid("cli")
    broken = await producing(hub, failed, "partial")
    await broken.close(State.FAILED, "model error")
    done = await cli("tail", failed, redis=redis_url)
    assert done.stdout == "partial"
    assert_one_line_error(done, 1, "stream ended failed (model error)")


async def test_cancel_waits_for_the_end_and_delete_removes(hub: StreamHub, redis_url: str) -> None:
    sid = new_sid("cli")
    producer = await producing(hub, sid, "x")

    async def run() -> None:
        async with producer:
            while True:
                await producer.publish(".")
                await anyio.sleep(0.02)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        done = await cli("cancel", sid, "--wait", "10", redis=redis_url)
    assert (done.returncode, done.stdout) == (0, "cancelled\n")
    again = await cli("cancel", sid, redis=redis_url)
    assert (again.returncode, again.stdout) == (0, "cancelled\n")

    # A producer that ignores the cancel: still active when the wait runs out.
    stubborn_sid = new_sid("cli")
    stubborn = await producing(hub, stubborn_sid, "x")
    late = await cli("cancel", stubborn_sid, "--wait", "0.3", redis=redis_url)
    assert (late.returncode, late.stdout) == (1, "active\n")
    await stubborn.close()

    deleted = await cli("delete", sid, redis=redis_url)
    assert (deleted.returncode, deleted.stdout) == (0, "deleted\n")
    assert await hub.status(sid) is None
    assert_one_line_error(await cli("delete", sid, redis=redis_url), 3, "not found")
    assert_one_line_error(await cli("cancel", sid, redis=redis_url), 3, "not found")


def table(stdout: str) -> tuple[str, dict[str, list[str]]]:
    header, _, *rows = stdout.splitlines()
    return header, {row.split()[0]: row.split()[1:] for row in rows}


async def test_top_once_shows_active_sessions_with_chunk_rates(
    hub: StreamHub, redis_url: str
) -> None:
    busy, idle, finished = new_sid("cli"), new_sid("cli"), new_sid("cli")
    await (await producing(hub, finished, "done")).close()
    idle_producer = await producing(hub, idle, "a", "b", "c")
    busy_producer = await producing(hub, busy)

    async def pump() -> None:
        while True:
            await busy_producer.publish("x")
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump)
        shown = await cli("top", "--once", "--interval", "1", redis=redis_url)
        everything = await cli("top", "--once", "--interval", "0.2", "--all", redis=redis_url)
        limited = await cli("top", "--once", "--interval", "0.2", "--limit", "1", redis=redis_url)
        tg.cancel_scope.cancel()
    await busy_producer.close()
    await idle_producer.close()

    assert shown.returncode == 0, shown.stderr
    header, rows = table(shown.stdout)
    assert header == "2 active sessions, 2 shown"
    assert set(rows) == {busy, idle}
    assert rows[idle][:3] == ["active", "3", "0.0"]
    assert float(rows[busy][2]) > 10, rows[busy]  # about 60 per second on a quiet machine
    assert next(iter(rows)) == busy  # busiest first
    assert table(everything.stdout)[1][finished][:2] == ["done", "1"]
    assert list(table(limited.stdout)[1]) == [busy]


async def test_top_scans_a_bounded_number_of_keys(hub: StreamHub, redis_url: str) -> None:
    for _ in range(30):
        await (await producing(hub, new_sid("cli"), "x")).close()
    whole = await cli("top", "--once", "--all", "--interval", "0.1", redis=redis_url)
    cut = await cli(
        "top", "--once", "--all", "--interval", "0.1", "--max-keys", "5", redis=redis_url
    )
    assert whole.stdout.startswith("30 known sessions, 20 shown\n")
    assert "partial scan" in cut.stdout.splitlines()[0]
    assert len(table(cut.stdout)[1]) < 30


@pytest.mark.parametrize(
    "command", [["status", "s1"], ["tail", "s1"], ["cancel", "s1"], ["delete", "s1"], ["top"]]
)
async def test_unreachable_redis_is_one_line_and_exit_4(command: Sequence[str]) -> None:
    url = f"redis://user:secret@127.0.0.1:{free_port()}/0"
    done = await cli("--timeout", "0.3", *command, redis=url)
    assert_one_line_error(done, 4, "is unavailable")
    assert "secret" not in done.stderr


async def test_usage_errors_exit_2() -> None:
    for argv in (["status"], ["top", "--interval", "0"], ["cancel", "s1", "--wait", "x"], []):
        done = await cli(*argv, redis=None)
        assert done.returncode == 2 and "Traceback" not in done.stderr, argv
    assert_one_line_error(await cli("status", "s1", redis="bogus://x"), 2, "scheme")


async def test_redis_commands_work_without_httpx(hub: StreamHub, redis_url: str) -> None:
    sid = new_sid("cli")
    await (await producing(hub, sid, "x")).close()
    code = (
        "import sys; sys.modules['httpx'] = None; from fastapi_streamhub._cli import main; "
        f"main(['--redis', {redis_url!r}, 'tail', {sid!r}])"
    )
    with anyio.fail_after(30):
        done = await anyio.run_process([sys.executable, "-c", code], check=False, env=_env())
    assert (done.returncode, done.stdout) == (0, b"x")


async def test_cluster_url_status_tail_and_top(cluster_url: str) -> None:
    """``redis+cluster://``: records read by slot, ``top`` scans every primary."""
    async with StreamHub.from_url(cluster_url, lease_ttl=5) as on_cluster:
        sids = [new_sid("cli") for _ in range(6)]
        producers = [await producing(on_cluster, sid, "a", "b") for sid in sids]
        await producers[0].close()
        shown = await cli("top", "--once", "--interval", "0.2", redis=cluster_url)
        status = await cli("status", sids[0], redis=cluster_url)
        tail = await cli("tail", sids[0], redis=cluster_url)
        for p in producers[1:]:
            await p.close()
    assert shown.returncode == 0, shown.stderr
    header, rows = table(shown.stdout)
    assert header == "5 active sessions, 5 shown"
    assert set(rows) == set(sids[1:])
    assert orjson.loads(status.stdout)["state"] == "done"
    assert (tail.returncode, tail.stdout) == (0, "ab"), tail
