"""Local fan-out: one live message from the store reaches every listener in this process.

A backend holds one :class:`Fanout`. Listeners register per channel; the backend subscribes to
the channel in the store when the first listener arrives and unsubscribes when the last leaves.
A subscriber's listener is a bounded queue: when it overflows, its queued messages are dropped
and replaced by one :class:`ResyncMsg`, so a slow reader costs bounded memory and repairs from
the store (the source of truth) when it catches up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import anyio

from ._codec import ChunksMsg, Message, ResyncMsg

__all__ = ["CallbackListener", "Fanout", "Listener", "QueueListener"]


class Listener:
    """Something that receives live messages of one channel."""

    def push(self, msg: Message) -> None:
        """Deliver one message; must not block."""
        raise NotImplementedError


class CallbackListener(Listener):
    """Calls a function for every message (used by producers for cancel signals)."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[Message], None]) -> None:
        self._callback = callback

    def push(self, msg: Message) -> None:
        self._callback(msg)


class QueueListener(Listener):
    """A bounded queue of messages for one subscriber: ``capacity`` chunks and, when given,
    ``capacity_bytes`` bytes of chunks (one message over it is taken when the queue is empty)."""

    __slots__ = ("_bytes", "_capacity", "_capacity_bytes", "_items", "_size", "_wake", "overflows")

    def __init__(self, capacity: int, capacity_bytes: int | None = None) -> None:
        self._capacity = capacity
        self._capacity_bytes = capacity_bytes
        self._items: deque[Message] = deque()
        self._size = 0
        self._bytes = 0
        self._wake: asyncio.Future[None] | anyio.Event | None = None
        self.overflows = 0

    @property
    def held_bytes(self) -> int:
        """Bytes of chunks queued now."""
        return self._bytes

    def push(self, msg: Message) -> None:
        if type(msg) is ChunksMsg:
            weight, size = msg.last - msg.first + 1, msg.size
        else:
            weight, size = 1, 0
        limit = self._capacity_bytes
        if self._size + weight > self._capacity or (
            limit is not None and self._bytes and self._bytes + size > limit
        ):
            # Drop what is queued: the store holds it, the subscriber re-reads it from its cursor.
            self.overflows += 1
            self._items.clear()
            self._items.append(ResyncMsg())
            self._size = 1
            self._bytes = 0
        else:
            self._items.append(msg)
            self._size += weight
            self._bytes += size
        wake = self._wake
        if wake is not None:
            if isinstance(wake, asyncio.Future):
                if not wake.done():
                    wake.set_result(None)
            else:
                wake.set()

    def _took(self, msg: Message) -> Message:
        if type(msg) is ChunksMsg:
            self._size -= msg.last - msg.first + 1
            self._bytes -= msg.size
        else:
            self._size -= 1
        return msg

    async def get(self) -> Message:
        """Wait for the next message."""
        while not self._items:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            try:
                if loop is not None:
                    # A bare future: a wake-up per message is the subscriber's hottest path,
                    # and anyio.Event costs twice as much on asyncio.
                    future: asyncio.Future[None] = loop.create_future()
                    self._wake = future
                    await future
                else:
                    event = self._wake = anyio.Event()
                    await event.wait()
            finally:
                self._wake = None
        return self._took(self._items.popleft())

    def get_nowait(self) -> Message | None:
        """The next message if one is queued."""
        if not self._items:
            return None
        return self._took(self._items.popleft())


class Fanout:
    """Listeners by channel."""

    __slots__ = ("_channels",)

    def __init__(self) -> None:
        self._channels: dict[bytes, set[Listener]] = {}

    def add(self, channel: bytes, listener: Listener) -> bool:
        """Register a listener; True when it is the channel's first."""
        listeners = self._channels.get(channel)
        if listeners is None:
            self._channels[channel] = {listener}
            return True
        listeners.add(listener)
        return False

    def remove(self, channel: bytes, listener: Listener) -> bool:
        """Unregister a listener; True when the channel has none left."""
        listeners = self._channels.get(channel)
        if listeners is None:
            return False
        listeners.discard(listener)
        if listeners:
            return False
        del self._channels[channel]
        return True

    def get(self, channel: bytes) -> set[Listener] | None:
        """The listeners of a channel (None when it has none); do not change the set."""
        return self._channels.get(channel)

    def has(self, channel: bytes) -> bool:
        """True when the channel has listeners."""
        return channel in self._channels

    def channels(self) -> list[bytes]:
        """Every channel with listeners."""
        return list(self._channels)

    def dispatch(self, channel: bytes, msg: Message) -> None:
        """Deliver a message to every listener of a channel."""
        listeners = self._channels.get(channel)
        if listeners:
            for listener in tuple(listeners):
                listener.push(msg)

    def dispatch_all(self, msg: Message) -> None:
        """Deliver a message to every listener of every channel."""
        for channel in list(self._channels):
            self.dispatch(channel, msg)
