"""PostgreSQL backend: a session row, a log of batches, and LISTEN/NOTIFY for live messages.

``PostgresBackend(pool)`` takes a ``psycopg_pool.AsyncConnectionPool`` the application already
has (it is left open at exit); ``PostgresBackend.from_url(url)`` (and ``StreamHub.from_url``
with ``postgresql://`` or ``postgres://``) builds and owns one. The schema (``postgres_sql``) is
created on the first start if absent, under an advisory lock, and refused on a version mismatch.

Every transition is one function call (one round trip, one transaction) that locks the session
row first; the writer's round trip is one call for all its batches and one NOTIFY transaction.
Live records are the Redis bus records (``_codec.records``) when they fit NOTIFY (under 8,000
bytes, UTF-8, no NUL); otherwise a notice (``S``, ``W``) makes readers read the store.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import psycopg
from anyio.abc import TaskGroup
from psycopg_pool import AsyncConnectionPool

from .._codec import (
    MetadataMsg,
    ResyncMsg,
    chunks_head,
    decode_record,
    frame,
    records,
    stored_record,
)
from .._config import Settings
from .._errors import BackendUnavailable
from .._fanout import Fanout, Listener
from .._types import SessionInfo, State
from ._ds import DurableMethods
from ._replies import record_of
from .base import (
    Append,
    Backend,
    ControlHandler,
    Lost,
    ReadResult,
    Sent,
)
from .postgres_claim import PgClaimMethods
from .postgres_compact import PgCompactMethods, PgCompactor
from .postgres_ds import PgDurable
from .postgres_exec import PgExecutor, SchemaMismatch, generic_plans
from .postgres_fanin import PgFaninMethods
from .postgres_finish import PgFinishMethods
from .postgres_listen import Listener as NotifyListener
from .postgres_listen import inline, notes, positive
from .postgres_rows import INFO_SQL, PAGE_SQL, appended, lost_of, page_params

__all__ = ["SCHEMES", "PostgresBackend", "SchemaMismatch"]

log = logging.getLogger("fastapi_streamhub.postgres")

SCHEMES = ("postgresql", "postgres")
_BIGINT = 2**63 - 1


class PostgresBackend(
    PgClaimMethods, PgFaninMethods, PgCompactMethods, PgFinishMethods, DurableMethods, Backend
):
    """Sessions in PostgreSQL; live delivery through one LISTEN connection fanned out locally."""

    first_page = 1
    # Three writer round trips in flight on three pool connections: a round trip's cost is
    # per batch (its share of a lock, an UPDATE and an INSERT), so thirds of the producers
    # overlap instead of queueing (against two: pg_many_streams p99 lower in 6 of 7 A/B pairs).
    write_slots = 3

    def __init__(
        self,
        pool: AsyncConnectionPool[Any] | None = None,
        *,
        conninfo: str | None = None,
        listen_conninfo: str | None = None,
        pool_size: int = 10,
        listen_heartbeat: float | None = None,
        listen_timeout: float | None = None,
    ) -> None:
        self._exec = PgExecutor()
        self._exec.pool = pool
        self._compactor = PgCompactor(self._exec)
        self._durable = PgDurable(self._exec)
        self._owned = pool is None
        if pool is not None:
            # The LISTEN connection is opened like the pool's, unless told otherwise.
            conninfo = conninfo or (pool.conninfo if isinstance(pool.conninfo, str) else None)
            kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else {}
        else:
            kwargs = {}
        if conninfo is None:
            raise ValueError(
                "PostgresBackend needs a pool or a conninfo (URL); a pool whose conninfo is a "
                "callable needs conninfo= for its LISTEN connection"
            )
        self._conninfo: str = conninfo
        self._kwargs: dict[str, Any] = dict(kwargs)
        self._listen_conninfo = listen_conninfo or conninfo
        self._pool_size = pool_size
        # The LISTEN connection's heartbeat period and answer timeout (None: from settings).
        self._heartbeat = positive("listen_heartbeat", listen_heartbeat)
        self._heartbeat_timeout = positive("listen_timeout", listen_timeout)
        self._fanout = Fanout()
        self._on_control: ControlHandler = lambda session_id, msg: None
        self._listener: NotifyListener | None = None
        self._configure(Settings())

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> PostgresBackend:
        """A backend on its own pool for ``postgresql://`` / ``postgres://`` URLs."""
        scheme = url.partition("://")[0].lower()
        if scheme not in SCHEMES:
            raise ValueError(f"not a PostgreSQL URL: {url!r}")
        return cls(conninfo=url, **kwargs)

    def _configure(self, settings: Settings) -> None:
        self.settings = settings
        self._exec.configure(settings)
        self.p = self._exec.p
        self.data_channel = f"{self.p}_data"
        self.ctl_channel = f"{self.p}_ctl"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(
        self, settings: Settings, task_group: TaskGroup, on_control: ControlHandler
    ) -> None:
        if settings.wait_replicas:
            raise ValueError(
                "wait_replicas is Redis' WAIT; on PostgreSQL make commits wait for a standby "
                "with synchronous_commit and synchronous_standby_names (see the README)"
            )
        self._configure(settings)
        self._on_control = on_control
        self._compactor.scheduler.attach(task_group)
        try:
            await self._open(settings, task_group)
        except SchemaMismatch:
            await self.aclose()
            raise
        except (psycopg.Error, TimeoutError) as exc:
            await self.aclose()
            raise BackendUnavailable(
                f"PostgreSQL unreachable at start: {type(exc).__name__}: {exc}"
            ) from exc
        task_group.start_soon(self._compactor.sweeper)

    async def _open(self, settings: Settings, task_group: TaskGroup) -> None:
        if self._owned:
            self._exec.pool = pool = AsyncConnectionPool(
                self._conninfo,
                min_size=1,
                max_size=self._pool_size,
                # The library's statements are few and run all the time: each is prepared on
                # its second run on a connection (psycopg's default: the sixth) and planned
                # once, generically (``generic_plans``: the log's primary key walked from a
                # cursor, even where the table was never analyzed).
                kwargs={
                    "autocommit": True,
                    "application_name": "streamhub",
                    "prepare_threshold": 1,
                },
                configure=generic_plans,
                open=False,
            )
            await pool.open(wait=True, timeout=settings.outage_timeout)
        elif self._exec.pool is not None and self._exec.pool.closed:
            # The application's pool, not opened yet (``open=False``): open it; it stays open.
            await self._exec.pool.open(wait=True, timeout=settings.outage_timeout)
        self._exec.bound(self.write_slots + 1)  # the writer's and the keeper's
        await self._exec.ensure_schema()
        self._listener = NotifyListener(
            self._listen_conninfo,
            self._kwargs,
            [self.data_channel, self.ctl_channel],
            self._on_notify,
            self._on_resync,
            # A half-open connection is found within heartbeat + timeout.
            heartbeat=self._heartbeat or min(10.0, settings.ping_interval),
            timeout=self._heartbeat_timeout or min(settings.outage_timeout, 5.0),
        )
        await self._listener.start(task_group)

    async def aclose(self) -> None:
        self._compactor.scheduler.close()
        if self._listener is not None:
            await self._listener.aclose()
            self._listener = None
        pool = self._exec.pool
        if self._owned and pool is not None:
            with anyio.CancelScope(shield=True):
                await pool.close()
            self._exec.pool = None

    @property
    def listener(self) -> NotifyListener | None:
        """The LISTEN connection's keeper (counters: ``reconnects``, ``missed_heartbeats``)."""
        return self._listener

    # -- live messages ---------------------------------------------------------------------

    def _on_notify(self, channel: str, payload: str) -> Awaitable[None] | None:
        data = payload.encode()
        if channel == self.data_channel:
            fanout = self._fanout
            for i, (tag, sid, body) in enumerate(recs := records(data)):
                if not fanout.has(sid):
                    continue
                if tag == b"W":
                    return self._woken(sid, body, recs[i + 1 :])
                fanout.dispatch(sid, decode_record(tag, body))
        elif channel == self.ctl_channel:
            for tag, sid, body in records(data):
                self._on_control(sid.decode(), decode_record(tag, body))
        return None

    async def _woken(self, sid: bytes, tag: bytes, rest: list[tuple[bytes, bytes, bytes]]) -> None:
        """A record too big for NOTIFY (``W``): metadata is read from the store and delivered,
        anything else makes the session's listeners repair from the log; then the records
        that followed it in the same notification."""
        if tag == b"M":
            try:
                info = (await self.info([sid.decode()]))[0]
            except BackendUnavailable as exc:
                log.warning("could not read the metadata of session %r: %s", sid, exc)
                info = None
            if info is not None:
                self._fanout.dispatch(sid, MetadataMsg(info.generation, info.metadata))
        else:
            self._fanout.dispatch(sid, ResyncMsg())
        for tag_, sid_, body in rest:
            if self._fanout.has(sid_):
                if tag_ == b"W":
                    await self._woken(sid_, body, [])
                else:
                    self._fanout.dispatch(sid_, decode_record(tag_, body))

    def _on_resync(self) -> None:
        self._on_control("", ResyncMsg())
        self._fanout.dispatch_all(ResyncMsg())

    @asynccontextmanager
    async def listen(self, session_id: str, listener: Listener) -> AsyncIterator[None]:
        # LISTEN is in place since start(): reading the store after this misses nothing.
        key = session_id.encode()
        self._fanout.add(key, listener)
        try:
            yield
        finally:
            self._fanout.remove(key, listener)

    # -- transitions -----------------------------------------------------------------------

    async def append(self, batches: Sequence[Append]) -> list[Lost | None]:
        sids, gens, firsts, lasts, bodies, recs = [], [], [], [], [], []
        for b in batches:
            value = frame(b.payloads)
            last = b.first + len(b.payloads) - 1
            sid = b.session_id.encode()
            rec = inline(chunks_head(sid, b.generation, b.first, len(value)) + value)
            if rec is None:
                rec = stored_record(sid, b.generation, last).decode()
            sids.append(b.session_id)
            gens.append(b.generation)
            firsts.append(b.first)
            lasts.append(last)
            bodies.append(value)
            recs.append(rec)
        codes = await self._exec.one(
            "SELECT {p}_append(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[], "
            "%s::bytea[], %s, %s::text[])",
            (sids, gens, firsts, lasts, bodies, self.settings.maxlen or 0, notes(recs)),
            limited=False,  # the writer (write_slots calls at a time) skips the queue
        )
        return [appended(c, b.session_id, b.first) for c, b in zip(codes, batches, strict=True)]

    async def set_metadata(self, session_id: str, generation: int, blob: bytes) -> Lost | None:
        code = await self._exec.one(
            "SELECT {p}_metadata(%s, %s, %s)", (session_id, generation, blob)
        )
        return lost_of(code)

    async def renew(
        self, leases: Sequence[tuple[str, int]], *, retention: bool = False
    ) -> list[bool | Lost]:
        order = sorted(range(len(leases)), key=lambda i: leases[i][0])
        s = self.settings
        codes = await self._exec.one(
            "SELECT {p}_renew(%s::text[], %s::bigint[], %s, %s, %s)",
            (
                [leases[i][0] for i in order],
                [leases[i][1] for i in order],
                s.lease_ms,
                s.retention_ms,
                retention,
            ),
            limited=False,
        )
        out: list[bool | Lost] = [False] * len(leases)
        for i, code in zip(order, codes, strict=True):
            if code in ("ok", "cancel"):
                out[i] = code == "cancel"
            else:
                lost = lost_of(code)
                assert lost is not None
                out[i] = lost
                self._compactor.soon(leases[i][0])
        return out

    async def close(
        self,
        session_id: str,
        generation: int,
        state: State,
        reason: str | None,
        *,
        last: int | None = None,
    ) -> State | Lost:
        code = await self._exec.one(
            "SELECT {p}_close(%s, %s, %s, %s, %s, %s)",
            (session_id, generation, state.value, reason, last, self.settings.retention_ms),
        )
        head, _, stored = code.partition("\n")
        if head != "ok":
            lost = lost_of(code)
            assert lost is not None
            return lost
        self._compactor.soon(session_id)
        return State(stored)

    async def expire(self, leases: Sequence[tuple[str, int]]) -> list[float | None]:
        order = sorted(range(len(leases)), key=lambda i: leases[i][0])
        remaining = await self._exec.one(
            "SELECT {p}_expire(%s::text[], %s::bigint[], %s)",
            (
                [leases[i][0] for i in order],
                [leases[i][1] for i in order],
                self.settings.retention_ms,
            ),
        )
        out: list[float | None] = [None] * len(leases)
        for i, ms in zip(order, remaining, strict=True):
            if ms is None:
                self._compactor.soon(leases[i][0])
            else:
                out[i] = ms / 1000
        return out

    async def cancel(self, session_id: str) -> SessionInfo | None:
        rows = await self._exec.rows(
            "SELECT * FROM {p}_cancel(%s, %s)", (session_id, self.settings.retention_ms)
        )
        info = self._info(session_id, rows[0]) if rows else None
        if info is not None and info.state.finished:
            self._compactor.soon(session_id)
        return info

    async def delete(self, session_id: str) -> bool:
        return bool(await self._exec.one("SELECT {p}_delete(%s)", (session_id,)))

    # -- steering messages -----------------------------------------------------------------

    async def send_message(self, session_id: str, blob: bytes, key: str | None) -> Sent | None:
        s = self.settings
        rows = await self._exec.rows(
            "SELECT * FROM {p}_message_send(%s, %s, %s, %s, %s, %s)",
            (session_id, blob, key or "", s.retention_ms, s.max_messages, s.max_messages_bytes),
        )
        if not rows:
            return None
        outcome, generation, detail, duplicate = rows[0]
        if outcome == "ok":
            return Sent(generation, State.ACTIVE, f"{generation}-{detail}", bool(duplicate))
        if outcome == "full":
            return Sent(
                generation, State.ACTIVE, None, full="count" if detail == "count" else "bytes"
            )
        return Sent(generation, State(detail), None)

    async def read_messages(
        self, session_id: str, generation: int, after: int, count: int
    ) -> list[tuple[int, bytes]]:
        rows = await self._exec.rows(
            "SELECT m.seq, m.body FROM {p}_message m JOIN {p}_session s USING (session_id) "
            "WHERE m.session_id = %s AND m.generation = %s AND m.seq > %s "
            "AND s.expires_at > clock_timestamp() ORDER BY m.seq LIMIT %s",
            (session_id, generation, min(after, _BIGINT), count),
        )
        return [(int(seq), bytes(body)) for seq, body in rows]

    # -- reads -----------------------------------------------------------------------------

    def _info(self, session_id: str, row: Sequence[Any]) -> SessionInfo | None:
        # INFO_SQL adds the turn after the columns of {p}_describe; cancel's rows lack it.
        gen, state, reason, n, md, created, updated, cancel, lease_ms, now_ms = row[:10]
        reply = [gen, state, reason, n, md, created, updated, True if cancel else None]
        turn = row[10] if len(row) > 10 else None
        return record_of(session_id, [*reply, lease_ms, now_ms, turn], self.settings.lease_ms)

    async def info(self, session_ids: Sequence[str]) -> list[SessionInfo | None]:
        rows = await self._exec.rows(INFO_SQL, (list(session_ids),))
        found = {row[0]: self._info(row[0], row[1:]) for row in rows}
        return [found.get(sid) for sid in session_ids]

    def _page_params(self, session_id: str, after: tuple[int, int], count: int) -> dict[str, Any]:
        return {
            "sid": session_id,
            "g": min(after[0], _BIGINT),
            "o": min(after[1], _BIGINT),
            **page_params(self.settings.replay_batch_bytes, count),
        }

    async def read(self, session_id: str, after: tuple[int, int], count: int) -> ReadResult:
        params = self._page_params(session_id, after, count)
        rows = await self._exec.rows(PAGE_SQL.rows, params, binary=True)
        return await self._exec.page(PAGE_SQL, rows, after, count, params)

    async def open(
        self, session_id: str, after: tuple[int, int], count: int
    ) -> tuple[SessionInfo | None, ReadResult | None]:
        info_sql = INFO_SQL.replace("{p}", self.p).encode()
        page_sql = PAGE_SQL.rows.replace("{p}", self.p).encode()
        params = self._page_params(session_id, after, count)

        async def go(conn: psycopg.AsyncConnection[Any]) -> tuple[list[Any], list[Any]]:
            async with conn.pipeline():
                c1 = await conn.execute(info_sql, ([session_id],))
                c2 = await conn.execute(page_sql, params, binary=True)
            return await c1.fetchall(), await c2.fetchall()

        info_rows, page_rows = await self._exec.run(go)
        if not info_rows:
            return None, None
        info = self._info(session_id, info_rows[0][1:])
        if info is not None and info.state.finished:
            self._compactor.soon(session_id)
        return info, await self._exec.page(PAGE_SQL, page_rows, after, count, params)

    async def session_ids(self, limit: int) -> tuple[list[str], bool]:
        """Up to ``limit`` unexpired session ids, and whether there are more (``streamhub top``)."""
        rows = await self._exec.rows(
            "SELECT session_id FROM {p}_session WHERE expires_at > clock_timestamp() "
            "ORDER BY session_id LIMIT %s",
            (limit + 1,),
        )
        return [r[0] for r in rows[:limit]], len(rows) > limit
