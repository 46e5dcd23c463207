"""``idle_cmds_per_s``: one active stream, one subscriber on another hub, no chunks.

Default settings. The producer's hub renews its lease (``renew_every`` = lease_ttl / 3) and the
subscriber's hub checks the producer's lease when it is due (``expire.lua``). Counted with
``INFO commandstats`` (including calls made inside Lua scripts) over the window; the top-level
count and the breakdown come from MONITOR (see ``_redis.py``).
"""

from __future__ import annotations

import anyio

from fastapi_streamhub import StreamHub

from ._common import Context, Goal, Metric, hub, new_id


async def _follow(h: StreamHub, session_id: str, started: anyio.Event) -> None:
    async with h.subscribe(session_id) as subscription:
        started.set()
        async for _ in subscription:
            pass


async def run(ctx: Context) -> list[Metric]:
    seconds = ctx.pick(10, 30)
    async with hub(ctx) as producing, hub(ctx) as following:
        session_id = new_id("idle")
        producer = (await producing.register(session_id)).producer
        assert producer is not None
        async with anyio.create_task_group() as tg:
            started = anyio.Event()
            tg.start_soon(_follow, following, session_id, started)
            await started.wait()
            await anyio.sleep(1.0)  # let the subscription settle (subscribe, info, replay)
            with ctx.redis.window() as window:
                await anyio.sleep(seconds)
            await producer.close()
    counts = window.counts
    ctx.note(
        "idle",
        f"{counts.seconds:.1f}s window, {counts.n_total} commands "
        f"({counts.n_top_level} top-level): {counts.describe()}",
    )
    return [
        Metric(
            "idle_cmds_per_s",
            counts.n_total / counts.seconds,
            "cmds/s",
            goal=Goal("value", "<=", 1.0),
            note="commandstats, including calls made inside Lua scripts",
        ),
        Metric(
            "idle_cmds_per_s_toplevel",
            counts.n_top_level / counts.seconds,
            "cmds/s",
            note="network round trips only",
        ),
    ]
