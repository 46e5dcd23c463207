"""``compacted_replay_ms``, ``compacted_memory_bytes`` and the round trips of a full replay.

A finished 10,000-chunk answer written the way an LLM streams it: one write per token, so one
log entry per chunk. Its record and log are then copied (``DUMP``/``RESTORE``) to a second
session, which is compacted (``Backend.compact``, timed, with the Redis CPU it took); the
uncompacted one is the reference, measured in the same run. A full replay is
``hub.subscribe(sid, batch_replay=True)`` read to its ``End`` in this process, on a hub with
compaction off (else the first replay of the reference would fold it); the two sessions
alternate, medians over the rounds. Round trips: the ``XRANGE`` calls of one replay (``INFO
commandstats``; the record's ``EVALSHA`` is pipelined with the first); memory: ``MEMORY USAGE
<log> SAMPLES 0``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi_streamhub import End, StreamHub

from ._common import TOKEN, Context, Goal, Metric, hub, median, new_id

CHUNKS = 10_000


def _log(session_id: str) -> str:
    return f"streamhub:{{{session_id}}}:log"


def _meta(session_id: str) -> str:
    return f"streamhub:{{{session_id}}}:meta"


async def _write(h: StreamHub, session_id: str) -> None:
    producer = (await h.register(session_id)).producer
    assert producer is not None
    for _ in range(CHUNKS):
        await producer.publish(TOKEN)  # awaited one by one: one entry per chunk, as paced
    await producer.close()


def _copy(ctx: Context, source: str, target: str) -> None:
    admin: Any = ctx.redis.admin
    for key in (_meta, _log):
        ttl = admin.pttl(key(source))
        admin.restore(key(target), ttl, admin.dump(key(source)))


async def _replay(ctx: Context, h: StreamHub, session_id: str) -> tuple[float, int]:
    """Seconds of a full replay, and its round trips."""
    before = ctx.redis.command_stats()
    t0 = time.perf_counter()
    n = 0
    async with h.subscribe(session_id, batch_replay=True) as subscription:
        async for item in subscription:
            if isinstance(item, End):
                break
            n += len(getattr(item, "chunks", ()))
    seconds = time.perf_counter() - t0
    after = ctx.redis.command_stats()
    if n != CHUNKS:
        raise RuntimeError(f"replay of {session_id}: {n} chunks")
    # The record (EVALSHA) rides in the first XRANGE's round trip: one round trip per XRANGE.
    return seconds, after["xrange"] - before["xrange"]


async def run(ctx: Context) -> list[Metric]:
    rounds = ctx.pick(15, 41)
    plain, folded = new_id("paced"), new_id("folded")
    admin: Any = ctx.redis.admin
    async with hub(ctx, compact_finished=False) as h:
        await _write(h, plain)
        _copy(ctx, plain, folded)
        entries_before = admin.xlen(_log(folded))
        memory_before = admin.memory_usage(_log(folded), samples=0)
        usec0 = admin.info("commandstats")
        t0 = time.perf_counter()
        if not await h.backend.compact(folded):
            raise RuntimeError("the log was not compacted")
        compact_ms = (time.perf_counter() - t0) * 1e3
        usec1 = admin.info("commandstats")
        redis_ms = sum(
            usec1[k]["usec"] - usec0.get(k, {"usec": 0})["usec"]
            for k in usec1
            if k in ("cmdstat_xrange", "cmdstat_evalsha")  # a script's time includes its calls
        )
        memory_after = admin.memory_usage(_log(folded), samples=0)
        entries_after = admin.xlen(_log(folded))
        times: dict[str, list[float]] = {plain: [], folded: []}
        trips: dict[str, int] = {}
        for rep in range(rounds + 1):
            for sid in (plain, folded) if rep % 2 else (folded, plain):
                seconds, trips[sid] = await _replay(ctx, h, sid)
                if rep:  # the first round warms up connections and scripts
                    times[sid].append(seconds * 1e3)
    ms = {sid: median(samples) for sid, samples in times.items()}
    ctx.note(
        "compaction",
        f"{CHUNKS} chunks of {TOKEN!r}, one entry each; log {entries_before} entries, "
        f"{memory_before} bytes -> {entries_after} entries, {memory_after} bytes "
        f"({1 - memory_after / memory_before:.0%} less); full replay median over {rounds} rounds "
        f"{ms[plain]:.2f} ms -> {ms[folded]:.2f} ms, round trips {trips[plain]} -> "
        f"{trips[folded]}; compaction {compact_ms:.1f} ms in the hub, "
        f"{redis_ms / 1000:.1f} ms of Redis time (XRANGE pages + swap script)",
    )
    return [
        Metric(
            "compacted_replay_ms",
            ms[folded],
            "ms",
            reference=ms[plain],
            goal=Goal("ratio", "<=", 0.5),
            note="full replay of a 10,000-chunk finished stream, compacted vs not",
        ),
        Metric(
            "compacted_memory_bytes",
            memory_after,
            "bytes",
            reference=memory_before,
            goal=Goal("ratio", "<=", 0.6),
            note="MEMORY USAGE of the log, compacted vs not",
        ),
        Metric(
            "compacted_replay_round_trips",
            trips[folded],
            "round trips",
            reference=trips[plain],
            note="round trips of one full replay (XRANGE calls; the record rides with the first)",
        ),
        Metric("compaction_ms", compact_ms, "ms", note="one compaction, as the hub runs it"),
    ]
