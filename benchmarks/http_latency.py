"""``http_e2e_latency_p50``: generator yield → bytes at an SSE client of *another* instance.

Two uvicorn subprocesses (A and B) on the same Redis. The client asks A for
``/gen/resumable/{sid}`` (which starts the generator there; its own response is read in the
background) and follows the same session on B through the router (``/streams/{sid}``). The
generator yields ``m<perf_counter_ns>;`` every 2 ms after a 0.5 s head start; the client stamps
each arrival (``CLOCK_MONOTONIC``, shared by every process of the machine).

Reference, beside it: the same generator as a plain ``StreamingResponse`` read from A directly.
"""

from __future__ import annotations

import anyio
import httpx

from ._common import Context, Goal, Metric, new_id, percentile
from ._http import read_latencies
from ._server import AppServer

INTERVAL = 0.002
HEAD_START = 0.5


async def run(ctx: Context) -> list[Metric]:
    n = ctx.pick(1_000, 5_000)
    query = f"n={n}&interval={INTERVAL}&start={HEAD_START}"
    with AppServer(ctx.url) as a, AppServer(ctx.url) as b:
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=60) as on_a,
            httpx.AsyncClient(base_url=b.url, timeout=60) as on_b,
        ):
            plain = await read_latencies(on_a, f"/gen/plain?{query}", n)
            lib: list[float] = []
            async with anyio.create_task_group() as tg:
                session_id = new_id("httplat")
                started = anyio.Event()

                async def producer_side() -> None:
                    async with on_a.stream("GET", f"/gen/resumable/{session_id}?{query}") as r:
                        r.raise_for_status()
                        started.set()
                        async for _ in r.aiter_raw():
                            pass

                tg.start_soon(producer_side)
                await started.wait()
                lib = await read_latencies(on_b, f"/streams/{session_id}", n)
    if len(lib) != n or len(plain) != n:
        raise RuntimeError(f"lost samples: resumable {len(lib)}/{n}, plain {len(plain)}/{n}")
    ctx.note(
        "http_e2e_latency",
        f"{n} chunks, 1 / {INTERVAL * 1e3:g} ms; via instance B p50/p99 "
        f"{percentile(lib, 50):.3f}/{percentile(lib, 99):.3f} ms; plain StreamingResponse on A "
        f"p50/p99 {percentile(plain, 50):.3f}/{percentile(plain, 99):.3f} ms",
    )
    return [
        Metric(
            "http_e2e_latency_p50",
            percentile(lib, 50),
            "ms",
            reference=percentile(plain, 50),
            goal=Goal("value", "<=", 2.0, "ms"),
        )
    ]
