"""The producer handle: its bounded buffer, cancel delivery, and the close protocol (the hub's
writer, which commits the buffers, is in ``_writer.py``)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.lowlevel

from ._codec import CancelMsg, DeletedMsg, LostMsg, Message, SteerMsg, dumps_json, encode_chunk
from ._ending import Exit, describe, final_state
from ._errors import (
    LeaseExpired,
    LimitExceeded,
    OwnershipLost,
    SessionDeleted,
    StaleGeneration,
    StreamClosed,
    StreamHubError,
)
from ._steering import Inbox, SteeringMessage
from ._types import Cursor, State
from .backends.base import Append, Lost, SharedAppend

if TYPE_CHECKING:
    from ._fanin import Grant
    from ._hub import StreamHub

__all__ = ["Producer", "describe", "lost_error"]

log = logging.getLogger("fastapi_streamhub")

CancelCallback = Callable[["Producer"], Any]

# Refusals of a fan-in producer's own part (see backends/base.py Lost).
_PART_REFUSALS = {
    "replaced": "its producer joined again elsewhere; this handle may no longer write",
    "part_ended": "this producer already ended its part",
    "not_admitted": "this producer was not admitted into the current generation",
}


def lost_error(lost: Lost, session_id: str) -> OwnershipLost:
    """The typed error for a refused write."""
    part = _PART_REFUSALS.get(lost.reason or "")
    if part is not None:
        cls = StaleGeneration if lost.why == "stale" else OwnershipLost
        return cls(f"session {session_id!r}: {part}")
    if lost.why == "stale":
        return StaleGeneration(f"session {session_id!r} is owned by a newer generation")
    if lost.why == "gone":
        return SessionDeleted(f"session {session_id!r} was deleted or expired")
    if lost.reason == "lease_expired":
        return LeaseExpired(f"the lease of session {session_id!r} ran out; it is failed")
    state = lost.state.value if lost.state else "finished"
    return OwnershipLost(f"session {session_id!r} was already closed as {state}")


class _Ack:
    __slots__ = ("cursor", "error", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.cursor: Cursor | None = None
        self.error: BaseException | None = None


class Producer:
    """Writes one generation of a session. Obtain it from :meth:`StreamHub.register`.

    ``publish`` waits until the chunk is persisted and returns its cursor; ``send`` only waits
    for room in the bounded buffer (errors surface on the next call and at ``close``). While one
    write is in flight, chunks that arrive are written together in the next one (group commit).
    """

    def __init__(
        self,
        hub: StreamHub,
        session_id: str,
        generation: int,
        *,
        on_cancel: CancelCallback | None = None,
    ) -> None:
        self.session_id = session_id
        self.generation = generation
        self.cancelled = anyio.Event()
        self.cancel_reason: str | None = None
        self.lost: OwnershipLost | None = None
        self._hub = hub
        self._backend = hub.backend
        self._writer = hub._writer
        self._settings = hub.settings
        self._on_cancel: list[CancelCallback] = [on_cancel] if on_cancel else []
        self._pending: list[tuple[bytes, _Ack | None]] = []
        self._pending_bytes = 0  # payload bytes in _pending (max_pending_bytes)
        self._inflight: list[tuple[bytes, _Ack | None]] | None = None
        self._queued = False
        self._next = 1
        # Chunks this producer accepted (send/publish), and those dropped unwritten: what its
        # close claims is stored, for the store to check (see _claim).
        self._sent = 0
        self._dropped = 0
        self._room = anyio.Event()
        self._stopping = False
        self._idle = anyio.Event()
        self._error: StreamHubError | None = None
        self._state: State | None = None
        self._last = Cursor(generation, 0)
        self._scope: anyio.CancelScope | None = None
        self._shutdown = False
        self._inbox: Inbox | None = None
        # Fan-in (see _fanin.py): the name its chunks carry (sub-producers), and once several
        # producers write the session, its part (name, token): the store assigns the offsets.
        self.name: str | None = None
        self._part: tuple[str, str] | None = None
        self._seq = 0

    def __repr__(self) -> str:
        return f"<Producer {self.session_id!r} generation={self.generation}>"

    @property
    def cursor(self) -> Cursor:
        """Cursor of the last persisted chunk (offset 0 before the first)."""
        return self._last

    @property
    def pending_bytes(self) -> int:
        """Bytes of the chunks queued and not yet handed to the writer (``max_pending_bytes``)."""
        return self._pending_bytes

    @property
    def closed(self) -> bool:
        """True once :meth:`close` finished."""
        return self._state is not None

    # -- writing ---------------------------------------------------------------------------

    def _encode(self, chunk: object) -> bytes:
        payload = encode_chunk(chunk, self.name)
        if len(payload) - 1 > self._settings.max_chunk_bytes:
            raise LimitExceeded(
                f"chunk of {len(payload) - 1} bytes is over max_chunk_bytes "
                f"({self._settings.max_chunk_bytes})"
            )
        return payload

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._stopping or self._state is not None:
            raise StreamClosed(f"the producer of {self.session_id!r} is closed")

    async def _enqueue(self, payload: bytes, ack: _Ack | None) -> None:
        if self.cancelled.is_set() and (self._stopping or self._state is not None):
            # Cancelled and closing (e.g. at shutdown): a caller inside the producer's cancel
            # scope is cancelled here, as at any await, rather than told "closed".
            await anyio.lowlevel.checkpoint()
        self._check_open()
        settings = self._settings
        while len(self._pending) >= settings.max_pending or (
            # A chunk bigger than the whole byte budget still goes, alone, once nothing waits.
            self._pending_bytes and self._pending_bytes + len(payload) > settings.max_pending_bytes
        ):
            self._room = anyio.Event()
            await self._room.wait()
            self._check_open()
        self._pending.append((payload, ack))
        self._sent += 1
        self._pending_bytes += len(payload)
        if self._inflight is None and not self._queued:
            self._queued = True
            self._writer.ready(self)

    async def publish(self, chunk: object) -> Cursor:
        """Persist one chunk and return its cursor; raises if it was not persisted."""
        payload = self._encode(chunk)
        ack = _Ack()
        await self._enqueue(payload, ack)
        await ack.event.wait()
        if ack.error is not None:
            raise ack.error
        assert ack.cursor is not None  # set whenever error is None
        return ack.cursor

    async def send(self, chunk: object) -> None:
        """Queue one chunk without waiting for persistence; failures raise on a later call."""
        await self._enqueue(self._encode(chunk), None)

    async def _drain(self) -> None:
        """Until nothing is queued or in flight, or the producer failed."""
        while (self._pending or self._inflight is not None) and self._error is None:
            self._idle = anyio.Event()
            await self._idle.wait()

    async def flush(self) -> Cursor:
        """Wait until every queued chunk is persisted; return the last cursor."""
        await self._drain()
        if self._error is not None:
            raise self._error
        return self._last

    async def admit(self, name: str) -> Grant:
        """Let another producer, ``name``, write into this generation (fan-in).

        Returns the :class:`Grant` that :meth:`StreamHub.join` takes, on any instance. Queued
        chunks are flushed first; from then on every producer's chunks, this one's included,
        get their offsets from the store, so all of them are totally ordered by the cursor.
        """
        from ._fanin import admit

        return await admit(self, name)

    async def set_metadata(self, value: Any) -> None:
        """Replace the session's metadata (any JSON value); subscribers receive it live."""
        self._check_open()
        blob = dumps_json(value, what="metadata")
        if len(blob) > self._settings.max_metadata_bytes:
            raise LimitExceeded(
                f"metadata of {len(blob)} bytes is over max_metadata_bytes "
                f"({self._settings.max_metadata_bytes})"
            )
        # Chunks queued before the metadata are written first, so order is kept.
        await self.flush()
        lost = await self._backend.set_metadata(self.session_id, self.generation, blob)
        if lost is not None:
            self._mark_lost(lost_error(lost, self.session_id))
            raise lost_error(lost, self.session_id)

    def _fits(self, budget: int) -> int:
        """How many pending chunks the next batch takes: up to ``max_batch`` and ``budget``
        bytes (one at least, whatever its size)."""
        pending = self._pending
        n = min(len(pending), self._settings.max_batch)
        if self._pending_bytes <= budget:
            return n
        size = 0
        for i in range(n):
            size += len(pending[i][0])
            if size > budget and i:
                return i
        return n

    def next_size(self, budget: int) -> int:
        """Bytes of the batch :meth:`_take` would build within ``budget``."""
        return sum(len(p) for p, _ in self._pending[: self._fits(budget)])

    def _take(self, budget: int) -> Append:
        """The next batch (up to ``budget`` bytes, one chunk at least), for the hub's writer;
        it stays in flight until :meth:`_committed`."""
        self._queued = False
        n = self._fits(budget)
        batch = self._pending[:n]
        del self._pending[:n]
        self._room.set()
        self._inflight = batch
        payloads = [p for p, _ in batch]
        self._pending_bytes -= sum(map(len, payloads))
        if self._part is not None:
            self._seq += 1
            name, token = self._part
            return SharedAppend(
                self.session_id, self.generation, 0, payloads, name, token, self._seq
            )
        first = self._next
        self._next += len(batch)
        return Append(self.session_id, self.generation, first, payloads)

    def _committed(self, result: Lost | StreamHubError | None, first: int | None = None) -> None:
        """The writer's report on the batch in flight (``first``: its offset, when the store
        assigned it)."""
        batch, self._inflight = self._inflight or [], None
        if result is not None:
            error = lost_error(result, self.session_id) if isinstance(result, Lost) else result
            if isinstance(error, OwnershipLost):
                self._mark_lost(error)
            self._fail(error, batch)
            return
        if first is None:
            first = self._next - len(batch)
        generation = self.generation
        for i, (_, ack) in enumerate(batch):
            if ack is not None:
                ack.cursor = Cursor(generation, first + i)
                ack.event.set()
        self._last = Cursor(generation, first + len(batch) - 1)
        if self._pending:
            self._queued = True
            self._writer.ready(self)
        else:
            self._idle.set()

    def _fail(self, error: StreamHubError, batch: Sequence[tuple[bytes, _Ack | None]] = ()) -> None:
        if self._error is None:
            self._error = error
            self._hub._telemetry.failure("backend")
            log.warning("producer of %r failed: %s", self.session_id, error)
        for _, ack in batch:
            if ack is not None:
                ack.error = error
                ack.event.set()
        self._fail_pending(error)
        self._idle.set()
        self.request_cancel("error")

    def _fail_pending(self, error: StreamHubError) -> None:
        pending, self._pending = self._pending, []
        self._dropped += len(pending)
        self._pending_bytes = 0
        for _, ack in pending:
            if ack is not None:
                ack.error = error
                ack.event.set()
        self._room.set()

    # -- cancel ----------------------------------------------------------------------------

    def on_control(self, msg: Message) -> None:
        """A signal for this session from the control bus (cancel, deleted)."""
        if isinstance(msg, CancelMsg) and msg.generation == self.generation:
            self.request_cancel("cancelled")
        elif isinstance(msg, LostMsg) and msg.generation == self.generation:
            if msg.why == "stale":
                self._mark_lost_stale()
            else:
                self._mark_lost(lost_error(Lost("closed", State.FAILED, msg.why), self.session_id))
        elif isinstance(msg, DeletedMsg):
            self._mark_lost(SessionDeleted(f"session {self.session_id!r} was deleted"))
        elif isinstance(msg, SteerMsg) and msg.generation == self.generation:
            self._poke_inbox()

    def _mark_lost(self, error: OwnershipLost) -> None:
        if self.lost is None:
            self.lost = error
            self._error = error
            if not isinstance(error, SessionDeleted):
                self._hub._telemetry.failure("lost")
            # Not ours any more: no renewal, and local followers fall back to the lease check.
            self._hub._forget(self)
        reason = "deleted" if isinstance(error, SessionDeleted) else "ownership_lost"
        self.request_cancel(reason)

    def _mark_lost_from(self, lost: Lost) -> None:
        self._mark_lost(lost_error(lost, self.session_id))

    def _mark_lost_stale(self) -> None:
        self._mark_lost(StaleGeneration(f"session {self.session_id!r} was claimed again"))

    def request_cancel(self, reason: str = "cancelled") -> None:
        """Fire this producer's cancel: ``cancelled`` is set, callbacks run, the scope is cancelled."""
        if self.cancelled.is_set():
            return
        self.cancel_reason = reason
        self.cancelled.set()
        self._poke_inbox()
        if self._scope is not None:
            self._scope.cancel()
        for callback in self._on_cancel:
            try:
                result = callback(self)
            except Exception:
                log.exception("on_cancel callback of %r raised", self.session_id)
                continue
            if inspect.isawaitable(result):
                self._hub.spawn(_await, result)

    def add_cancel_callback(self, callback: CancelCallback) -> None:
        """Also call ``callback(producer)`` when a cancel arrives (at once if one already has)."""
        self._on_cancel.append(callback)
        if self.cancelled.is_set():
            result = callback(self)
            if inspect.isawaitable(result):
                self._hub.spawn(_await, result)

    # -- steering messages -----------------------------------------------------------------

    def messages(self) -> AsyncIterator[SteeringMessage]:
        """Steering messages clients sent to this generation (``POST {prefix}/{sid}/messages``,
        :meth:`StreamHub.send_message`), each once, in order, as they arrive; those sent before
        the first call are kept for it. Ends when this producer is cancelled or closed."""
        return self._get_inbox().messages()

    def messages_nowait(self) -> list[SteeringMessage]:
        """Steering messages that arrived and were not taken yet, without waiting."""
        return self._get_inbox().messages_nowait()

    async def _prime_inbox(self) -> None:
        """Read the steering messages already stored (before a generator with a context runs)."""
        await self._get_inbox().prime()

    def _get_inbox(self) -> Inbox:
        if self._inbox is None:
            self._inbox = Inbox(self)
        return self._inbox

    def _poke_inbox(self) -> None:
        """A message was stored, signals may have been missed, or this producer stops."""
        if self._inbox is not None:
            self._inbox.poke()

    # -- closing ---------------------------------------------------------------------------

    async def close(self, state: State | None = None, reason: str | None = None) -> State:
        """Flush, then finish the generation and return the state stored.

        Default ``done`` (``cancelled`` after a cancel); ``failed`` whenever a chunk this
        producer accepted could not be stored, whatever ``state`` asks (see ``_ending.py``).
        """
        return await self._end(Exit(state, reason))

    async def _end(self, requested: Exit) -> State:
        """The one close path: flush, apply the ending rule, record it in the store."""
        if self._state is not None:
            return self._state
        # Flushed first: a write that fails during the flush decides the state too.
        if await self._stop():
            return State.FAILED
        lost = self.lost is not None
        cancel = self.cancel_reason if self.cancelled.is_set() else None
        error = None if lost else self._error
        seen = replace(
            requested, cancel_reason=cancel, error=error, lost=lost, shutdown=self._shutdown
        )
        state, reason = final_state(seen)
        if state is None:
            self._state = State.FAILED
            return self._state
        if state is State.FAILED and self._error is None and not self._shutdown:
            self._hub._telemetry.failure("generator_error")
        result = await self._finish(state, reason)
        if isinstance(result, Lost):
            error = lost_error(result, self.session_id)
            self._mark_lost(error)
            self._state = State.FAILED
            raise error
        if result is not state:
            # The store decided otherwise: it holds fewer chunks than this producer accepted,
            # or the generation had ended already (its lease lapsed).
            log.warning("session %r ended %s in the store, not %s", self.session_id, result, state)
        self._state = result
        return result

    def _claim(self) -> int:
        """What this producer wrote, for the store to check: its chunk count or, once offsets
        are store-assigned (fan-in), its batch count (one more if chunks were dropped unsent,
        a count the store can never match)."""
        if self._part is None:
            return self._sent
        return self._seq + (1 if self._dropped else 0)

    async def _finish(self, state: State, reason: str | None) -> State | Lost:
        """Record the end; the store checks that it holds everything this producer sent."""
        sid, gen = self.session_id, self.generation
        return await self._backend.close(sid, gen, state, reason, last=self._claim())

    async def _stop(self) -> bool:
        """Flush and take no more chunks; True when the session was lost (closed as failed)."""
        self._stopping = True
        self._poke_inbox()
        await self._drain()
        self._fail_pending(StreamClosed(f"the producer of {self.session_id!r} stopped"))
        self._hub._forget(self)
        if self.lost is not None:
            self._state = State.FAILED
        return self.lost is not None

    async def __aenter__(self) -> Self:
        self._scope = anyio.CancelScope()
        self._scope.__enter__()
        if self.cancelled.is_set():
            self._scope.cancel()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        scope, self._scope = self._scope, None
        assert scope is not None, "__aexit__ without __aenter__"
        swallowed = bool(scope.__exit__(exc_type, exc, tb))
        await self._close_quietly(None if swallowed else exc)
        return swallowed

    async def _close_quietly(self, exc: BaseException | None) -> None:
        """Close after the body ended (raising ``exc``); a failed close is logged, not raised:
        the record stays ``active`` until its lease lapses, and then reads ``failed``."""
        with anyio.CancelScope(shield=True):
            try:
                await self._end(Exit(exc=exc))
            except OwnershipLost as lost:
                log.warning("producer of %r could not close: %s", self.session_id, lost)
            except StreamHubError as error:
                log.error("producer of %r could not close: %s", self.session_id, error)

    def shutdown(self) -> None:
        """Called by the hub when its grace period ran out: cancel, and close as failed."""
        self._shutdown = True
        self._hub._telemetry.failure("shutdown")
        self.request_cancel("shutdown")


async def _await(awaitable: Any) -> None:
    await awaitable
