"""``http_throughput_ratio``: chunks/s through ``ResumableStreamingResponse`` vs ``StreamingResponse``.

Both serve the same generator (20,000 8-byte tokens, no sleep) from one uvicorn subprocess on
Redis; an httpx client in this process reads each response to its end. Runs alternate; medians.
"""

from __future__ import annotations

import httpx

from ._common import Context, Goal, Metric, median, new_id
from ._http import read_stream
from ._server import AppServer


async def run(ctx: Context) -> list[Metric]:
    n = 20_000
    rounds = ctx.pick(3, 7)
    lib: list[float] = []
    plain: list[float] = []
    server_cpu: list[float] = []
    with AppServer(ctx.url) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            for rnd in range(rounds + 1):
                cpu0 = server.cpu_seconds()
                got = await read_stream(client, f"/gen/resumable/{new_id('tput')}?n={n}")
                cpu1 = server.cpu_seconds()
                if got.ids != n or not got.ended:
                    raise RuntimeError(f"resumable: {got.ids}/{n} chunks")
                base = await read_stream(client, f"/gen/plain?n={n}", stop_at_end=False)
                if base.size != n * 8:
                    raise RuntimeError(f"plain: {base.size} bytes")
                if rnd:  # the first round warms up
                    lib.append(n / got.end)
                    plain.append(n / base.total)
                    server_cpu.append((cpu1 - cpu0) / n * 1e6)
                ctx.redis.flush()
    ctx.note(
        "http_throughput",
        f"{n} chunks x {rounds}; resumable runs {[round(x) for x in lib]}, plain runs "
        f"{[round(x) for x in plain]} chunks/s; server CPU per resumable chunk "
        f"{median(server_cpu):.1f} µs",
    )
    return [
        Metric(
            "http_throughput_ratio",
            median(lib),
            "chunks/s",
            reference=median(plain),
            goal=Goal("ratio", ">=", 0.5),
        )
    ]
