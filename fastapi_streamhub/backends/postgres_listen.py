"""Live delivery of the PostgreSQL backend: one LISTEN connection per backend (per process).

The connection is its own (LISTEN is session state: never from the pool, never through
PgBouncer's transaction mode), in autocommit, named ``streamhub-listen``, with TCP keepalives.
It listens on two channels from the start, ``<p>_data`` and ``<p>_ctl``, so a subscription
never reads the store before its LISTEN took effect. Between notifications it runs a heartbeat
(``SELECT 1`` on the same connection, bounded in time): a half-open connection is found within
``heartbeat + timeout`` and replaced. After every reconnect, ``on_resync`` tells every listener
that messages may have been missed: they read the store, which is the truth.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import psycopg
from anyio.abc import TaskGroup

__all__ = ["NOTIFY_LIMIT", "Listener", "inline", "notes", "positive"]

log = logging.getLogger("fastapi_streamhub.postgres")

APPLICATION_NAME = "streamhub-listen"
NOTIFY_LIMIT = 7999  # bytes of one NOTIFY payload (PostgreSQL refuses 8000)


def inline(record: bytes) -> str | None:
    """``record`` as a NOTIFY payload, or None when it cannot travel inline."""
    if len(record) > NOTIFY_LIMIT or b"\x00" in record:
        return None
    try:
        return record.decode("utf-8")
    except UnicodeDecodeError:
        return None


def positive(name: str, seconds: float | None) -> float | None:
    """``seconds`` (None: the default), refused unless positive."""
    if seconds is not None and not seconds > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {seconds!r}")
    return seconds


def notes(recs: list[str]) -> list[str]:
    """Records joined into as few payloads as fit NOTIFY's limit."""
    out: list[str] = []
    size = 0
    for rec in recs:
        n = len(rec.encode())
        if out and size + n <= NOTIFY_LIMIT:
            out[-1] += rec
            size += n
        else:
            out.append(rec)
            size = n
    return out


class Listener:
    """Reads notifications of ``channels`` into ``on_notify(channel, payload)``."""

    def __init__(
        self,
        conninfo: str,
        kwargs: dict[str, Any],
        channels: list[str],
        on_notify: Callable[[str, str], Awaitable[None] | None],
        on_resync: Callable[[], None],
        *,
        heartbeat: float,
        timeout: float,
    ) -> None:
        self._conninfo = conninfo
        self._kwargs = {
            k: v for k, v in kwargs.items() if k not in ("autocommit", "application_name")
        }
        self._channels = channels
        self._on_notify = on_notify
        self._on_resync = on_resync
        self._heartbeat = heartbeat
        self._timeout = timeout
        self._scope = anyio.CancelScope()
        self.connected = anyio.Event()
        # Counters (tests, monitoring): connections replaced, and how many of those were found
        # dead by an unanswered heartbeat (a half-open connection: no error ever arrives).
        self.reconnects = 0
        self.missed_heartbeats = 0

    async def start(self, task_group: TaskGroup) -> None:
        """Connect and LISTEN (retrying for ``timeout``), then keep listening in ``task_group``."""
        conn = await self._connect_until(self._timeout)
        task_group.start_soon(self._run, conn)

    async def aclose(self) -> None:
        self._scope.cancel()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        with anyio.fail_after(self._timeout):
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                application_name=APPLICATION_NAME,
                keepalives=1,
                keepalives_idle=max(1, int(self._heartbeat)),
                keepalives_interval=max(1, int(self._heartbeat)),
                keepalives_count=3,
                **self._kwargs,
            )
            try:
                for channel in self._channels:
                    await conn.execute(f'LISTEN "{channel}"')
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await conn.close()
                raise
        return conn

    async def _connect_until(self, budget: float) -> psycopg.AsyncConnection[Any]:
        deadline = anyio.current_time() + budget
        delay = 0.05
        while True:
            try:
                return await self._connect()
            except (psycopg.OperationalError, TimeoutError) as exc:
                if anyio.current_time() + delay >= deadline:
                    raise
                log.warning("LISTEN connection failed (%s); retrying in %.2fs", exc, delay)
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    async def _run(self, conn: psycopg.AsyncConnection[Any]) -> None:
        with self._scope:
            while True:
                self.connected.set()
                try:
                    await self._listen(conn)
                except TimeoutError:
                    self.missed_heartbeats += 1
                    log.warning(
                        "LISTEN connection did not answer its heartbeat within %.1fs "
                        "(half-open?); reconnecting",
                        self._timeout,
                    )
                except psycopg.OperationalError as exc:
                    log.warning("LISTEN connection lost (%s); reconnecting", exc)
                finally:
                    with anyio.CancelScope(shield=True):
                        await conn.close()
                self.connected = anyio.Event()
                conn = await self._connect_until(float("inf"))
                self.reconnects += 1
                # Notifications sent while we were away are gone: everyone reads the store.
                self._on_resync()

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for note in conn.notifies(timeout=self._heartbeat):
                try:
                    pending = self._on_notify(note.channel, note.payload)
                    if pending is not None:
                        # A record that needs a read first (rare: one over NOTIFY's limit):
                        # the records after it wait, so every listener sees them in order.
                        await pending
                except Exception:
                    # A record we cannot decode is a bug or a foreign sender on our channel:
                    # report it and keep serving everyone else.
                    log.exception("could not handle notification %r", note.payload[:200])
            # Quiet for a heartbeat: prove the connection still answers (a half-open TCP
            # connection would otherwise wait for notifications forever).
            with anyio.fail_after(self._timeout):
                await conn.execute("SELECT 1")
