"""Steering messages: clients send JSON messages to the running producer of a session.

A message is stored for the session's current generation (``backends/lua/message.lua``, or the
memory backend's inbox) and the producer's instance is woken on the control bus. The producer
reads the store after the last message it delivered, so a missed signal only delays a message
(the inbox also reads again after a control-bus reconnect and every ``renew_interval``), and
each message reaches its generation exactly once, in order. The producer's cursor lives in this
process: a new generation starts with its own, empty, list of messages.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import orjson

from ._codec import dumps_json
from ._errors import LimitExceeded, SessionFinished, SessionNotFound, StreamHubError
from ._types import validate_session_id

if TYPE_CHECKING:
    from ._config import Settings
    from .backends.base import Backend

__all__ = [
    "Inbox",
    "MessageReceipt",
    "MessageStore",
    "SteeringMessage",
    "StreamContext",
    "send_message",
    "validate_message_key",
]

log = logging.getLogger("fastapi_streamhub")

MESSAGE_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"
_MESSAGE_KEY = re.compile(MESSAGE_KEY_PATTERN)
# Messages read from the store per round trip.
_PAGE = 100


@dataclass(frozen=True, slots=True)
class SteeringMessage:
    """A message a client sent to the running producer: ``data`` is its JSON value."""

    id: str
    """``<generation>-<seq>``: the message's place among its generation's messages (from 1)."""
    data: Any


@dataclass(frozen=True, slots=True)
class MessageReceipt:
    """The answer to :meth:`StreamHub.send_message`: where the message was stored."""

    id: str
    generation: int
    duplicate: bool = False
    """True when the idempotency key was seen before: this is the first message's receipt."""


class MessageStore(Protocol):
    """Where messages are sent to and read from: the hub's backend and settings."""

    @property
    def backend(self) -> Backend: ...

    @property
    def settings(self) -> Settings: ...


class _InboxHost(MessageStore, Protocol):
    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None: ...


class _Producing(Protocol):
    """The producer a :class:`StreamContext` stands for."""

    session_id: str
    generation: int

    @property
    def cancelled(self) -> anyio.Event: ...

    def messages(self) -> AsyncIterator[SteeringMessage]: ...

    def messages_nowait(self) -> list[SteeringMessage]: ...

    async def set_metadata(self, value: Any) -> None: ...


def validate_message_key(key: str) -> str:
    """An idempotency key: 1-200 characters of ``[A-Za-z0-9._:-]`` (a UUID fits)."""
    if not isinstance(key, str) or _MESSAGE_KEY.fullmatch(key) is None:
        raise ValueError("a message key must be 1-200 characters of letters, digits and . _ : -")
    return key


async def send_message(
    hub: MessageStore, session_id: str, data: Any, key: str | None
) -> MessageReceipt:
    """:meth:`StreamHub.send_message`."""
    validate_session_id(session_id)
    if key is not None:
        validate_message_key(key)
    blob = dumps_json(data, what="message")
    limit = hub.settings.max_message_bytes
    if len(blob) > limit:
        raise LimitExceeded(f"message of {len(blob)} bytes is over max_message_bytes ({limit})")
    # Always a key: the backend retries a call whose reply was lost, which must not store the
    # message twice. Ours start with "~", which a caller's key cannot.
    sent = await hub.backend.send_message(session_id, blob, key or f"~{uuid.uuid4().hex}")
    if sent is None:
        raise SessionNotFound(f"session {session_id!r} not found")
    if sent.full == "count":
        raise LimitExceeded(
            f"session {session_id!r} was already sent {hub.settings.max_messages} messages in "
            "this generation (max_messages)"
        )
    if sent.full == "bytes":
        raise LimitExceeded(
            f"the messages of session {session_id!r} would pass "
            f"{hub.settings.max_messages_bytes} bytes in this generation (max_messages_bytes)"
        )
    if sent.id is None:
        raise SessionFinished(
            f"session {session_id!r} is {sent.state.value}: it takes no more messages"
        )
    return MessageReceipt(sent.id, sent.generation, sent.duplicate and key is not None)


