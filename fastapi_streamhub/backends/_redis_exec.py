"""The command runner of the Redis backend: bounded retries, scripts by SHA, pipelines, ``WAIT``.

Every Redis command of the backend goes through :meth:`RedisExecutor.call`, which retries
connection and topology errors for ``outage_timeout`` (a time budget, not a retry count: a
producer rides out a failover) and bounds the calls in flight. Scripts are sent by SHA and
loaded on the first ``NOSCRIPT`` (all of them are safe to repeat); redis-py's ``Script`` would
send ``SCRIPT EXISTS`` before every pipeline instead.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

import anyio
from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from .._budget import retry_budget
from .._config import Settings
from .._errors import BackendUnavailable
from ._bus import RETRYABLE, lost_connection
from ._replies import raise_refused
from .base import WriteRefused

__all__ = ["Command", "RedisExecutor", "script_bodies"]

log = logging.getLogger("fastapi_streamhub.redis")
T = TypeVar("T")

Command = tuple[Any, ...]
"""One pipelined command: Redis' own (``("XADD", key, ...)``), a script by name
(``("EVALSHA", name, keys, args)``), or ``("WAIT@", node, replicas, ms)``: a cluster's ``WAIT``
sent to the node that was written to."""

# Concurrent commands of one backend: callers queue here instead of exhausting the pool.
_MAX_CONCURRENT = 48


@functools.cache
def script_bodies(names: tuple[str, ...]) -> dict[str, str]:
    """The text of each ``lua/<name>.lua``, with the shared helpers of ``_lib.lua`` in front."""
    files = resources.files(__package__)
    lib = files.joinpath("lua/_lib.lua").read_text("utf-8")
    return {
        name: lib + "\n" + files.joinpath(f"lua/{name}.lua").read_text("utf-8") for name in names
    }


class RedisExecutor:
    """Runs the backend's commands on one client: retried through outages, bounded in number."""

    def __init__(self, client: Redis | RedisCluster, scripts: dict[str, str]) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        # A cluster's scripts may only publish to a channel of their own slot: sharded pub/sub.
        self.pub = "SPUBLISH" if self.cluster else "PUBLISH"
        self.settings = Settings()
        self._bodies = scripts
        self._shas = {
            name: hashlib.sha1(body.encode()).hexdigest() for name, body in scripts.items()
        }
        self._slots = anyio.Semaphore(_MAX_CONCURRENT)

    async def call(
        self, fn: Callable[[], Awaitable[T]], *, limited: bool = True, refusable: bool = False
    ) -> T:
        """Run a Redis call, retrying connection errors with backoff for up to ``outage_timeout``.

        ``limited`` calls queue for one of a bounded number of slots; the hub's writer (one
        call in flight at most) skips the queue, so a burst of other calls never delays chunks.
        A ``refusable`` call (a write) that loses its connection twice while Redis answers a
        ``PING`` raises :class:`WriteRefused` at once: Redis closes the connection on an
        argument over its ``proto-max-bulk-len``, and retrying that for ``outage_timeout``
        would only hold up every other write.
        """
        budget = retry_budget(self.settings.outage_timeout)
        deadline = time.monotonic() + budget
        delay = 0.02
        refusals = 0
        while True:
            try:
                # Each attempt is bounded too: a stalled connection answers nothing, no error.
                with anyio.fail_after(max(deadline - time.monotonic(), 0.001)):
                    if not limited:
                        return await fn()
                    async with self._slots:
                        return await fn()
            except TimeoutError as exc:
                raise BackendUnavailable(f"Redis did not answer within {budget:g}s") from exc
            except rexc.ResponseError as exc:
                if refusable:
                    raise_refused(exc)
                raise
            except (*RETRYABLE, RuntimeError) as exc:
                if not lost_connection(exc):
                    raise
                if refusable and await self._answers(deadline):
                    refusals += 1
                    if refusals >= 2:
                        raise WriteRefused(
                            f"Redis closed the connection on this write {refusals} times while "
                            "answering other commands (is it over proto-max-bulk-len?)"
                        ) from exc
                if time.monotonic() + delay >= deadline:
                    raise BackendUnavailable(f"Redis unreachable for {budget:g}s: {exc}") from exc
                log.warning("redis call failed (%s); retrying in %.2fs", exc, delay)
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    async def _answers(self, deadline: float) -> bool:
        """True when Redis answers a ``PING`` (before ``deadline``, within a second).

        On a cluster every primary must answer: one that crashed (its write lost the connection
        too) is not a refusal, while the others answering would make it look like one.
        """
        client: Any = self.client
        kwargs = {"target_nodes": RedisCluster.PRIMARIES} if self.cluster else {}
        with anyio.move_on_after(min(1.0, max(deadline - time.monotonic(), 0.001))):
            try:
                await client.ping(**kwargs)
            except (*RETRYABLE, RuntimeError, rexc.ResponseError):
                return False
            return True
        return False

    async def _load(self) -> None:
        client: Any = self.client
        for body in self._bodies.values():
            await client.script_load(body)

    async def script(
        self,
        name: str,
        keys: Sequence[str | bytes],
        args: Sequence[Any],
        *,
        limited: bool = True,
        refusable: bool = False,
    ) -> Any:
        """Run the script ``lua/<name>.lua`` (loading the scripts if Redis does not know it)."""
        client: Any = self.client
        sha = self._shas[name]

        async def run() -> Any:
            try:
                return await client.evalsha(sha, len(keys), *keys, *args)
            except rexc.NoScriptError:
                await self._load()
                return await client.evalsha(sha, len(keys), *keys, *args)

        return await self.call(run, limited=limited, refusable=refusable)

    async def pipeline(
        self, commands: Sequence[Command], *, limited: bool = True, refusable: bool = False
    ) -> list[Any]:
        """Commands (see :data:`Command`) in one round trip; replies in order, errors as
        exception objects. Scripts are loaded and the round trip repeated if Redis does not
        know them (all scripts are safe to repeat)."""

        async def once() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for command in commands:
                    if command[0] == "EVALSHA":
                        _, name, keys, args = command
                        pipe.execute_command("EVALSHA", self._shas[name], len(keys), *keys, *args)
                    elif command[0] == "WAIT@":
                        _, node, *args = command
                        pipe.execute_command("WAIT", *args, target_nodes=node)
                    else:
                        pipe.execute_command(*command)
                return list(await pipe.execute(raise_on_error=False))

        async def run() -> list[Any]:
            replies = await once()
            if any(isinstance(r, rexc.NoScriptError) for r in replies):
                await self._load()
                replies = await once()
            for r in replies:
                if isinstance(r, RETRYABLE):
                    raise r
            return replies

        return await self.call(run, limited=limited, refusable=refusable)

    def waits(self, keys: Sequence[bytes | str]) -> list[Command]:
        """``WAIT`` commands that follow writes to ``keys`` (one per node), if configured."""
        n = self.settings.wait_replicas
        if not n:
            return []
        timeout = self.settings.wait_timeout_ms
        if not self.cluster:
            return [("WAIT", n, timeout)]
        client: Any = self.client
        nodes = {client.get_node_from_key(key).name: client.get_node_from_key(key) for key in keys}
        return [("WAIT@", node, n, timeout) for node in nodes.values()]

    def check_waits(self, replies: Sequence[Any]) -> None:
        """The replies of :meth:`waits`' commands: a warning when too few replicas answered."""
        n = self.settings.wait_replicas
        for reply in replies:
            if isinstance(reply, Exception):
                raise BackendUnavailable(f"WAIT failed: {reply}")
            if int(reply) < n:
                # Written on the primary; a failover now could lose it. Say so, keep going.
                log.warning(
                    "only %d of %d replicas acknowledged a write within %.0f ms",
                    int(reply),
                    n,
                    self.settings.wait_timeout_ms,
                )
