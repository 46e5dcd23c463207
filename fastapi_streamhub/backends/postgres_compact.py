"""Compaction and the retention sweep of the PostgreSQL backend.

Compaction: a finished log is read here, folded (``_compact.fold``, the Redis backend's own
fold: the log rows have the same form as its entries) and swapped in by one call that checks
it is still the log read. Retention: every read ignores expired rows; the sweeper deletes
them in bounded batches, one sweeper at a time across hubs (an advisory lock).
"""

from __future__ import annotations

import logging
import random

import anyio
import anyio.lowlevel

from .._errors import BackendUnavailable
from ._compact import CompactScheduler, fold
from .postgres_exec import PgExecutor

__all__ = ["PgCompactMethods", "PgCompactor"]

log = logging.getLogger("fastapi_streamhub.postgres")

_COMPACT_PAGE = 1000
_COMPACT_MAX_BYTES = 16 * 1024 * 1024
SWEEP_BATCH = 500


class PgCompactor:
    """Folds finished logs (:meth:`compact`, :meth:`soon`) and sweeps expired sessions."""

    def __init__(self, executor: PgExecutor) -> None:
        self._exec = executor
        # Background runs of compact() after sessions end (shared with Redis: _compact);
        # attached to the hub's task group at start, closed at aclose.
        self.scheduler = CompactScheduler(self.compact, log)

    def soon(self, session_id: str) -> None:
        """Compact the session's finished log in the background (once at a time per session)."""
        if self._exec.settings.compact_finished:
            self.scheduler.soon(session_id)

    async def compact(self, session_id: str) -> bool:
        """Fold the finished log; False when there is nothing to do."""
        rows = await self._exec.rows(
            "SELECT generation, state, compacted FROM {p}_session "
            "WHERE session_id = %s AND expires_at > clock_timestamp()",
            (session_id,),
        )
        if not rows:
            return False
        gen, state, done = rows[0]
        if state == "active" or done == gen:
            return False
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        size = 0
        after = -1
        while True:
            page = await self._exec.rows(
                "SELECT last_offset, kind, body FROM {p}_log WHERE session_id = %s "
                "AND generation = %s AND last_offset > %s ORDER BY last_offset LIMIT %s",
                (session_id, gen, after, _COMPACT_PAGE),
            )
            for last, kind, body in page:
                field = b"e" if kind in ("e", b"e") else b"c"
                entries.append((b"%d-%d" % (gen, last), {field: bytes(body)}))
                size += len(body)
                after = last
            if size > _COMPACT_MAX_BYTES:
                return False
            if len(page) < _COMPACT_PAGE:
                break
        if len(entries) > _COMPACT_PAGE:
            folded = await anyio.to_thread.run_sync(fold, entries, int(gen))
        else:
            folded = fold(entries, int(gen))
        if folded is None:
            return False
        prefix = len(b"%d-" % gen)
        lasts = [int(eid[prefix:]) for eid, _ in folded.slices]
        bodies = [value for _, value in folded.slices]
        end_last = int(folded.end[0][prefix:])
        return bool(
            await self._exec.one(
                "SELECT {p}_compact(%s, %s, %s, %s, %s::bigint[], %s::bytea[])",
                (session_id, gen, folded.entries, end_last, lasts, bodies),
            )
        )

    async def sweep(self) -> int:
        """Delete up to one batch of expired sessions; how many (0 while another hub sweeps).
        Up to a batch of expired Durable Streams streams go in the same call."""
        sql = "SELECT {p}_sweep(%s), {p}_ds_sweep(%s)"
        return int(await self._exec.one(sql, (SWEEP_BATCH, SWEEP_BATCH)))

    async def sweeper(self) -> None:
        """Sweep every ``min(retention / 4, 1 h)`` or so, for as long as the hub runs."""
        period = min(self._exec.settings.retention / 4, 3600.0)
        while True:
            await anyio.sleep(period * (0.5 + random.random()))
            try:
                while await self.sweep() == SWEEP_BATCH:
                    await anyio.lowlevel.checkpoint()
            except BackendUnavailable as exc:
                log.warning("retention sweep failed: %s", exc)


class PgCompactMethods:
    """``compact`` and ``sweep`` of :class:`PostgresBackend` (a base class of it)."""

    _compactor: PgCompactor

    async def compact(self, session_id: str) -> bool:
        """Fold the finished log; False when there is nothing to do."""
        return await self._compactor.compact(session_id)

    async def sweep(self) -> int:
        """Delete up to one batch of expired sessions now; how many."""
        return await self._compactor.sweep()
