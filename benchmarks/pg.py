"""PostgreSQL backend: ``pg_*`` metrics, each against a hand-written psycopg reference measured in
the same run, on a private PostgreSQL server this benchmark starts (``initdb`` into a temporary
folder, a free loopback port, ``fsync=off``; as root through ``runuser -u postgres``).

- ``pg_persist_throughput``: ``producer.send`` n times + ``flush`` vs raw batched INSERTs (64 rows
  per statement, ``unnest``, one statement in flight, the same driver and payload bytes).
- ``pg_e2e_latency_p50``: ``send`` on hub A → yielded by a subscription on hub B (two hubs, two
  pools, two LISTEN connections, one process) vs raw: ``INSERT … RETURNING`` + ``pg_notify`` in
  one statement → the LISTEN connection wakes → ``SELECT`` of the row.
- ``pg_idle_statements_per_s``: one active stream with one subscriber on another hub, no chunk:
  statements the server received per second (``log_statement = all`` for the window), the
  two hubs' listener heartbeats included.
- ``pg_resume_catchup_ms``: a reader resuming at 5,000 of a finished 10,000-chunk log (one row
  per chunk, uncompacted) until its end vs a hand-written range read of the same rows.

- ``pg_many_streams_latency_p99``: 1,000 streams on one hub, one chunk every 1/30 s each, one
  subscriber per stream on a hub in another process (``many_streams``' own load, on
  PostgreSQL); beside it the statements (transactions) per chunk and the server's CPU per
  1,000 chunks.
"""

from __future__ import annotations

import glob
import multiprocessing as mp
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import psycopg

from fastapi_streamhub import Chunk, Cursor, End, StreamHub
from fastapi_streamhub._codec import encode_chunk

from . import many_streams
from ._common import TOKEN, Context, Goal, Metric, median, new_id, percentile

ROWS_PER_STATEMENT = 64


