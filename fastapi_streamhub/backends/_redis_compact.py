"""Compaction on the Redis backend: a finished log read here, folded (``_compact.fold``), swapped in.

Redis only serves reads and one short write (``compact.lua``, which checks that the log is
still the one read); the folding runs in this process, in a thread for long logs.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._errors import BackendUnavailable
from ._compact import CompactScheduler, fold
from ._keys import Keys
from ._redis_exec import RedisExecutor
from ._replies import as_bytes, as_str, fields_of

__all__ = ["RedisCompactor"]

log = logging.getLogger("fastapi_streamhub.redis")

# Compaction reads a log in pages of this many entries, and leaves logs over this size alone
# (the swap script takes the whole folded log as arguments).
_COMPACT_PAGE = 1000
_COMPACT_MAX_BYTES = 16 * 1024 * 1024
_COMPACT_INLINE = 1000


class RedisCompactor:
    """Folds finished logs: on demand (:meth:`compact`) or soon after they end (:meth:`soon`)."""

    def __init__(self, executor: RedisExecutor, keys: Keys, task_group: TaskGroup | None) -> None:
        self._exec = executor
        self._keys = keys
        # Background runs of compact() after sessions end (shared with PostgreSQL: _compact).
        self.scheduler = CompactScheduler(self.compact, log)
        if task_group is not None:
            self.scheduler.attach(task_group)

    def soon(self, session_id: str) -> None:
        """Compact the session's finished log in the background (once at a time per session)."""
        if self._exec.settings.compact_finished:
            self.scheduler.soon(session_id)

    async def compact(self, session_id: str) -> bool:
        """Read the finished log, fold it here, swap it in with ``compact.lua`` (which checks
        that the log is still the one read): Redis only serves reads and one short write."""
        meta, key = self._keys.meta(session_id), self._keys.log(session_id)
        record, page = await self._exec.pipeline(
            [
                ("HMGET", meta, "gen", "state", "compact"),
                ("XRANGE", key, "-", "+", "COUNT", _COMPACT_PAGE),
            ]
        )
        if isinstance(record, Exception) or isinstance(page, Exception):
            raise BackendUnavailable(f"could not read session {session_id!r}: {record or page}")
        gen, state, done = record
        if gen is None or state is None or as_str(state) == "active" or done == gen:
            return False
        client: Any = self._exec.client
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        size = 0
        while True:
            for entry_id, raw in page:
                fields = fields_of(raw)
                entries.append((as_bytes(entry_id), fields))
                size += sum(map(len, fields.values()))
            if size > _COMPACT_MAX_BYTES:
                return False
            if len(page) < _COMPACT_PAGE:
                break
            after = b"(" + entries[-1][0]
            page = await self._exec.call(
                functools.partial(client.xrange, key, after, "+", count=_COMPACT_PAGE)
            )
        if len(entries) > _COMPACT_INLINE:
            # ~1.5 us per entry: a long log is folded in a thread, so the event loop (every
            # other stream of this process) is held for a GIL switch interval at most.
            folded = await anyio.to_thread.run_sync(fold, entries, int(gen))
        else:
            folded = fold(entries, int(gen))
        if folded is None:
            return False
        args: list[Any] = [int(gen), folded.entries, *folded.end]
        for entry_id, value in folded.slices:
            args += [entry_id, value]
        return bool(int(await self._exec.script("compact", [meta, key], args)))
