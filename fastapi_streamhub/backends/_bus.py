"""Pub/sub connections of the Redis backend: which channels a process listens to, and where.

- :class:`SingleBus`: one Redis (or a Sentinel-managed primary): one connection, ``SUBSCRIBE``.
  redis-py reconnects it and subscribes again by itself; a second confirmation of a channel
  means messages may have been missed meanwhile.
- :class:`ShardedBus`: Redis Cluster: ``SSUBSCRIBE`` on the primary that owns each channel's
  slot, one connection per shard (never per session or subscriber). When a shard's connection
  fails or Redis moves a slot away (it then unsubscribes us from that slot's channels), the
  channels are placed again on their current owners, once the slot map is refreshed.

Both report the channels whose messages may have been missed (``on_resync``), once they listen
again, so subscribers repair from the log; nothing is lost, only delivered late.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup
from redis import exceptions as rexc
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from .._errors import BackendUnavailable
from ._replies import as_bytes, as_str

__all__ = ["Bus", "ShardedBus", "SingleBus", "lost_connection", "require_sharded_pubsub"]

log = logging.getLogger("fastapi_streamhub.redis")

# Errors after which the same call may succeed: the connection, or the cluster's topology, is
# changing (failover, slot migration, a replica promoted after a primary's death).
RETRYABLE = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.BusyLoadingError,
    rexc.ReadOnlyError,
    rexc.ClusterDownError,
    rexc.TryAgainError,
    rexc.SlotNotCoveredError,
)


def lost_connection(exc: BaseException) -> bool:
    """A connection or topology error, including uvloop's way of saying "connection lost".

    On uvloop a write to a transport that was closed under us raises ``RuntimeError``
    ("unable to perform operation on <TCPTransport closed=True ...>; the handler is closed")
    where asyncio raises an ``OSError`` that redis-py turns into ``ConnectionError``; redis-py
    has disconnected that connection either way, so a retry gets a fresh one.
    """
    if isinstance(exc, RETRYABLE):
        return True
    return isinstance(exc, RuntimeError) and "handler is closed" in str(exc)


OnMessage = Callable[[str, bytes], None]
OnResync = Callable[[set[str]], None]
Call = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


class Bus:
    """Subscriptions of one process; messages go to ``on_message(channel, data)``."""

    def __init__(
        self, call: Call, on_message: OnMessage, on_resync: OnResync, timeout: float
    ) -> None:
        self._call = call
        self._on_message = on_message
        self._on_resync = on_resync
        self._timeout = timeout
        self._confirmed: dict[str, anyio.Event] = {}

    async def start(self, task_group: TaskGroup) -> None:
        """Start reading (in ``task_group``)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close every connection."""
        raise NotImplementedError

    async def _send(self, channel: str) -> None:
        raise NotImplementedError

    async def subscribe(self, channel: str) -> None:
        """Listen to ``channel`` from now on; returns once Redis confirmed it."""
        event = self._confirmed.get(channel)
        if event is not None and event.is_set():
            return  # confirmed before: no wait, no timer (every subscription of a process)
        if event is None:
            event = self._confirmed[channel] = anyio.Event()
            try:
                await self._call(lambda: self._send(channel))
            except BaseException:
                del self._confirmed[channel]
                raise
        await self._wait(event, channel)

    async def _wait(self, event: anyio.Event, channel: str) -> None:
        with anyio.move_on_after(self._timeout):
            await event.wait()
        if not event.is_set():
            raise BackendUnavailable(
                f"Redis did not confirm the subscription to {channel!r} within {self._timeout:g}s"
            )

    def _dispatch(self, msg: dict[str, Any]) -> str | None:
        """Hand a data message on; returns the channel of a subscription confirmation."""
        kind = as_str(msg["type"])
        if kind in ("message", "smessage"):
            try:
                self._on_message(as_str(msg["channel"]), as_bytes(msg["data"]))
            except Exception:
                # A message we cannot decode is a bug or a foreign publisher on our channel;
                # report it and keep serving everyone else.
                log.exception("could not handle pub/sub message %r", msg)
            return None
        if kind in ("subscribe", "ssubscribe"):
            return as_str(msg["channel"])
        return None


class SingleBus(Bus):
    """One connection to one Redis; redis-py re-subscribes after a reconnect."""

    def __init__(self, client: Redis, *args: Any) -> None:
        super().__init__(*args)
        self._pubsub: Any = client.pubsub()
        self._tg: TaskGroup | None = None
        self._reading = False

    async def start(self, task_group: TaskGroup) -> None:
        self._tg = task_group

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._pubsub.aclose()

    async def _send(self, channel: str) -> None:
        await self._pubsub.subscribe(channel)
        if not self._reading:  # redis-py has a connection to read from once it subscribed
            assert self._tg is not None, "start() first"
            self._reading = True
            self._tg.start_soon(self._read)

    async def _read(self) -> None:
        delay = 0.02
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=None)
            except (*RETRYABLE, RuntimeError) as exc:
                if not lost_connection(exc):
                    raise
                log.warning("pub/sub connection lost (%s); reconnecting", exc)
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.02
            if msg is None:
                continue
            channel = self._dispatch(msg)
            if channel is None:
                continue
            event = self._confirmed.get(channel)
            if event is None:
                continue
            if not event.is_set():
                event.set()
            else:
                # A re-subscription after a reconnect: messages sent meanwhile were missed.
                self._on_resync({channel})


class _Shard:
    """The pub/sub connection to one cluster node and the channels subscribed on it."""

    def __init__(self, node: Any) -> None:
        kwargs = dict(node.connection_kwargs)
        # Listening waits for as long as it takes; a failed read must surface at once (we move
        # the channels, redis-py must not keep reconnecting to a node that may be gone). The
        # asyncio Retry: redis-py 8.2 warns when the synchronous one reaches an asyncio client.
        kwargs.update(socket_timeout=None, retry=Retry(NoBackoff(), 0))
        self.name: str = node.name
        self.pool = ConnectionPool(connection_class=node.connection_class, **kwargs)
        self.pubsub: Any = Redis(connection_pool=self.pool).pubsub()
        self.channels: set[str] = set()
        self.scope = anyio.CancelScope()
        self.reading = False
        # redis-py's PubSub connects on its first command: two at once would open two
        # connections and read only one.
        self.lock = anyio.Lock()

    async def aclose(self) -> None:
        self.scope.cancel()
        with anyio.CancelScope(shield=True):
            try:
                await self.pubsub.aclose()
            finally:
                await self.pool.disconnect()


def require_sharded_pubsub() -> None:
    """Refuse a cluster client when this redis-py cannot ``SSUBSCRIBE`` from asyncio (< 8.0)."""
    from redis import __version__
    from redis.asyncio.client import PubSub

    if not hasattr(PubSub, "ssubscribe"):
        raise ValueError(
            f"Redis Cluster needs redis-py 8.0 or newer (sharded pub/sub from asyncio); "
            f"redis-py {__version__} is installed: pip install 'fastapi-streamhub[cluster]'"
        )


class ShardedBus(Bus):
    """``SSUBSCRIBE`` on the owner of each channel's slot: one connection per shard."""

    def __init__(self, cluster: Any, *args: Any) -> None:
        super().__init__(*args)
        self._cluster = cluster
        self._shards: dict[str, _Shard] = {}
        self._where: dict[str, _Shard] = {}
        self._unplaced: set[str] = set()
        self._dead: list[_Shard] = []
        self._repair = anyio.Event()
        self._tg: TaskGroup | None = None

    async def start(self, task_group: TaskGroup) -> None:
        self._tg = task_group
        task_group.start_soon(self._repairer)

    async def aclose(self) -> None:
        shards = [*self._shards.values(), *self._dead]
        self._shards.clear()
        self._dead.clear()
        for shard in shards:
            await shard.aclose()

    async def _send(self, channel: str) -> None:
        node = self._cluster.nodes_manager.get_node_from_slot(key_slot(channel.encode()))
        shard = self._shards.get(node.name)
        if shard is None:
            shard = self._shards[node.name] = _Shard(node)
        previous = self._where.get(channel)
        if previous is not None and previous is not shard:
            previous.channels.discard(channel)
        shard.channels.add(channel)
        self._where[channel] = shard
        try:
            async with shard.lock:
                await shard.pubsub.ssubscribe(channel)
        except BaseException:
            shard.channels.discard(channel)
            self._where.pop(channel, None)
            raise
        if not shard.reading:
            assert self._tg is not None, "start() first"
            shard.reading = True
            self._tg.start_soon(self._read, shard)

    async def _read(self, shard: _Shard) -> None:
        with shard.scope:
            while True:
                try:
                    msg = await shard.pubsub.get_message(timeout=None)
                except (*RETRYABLE, RuntimeError) as exc:
                    if not lost_connection(exc):
                        raise
                    log.warning(
                        "cluster pub/sub connection to %s lost (%s); moving its channels",
                        shard.name,
                        exc,
                    )
                    self._lose(shard, set(shard.channels))
                    return
                if msg is None:
                    continue
                channel = self._dispatch(msg)
                if channel is not None:
                    event = self._confirmed.get(channel)
                    if event is not None and self._where.get(channel) is shard:
                        event.set()
                elif as_str(msg["type"]) == "sunsubscribe":
                    # We never unsubscribe: Redis moved this channel's slot to another node.
                    channel = as_str(msg["channel"])
                    log.warning(
                        "cluster moved pub/sub channel %r away from %s", channel, shard.name
                    )
                    self._lose(shard, {channel})

    def _lose(self, shard: _Shard, channels: set[str]) -> None:
        """Channels no longer heard on ``shard``: place them again; drop ``shard`` once empty."""
        for channel in channels:
            shard.channels.discard(channel)
            if self._where.get(channel) is shard:
                del self._where[channel]
                self._unplaced.add(channel)
        if not shard.channels and self._shards.get(shard.name) is shard:
            del self._shards[shard.name]
            self._dead.append(shard)
        self._repair.set()

    async def _repairer(self) -> None:
        delay = 0.05
        while True:
            await self._repair.wait()
            self._repair = anyio.Event()
            while self._dead:
                await self._dead.pop().aclose()
            if not self._unplaced:
                continue
            channels = set(self._unplaced)
            try:
                # The slot map as it is now (after a failover or a slot migration).
                await self._cluster.nodes_manager.initialize()
                events = {c: anyio.Event() for c in channels}
                self._confirmed.update(events)
                for channel in channels:
                    await self._send(channel)
                with anyio.fail_after(self._timeout):
                    for event in events.values():
                        await event.wait()
            except (*RETRYABLE, rexc.RedisClusterException, RuntimeError, TimeoutError) as exc:
                if isinstance(exc, RuntimeError) and not lost_connection(exc):
                    raise
                log.warning(
                    "cluster pub/sub: could not subscribe again to %d channel(s) (%s); "
                    "retrying in %.2fs",
                    len(channels),
                    exc,
                    delay,
                )
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
                self._repair.set()
                continue
            delay = 0.05
            self._unplaced -= channels
            log.info("cluster pub/sub: %d channel(s) subscribed again", len(channels))
            self._on_resync(channels)
