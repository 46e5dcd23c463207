"""The statement runner of the PostgreSQL backend: bounded retries, schema creation and checks.

Every statement goes through :meth:`PgExecutor.run`, which retries connection failures and
server restarts for ``outage_timeout`` (a time budget, not a retry count: a producer rides a
restart out), bounds each attempt in time (a stalled server answers nothing, no error) and the
calls in flight. Any other error is the store refusing the call: :class:`BackendUnavailable`
at once, naming the condition (``OUT_OF_MEMORY``), never the driver's text.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .._budget import retry_budget
from .._config import Settings
from .._errors import BackendUnavailable
from .base import ReadResult
from .postgres_rows import PageSql, Partial, complete, page_of_rows
from .postgres_sql import SCHEMA_VERSION, prefix_name, schema_sql

__all__ = ["PgExecutor", "SchemaMismatch", "generic_plans"]

log = logging.getLogger("fastapi_streamhub.postgres")


Conn = psycopg.AsyncConnection[Any]


class SchemaMismatch(BackendUnavailable):
    """The database holds the streamhub tables of another schema version: this release cannot
    use them (nothing is changed; see ``streamhub postgres-schema``)."""


def _retryable(exc: psycopg.Error) -> bool:
    """An error after which the same call may succeed: the connection failed or the server is
    restarting (SQLSTATE 08, 57P), a serialisation failure or deadlock (40001, 40P01)."""
    if isinstance(exc, PoolTimeout):
        return True
    code = exc.sqlstate
    if code is None:
        return isinstance(exc, psycopg.OperationalError)
    return code.startswith(("08", "57P")) or code in ("40001", "40P01")


async def generic_plans(conn: Conn) -> None:
    """Configure one of the hub's own pooled connections: its prepared statements use their
    generic plan from the first execution (PostgreSQL 12 on).

    Every statement of the library looks rows up by key, where the generic plan is the plan:
    the log's primary key walked from a cursor. By default PostgreSQL plans a prepared
    statement's first five executions on each connection afresh with their parameters, and on
    a log without statistics yet (a new table, before autovacuum's first ANALYZE) those
    custom plans read every row after the cursor and sort them (a page of 1,000 rows of a
    5,000-row tail: 2.3-4.8 ms against 0.9-1.1 ms); a pool spreads the reads over its
    connections, so each of them pays that warm-up, and the planning itself."""
    if conn.info.server_version >= 120000:
        await conn.execute("SET plan_cache_mode = force_generic_plan", prepare=False)


def _code(exc: psycopg.Error) -> str:
    """The error's condition as an upper-case code (``OutOfMemory`` -> ``OUT_OF_MEMORY``), the
    way Redis error replies start (the hub reports that, never the driver's text)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).upper()


class PgExecutor:
    """Runs the backend's statements on its pool; ``{p}`` in a statement is the name prefix."""

    def __init__(self) -> None:
        self.pool: AsyncConnectionPool[Any] | None = None
        self.settings = Settings()
        self.p = prefix_name(self.settings.key_prefix)
        self._slots = anyio.Semaphore(1)

    def configure(self, settings: Settings) -> None:
        self.settings = settings
        self.p = prefix_name(settings.key_prefix)

    def bound(self, reserved: int) -> None:
        """Size the queue of ``limited`` calls to the pool: all its connections but
        ``reserved`` (one at least). The reserved ones, kept free of queued calls, are for the
        writer's calls in flight and the lease keeper's, all ``limited=False``: they always
        find a connection, however many reads are waiting."""
        assert self.pool is not None
        self._slots = anyio.Semaphore(max(1, self.pool.max_size - reserved))

    async def run(self, fn: Callable[[Conn], Awaitable[Any]], *, limited: bool = True) -> Any:
        """``await fn(conn)`` on a pooled connection, retried through outages (see above).

        ``limited`` calls queue for one of the pool's connections but the reserved ones (see
        :meth:`bound`); the hub's writer and lease keeper skip the queue, so they never wait
        behind reads for a connection.
        """
        budget = retry_budget(self.settings.outage_timeout)
        deadline = time.monotonic() + budget
        delay = 0.02
        while True:
            try:
                with anyio.fail_after(max(deadline - time.monotonic(), 0.001)):
                    if limited:
                        async with self._slots:
                            return await self._attempt(fn, deadline)
                    return await self._attempt(fn, deadline)
            except TimeoutError as exc:
                raise BackendUnavailable(f"PostgreSQL did not answer within {budget:g}s") from exc
            except psycopg.Error as exc:
                if not _retryable(exc):
                    raise BackendUnavailable(
                        f"PostgreSQL refused the call: {_code(exc)} (SQLSTATE {exc.sqlstate})"
                    ) from exc
                if time.monotonic() + delay >= deadline:
                    raise BackendUnavailable(
                        f"PostgreSQL unreachable for {budget:g}s: {type(exc).__name__}"
                    ) from exc
                log.warning("postgres call failed (%s); retrying in %.2fs", exc, delay)
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    async def _attempt(self, fn: Callable[[Conn], Awaitable[Any]], deadline: float) -> Any:
        assert self.pool is not None, "start() first"
        # A statement cancelled midway leaves its connection in an unknown state: the pool
        # checks every returned connection and discards a broken one.
        async with self.pool.connection(timeout=max(deadline - time.monotonic(), 0.001)) as conn:
            result = await fn(conn)
            if not conn.autocommit:  # an application's pool without autocommit
                await conn.commit()
            return result

    async def rows(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] = (),
        *,
        binary: bool = False,
        **kw: Any,
    ) -> list[Any]:
        """Every row of one statement (``binary``: its results in the binary format)."""
        query = sql.replace("{p}", self.p).encode()

        async def go(conn: Conn) -> list[Any]:
            cur = await conn.execute(query, params, binary=binary)
            return await cur.fetchall()

        rows: list[Any] = await self.run(go, **kw)
        return rows

    async def one(self, sql: str, params: Sequence[Any] = (), **kw: Any) -> Any:
        """The first value of the first row of one statement."""
        return (await self.rows(sql, params, **kw))[0][0]

    async def page(
        self,
        sql: PageSql,
        rows: list[Any],
        after: tuple[int, int],
        count: int,
        params: Mapping[str, Any],
    ) -> ReadResult:
        """The page of ``sql.rows``' ``rows`` (read with ``params``), with the bodies it lacked
        read by ``sql.bodies`` (only when rows above their share of the budget are in it)."""
        page = page_of_rows(rows, after, count, self.settings.replay_batch_bytes)
        if isinstance(page, Partial):
            full = await self.rows(sql.bodies, {**params, **page.params}, binary=True)
            return complete(page, full, after)
        return page

    async def ensure_schema(self) -> None:
        """Create the schema if absent (one creator at a time: an advisory lock), else check
        its version; :class:`SchemaMismatch` when it is another one."""
        p = self.p
        lock = f"hashtextextended('{p}:schema', 0)"

        async def ensure(conn: Conn) -> None:
            await conn.execute(f"SELECT pg_advisory_lock({lock})".encode())
            try:
                cur = await conn.execute("SELECT to_regclass(%s)", (f"{p}_schema",))
                row = await cur.fetchone()
                if row is None or row[0] is None:
                    await conn.execute(schema_sql(p).encode(), prepare=False)  # many statements
                    log.info("created the streamhub schema %r (version %d)", p, SCHEMA_VERSION)
                    return
                cur = await conn.execute(f"SELECT version FROM {p}_schema".encode())
                found = [r[0] for r in await cur.fetchall()]
                if found != [SCHEMA_VERSION]:
                    raise SchemaMismatch(
                        f"the database holds streamhub schema {p!r} version "
                        f"{found[0] if found else 'unknown'}; this release needs version "
                        f"{SCHEMA_VERSION} (see `streamhub postgres-schema`)"
                    )
            finally:
                await conn.execute(f"SELECT pg_advisory_unlock({lock})".encode())

        await self.run(ensure)
