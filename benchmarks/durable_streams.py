"""``ds_*``: the Durable Streams router against the protocol's reference server
(``@durable-streams/server`` 0.3.7, in memory, Node; ``benchmarks/node_ds/``, installed with
``npm ci`` on first use), same machine, same client, same workload.

- appends: POSTs of a 64-byte ``text/plain`` body to one stream, by ``WRITERS``
  concurrent keep-alive connections of a minimal HTTP/1.1 writer (httpx, three times costlier
  than either server per request, made the client the bottleneck); appends/s.
- long-poll: a reader waits in ``live=long-poll`` at the tail; a writer appends one 64-byte
  body once the reader's request is pending (a 5 ms head start); the time from the POST to the
  reader's answer, median and p90.

Memory, the reference server and a floor (``_ds_floor_app``: the same requests answered by
hand in a plain FastAPI app on the same uvicorn, what any FastAPI app pays per request) run
side by side and are measured in alternating rounds (a warm-up round each first, not
counted): the append rate is the median of the rounds' rates, the latencies are pooled. A
single measurement of each, one after the other, spread the ratio 0.77-1.13 from run to run
(the machine's speed drifts within a run).

Ours runs on memory (the reference's store), and on Redis and PostgreSQL (informational: the
durable ones; PostgreSQL private to the run, started as ``benchmarks/pg.py`` does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
from anyio.abc import ByteStream

from ._common import Context, Goal, Metric, median, new_id, percentile
from ._redis import HOST, free_port
from ._server import AppServer
from .pg import private_server

NODE_DIR = Path(__file__).resolve().parent / "node_ds"
BODY = b"x" * 64
WRITERS = 8
_DS_APP = "benchmarks._ds_app:app"
_FLOOR_APP = "benchmarks._ds_floor_app:app"


def _install() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError("node and npm are needed for the reference server")
    if not (NODE_DIR / "node_modules" / "@durable-streams" / "server").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return node


@contextmanager
def reference_server() -> Iterator[str]:
    """The reference server on a free loopback port: its base URL."""
    node = _install()
    port = free_port()
    proc = subprocess.Popen(
        [node, "serve.mjs", str(port), "5000"],
        cwd=NODE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "NODE_ENV": "production"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if b"READY" not in line:
            raise RuntimeError(f"reference server did not start: {line!r}")
        yield f"http://{HOST}:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _answer(stream: ByteStream, buf: bytearray) -> bytes:
    """One HTTP/1.1 answer's status line and headers from ``stream`` (its body, if any, read
    and dropped); ``buf`` keeps what came after it."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        buf += await stream.receive()
    head = bytes(buf[:end])
    del buf[: end + 4]
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            size = int(value)
            while len(buf) < size:
                buf += await stream.receive()
            del buf[:size]
    return head


