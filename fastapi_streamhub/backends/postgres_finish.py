"""The on_finish settle marks on the PostgreSQL backend: ``{p}_finish_claim`` and
``{p}_finish_settle`` on the session row (locked first), ``{p}_finish_take`` on the index
table of generations whose hook has not run (schema in ``postgres_sql_finish``)."""

from __future__ import annotations

from .base import FinishClaim
from .postgres_exec import PgExecutor

__all__ = ["PgFinishMethods"]

_CLAIMS: dict[str, FinishClaim] = {
    "claimed": "claimed",
    "busy": "busy",
    "settled": "settled",
    "gone": "gone",
}


class PgFinishMethods:
    """The settle-mark methods of :class:`PostgresBackend` (a base class of it, before
    ``Backend``, whose defaults they replace)."""

    _exec: PgExecutor

    async def expect_finish(self, session_id: str, generation: int) -> None:
        """See :meth:`Backend.expect_finish`: an entry already there keeps its time."""
        await self._exec.rows(
            "INSERT INTO {p}_finish_index VALUES (%s, %s, clock_timestamp()) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            (session_id, generation),
        )

    async def claim_finish(
        self, session_id: str, generation: int, token: str, ttl: float
    ) -> FinishClaim:
        """See :meth:`Backend.claim_finish`."""
        ttl_ms = max(1, round(ttl * 1000))
        reply = await self._exec.one(
            "SELECT {p}_finish_claim(%s, %s, %s, %s)", (session_id, generation, token, ttl_ms)
        )
        return _CLAIMS[str(reply)]

    async def settle(self, session_id: str, generation: int) -> None:
        """See :meth:`Backend.settle`: the mark and the index entry in one transaction."""
        await self._exec.rows("SELECT 1 FROM {p}_finish_settle(%s, %s)", (session_id, generation))

    async def unsettled(self, count: int, idle: float) -> list[tuple[str, int]]:
        """See :meth:`Backend.unsettled`."""
        idle_ms = max(0, round(idle * 1000))
        rows = await self._exec.rows("SELECT * FROM {p}_finish_take(%s, %s)", (count, idle_ms))
        return [(str(sid), int(gen)) for sid, gen in rows]
