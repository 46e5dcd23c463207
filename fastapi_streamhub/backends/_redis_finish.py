"""The on_finish settle marks on the Redis backend: ``lua/finish_claim.lua`` and
``finish_settle.lua`` on the session's record (one slot), ``finish_index.lua`` on the index of
generations whose hook has not run (one key of its own, ``<prefix>:finish``)."""

from __future__ import annotations

from ._keys import Keys
from ._redis_exec import RedisExecutor
from ._replies import as_str
from .base import FinishClaim

__all__ = ["FINISH_SCRIPTS", "RedisFinish"]

FINISH_SCRIPTS = ("finish_claim", "finish_settle", "finish_index")

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
        await self._exec.script("finish_index", [self._index], ["add", member])

    async def claim_finish(
        self, session_id: str, generation: int, token: str, ttl: float
    ) -> FinishClaim:
        """See :meth:`Backend.claim_finish`."""
        ttl_ms = max(1, round(ttl * 1000))
        meta = self._keys.meta(session_id)
        reply = await self._exec.script("finish_claim", [meta], [generation, token, ttl_ms])
        return _CLAIMS[as_str(reply)]

    async def settle(self, session_id: str, generation: int) -> None:
        """See :meth:`Backend.settle`: the mark first, then the index entry (a crash between
        the two leaves an entry the sweep finds settled and removes)."""
        await self._exec.script("finish_settle", [self._keys.meta(session_id)], [generation])
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
