"""Profile the persist path with cProfile: ``python -m benchmarks.profile_persist [N]``.

Starts a private redis-server, sends N chunks (default 200,000) through ``producer.send`` +
``flush`` under cProfile, and prints the top functions by own time and by cumulative time.
The findings are kept in ``benchmarks/PROFILE.md``.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

import anyio

from fastapi_streamhub import StreamHub

from ._common import TOKEN, new_id
from ._redis import BenchRedis, cpu_seconds


async def _persist(url: str, n: int, profiler: cProfile.Profile) -> tuple[float, float]:
    async with StreamHub.from_url(url) as h:
        # warm-up: scripts, connections
        warm = (await h.register(new_id("warm"))).producer
        assert warm is not None
        for _ in range(1000):
            await warm.send(TOKEN)
        await warm.close()
        producer = (await h.register(new_id("profile"))).producer
        assert producer is not None
        t0 = time.perf_counter()
        profiler.enable()
        for _ in range(n):
            await producer.send(TOKEN)
        await producer.flush()
        profiler.disable()
        elapsed = time.perf_counter() - t0
        await producer.close()
        return elapsed, n / elapsed


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 200_000
    profiler = cProfile.Profile()
    with BenchRedis() as server:
        redis0 = cpu_seconds(server.pid)
        elapsed, rate = anyio.run(_persist, server.url, n, profiler)
        redis_cpu = cpu_seconds(server.pid) - redis0
    print(f"{n} chunks in {elapsed:.2f}s under cProfile ({rate:,.0f} chunks/s)")
    print(f"redis-server CPU: {redis_cpu:.2f}s ({redis_cpu / n * 1e6:.2f} µs/chunk)\n")
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(25)
        print(f"== by {key} ==")
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
