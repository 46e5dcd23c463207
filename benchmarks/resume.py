"""``resume_first_event_ms``, ``resume_catchup_ms`` and the near-end / near-start cost ratio.

A finished 10,000-chunk stream on Redis, served by uvicorn (subprocess) through the library's
router. An httpx client (this process, keep-alive connection) reconnects with ``Last-Event-ID``
at chunk 5,000 (and 100, 9,900): time to the first chunk event, and to the ``end`` event.
Medians over the repetitions. Each repetition resumes at 100 and 9,900, then the library and
the reference at 5,000 back to back, in alternating order.

Reference: ``/raw/{key}`` in the same app, a hand-written ``StreamingResponse`` resume (plain
``XRANGE`` pages, 100 then 1,000, framed as SSE, no checks) over a stream of the same 10,000
chunks written one entry per chunk, i.e. what a minimal implementation costs on the same server
and client.
"""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from ._common import TOKEN, Context, Goal, Metric, hub, median, new_id
from ._http import Timed, read_stream
from ._server import AppServer

CHUNKS = 10_000
MIDDLE = 5_000
POSITIONS = (100, MIDDLE, 9_900)


async def _make_stream(ctx: Context, session_id: str) -> int:
    async with hub(ctx) as h:
        producer = (await h.register(session_id)).producer
        assert producer is not None
        for _ in range(CHUNKS):
            await producer.send(TOKEN)
        await producer.close()
        return producer.generation


async def _make_raw_stream(ctx: Context, key: str, generation: int) -> None:
    """The baseline's data: one entry per chunk, ids ``<generation>-<offset>``, then an end."""
    client = Redis.from_url(ctx.url)
    try:
        for start in range(1, CHUNKS + 1, 500):
            async with client.pipeline(transaction=False) as pipe:
                for offset in range(start, min(start + 500, CHUNKS + 1)):
                    pipe.xadd(key, {"d": "t" + TOKEN}, id=f"{generation}-{offset}")
                await pipe.execute()
        await client.xadd(key, {"e": "done\n"}, id=f"{generation}-{CHUNKS + 1}")
    finally:
        await client.aclose()


async def _resume(client: httpx.AsyncClient, path: str, generation: int, position: int) -> Timed:
    """One resume with ``Last-Event-ID`` at ``position``, checked whole."""
    headers = {"Last-Event-ID": f"{generation}-{position}"}
    got = await read_stream(client, path, headers=headers)
    if got.ids != CHUNKS - position or not got.ended:
        raise RuntimeError(f"resume of {path} at {position}: {got.ids} chunks, no end")
    return got


async def run(ctx: Context) -> list[Metric]:
    reps = ctx.pick(15, 41)
    session_id = new_id("resume")
    generation = await _make_stream(ctx, session_id)
    raw_key = new_id("rawlog")
    await _make_raw_stream(ctx, raw_key, generation)
    lib: dict[int, list[Timed]] = {p: [] for p in POSITIONS}
    raw: list[Timed] = []
    with AppServer(ctx.url) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            for rep in range(reps + 1):
                # The two resumes at 5,000 (the library's and the reference's) run back to back,
                # in alternating order, after the two other positions: each follows a request
                # of the same kind (before, the library's followed its 9,900-chunk resume from
                # 100, whose teardown landed on it, and the reference's a 100-chunk one).
                for position in (100, 9_900):
                    got = await _resume(client, f"/streams/{session_id}", generation, position)
                    if rep:  # the first round warms up connections and scripts
                        lib[position].append(got)
                pair = [f"/streams/{session_id}", f"/raw/{raw_key}"]
                for path in pair if rep % 2 else pair[::-1]:
                    got = await _resume(client, path, generation, MIDDLE)
                    if rep:
                        (raw if path.startswith("/raw/") else lib[MIDDLE]).append(got)

    def ms(samples: list[Timed], what: str) -> float:
        return median([getattr(t, what) * 1e3 for t in samples])

    catchup = {p: ms(lib[p], "end") for p in POSITIONS}
    ctx.note(
        "resume",
        f"{reps} reps per position; catch-up median at 100/5000/9900: "
        + " / ".join(f"{catchup[p]:.2f}" for p in POSITIONS)
        + " ms; first event at 100/5000/9900: "
        + " / ".join(f"{ms(lib[p], 'first_id'):.2f}" for p in POSITIONS)
        + " ms; raw XRANGE baseline at 5000: first "
        + f"{ms(raw, 'first_id'):.2f} ms, end {ms(raw, 'end'):.2f} ms",
    )
    return [
        Metric(
            "resume_first_event_ms",
            ms(lib[MIDDLE], "first_id"),
            "ms",
            reference=ms(raw, "first_id"),
            # By ratio: the hand-written reference alone takes about 5 ms on this machine.
            goal=Goal("ratio", "<=", 1.2),
        ),
        Metric(
            "resume_catchup_ms",
            catchup[MIDDLE],
            "ms",
            reference=ms(raw, "end"),
            goal=Goal("ratio", "<=", 2.0),
        ),
        Metric(
            "resume_catchup_ratio_9900_vs_100",
            catchup[9_900],
            "ms",
            reference=catchup[100],
            goal=Goal("ratio", "<=", 0.5),
            note="catch-up from 9,900 (100 left) over from 100 (9,900 left)",
        ),
    ]
