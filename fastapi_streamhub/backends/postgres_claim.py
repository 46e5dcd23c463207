"""The claim of the PostgreSQL backend (``{p}_claim`` in ``postgres_sql``): a new generation,
a turn's join or supersession, and the refusal of an id a Durable Streams stream holds, in one
transaction."""

from __future__ import annotations

from .._config import Settings
from .._errors import InvalidSessionId
from .._types import State
from .base import ClaimResult
from .postgres_exec import PgExecutor

__all__ = ["PgClaimMethods"]


class PgClaimMethods:
    """``claim`` of :class:`PostgresBackend` (a base class of it, before ``Backend``)."""

    _exec: PgExecutor
    settings: Settings

    async def claim(
        self,
        session_id: str,
        *,
        token: str,
        restart: bool,
        metadata: bytes | None,
        turn: str | None = None,
    ) -> ClaimResult:
        """See :meth:`Backend.claim`."""
        s = self.settings
        rows = await self._exec.rows(
            "SELECT * FROM {p}_claim(%s, %s, %s, %s, %s, %s, %s)",
            (session_id, token, restart, metadata, s.lease_ms, s.retention_ms, turn),
        )
        created, generation, state = rows[0]
        if state == "ds":
            raise InvalidSessionId(f"{session_id!r} is a Durable Streams stream")
        return ClaimResult(bool(created), int(generation), State(state))
