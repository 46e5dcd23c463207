"""The on_finish settle marks on the PostgreSQL backend: ``{p}_finish_claim`` and
``{p}_finish_settle`` on the session row (locked first) or on a generation a claim kept
(``{p}_kept``), ``{p}_finish_take`` on the index table of generations whose hook has not run
(schema in ``postgres_sql_finish``), and ``read_generation`` of a current or kept generation."""

from __future__ import annotations

from typing import Any

import psycopg

from .._config import Settings
from .._types import SessionInfo
from ._replies import record_of
from .base import FinishClaim, ReadResult
from .postgres_exec import PgExecutor
from .postgres_rows import page_params, paged

__all__ = ["PgFinishMethods"]

# The record of a generation: the session's current one, or one it keeps (finished: no lease).
_GEN_RECORD_SQL = (
    "SELECT d.* FROM {p}_session s, LATERAL {p}_describe(s) d WHERE s.session_id = %(sid)s"
    " AND s.expires_at > clock_timestamp() AND s.generation = %(g)s"
    " UNION ALL SELECT k.generation, k.state, k.reason, k.n, k.metadata, k.created_ms,"
    " k.updated_ms, false, -2::bigint, {p}_now_ms() FROM {p}_kept k JOIN {p}_session s"
    " USING (session_id) WHERE k.session_id = %(sid)s AND k.generation = %(g)s"
    " AND s.generation <> %(g)s AND k.expires_at > clock_timestamp()"
    " AND s.expires_at > clock_timestamp()"
)
# A page of the log rows of that generation after offset o, under the byte budget.
_GEN_PAGE_SQL = paged(
    "l.session_id = %(sid)s AND l.generation = %(g)s AND l.last_offset > %(o)s", "l.last_offset"
)

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
    settings: Settings

    def _sql(self, text: str) -> bytes:
        return text.replace("{p}", self._exec.p).encode()

    async def expect_finish(self, session_id: str, generation: int) -> None:
        """See :meth:`Backend.expect_finish`: the mark on the session row, and the index entry
        (one already there keeps its time)."""
        await self._exec.rows("SELECT 1 FROM {p}_finish_expect(%s, %s)", (session_id, generation))

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

    async def read_generation(
        self, session_id: str, generation: int, after: int, count: int
    ) -> tuple[SessionInfo | None, ReadResult]:
        """See :meth:`Backend.read_generation`: the record (current or kept) and a page of the
        rows of ``generation`` (left in place under it when kept), in one round trip."""
        params = {
            "sid": session_id,
            "g": generation,
            "o": after,
            **page_params(self.settings.replay_batch_bytes, count),
        }

        async def go(conn: psycopg.AsyncConnection[Any]) -> tuple[list[Any], list[Any]]:
            async with conn.pipeline():
                c1 = await conn.execute(self._sql(_GEN_RECORD_SQL), params)
                c2 = await conn.execute(self._sql(_GEN_PAGE_SQL.rows), params, binary=True)
            return await c1.fetchall(), await c2.fetchall()

        records, rows = await self._exec.run(go)
        if not records:
            return None, ReadResult([], None, False)
        gen, state, reason, n, md, created, updated, cancel, lease_ms, now_ms = records[0]
        reply = [gen, state, reason, n, md, created, updated, True if cancel else None]
        info = record_of(session_id, [*reply, lease_ms, now_ms], self.settings.lease_ms)
        return info, await self._exec.page(_GEN_PAGE_SQL, rows, (generation, after), count, params)

    async def unsettled(self, count: int, idle: float) -> list[tuple[str, int]]:
        """See :meth:`Backend.unsettled`."""
        idle_ms = max(0, round(idle * 1000))
        rows = await self._exec.rows("SELECT * FROM {p}_finish_take(%s, %s)", (count, idle_ms))
        return [(str(sid), int(gen)) for sid, gen in rows]
