"""PostgreSQL Durable Streams under concurrent transitions: one lock order (see
``postgres_sql_ds``), so creates at the limit (which sweep expired streams), forks of a source,
deletes of its forks and of the source itself never deadlock, and the count stays the truth.

A deadlock is not an error the caller sees at once (the executor retries SQLSTATE 40P01 after
PostgreSQL aborted one side, a second later), so the test counts them where they show: the
executor's warning and the server's own statistics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import anyio
import pytest
from support.postgres_server import PostgresServer
from support.sids import new_sid
from support.sse_client import wait_until

from fastapi_streamhub import StreamHub
from fastapi_streamhub.backends._ds import DsAppend, DsFork, DsOutcome, DsSpec
from fastapi_streamhub.backends.postgres import PostgresBackend

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LIMIT = 8
ROUNDS = 12
TEXT = DsSpec("text/plain")


@pytest.fixture
async def backend(postgres_url: str) -> AsyncIterator[PostgresBackend]:
    async with StreamHub.from_url(postgres_url, ds_max_streams=LIMIT) as hub:
        assert isinstance(hub.backend, PostgresBackend)
        yield hub.backend


def _int(server: PostgresServer, sql: str) -> int:
    value = server.execute(sql)[0][0]
    assert isinstance(value, int), value
    return value


def _deadlocks(server: PostgresServer) -> int:
    server.execute("SELECT pg_stat_clear_snapshot()")
    return _int(
        server,
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )


async def _round(backend: PostgresBackend, server: PostgresServer) -> None:
    """One source with live forks and forks about to expire, the store at its limit; then at
    once: creates (sweeping the expired forks, which releases the source), new forks of the
    source, deletes of its live forks and of the source itself, reads and appends."""
    src = new_sid("src")
    assert (await backend.ds_create(src, TEXT, b"abc")).outcome == "created"
    live = [new_sid("live") for _ in range(2)]
    brief = [new_sid("brief") for _ in range(3)]
    for sid in live:
        assert (await backend.ds_create(sid, DsSpec(""), b"", DsFork(src, 2))).outcome == "created"
    soon = DsSpec("text/plain", expires_ms=int(time.time() * 1000) + 150)
    for sid in brief:
        assert (await backend.ds_create(sid, soon, b"", DsFork(src, None))).outcome == "created"
    fill = [new_sid("fill") for _ in range(LIMIT - 1 - len(live) - len(brief))]
    for sid in fill:
        assert (await backend.ds_create(sid, TEXT, b"")).outcome == "created"
    assert (await backend.ds_create(new_sid("over"), TEXT, b"")).outcome == "full"

    async def expired() -> bool:
        return all([await backend.ds_read(s, 0, 1, touch=False) is None for s in brief])

    await wait_until(expired, what="the brief forks' expiry")
    made: list[str] = []

    async def create(sid: str, fork: DsFork | None) -> None:
        spec = DsSpec("") if fork else TEXT
        outcome = (await backend.ds_create(sid, spec, b"", fork)).outcome
        assert outcome in ("created", "full", "source_gone", "source_not_found"), outcome
        if outcome == "created":
            made.append(sid)

    async def delete(sid: str) -> None:
        assert await backend.ds_delete(sid) in ("deleted", "soft", "gone", "not_found")

    async def touch(sid: str) -> None:
        await backend.ds_read(sid, 0, 10, touch=True)
        appended = await backend.ds_append(sid, DsAppend(b"!", "text/plain"))
        assert appended.outcome in (DsOutcome.APPENDED, DsOutcome.NOT_FOUND, DsOutcome.GONE)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(create, new_sid("new"), None)
                tg.start_soon(create, new_sid("fork"), DsFork(src, None))
            for sid in live:
                tg.start_soon(delete, sid)
            tg.start_soon(delete, src)
            tg.start_soon(touch, src)
            tg.start_soon(touch, live[0])
    # Everything left goes; the source (soft-deleted) with its last fork.
    for sid in [*made, *fill, src]:
        await delete(sid)
    assert await backend.ds_read(src, 0, 1, touch=False) is None
    assert _int(server, "SELECT count(*) FROM streamhub_stream") == 0
    assert _int(server, "SELECT streamhub_ds_held()") == 0


async def test_creates_at_the_limit_race_forks_and_deletes_without_deadlock(
    backend: PostgresBackend, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    before = _deadlocks(postgres_server)
    for _ in range(ROUNDS):
        await _round(backend, postgres_server)
    retried = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not retried, retried
    assert _deadlocks(postgres_server) == before
