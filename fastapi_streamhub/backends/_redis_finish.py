"""The on_finish settle marks on the Redis backend: ``lua/finish_expect.lua``,
``finish_claim.lua`` and ``finish_settle.lua`` on the session's record and the generations it
kept (one slot: ``meta``, ``kept``, ``klog``), ``finish_index.lua`` on the index of generations
whose hook has not run (one key of its own, ``<prefix>:finish``)."""

from __future__ import annotations

from typing import Any

from .._config import Settings
from .._errors import BackendUnavailable
from .._types import SessionInfo
from ._keys import Keys
from ._redis_exec import RedisExecutor
from ._replies import as_str, page_of, record_of
from .base import FinishClaim, ReadResult

__all__ = ["FINISH_SCRIPTS", "FinishMethods", "RedisFinish"]

FINISH_SCRIPTS = ("finish_claim", "finish_settle", "finish_index", "finish_expect")

# The fields of a kept generation's record (KEPT_FIELDS in lua/_lib.lua), in the order of
# _lib.lua's ``describe``: state, reason, n, md, created, updated.
_KEPT_READ = ("state", "reason", "n", "md", "created", "updated")

_CLAIMS: dict[str, FinishClaim] = {
    "claimed": "claimed",
    "busy": "busy",
    "settled": "settled",
    "gone": "gone",
}


def _member(session_id: str, generation: int) -> str:
    return f"{generation}:{session_id}"


class RedisFinish:
    """The settle-mark methods that :class:`RedisBackend` delegates to."""

    def __init__(self, executor: RedisExecutor, keys: Keys) -> None:
        self._exec = executor
        self._keys = keys

    @property
    def _index(self) -> str:
        return f"{self._keys.prefix}:finish"

    async def expect_finish(self, session_id: str, generation: int) -> None:
        """See :meth:`Backend.expect_finish`."""
        member = _member(session_id, generation)
        replies = await self._exec.pipeline(
            [
                ("EVALSHA", "finish_index", [self._index], ["add", member]),
                ("EVALSHA", "finish_expect", [self._keys.meta(session_id)], [generation]),
            ]
        )
        for reply in replies:
            if isinstance(reply, Exception):
                raise BackendUnavailable(f"could not index {session_id!r} for on_finish: {reply}")

    async def claim_finish(
        self, session_id: str, generation: int, token: str, ttl: float
    ) -> FinishClaim:
        """See :meth:`Backend.claim_finish`."""
        ttl_ms = max(1, round(ttl * 1000))
        keys = [self._keys.meta(session_id), self._keys.kept(session_id)]
        reply = await self._exec.script("finish_claim", keys, [generation, token, ttl_ms])
        return _CLAIMS[as_str(reply)]

    async def settle(self, session_id: str, generation: int) -> None:
        """See :meth:`Backend.settle`: the mark first, then the index entry (a crash between
        the two leaves an entry the sweep finds settled and removes)."""
        k = self._keys
        keys = [k.meta(session_id), k.kept(session_id), k.klog(session_id)]
        await self._exec.script("finish_settle", keys, [generation])
        await self._exec.pipeline([("ZREM", self._index, _member(session_id, generation))])

    async def unsettled(self, count: int, idle: float) -> list[tuple[str, int]]:
        """See :meth:`Backend.unsettled`."""
        idle_ms = max(0, round(idle * 1000))
        reply = await self._exec.script("finish_index", [self._index], ["take", count, idle_ms])
        out: list[tuple[str, int]] = []
        for member in reply:
            generation, _, session_id = as_str(member).partition(":")
            out.append((session_id, int(generation)))
        return out

    async def read_generation(
        self, session_id: str, generation: int, after: int, count: int, budget: int, lease_ms: int
    ) -> tuple[SessionInfo | None, ReadResult]:
        """See :meth:`Backend.read_generation`: the current record and the kept one, and a
        page of each log, in one round trip; the one holding ``generation`` answers."""
        k = self._keys
        page_args = [f"({generation}-{after}", count, budget]
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", "info", k.three(session_id), []),
            ("HMGET", k.kept(session_id), *(f"{generation}:{f}" for f in _KEPT_READ)),
            ("EVALSHA", "page", [k.log(session_id)], page_args),
            ("EVALSHA", "page", [k.klog(session_id)], page_args),
        ]
        record, kept, page, kept_page = await self._exec.pipeline(commands)
        for reply in (record, kept, page, kept_page):
            if isinstance(reply, Exception):
                raise BackendUnavailable(f"could not read session {session_id!r}: {reply}")
        after_cursor = (generation, after)
        info = record_of(session_id, record, lease_ms)
        if info is not None and info.generation == generation:
            return info, page_of(page, after_cursor, count)
        if kept[0] is None:
            return None, ReadResult([], None, False)
        state, reason, n, md, created, updated = kept
        described = [generation, state, reason, n, md, created, updated, None, 0, 0]
        return record_of(session_id, described, lease_ms), page_of(kept_page, after_cursor, count)


class FinishMethods:
    """RedisBackend's on_finish methods (the Backend contract's optional group), delegated to
    its :class:`RedisFinish`; inherited, so that ``redis.py`` stays about sessions."""

    _finish: RedisFinish
    settings: Settings

    async def expect_finish(self, session_id: str, generation: int) -> None:
        await self._finish.expect_finish(session_id, generation)

    async def claim_finish(
        self, session_id: str, generation: int, token: str, ttl: float
    ) -> FinishClaim:
        return await self._finish.claim_finish(session_id, generation, token, ttl)

    async def settle(self, session_id: str, generation: int) -> None:
        await self._finish.settle(session_id, generation)

    async def unsettled(self, count: int, idle: float) -> list[tuple[str, int]]:
        return await self._finish.unsettled(count, idle)

    async def read_generation(
        self, session_id: str, generation: int, after: int, count: int
    ) -> tuple[SessionInfo | None, ReadResult]:
        s = self.settings
        return await self._finish.read_generation(
            session_id, generation, after, count, s.replay_batch_bytes, s.lease_ms
        )
