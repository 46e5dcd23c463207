"""What is PostgreSQL's own in the contracts added beside its backend (the contracts themselves
run on it in tests/conformance and tests/test_durable_streams.py): Durable Streams expiry, the
retention sweep and the fork chain it releases; the schema's version and the runtime role's
grants covering the new tables; the on_finish index taken by two sweepers at once, the
hook of a SIGKILLed producer run once by the surviving instance (tests/finish_app.py), and the
log rows of kept generations (in place, out of the current reads, dropped with them)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from support.apps import start_servers
from support.postgres_server import PostgresServer
from support.sids import new_sid
from support.sse_client import read_sse, wait_until
from test_on_finish import _server, lines

from fastapi_streamhub import State, StreamHub
from fastapi_streamhub.backends._ds import DsAppend, DsFork, DsSpec
from fastapi_streamhub.backends.base import KEPT_GENERATIONS
from fastapi_streamhub.backends.postgres import PostgresBackend
from fastapi_streamhub.backends.postgres_sql import SCHEMA_VERSION, TABLES, grants_sql

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend(postgres_url: str) -> AsyncIterator[PostgresBackend]:
    async with StreamHub.from_url(postgres_url, lease_ttl=5) as hub:
        assert isinstance(hub.backend, PostgresBackend)
        yield hub.backend


def _rows(server: PostgresServer, sql: str) -> int:
    value = server.execute(sql)[0][0]
    assert isinstance(value, int), value
    return value


async def test_an_expired_fork_is_absent_then_releases_its_soft_deleted_source(
    backend: PostgresBackend, postgres_server: PostgresServer
) -> None:
    src, fork = new_sid("src"), new_sid("fork")
    text = DsSpec("text/plain")
    assert (await backend.ds_create(src, text, b"abcdef")).outcome == "created"
    # The fork expires soon; the source is then soft-deleted (a fork of it lives).
    soon = DsSpec("text/plain", expires_ms=int(time.time() * 1000) + 300)
    created = await backend.ds_create(fork, soon, b"!", DsFork(src, 3))
    assert created.outcome == "created" and created.stream is not None
    assert created.stream.tail == 4
    assert (await backend.ds_read(fork, 0, 10, touch=False)) is not None
    assert await backend.ds_delete(src) == "soft"
    assert await backend.ds_delete(src) == "gone"

    async def fork_expired() -> bool:
        return await backend.ds_read(fork, 0, 10, touch=True) is None

    await wait_until(fork_expired, what="the fork's expiry")
    # Absent to every read at once; a read of the fork never deletes: the rows stay...
    where = f"stream_id IN ('{src}', '{fork}')"
    count = "SELECT streamhub_ds_held()"
    held = _rows(postgres_server, count)
    assert _rows(postgres_server, f"SELECT count(*) FROM streamhub_stream WHERE {where}") == 2
    # ...until the source is looked up: it drops its expired fork, and goes with its last.
    appended = await backend.ds_append(src, DsAppend(b"x", "text/plain"))
    assert appended.outcome == "not_found"
    assert _rows(postgres_server, f"SELECT count(*) FROM streamhub_stream WHERE {where}") == 0
    assert _rows(postgres_server, count) == held - 2
    assert await backend.ds_read(src, 0, 10, touch=False) is None
    # An expired stream nobody looks up is the sweep's.
    lone = new_sid("lone")
    soon = DsSpec("text/plain", expires_ms=int(time.time() * 1000) + 300)
    assert (await backend.ds_create(lone, soon, b"")).outcome == "created"

    async def lone_expired() -> bool:
        return await backend.ds_read(lone, 0, 10, touch=False) is None

    await wait_until(lone_expired, what="the stream's expiry")
    lone_rows = f"SELECT count(*) FROM streamhub_stream WHERE stream_id = '{lone}'"
    assert _rows(postgres_server, lone_rows) == 1
    await backend.sweep()
    assert _rows(postgres_server, lone_rows) == 0


async def test_a_fork_of_a_fork_releases_up_the_chain(
    backend: PostgresBackend, postgres_server: PostgresServer
) -> None:
    a, b, c = new_sid("a"), new_sid("b"), new_sid("c")
    spec = DsSpec("application/json")
    assert (await backend.ds_create(a, spec, b'{"n":1}\n{"n":2}\n')).outcome == "created"
    # Inside a JSON message: refused, and the source counts no fork for it.
    assert (await backend.ds_create(b, DsSpec(""), b"", DsFork(a, 3))).outcome == (
        "bad_fork_offset"
    )
    made = await backend.ds_create(b, DsSpec(""), b"", DsFork(a, 0, sub=1))
    assert made.outcome == "created" and made.stream is not None
    assert made.stream.tail == 8 and made.stream.spec.content_type == "application/json"
    assert (await backend.ds_create(c, DsSpec(""), b"", DsFork(b, None))).outcome == "created"
    forks = "SELECT forks FROM streamhub_stream WHERE stream_id = '{}'"
    assert _rows(postgres_server, forks.format(a)) == 1
    assert await backend.ds_delete(a) == "soft"
    assert await backend.ds_delete(b) == "soft"
    read = await backend.ds_read(c, 0, 100, touch=False)
    assert read is not None and read[1] == b'{"n":1}\n'
    # The last fork goes: b (soft-deleted, no fork left) goes, then a.
    assert await backend.ds_delete(c) == "deleted"
    for sid in (a, b, c):
        assert await backend.ds_read(sid, 0, 10, touch=False) is None
    gone = f"SELECT count(*) FROM streamhub_stream WHERE stream_id IN ('{a}', '{b}', '{c}')"
    assert _rows(postgres_server, gone) == 0


async def test_a_session_and_a_stream_never_share_an_id(backend: PostgresBackend) -> None:
    """A claim and a create of one id serialise on the same advisory lock: racing them, exactly
    one kind wins, whichever it is."""

    async def create(sid: str, outcomes: dict[str, object]) -> None:
        outcomes["create"] = (await backend.ds_create(sid, DsSpec("text/plain"), b"")).outcome

    async def claim(sid: str, outcomes: dict[str, object]) -> None:
        try:
            won = await backend.claim(sid, token="t", restart=False, metadata=None)
            outcomes["claim"] = won.created
        except ValueError:  # InvalidSessionId: a stream holds the id
            outcomes["claim"] = False

    for _ in range(5):
        sid = new_sid("race")
        outcomes: dict[str, object] = {}
        async with anyio.create_task_group() as tg:
            tg.start_soon(create, sid, outcomes)
            tg.start_soon(claim, sid, outcomes)
        assert (outcomes["create"] == "created") != (outcomes["claim"] is True), outcomes


async def test_the_schema_version_and_the_grants_cover_the_new_tables(
    backend: PostgresBackend, postgres_server: PostgresServer
) -> None:
    assert SCHEMA_VERSION == 6
    assert postgres_server.execute("SELECT version FROM streamhub_schema") == [(SCHEMA_VERSION,)]
    grants = grants_sql("streamhub", "app")
    for table in (
        "finish_index",
        "kept",
        "stream",
        "stream_data",
        "stream_producer",
        "ds_count",
        "ds_freed",
    ):
        assert table in TABLES
        assert f"public.streamhub_{table}" in grants
        assert _rows(postgres_server, f"SELECT count(*) FROM streamhub_{table} WHERE false") == 0


async def test_two_sweepers_take_different_unsettled_entries(
    backend: PostgresBackend, postgres_server: PostgresServer
) -> None:
    """unsettled hands each entry to one caller at a time (FOR UPDATE SKIP LOCKED and the
    visited time), so instances sweeping together take turns."""
    mine = set()
    for i in range(20):
        sid = new_sid(f"fin{i}")
        await backend.expect_finish(sid, 1)
        mine.add((sid, 1))
    taken: list[list[tuple[str, int]]] = [[], []]
    # The entries' age, set rather than waited for: due below, with idle = 0.2.
    postgres_server.execute(
        "UPDATE streamhub_finish_index SET visited_at = visited_at - interval '1 second'"
        " WHERE session_id = ANY(%s)",
        ([sid for sid, _ in mine],),
    )

    async def take(k: int) -> None:
        taken[k] = [e for e in await backend.unsettled(10_000, 0.2) if e in mine]

    # Both at once (an entry one of them handed out is locked, or visited just now: not due
    # for the other), then a third call: entries handed out just now are not due for 60 s.
    async with anyio.create_task_group() as tg:
        tg.start_soon(take, 0)
        tg.start_soon(take, 1)
    assert not set(taken[0]) & set(taken[1])
    assert set(taken[0]) | set(taken[1]) == mine
    assert not [e for e in await backend.unsettled(10_000, 60.0) if e in mine]
    for sid, gen in mine:
        await backend.settle(sid, gen)
    assert not [e for e in await backend.unsettled(10_000, 0.0) if e in mine]


@pytest.mark.timeout(90)
async def test_sigkill_of_the_producer_runs_the_hook_once_on_the_survivor(
    postgres_url: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Nobody follows the session: the survivor's sweep fails the lapsed lease and runs the
    hook, and the store marks it settled and drops its index row."""
    rec = tmp_path / "calls.jsonl"
    a = _server("A", postgres_url, rec, tmp_path)
    c = _server("C", postgres_url, rec, tmp_path)
    start_servers([a, c])
    sid = new_sid("fin-kill")
    try:
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
            params = {"n": 5000, "delay": 0.02}
            await read_sse(http, f"{c.url}/gen/{sid}", params=params, stop_after_chunks=3)
        assert c.proc is not None
        c.proc.kill()  # SIGKILL: no close, no shutdown, the lease is left to lapse

        def settled() -> bool:
            calls = lines(rec, sid)
            if not any(call["ok"] for call in calls):
                return False
            gen = calls[0]["gen"]
            mark = postgres_server.execute(
                "SELECT settled FROM streamhub_session WHERE session_id = %s", (sid,)
            )
            left = postgres_server.execute(
                "SELECT count(*) FROM streamhub_finish_index WHERE session_id = %s", (sid,)
            )
            return mark == [(gen,)] and left == [(0,)]

        await wait_until(settled, within=20, what=f"the settled hook of {sid}")
    finally:
        c.stop()
        a.stop()
    calls = lines(rec, sid)
    assert len(calls) == 1 and calls[0]["ok"], calls
    call = calls[0]
    assert call["state"] == "failed" and call["reason"] == "lease_expired"
    assert call["instance"] == "A" and call["truncated"] is True
    assert call["text"].startswith("t0 t1 t2 ")


