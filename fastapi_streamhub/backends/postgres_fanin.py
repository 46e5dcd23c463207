"""Fan-in of the PostgreSQL backend (``{p}_admit``, ``{p}_join``, ``{p}_append_shared``,
``{p}_end_part`` in ``postgres_sql_more``): the Lua scripts' rules, one function call each."""

from __future__ import annotations

from collections.abc import Sequence

from .._codec import chunks_head, frame
from .._config import Settings
from .base import Lost, SharedAppend
from .postgres_exec import PgExecutor
from .postgres_listen import inline
from .postgres_rows import lost_of

__all__ = ["PgFaninMethods"]


class PgFaninMethods:
    """The fan-in calls of :class:`PostgresBackend` (a base class of it, before ``Backend``)."""

    _exec: PgExecutor
    settings: Settings

    async def admit(self, session_id: str, generation: int, name: str) -> Lost | None:
        return lost_of(
            await self._exec.one("SELECT {p}_admit(%s, %s, %s)", (session_id, generation, name))
        )

    async def join(self, session_id: str, generation: int, name: str, token: str) -> Lost | None:
        return lost_of(
            await self._exec.one(
                "SELECT {p}_join(%s, %s, %s, %s)", (session_id, generation, name, token)
            )
        )

    async def append_shared(self, batches: Sequence[SharedAppend]) -> list[int | Lost]:
        out: list[int | Lost] = []
        for b in batches:
            value = frame(b.payloads)
            # The live record's tail (the frames) when the whole record fits NOTIFY.
            head = chunks_head(b.session_id.encode(), b.generation, 1 << 62, len(value))
            tail = inline(head + value)
            code = await self._exec.one(
                "SELECT {p}_append_shared(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    b.session_id,
                    b.generation,
                    b.name,
                    b.token,
                    b.seq,
                    len(b.payloads),
                    value,
                    self.settings.maxlen or 0,
                    "",
                    None if tail is None else value.decode(),
                ),
                limited=False,
            )
            if code.startswith("ok "):
                out.append(int(code[3:]))
            else:
                lost = lost_of(code)
                assert lost is not None
                out.append(lost)
        return out

    async def end_part(
        self, session_id: str, generation: int, name: str, token: str, *, last: int | None = None
    ) -> Lost | None:
        return lost_of(
            await self._exec.one(
                "SELECT {p}_end_part(%s, %s, %s, %s, %s)",
                (session_id, generation, name, token, last),
            )
        )
