"""``streamhub top``: the sessions on a Redis and their chunk rates, from bounded scans.

Sessions are found with ``SCAN`` (cursor-based, ``COUNT``-bounded, never ``KEYS``) over the
``<prefix>:{<sid>}:meta`` keys, on every primary of a Redis Cluster; at most ``--max-keys`` keys
are looked at per refresh, so a large keyspace costs a bounded amount of work and the table
says it is partial. Each session's record is then read through the hub (one pipelined script
call per session, as ``GET /status`` does), and the chunk rate is the growth of its chunk count
between two samples ``--interval`` seconds apart.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import anyio

from .._hub import StreamHub
from .._types import SessionInfo, State
from ..backends._keys import Keys

__all__ = ["Row", "Sample", "render", "rows", "sample", "scan_session_ids", "top"]

_SCAN_COUNT = 1000  # keys a SCAN call looks at (a hint to Redis, bounded work per call)
_INFO_BATCH = 500  # sessions per pipelined read


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _nodes(client: Any) -> list[Any]:
    """The nodes to scan: every primary of a cluster, else the one server (None)."""
    get_primaries = getattr(client, "get_primaries", None)
    return list(get_primaries()) if callable(get_primaries) else [None]


async def scan_session_ids(client: Any, prefix: str, max_keys: int) -> tuple[list[str], bool]:
    """Session ids of the ``<prefix>:{<sid>}:meta`` keys, and whether the scan was cut short.

    At most about ``max_keys`` keys are examined in all (``SCAN ... COUNT`` calls); on a cluster
    the budget is shared by the primaries.
    """
    keys = Keys(prefix)
    found: dict[str, None] = {}
    budget = max_keys
    partial = False
    for node in _nodes(client):
        cursor: int = 0
        kwargs = {} if node is None else {"target_nodes": node}
        while True:
            if budget <= 0:
                partial = True
                break
            count = min(_SCAN_COUNT, budget)
            budget -= count
            reply = await client.scan(cursor, match=keys.meta_pattern, count=count, **kwargs)
            cursor, names = reply
            if isinstance(cursor, dict):  # a cluster gives the cursor per node, even for one
                (cursor,) = cursor.values()
            for key in names:
                session_id = keys.session_of_meta(_text(key))
                if session_id is not None:
                    found[session_id] = None
            if int(cursor) == 0:
                break
    return list(found), partial


@dataclass(frozen=True, slots=True)
class Sample:
    """The records found by one scan, and when."""

    at: float
    infos: dict[str, SessionInfo]
    partial: bool


async def sample(hub: StreamHub, client: Any, max_keys: int) -> Sample:
    """Scan for sessions and read their records."""
    listing = getattr(hub.backend, "session_ids", None)
    if callable(listing):
        # PostgreSQL: one indexed query instead of a scan.
        ids, partial = await listing(max_keys)
    else:
        ids, partial = await scan_session_ids(client, hub.settings.key_prefix, max_keys)
    infos: dict[str, SessionInfo] = {}
    for start in range(0, len(ids), _INFO_BATCH):
        batch = ids[start : start + _INFO_BATCH]
        for info in await hub.backend.info(batch):
            if info is not None:  # expired or deleted between the scan and the read
                infos[info.session_id] = info
    return Sample(time.monotonic(), infos, partial)


Row = tuple[str, str, int, float | None, float]


def rows(before: Sample, after: Sample, *, include_finished: bool) -> list[Row]:
    """``(session, state, chunks, chunks per second or None, age in seconds)``, busiest first."""
    elapsed = max(after.at - before.at, 1e-9)
    now = time.time()
    out = []
    for sid, info in after.infos.items():
        if info.state is not State.ACTIVE and not include_finished:
            continue
        old = before.infos.get(sid)
        rate: float | None = None
        if old is not None:
            # A new generation restarts the count from zero.
            grown = info.chunks - (old.chunks if old.generation == info.generation else 0)
            rate = max(grown, 0) / elapsed
        out.append((sid, info.state.value, info.chunks, rate, max(0.0, now - info.created_at)))
    out.sort(key=lambda r: (-(r[3] or 0.0), -r[2], r[0]))
    return out


def render(table: Sequence[Row], *, limit: int, what: str, partial: bool) -> str:
    """The first ``limit`` rows as text, after a header line that counts them all."""
    note = " (partial scan: raise --max-keys to see more)" if partial else ""
    lines = [f"{len(table)} {what} sessions, {min(limit, len(table))} shown{note}"]
    lines.append(f"{'SESSION':<32} {'STATE':<9} {'CHUNKS':>8} {'CHUNKS/S':>9} {'AGE':>8}")
    for sid, state, chunks, rate, age in table[:limit]:
        shown_rate = "-" if rate is None else f"{rate:.1f}"
        lines.append(f"{sid:<32} {state:<9} {chunks:>8} {shown_rate:>9} {age:>7.0f}s")
    return "\n".join(lines) + "\n"


async def top(hub: StreamHub, client: Any, args: argparse.Namespace, out: TextIO) -> int:
    """Print the table every ``--interval`` seconds (once with ``--once``)."""
    before = await sample(hub, client, args.max_keys)
    while True:
        await anyio.sleep(args.interval)
        after = await sample(hub, client, args.max_keys)
        table = rows(before, after, include_finished=args.all)
        if not args.once and out.isatty():
            out.write("\x1b[H\x1b[2J")  # clear the screen, as top does
        partial = after.partial or before.partial
        what = "known" if args.all else "active"
        out.write(render(table, limit=args.limit, what=what, partial=partial))
        out.flush()
        if args.once:
            return 0
        out.write("\n")
        before = after