async def test_reads_and_forks_across_the_stored_rows_are_byte_exact(
    backend: PostgresBackend, postgres_server: PostgresServer
) -> None:
    """A stream's bytes are one row per append: reads and fork prefixes that start, end or cut
    inside rows give exactly the bytes, and an append stores one row whatever the size."""
    sid, fork = new_sid("rows"), new_sid("rows-fork")
    assert (await backend.ds_create(sid, DsSpec("application/octet-stream"), b"")).outcome == (
        "created"
    )
    whole = b""
    for i in range(40):
        piece = bytes((i * 7 + k) % 256 for k in range(1 + (i * 13) % 29))
        appended = await backend.ds_append(sid, DsAppend(piece, "application/octet-stream"))
        assert appended.outcome == "appended"
        whole += piece
    stored = f"SELECT count(*) FROM streamhub_stream_data WHERE stream_id = '{sid}'"
    assert _rows(postgres_server, stored) == 40
    for off, lim in ((0, 1), (0, 10_000), (5, 3), (17, 100), (len(whole) - 1, 5), (333, 1)):
        read = await backend.ds_read(sid, off, lim, touch=False)
        assert read is not None and read[1] == whole[off : off + lim], (off, lim)
    assert (await backend.ds_read(sid, len(whole), 10, touch=False)) is not None
    cut = 101  # inside a row
    made = await backend.ds_create(fork, DsSpec(""), b"tail", DsFork(sid, cut, sub=3))
    assert made.outcome == "created" and made.stream is not None
    assert made.stream.tail == cut + 3 + 4
    read = await backend.ds_read(fork, 0, 10_000, touch=False)
    assert read is not None and read[1] == whole[: cut + 3] + b"tail"