async def _appends(base: str, n: int) -> float:
    """``n`` appends by ``WRITERS`` keep-alive connections; appends/s.

    The appends go through a minimal HTTP/1.1 writer over a socket (one request written, its
    answer read): httpx costs about 1.3 ms of the client's CPU per request here, three times
    what either server spends on one, so with it the client's core decided the rate.
    """
    stream_id = new_id("dsa")
    url = f"{base}/v1/stream/{stream_id}"
    headers = {"Content-Type": "text/plain"}
    host, port = base.removeprefix("http://").rsplit(":", 1)
    request = (
        f"POST /v1/stream/{stream_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    async with httpx.AsyncClient(timeout=30) as c:
        if (await c.put(url, headers=headers)).status_code != 201:
            raise RuntimeError("create refused")
        left = n

        async def writer() -> None:
            nonlocal left
            buf = bytearray()
            async with await anyio.connect_tcp(host, int(port)) as stream:
                while left > 0:
                    left -= 1
                    await stream.send(request)
                    head = await _answer(stream, buf)
                    if not head.startswith(b"HTTP/1.1 204"):
                        raise RuntimeError(f"append answered {head[:40]!r}")

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(WRITERS):
                tg.start_soon(writer)
        elapsed = time.perf_counter() - t0
        size, offset = 0, "-1"
        while True:  # every byte is there (offsets are each server's own)
            page = await c.get(url, params={"offset": offset})
            size += len(page.content)
            offset = page.headers["stream-next-offset"]
            if page.headers.get("stream-up-to-date") == "true":
                break
        if size != n * len(BODY):
            raise RuntimeError(f"{size} bytes after {n} appends")
    return n / elapsed


async def _long_polls(base: str, rounds: int) -> list[float]:
    url = f"{base}/v1/stream/{new_id('dsl')}"
    headers = {"Content-Type": "text/plain"}
    out: list[float] = []
    async with httpx.AsyncClient(timeout=30) as reader, httpx.AsyncClient(timeout=30) as writer:
        created = await writer.put(url, headers=headers)
        offset = created.headers["stream-next-offset"]
        got: list[float] = []

        async def poll(at: str) -> None:
            answer = await reader.get(url, params={"offset": at, "live": "long-poll"})
            got.append(time.perf_counter())
            if answer.status_code != 200 or answer.content != BODY:
                raise RuntimeError(f"long-poll answered {answer.status_code}")

        for _ in range(rounds):
            got.clear()
            async with anyio.create_task_group() as tg:
                tg.start_soon(poll, offset)
                await anyio.sleep(0.005)  # the reader's request is pending at the tail
                sent = time.perf_counter()
                answer = await writer.post(url, headers=headers, content=BODY)
                offset = answer.headers["stream-next-offset"]
            out.append((got[0] - sent) * 1000)
    return out


async def _measure(base: str, appends: int, polls: int) -> tuple[list[float], list[float]]:
    """One round on one server: its append rate, and its long-poll latencies."""
    return [await _appends(base, appends)], await _long_polls(base, polls)


async def run(ctx: Context) -> list[Metric]:
    rounds = ctx.pick(4, 8)
    appends = ctx.pick(300, 500)  # per round
    polls = ctx.pick(15, 25)  # per round
    results: dict[str, tuple[float, float, float]] = {}
    # Memory against the reference: both servers up, rounds alternating (and a warm-up round
    # each, not counted), so a drift of the machine's speed during the run weighs on both.
    with (
        reference_server() as ref_base,
        AppServer("memory://", app=_DS_APP) as memory,
        AppServer("memory://", app=_FLOOR_APP) as floor,
    ):
        bases = {"reference": ref_base, "memory": memory.url, "floor": floor.url}
        rates: dict[str, list[float]] = {k: [] for k in bases}
        lats: dict[str, list[float]] = {k: [] for k in bases}
        for base in bases.values():
            await _measure(base, 50, 3)
        for i in range(rounds):
            for name in sorted(bases, reverse=bool(i % 2)):
                rate, lat = await _measure(bases[name], appends, polls)
                rates[name] += rate
                lats[name] += lat
        for name in bases:
            results[name] = (median(rates[name]), median(lats[name]), percentile(lats[name], 90))
    with private_server() as (pg_url, _log):
        for name, store in (("redis", ctx.url), ("postgres", pg_url)):
            with AppServer(store, app=_DS_APP) as server:
                await _measure(server.url, 50, 3)
                rate_l, lat = await _measure(server.url, appends * rounds, polls * rounds)
            ctx.redis.flush()
            results[name] = (rate_l[0], median(lat), percentile(lat, 90))
    ref = results["reference"]
    ctx.note(
        "durable_streams",
        f"{rounds} alternating rounds of {appends} appends by {WRITERS} writers and {polls} "
        "long-polls (memory and the reference; rates: median of the rounds); "
        + "; ".join(
            f"{k}: {v[0]:.0f} appends/s, long-poll p50 {v[1]:.2f} ms p90 {v[2]:.2f} ms"
            for k, v in results.items()
        ),
    )
    return [
        Metric(
            "ds_append_rate_memory",
            results["memory"][0],
            "appends/s",
            ref[0],
            Goal("ratio", ">=", 1.0),
            "ours on memory vs the reference server (memory)",
        ),
        Metric(
            "ds_append_rate_floor",
            results["floor"][0],
            "appends/s",
            ref[0],
            note="the same requests answered by hand in a plain FastAPI app (the floor)",
        ),
        Metric(
            "ds_longpoll_p50_floor",
            results["floor"][1],
            "ms",
            ref[1],
            note="append to long-poll answer, by hand in a plain FastAPI app (the floor)",
        ),
        Metric(
            "ds_append_rate_redis",
            results["redis"][0],
            "appends/s",
            ref[0],
            note="ours on Redis (durable, any instance) vs the reference server (memory)",
        ),
        Metric(
            "ds_longpoll_p50_memory",
            results["memory"][1],
            "ms",
            ref[1],
            Goal("ratio", "<=", 1.0),
            "append to long-poll answer, ours on memory vs the reference",
        ),
        Metric(
            "ds_longpoll_p50_redis",
            results["redis"][1],
            "ms",
            ref[1],
            note="append to long-poll answer, ours on Redis vs the reference (memory)",
        ),
        Metric(
            "ds_append_rate_postgres",
            results["postgres"][0],
            "appends/s",
            ref[0],
            note="ours on PostgreSQL (durable, any instance) vs the reference server (memory)",
        ),
        Metric(
            "ds_longpoll_p50_postgres",
            results["postgres"][1],
            "ms",
            ref[1],
            note="append to long-poll answer, ours on PostgreSQL vs the reference (memory)",
        ),
    ]
