"""Profile the SSE responses in-process (no HTTP server): ``python -m benchmarks.profile_http``.

Two scenarios on a private redis-server, each called as a bare ASGI app with a ``send`` that
only counts what it is given:

- ``replay``: ``SessionStreamResponse`` resuming a finished 10,000-chunk stream from 0;
- ``live``: ``ResumableStreamingResponse`` of a 20,000-token generator (no sleep).

Prints wall time, how many ``http.response.body`` messages were sent (one per socket write in
uvicorn), and the cProfile top functions by own time.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from fastapi_streamhub import ResumableStreamingResponse, SessionStreamResponse, StreamHub

from ._common import TOKEN, new_id
from ._redis import BenchRedis

SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "GET",
    "path": "/",
    "headers": [],
    "query_string": b"",
}


async def _tokens(n: int) -> AsyncIterator[str]:
    for _ in range(n):
        yield TOKEN


class _Sink:
    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.body":
            self.messages += 1
            self.bytes += len(message.get("body", b""))

    async def receive(self) -> Any:
        await anyio.sleep_forever()


async def _scenarios(url: str, profiler: cProfile.Profile) -> list[str]:
    lines = []
    async with StreamHub.from_url(url) as h:
        session_id = new_id("replay")
        producer = (await h.register(session_id)).producer
        assert producer is not None
        for _ in range(10_000):
            await producer.send(TOKEN)
        await producer.close()

        def replay() -> SessionStreamResponse:
            return SessionStreamResponse(session_id, hub=h, after=None)

        def live() -> SessionStreamResponse:
            return ResumableStreamingResponse(new_id("live"), _tokens(20_000), hub=h)

        scenarios: list[tuple[str, Callable[[], SessionStreamResponse], int]] = [
            ("replay", replay, 10_000),
            ("live", live, 20_000),
        ]
        for name, make, n in scenarios:
            await make()(SCOPE, _Sink().receive, _Sink().send)  # warm-up
            sink = _Sink()
            response = make()
            t0 = time.perf_counter()
            profiler.enable()
            await response(SCOPE, sink.receive, sink.send)
            profiler.disable()
            elapsed = time.perf_counter() - t0
            lines.append(
                f"{name}: {n} chunks in {elapsed * 1e3:.0f} ms under cProfile, "
                f"{sink.messages} body messages, {sink.bytes} bytes"
            )
    return lines


def main() -> int:
    profiler = cProfile.Profile()
    with BenchRedis() as server:
        lines = anyio.run(_scenarios, server.url, profiler)
    print("\n".join(lines), "\n")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