async def test_a_kept_generation_s_rows_stay_in_place_and_out_of_the_current_reads(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    """A kept generation's log rows stay in the log under their own generation: a read of the
    session (even from a cursor of the kept generation) and the compaction of the current
    generation never see them; settle drops them, and the sweep drops a kept generation past
    its retention, rows included."""
    async with StreamHub.from_url(postgres_url, lease_ttl=5) as hub:
        backend = hub.backend
        assert isinstance(backend, PostgresBackend)
        sid = new_sid("pgkept")
        gens = []
        for i in range(KEPT_GENERATIONS + 2):
            reg = await hub.register(sid, restart=True)
            assert reg.producer is not None
            await backend.expect_finish(sid, reg.generation)
            await reg.producer.publish(f"g{i} ")
            assert await reg.producer.close() is State.DONE
            gens.append(reg.generation)
        current = gens[-1]
        kept = f"SELECT count(*) FROM streamhub_kept WHERE session_id = '{sid}'"
        log = f"SELECT count(*) FROM streamhub_log WHERE session_id = '{sid}' AND generation = "
        assert _rows(postgres_server, kept) == KEPT_GENERATIONS  # the oldest was dropped
        assert _rows(postgres_server, log + str(gens[0])) == 0
        assert _rows(postgres_server, log + str(gens[1])) == 2  # a chunk and the end marker
        assert (await backend.read_generation(sid, gens[0], 0, 100))[0] is None
        page = await backend.read(sid, (gens[1], 0), 100)
        assert [(c.cursor.generation, c.data) for c in page.chunks] == [
            (current, f"g{len(gens) - 1} ")
        ]
        assert page.end is not None and page.end[0] == current
        assert await backend.compact(sid) is True
        await backend.settle(sid, gens[1])
        assert _rows(postgres_server, log + str(gens[1])) == 0
        assert _rows(postgres_server, kept) == KEPT_GENERATIONS - 1
        postgres_server.execute(
            "UPDATE streamhub_kept SET expires_at = clock_timestamp() - interval '1 second' "
            f"WHERE session_id = '{sid}' AND generation = {gens[2]}"
        )
        assert (await backend.read_generation(sid, gens[2], 0, 100))[0] is None
        await backend.sweep()
        assert _rows(postgres_server, log + str(gens[2])) == 0
        assert _rows(postgres_server, kept) == KEPT_GENERATIONS - 2
        info, page = await backend.read_generation(sid, gens[3], 0, 100)
        assert info is not None and info.state is State.DONE
        assert await backend.delete(sid) is True
        assert _rows(postgres_server, kept) == 0
        assert (
            _rows(postgres_server, f"SELECT count(*) FROM streamhub_log WHERE session_id = '{sid}'")
            == 0
        )
