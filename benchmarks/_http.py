"""Reading SSE responses with httpx and timing them."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import httpx

ID_MARK = b"\nid: "
END_MARK = b"event: end\n"


@dataclass
class Timed:
    """One streamed response: times (s, from just before the request) and what arrived."""

    first_id: float = 0.0
    end: float = 0.0
    total: float = 0.0
    ids: int = 0
    ended: bool = False
    size: int = 0
    chunks: list[bytes] = field(default_factory=list)


async def read_stream(
    client: httpx.AsyncClient,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    stop_at_end: bool = True,
    keep: bool = False,
) -> Timed:
    """GET ``path`` as a stream; note when the first ``id:`` and the ``end`` event arrive."""
    out = Timed()
    tail = b""
    t0 = time.perf_counter()
    async with client.stream("GET", path, headers=headers) as response:
        response.raise_for_status()
        async for data in response.aiter_raw():
            now = time.perf_counter()
            window = tail + data
            if not out.first_id and ID_MARK in window:
                out.first_id = now - t0
            out.ids += window.count(ID_MARK) - tail.count(ID_MARK)
            out.size += len(data)
            if keep:
                out.chunks.append(data)
            if END_MARK in window:
                out.end = now - t0
                out.ended = True
                if stop_at_end:
                    break
            tail = window[-16:]
    out.total = time.perf_counter() - t0
    if not out.end:
        out.end = out.total
    return out


STAMP = re.compile(rb"m(\d+);")


async def read_latencies(
    client: httpx.AsyncClient, path: str, expected: int, *, headers: dict[str, str] | None = None
) -> list[float]:
    """Read ``m<perf_counter_ns>;`` stamps until ``expected`` arrived; latencies in ms."""
    out: list[float] = []
    pending = b""
    async with client.stream("GET", path, headers=headers) as response:
        response.raise_for_status()
        async for data in response.aiter_raw():
            now = time.perf_counter_ns()
            buffer = pending + data
            cut = buffer.rfind(b";") + 1
            for stamp in STAMP.findall(buffer, 0, cut):
                out.append((now - int(stamp)) / 1e6)
            pending = buffer[cut:]
            if len(out) >= expected:
                break
    return out