@contextmanager
def private_server() -> Iterator[tuple[str, str]]:
    """A throwaway PostgreSQL server; yields its URL and the path of its log."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
    bindir = os.path.dirname(found[0])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = tempfile.mkdtemp(prefix="bench-pg-")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    data = os.path.join(root, "data")
    ctl = [*as_user, os.path.join(bindir, "pg_ctl"), "-D", data]
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        initdb = [os.path.join(bindir, "initdb"), "-D", data, "-A", "trust", "-U", "postgres"]
        subprocess.run(
            [*as_user, *initdb, "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*ctl, "-l", os.path.join(root, "log"), "-w", "-o", opts, "start"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", os.path.join(root, "log")
    finally:
        subprocess.run([*ctl, "-m", "immediate", "-w", "stop"], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


# -- persist ----------------------------------------------------------------------------------


async def _raw_inserts(conn: psycopg.AsyncConnection[Any], n: int, payload: bytes) -> float:
    sid = new_id("raw")
    t0 = time.perf_counter()
    done = 0
    while done < n:
        size = min(ROWS_PER_STATEMENT, n - done)
        await conn.execute(
            "INSERT INTO raw_log SELECT %s, o, b FROM unnest(%s::bigint[], %s::bytea[]) AS u(o, b)",
            (sid, list(range(done + 1, done + size + 1)), [payload] * size),
        )
        done += size
    return time.perf_counter() - t0


async def _library_sends(h: StreamHub, n: int) -> float:
    producer = (await h.register(new_id("persist"))).producer
    assert producer is not None
    t0 = time.perf_counter()
    for _ in range(n):
        await producer.send(TOKEN)
    await producer.flush()
    elapsed = time.perf_counter() - t0
    await producer.close()
    return elapsed


async def _persist(ctx: Context, url: str, conn: psycopg.AsyncConnection[Any]) -> Metric:
    n, rounds = ctx.pick(20_000, 100_000), ctx.pick(3, 5)
    payload = encode_chunk(TOKEN)
    raw: list[float] = []
    lib: list[float] = []
    async with StreamHub.from_url(url) as h:
        await _raw_inserts(conn, 1_000, payload)
        await _library_sends(h, 1_000)
        for _ in range(rounds):
            raw.append(n / await _raw_inserts(conn, n, payload))
            lib.append(n / await _library_sends(h, n))
    ctx.note(
        "pg_persist_throughput",
        f"{n} chunks x {rounds}; library {[round(x) for x in lib]}, raw {[round(x) for x in raw]}",
    )
    return Metric(
        "pg_persist_throughput",
        median(lib),
        "chunks/s",
        reference=median(raw),
        goal=Goal("ratio", ">=", 1.0),
    )


# -- end to end -------------------------------------------------------------------------------


async def _e2e_library(ctx: Context, url: str) -> list[float]:
    samples = ctx.pick(300, 1000)
    out: list[float] = []
    async with StreamHub.from_url(url) as a, StreamHub.from_url(url) as b:
        sid = new_id("e2e")
        producer = (await a.register(sid)).producer
        assert producer is not None
        async with b.subscribe(sid) as sub:
            await producer.send("warm")
            received = anyio.Event()
            sent_at = 0
            async with anyio.create_task_group() as tg:

                async def read() -> None:
                    nonlocal received
                    async for item in sub:
                        if isinstance(item, Chunk) and item.data != "warm":
                            out.append((time.perf_counter_ns() - sent_at) / 1e6)
                            received.set()
                        elif isinstance(item, End):
                            return

                tg.start_soon(read)
                for i in range(samples):
                    received = anyio.Event()
                    sent_at = time.perf_counter_ns()
                    await producer.send(f"m{i}")
                    await received.wait()
                    await anyio.sleep(0.002)
                await producer.close()
    return out


async def _e2e_raw(ctx: Context, url: str) -> list[float]:
    samples = ctx.pick(300, 1000)
    out: list[float] = []
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as writer,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as reader,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as listener,
    ):
        await listener.execute("LISTEN raw_ch")
        sid = new_id("raw")
        for i in range(samples):
            t0 = time.perf_counter_ns()
            await writer.execute(
                "WITH i AS (INSERT INTO raw_log VALUES (%s, %s, %s) RETURNING offs) "
                "SELECT pg_notify('raw_ch', offs::text) FROM i",
                (sid, i + 1, b"payload"),
            )
            async for note in listener.notifies(stop_after=1):
                cur = await reader.execute(
                    "SELECT body FROM raw_log WHERE sid = %s AND offs > %s ORDER BY offs",
                    (sid, int(note.payload) - 1),
                )
                await cur.fetchall()
            out.append((time.perf_counter_ns() - t0) / 1e6)
            await anyio.sleep(0.002)
    return out


# -- idle -------------------------------------------------------------------------------------


async def _idle(ctx: Context, url: str, log: str, conn: psycopg.AsyncConnection[Any]) -> Metric:
    seconds = ctx.pick(10, 30)
    async with StreamHub.from_url(url) as producing, StreamHub.from_url(url) as following:
        sid = new_id("idle")
        producer = (await producing.register(sid)).producer
        assert producer is not None
        async with following.subscribe(sid) as sub, anyio.create_task_group() as tg:

            async def drain() -> None:
                async for _ in sub:
                    pass

            tg.start_soon(drain)
            await anyio.sleep(1.0)
            await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
            await conn.execute("SELECT pg_reload_conf()")
            await anyio.sleep(0.5)
            start = await anyio.Path(log).stat()
            await anyio.sleep(seconds)
            data = await anyio.Path(log).read_bytes()
            text = data[start.st_size :].decode(errors="replace")
            await conn.execute("ALTER SYSTEM RESET log_statement")
            await conn.execute("SELECT pg_reload_conf()")
            await producer.close()
    statements = re.findall(r"(?:statement|execute [^:]*): (.*)", text)
    kinds = Counter(re.sub(r"\(.*", "", s) for s in statements)
    ctx.note("pg_idle_statements_per_s", f"{len(statements)} in {seconds}s: {dict(kinds)}")
    return Metric(
        "pg_idle_statements_per_s",
        len(statements) / seconds,
        "stmt/s",
        goal=Goal("value", "<=", 1.0),
    )


# -- many streams ----------------------------------------------------------------------------


def _server_cpu(log: str) -> float:
    """CPU seconds of every process of the server so far: the postmaster, its live children and
    (``cutime``/``cstime``) the children it reaped."""
    data = os.path.join(os.path.dirname(log), "data", "postmaster.pid")
    main = int(Path(data).read_text().split()[0])

    def fields(pid: int) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    children = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True)
    own = fields(main)
    ticks = sum(int(x) for x in own[11:15])
    for pid in children.stdout.split():
        try:
            ticks += sum(int(x) for x in fields(int(pid))[11:13])
        except (OSError, ValueError):
            continue  # exited meanwhile: counted in cutime once reaped
    return ticks / os.sysconf("SC_CLK_TCK")


async def _many_streams(
    ctx: Context, url: str, log: str, conn: psycopg.AsyncConnection[Any]
) -> list[Metric]:
    streams, seconds = 1000, ctx.pick(5, 10)
    per_stream = int(many_streams.RATE * seconds)
    spawn = mp.get_context("spawn")
    failures: Counter[str] = Counter()

    async def transactions() -> int:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        cur = await conn.execute("SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async with StreamHub.from_url(url) as h:
        ids = [new_id("many") for _ in range(streams)]
        producers = []
        for sid in ids:
            producer = (await h.register(sid)).producer
            assert producer is not None
            producers.append(producer)
            await producer.send(many_streams.WARMUP)
        parent, child = spawn.Pipe()
        proc = spawn.Process(target=many_streams._subscribers, args=(url, ids, child))
        proc.start()
        try:
            with anyio.fail_after(120):
                while not parent.poll(0):
                    if not proc.is_alive():
                        raise RuntimeError("the subscriber process died")
                    await anyio.sleep(0.02)
            assert parent.recv() == "ready"
            await anyio.sleep(1.5)  # the statistics of the set-up are flushed
            xacts0, cpu0 = await transactions(), _server_cpu(log)
            async with anyio.create_task_group() as tg:
                t0 = time.perf_counter() + 0.05
                for producer in producers:
                    tg.start_soon(many_streams._produce, producer, per_stream, t0, failures)
            with anyio.fail_after(300):
                while not parent.poll(0):
                    if not proc.is_alive():
                        raise RuntimeError("the subscriber process died")
                    await anyio.sleep(0.02)
            result: dict[str, Any] = parent.recv()
            await anyio.sleep(1.5)
            xacts, cpu = await transactions() - xacts0, _server_cpu(log) - cpu0
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    sent = sum(p.cursor.offset - 1 for p in producers)
    latencies = result["latencies"]
    ctx.note(
        "pg_many_streams",
        f"{streams} streams x {per_stream} chunks: {sent} sent, {result['received']} received, "
        f"p50 {median(latencies):.2f} ms, failures {dict(failures)}; {xacts} transactions "
        f"(closes and the probes included), server CPU {cpu:.2f}s",
    )
    return [
        Metric(
            "pg_many_streams_latency_p99",
            percentile(latencies, 99),
            "ms",
            goal=Goal("value", "<=", 100.0),
        ),
        Metric("pg_many_streams_statements_per_chunk", xacts / max(sent, 1), "stmt/chunk"),
        Metric("pg_many_streams_server_cpu_per_1k", cpu / max(sent, 1) * 1000, "s/1k chunks"),
    ]


# -- resume -----------------------------------------------------------------------------------


async def _resume(ctx: Context, url: str, conn: psycopg.AsyncConnection[Any]) -> Metric:
    n, rounds = 10_000, ctx.pick(5, 11)
    async with StreamHub.from_url(url, compact_finished=False) as h:
        sid = new_id("resume")
        producer = (await h.register(sid)).producer
        assert producer is not None
        for _ in range(n):
            await producer.publish(TOKEN)  # one row per chunk, as an LLM's pace writes them
        await producer.close()
        gen = producer.generation
        lib: list[float] = []
        raw: list[float] = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            got = 0
            async with h.subscribe(sid, after=Cursor(gen, n // 2)) as sub:
                async for item in sub:
                    if isinstance(item, Chunk):
                        got += 1
            assert got == n - n // 2, got
            lib.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            after, rows = n // 2, 0
            while True:
                cur = await conn.execute(
                    "SELECT last_offset, body FROM streamhub_log WHERE session_id = %s "
                    "AND (generation, last_offset) > (%s, %s) ORDER BY generation, last_offset "
                    "LIMIT 1000",
                    (sid, gen, after),
                )
                page = await cur.fetchall()
                rows += len(page)
                if len(page) < 1000:
                    break
                after = page[-1][0]
            raw.append((time.perf_counter() - t0) * 1000)
    return Metric(
        "pg_resume_catchup_ms",
        median(lib),
        "ms",
        reference=median(raw),
        goal=Goal("ratio", "<=", 2.0),
        note=f"{n - n // 2} chunks",
    )


async def run(ctx: Context) -> list[Metric]:
    with private_server() as (url, log):
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(
                "CREATE TABLE raw_log (sid text, offs bigint, body bytea, PRIMARY KEY (sid, offs))"
            )
            persist = await _persist(ctx, url, conn)
            lib = await _e2e_library(ctx, url)
            raw = await _e2e_raw(ctx, url)
            idle = await _idle(ctx, url, log, conn)
            resume = await _resume(ctx, url, conn)
            many = await _many_streams(ctx, url, log, conn)
    ctx.note(
        "pg_e2e_latency",
        f"library p50/p99 {median(lib):.3f}/{percentile(lib, 99):.3f} ms, "
        f"raw {median(raw):.3f}/{percentile(raw, 99):.3f} ms ({len(lib)} samples)",
    )
    return [
        persist,
        Metric(
            "pg_e2e_latency_p50",
            median(lib),
            "ms",
            reference=median(raw),
            goal=Goal("ratio", "<=", 2.0),
        ),
        idle,
        resume,
        *many,
    ]
