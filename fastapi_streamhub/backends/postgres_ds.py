"""Durable Streams on the PostgreSQL backend: each operation one function call (one round
trip, one transaction; schema in ``postgres_sql_ds``), a fork included, since both streams are
in one database. Live readers are told on the data channel like a session's subscribers: an
append or a close sends ``S<sid>:0:<tail>`` (a ``StoredMsg``), a delete ``D``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._ds import DsAppend, DsAppended, DsCreated, DsFork, DsOutcome, DsSpec, DsStream
from .postgres_exec import PgExecutor

__all__ = ["PgDurable"]

_OUT = "outcome, tail, closed, content_type, ttl, expires_text, expires_ms, created_closed, "
_OUT += "epoch, seq, gone, fork_spec, data"


def _stream(row: Sequence[Any]) -> DsStream:
    """The stream part of a ``{p}_ds_out`` row."""
    spec = DsSpec(row[3], row[4], row[5], row[6], bool(row[7]), row[11])
    return DsStream(spec, int(row[1]), bool(row[2]), bool(row[10]))


class PgDurable:
    """Durable Streams of one :class:`PostgresBackend` (it delegates its ``ds_*`` methods here)."""

    def __init__(self, executor: PgExecutor) -> None:
        self._exec = executor

    @property
    def _retention_ms(self) -> int:
        return self._exec.settings.retention_ms

    async def create(
        self, stream_id: str, spec: DsSpec, data: bytes, fork: DsFork | None
    ) -> DsCreated:
        """See :meth:`Backend.ds_create`."""
        rows = await self._exec.rows(
            f"SELECT {_OUT} FROM {{p}}_ds_create(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                stream_id,
                spec.content_type,
                spec.ttl,
                spec.expires_at,
                spec.expires_ms,
                spec.closed,
                data,
                self._retention_ms,
                spec.fork,
                fork.source if fork else None,
                fork.offset if fork else None,
                fork.sub if fork else 0,
                self._exec.settings.ds_max_streams,
            ),
        )
        row = rows[0]
        return DsCreated(row[0], None if row[1] is None else _stream(row))

    async def append(self, stream_id: str, append: DsAppend) -> DsAppended:
        """See :meth:`Backend.ds_append`."""
        producer = append.producer
        rows = await self._exec.rows(
            f"SELECT {_OUT} FROM {{p}}_ds_append(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                stream_id,
                append.data,
                append.content_type,
                None if append.seq is None else append.seq.encode(),
                producer.id if producer else None,
                producer.epoch if producer else 0,
                producer.seq if producer else 0,
                append.close,
                self._retention_ms,
            ),
        )
        if not rows:
            return DsAppended(DsOutcome.NOT_FOUND, None)
        row = rows[0]
        return DsAppended(DsOutcome(row[0]), _stream(row), int(row[8]), int(row[9]))

    async def read(
        self, stream_id: str, offset: int, limit: int, touch: bool
    ) -> tuple[DsStream, bytes] | None:
        """See :meth:`Backend.ds_read`."""
        rows = await self._exec.rows(
            f"SELECT {_OUT} FROM {{p}}_ds_read(%s, %s, %s, %s, %s)",
            (stream_id, offset, limit, touch, self._retention_ms),
        )
        if not rows:
            return None
        return _stream(rows[0]), bytes(rows[0][12])

    async def delete(self, stream_id: str) -> str:
        """See :meth:`Backend.ds_delete`."""
        return str(await self._exec.one("SELECT {p}_ds_delete(%s)", (stream_id,)))

    async def sweep(self) -> int:
        """Drop up to 500 expired streams now; how many."""
        return int(await self._exec.one("SELECT {p}_ds_sweep(500)"))
