# ruff: noqa: F811  (test_http's fixtures are imported, then named as parameters)
"""Fan-in over HTTP across two real uvicorn instances on one Redis (``tests/http_app.py``):
the owner on A admits two producers, which join on A and on B and write concurrently; SSE
readers on both instances, live and resumed, read exactly the same chunks in one order."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import httpx
import pytest
from support.sids import new_sid
from support.sse_client import SSEResult, read_sse
from test_http import (  # noqa: F401  (fixtures: used by name)
    Env,
    app_log_dir,
    assert_complete,
    assert_increasing,
    env,
    servers,
    start_reader,
    store,
)

pytestmark = pytest.mark.anyio


def parts(res: SSEResult) -> list[tuple[str | None, str | None, Any]]:
    """``(id, producer, data)`` of every chunk: the owner's are plain text (``message``
    events, unchanged by fan-in), the others' ``part`` events."""
    out: list[tuple[str | None, str | None, Any]] = []
    for chunk in res.chunks:
        if chunk.kind == "text":
            out.append((chunk.id, None, chunk.value))
        else:
            assert chunk.kind == "part", chunk
            out.append((chunk.id, chunk.value["producer"], chunk.value["data"]))
    return out


class _Clients:
    def __init__(self, ca: httpx.AsyncClient, cb: httpx.AsyncClient) -> None:
        self.ca, self.cb = ca, cb


async def post(client: httpx.AsyncClient, url: str, params: dict[str, Any] | None = None) -> Any:
    resp = await client.post(url, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_two_sub_producers_on_two_instances_interleave_into_one_session(env: Env) -> None:
    await two_sub_producers_interleave(env.ca, env.cb)


async def two_sub_producers_interleave(ca: httpx.AsyncClient, cb: httpx.AsyncClient) -> None:
    """The owner on A, sub-producers joined on A and B, readers on both: one order everywhere,
    each producer's chunks in its own order, a resume and a replay exact (also run on
    PostgreSQL by tests/test_postgres.py)."""
    env = _Clients(ca, cb)
    sid = new_sid("fanin")
    n, delay = 30, 0.01
    owner = {"names": "planner,coder", "n": 10, "delay": 0.02}
    grants = (await post(env.ca, f"/fanin/{sid}/owner", owner))["grants"]
    async with anyio.create_task_group() as tg:
        live = [
            await start_reader(tg, c, f"/streams/{sid}", min_chunks=0) for c in (env.ca, env.cb)
        ]
        async with anyio.create_task_group() as joins:
            joins.start_soon(post, env.ca, "/fanin/join", {"grant": grants["planner"], "n": n})
            joins.start_soon(
                post, env.cb, "/fanin/join", {"grant": grants["coder"], "n": n, "delay": delay}
            )
            # A reader that joins mid-stream and leaves, to resume on the other instance.
            first = await read_sse(env.cb, f"/streams/{sid}", stop_after_chunks=n // 2)
        assert (await post(env.ca, f"/fanin/{sid}/finish")) == {"state": "done"}

    for res in live:
        assert_complete(res)
    reference = parts(live[0])
    assert parts(live[1]) == reference
    assert len(reference) == 2 * n + 10
    assert_increasing([i for i, _, _ in reference if i is not None])
    for name, count in (("planner", n), ("coder", n), (None, 10)):
        label = name or "o"
        assert [d for _, p, d in reference if p == name] == [f"{label}{i}" for i in range(count)]
    switches = sum(1 for a, b in itertools.pairwise(reference) if a[1] != b[1])
    assert switches >= 2, reference

    # Resumed on A after part of the stream read on B: exactly the rest.
    assert first.last_id is not None
    rest = await read_sse(env.ca, f"/streams/{sid}", headers={"Last-Event-ID": first.last_id})
    assert_complete(rest)
    assert parts(first) + parts(rest) == reference
    # And a replay of the finished session on B.
    replay = await read_sse(env.cb, f"/streams/{sid}")
    assert_complete(replay)
    assert parts(replay) == reference