class Inbox:
    """A producer's steering messages: one task (started on first use) reads the store after
    the last message read into a local queue, which the consumers empty. ``over()`` says when
    the producer no longer takes messages (cancelled or stopping)."""

    def __init__(
        self, host: _InboxHost, session_id: str, generation: int, over: Callable[[], bool]
    ) -> None:
        self._host = host
        self._session_id = session_id
        self._generation = generation
        self._over = over
        self._queue: deque[SteeringMessage] = deque()
        self._after = 0
        self._poke = anyio.Event()
        self._changed = anyio.Event()
        self._started = False
        self._done = False
        self._error: Exception | None = None

    def poke(self) -> None:
        """Something changed: a message was stored, signals may have been missed, or the
        producer is stopping."""
        self._poke.set()

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._host.spawn(self._fetch)

    def _notify(self) -> None:
        self._changed.set()

    async def _fetch(self) -> None:
        sid, generation = self._session_id, self._generation
        wait = self._host.settings.renew_every
        try:
            while not self._over():
                self._poke = anyio.Event()
                try:
                    page = await self._host.backend.read_messages(
                        sid, generation, self._after, _PAGE
                    )
                except NotImplementedError as exc:
                    self._error = exc
                    return
                except Exception as exc:
                    # The messages stay in the store: the next read picks them up.
                    if not isinstance(exc, StreamHubError):
                        log.exception("reading the messages of %r failed", sid)
                    else:
                        log.warning("reading the messages of %r failed: %s", sid, exc)
                    page = []
                self._take(page)
                if page:
                    self._notify()
                    if len(page) == _PAGE:
                        continue
                # The durable path: a missed signal costs at most one renewal period.
                with anyio.move_on_after(wait):
                    await self._poke.wait()
        finally:
            self._done = True
            self._notify()

    async def messages(self) -> AsyncIterator[SteeringMessage]:
        """Each message once, in order; ends once the producer is cancelled or closed."""
        self._start()
        while True:
            while self._queue:
                yield self._queue.popleft()
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            if self._changed.is_set():
                # Only a spent event is replaced: other consumers may be waiting on this one.
                self._changed = anyio.Event()
            await self._changed.wait()

    async def prime(self) -> None:
        """Read the messages already stored, before the generator runs, so that its first
        ``messages_nowait()`` returns them (the listening task starts after them)."""
        if self._started or self._after:
            return
        sid = self._session_id
        try:
            page = await self._host.backend.read_messages(sid, self._generation, 0, _PAGE)
        except NotImplementedError:
            return  # a backend without messages: ctx.messages() says so when used
        except StreamHubError as exc:
            # Not lost: the listening task reads the store again from here.
            log.warning("reading the messages of %r failed: %s", sid, exc)
            return
        self._take(page)

    def _take(self, page: list[tuple[int, bytes]]) -> None:
        for seq, blob in page:
            self._after = seq
            self._queue.append(SteeringMessage(f"{self._generation}-{seq}", orjson.loads(blob)))

    def messages_nowait(self) -> list[SteeringMessage]:
        """The messages received and not yet taken, without waiting."""
        self._start()
        out = list(self._queue)
        self._queue.clear()
        return out


class StreamContext:
    """What a generator started by ``ResumableStreamingResponse(sid, factory)`` can reach:
    the factory is called as ``factory(ctx)`` once this instance became the producer.

    ``async for message in ctx.messages()`` reads the steering messages clients send with
    ``POST {prefix}/{sid}/messages``; ``ctx.messages_nowait()`` takes those already here.
    """

    def __init__(self, producer: _Producing) -> None:
        self._producer = producer

    def __repr__(self) -> str:
        return f"<StreamContext {self.session_id!r} generation={self.generation}>"

    @property
    def session_id(self) -> str:
        """The session this generator produces."""
        return self._producer.session_id

    @property
    def generation(self) -> int:
        """The generation this generator produces."""
        return self._producer.generation

    @property
    def cancelled(self) -> bool:
        """True once a cancel reached this generation (the generator is being cancelled)."""
        return self._producer.cancelled.is_set()

    def messages(self) -> AsyncIterator[SteeringMessage]:
        """Steering messages of this generation, each once, in order, as they arrive (also
        those sent before the first call); ends when the generation stops."""
        return self._producer.messages()

    def messages_nowait(self) -> list[SteeringMessage]:
        """Steering messages that arrived and were not taken yet; never waits. The first call
        returns those stored before the generator started (read before it runs), and starts
        listening for the next ones."""
        return self._producer.messages_nowait()

    async def set_metadata(self, value: Any) -> None:
        """Replace the session's metadata (see :meth:`Producer.set_metadata`)."""
        await self._producer.set_metadata(value)
