"""The producer handle: what it accepts, cancel delivery, fan-in admission, and the close
protocol (its bounded buffer is in ``_buffer.py``; the hub's writer, which commits the buffers,
in ``_writer.py``)."""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import anyio
import anyio.lowlevel

from ._buffer import Ack, ChunkBuffer, Taken
from ._codec import (
    CancelMsg,
    DeletedMsg,
    LostMsg,
    Message,
    ResyncMsg,
    SteerMsg,
    encode_chunk,
    encode_metadata,
)
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
from ._grant import Grant, check_name
from ._steering import Inbox, SteeringMessage
from ._types import Cursor, State
from .backends.base import Backend, Lost

if TYPE_CHECKING:
    from ._config import Settings
    from ._finish import Finisher, FinishHook
    from ._telemetry import Telemetry
    from ._writer import Writer

__all__ = ["Producer", "ProducerHost", "describe", "lost_error"]

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


class ProducerHost(Protocol):
    """What a producer uses of the hub that registered it (the hub passes its services)."""

    @property
    def backend(self) -> Backend: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def telemetry(self) -> Telemetry: ...

    @property
    def writer(self) -> Writer: ...

    @property
    def finisher(self) -> Finisher: ...

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the hub's task group."""

    def forget(self, producer: Producer) -> None:
        """Stop renewing ``producer`` and routing signals to it (it stopped or was lost)."""


class _Phase(enum.Enum):
    """Where a producer is in its life: one value rather than flags that must agree."""

    OPEN = "open"  # takes chunks
    STOPPING = "stopping"  # closing: flushing what it took, takes no more
    CLOSED = "closed"  # the end is decided; ``_state`` holds the state stored


class Producer:
    """Writes one generation of a session. Obtain it from :meth:`StreamHub.register`.

    ``publish`` waits until the chunk is persisted and returns its cursor; ``send`` only waits
    for room in the bounded buffer (errors surface on the next call and at ``close``). While one
    write is in flight, chunks that arrive are written together in the next one (group commit).
    """

    def __init__(
        self,
        host: ProducerHost,
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
        self._host = host
        self._backend = host.backend
        self._settings = host.settings
        self._telemetry = host.telemetry
        self._on_cancel: list[CancelCallback] = [on_cancel] if on_cancel else []
        self._buffer = ChunkBuffer(
            session_id, generation, host.settings, host.writer, self._write_failed
        )
        self._phase = _Phase.OPEN
        self._error: StreamHubError | None = None
        self._state: State | None = None  # the state stored, once CLOSED
        self._scope: anyio.CancelScope | None = None
        # The hub's shutdown grace ran out: an input to the ending rule, not a phase (the
        # producer may still be open, or already stopping, when it happens).
        self._shutdown = False
        self._inbox: Inbox | None = None
        # Fan-in (see _fanin.py): the name its chunks carry (sub-producers); its part is the
        # buffer's (the store assigns the offsets of its batches).
        self.name: str | None = None
        # This generation's on_finish hook, instead of the hub's (ResumableStreamingResponse).
        self.on_finish: FinishHook | None = None

    def __repr__(self) -> str:
        return f"<Producer {self.session_id!r} generation={self.generation}>"

    @property
    def cursor(self) -> Cursor:
        """Cursor of the last persisted chunk (offset 0 before the first)."""
        return self._buffer.last

    @property
    def pending_bytes(self) -> int:
        """Bytes of the chunks queued and not yet handed to the writer (``max_pending_bytes``)."""
        return self._buffer.pending_bytes

    @property
    def closed(self) -> bool:
        """True once :meth:`close` finished."""
        return self._phase is _Phase.CLOSED

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
        if self._phase is not _Phase.OPEN:
            raise StreamClosed(f"the producer of {self.session_id!r} is closed")

    async def _enqueue(self, payload: bytes, ack: Ack | None) -> None:
        if self.cancelled.is_set() and self._phase is not _Phase.OPEN:
            # Cancelled and closing (e.g. at shutdown): a caller inside the producer's cancel
            # scope is cancelled here, as at any await, rather than told "closed".
            await anyio.lowlevel.checkpoint()
        self._check_open()
        await self._buffer.put(payload, ack, self._check_open)

    async def publish(self, chunk: object) -> Cursor:
        """Persist one chunk and return its cursor; raises if it was not persisted."""
        payload = self._encode(chunk)
        ack = Ack()
        await self._enqueue(payload, ack)
        await ack.event.wait()
        if ack.error is not None:
            raise ack.error
        assert ack.cursor is not None  # set whenever error is None
        return ack.cursor

    async def send(self, chunk: object) -> None:
        """Queue one chunk without waiting for persistence; failures raise on a later call."""
        payload = self._encode(chunk)
        # The common case in one call: open, healthy, room in the buffer.
        if self._phase is _Phase.OPEN and self._error is None and self._buffer.offer(payload, None):
            return
        await self._enqueue(payload, None)

    async def _drain(self) -> None:
        """Until nothing is queued or in flight, or the producer failed."""
        while self._buffer.busy and self._error is None:
            await self._buffer.wait_idle()

    async def flush(self) -> Cursor:
        """Wait until every queued chunk is persisted; return the last cursor."""
        await self._drain()
        if self._error is not None:
            raise self._error
        return self._buffer.last

    async def admit(self, name: str) -> Grant:
        """Let another producer, ``name``, write into this generation (fan-in).

        Returns the :class:`Grant` that :meth:`StreamHub.join` takes, on any instance. Queued
        chunks are flushed first; from then on every producer's chunks, this one's included,
        get their offsets from the store, so all of them are totally ordered by the cursor.
        """
        check_name(name)
        self._check_open()
        lost = await self._backend.admit(self.session_id, self.generation, name)
        if lost is not None:
            error = lost_error(lost, self.session_id)
            self.mark_lost(error)
            raise error
        if self._buffer.part is None:
            # The owner's part ("", no token: one owner per generation) exists now; batches
            # taken from here on get their offsets from the store.
            self._buffer.part = ("", "")
        # One batch taken before may be in flight with offsets of its own: wait for it (and
        # the rest) before anyone can hold the grant.
        await self.flush()
        return Grant(self.session_id, self.generation, name)

    async def set_metadata(self, value: Any) -> None:
        """Replace the session's metadata (any JSON value); subscribers receive it live."""
        self._check_open()
        blob = encode_metadata(value, self._settings.max_metadata_bytes)
        # Chunks queued before the metadata are written first, so order is kept.
        await self.flush()
        lost = await self._backend.set_metadata(self.session_id, self.generation, blob)
        if lost is not None:
            self.mark_lost(lost)
            raise lost_error(lost, self.session_id)

    def _write_failed(self, result: Lost | StreamHubError, batch: Taken) -> None:
        """The buffer's batch in flight was not stored."""
        error = lost_error(result, self.session_id) if isinstance(result, Lost) else result
        if isinstance(error, OwnershipLost):
            self.mark_lost(error)
        if self._error is None:
            self._error = error
            self._telemetry.failure("backend")
            log.warning("producer of %r failed: %s", self.session_id, error)
        self._buffer.fail(error, batch)
        self.request_cancel("error")

    # -- cancel ----------------------------------------------------------------------------

    def on_control(self, msg: Message) -> None:
        """A signal for this session from the control bus (cancel, lost, deleted, a steering
        message; a resync after a reconnect)."""
        if isinstance(msg, CancelMsg) and msg.generation == self.generation:
            self.request_cancel("cancelled")
        elif isinstance(msg, LostMsg) and msg.generation == self.generation:
            if msg.why == "stale":
                self.mark_stale()
            else:
                self.mark_lost(Lost("closed", State.FAILED, msg.why))
        elif isinstance(msg, DeletedMsg):
            self.mark_lost(SessionDeleted(f"session {self.session_id!r} was deleted"))
        elif (isinstance(msg, SteerMsg) and msg.generation == self.generation) or isinstance(
            msg, ResyncMsg
        ):
            self._poke_inbox()  # a message was stored, or signals may have been missed

    def mark_lost(self, lost: OwnershipLost | Lost) -> None:
        """The session is not this producer's any more (the store refused it, or the hub
        learnt so): no more writes, and the cancel fires."""
        error = lost_error(lost, self.session_id) if isinstance(lost, Lost) else lost
        if self.lost is None:
            self.lost = error
            self._error = error
            if not isinstance(error, SessionDeleted):
                self._telemetry.failure("lost")
            # Not ours any more: no renewal, and local followers fall back to the lease check.
            self._host.forget(self)
        reason = "deleted" if isinstance(error, SessionDeleted) else "ownership_lost"
        self.request_cancel(reason)

    def mark_stale(self) -> None:
        """The session was claimed again: a newer generation owns it."""
        self.mark_lost(StaleGeneration(f"session {self.session_id!r} was claimed again"))

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
                self._host.spawn(_await, result)

    def add_cancel_callback(self, callback: CancelCallback) -> None:
        """Also call ``callback(producer)`` when a cancel arrives (at once if one already has)."""
        self._on_cancel.append(callback)
        if self.cancelled.is_set():
            result = callback(self)
            if inspect.isawaitable(result):
                self._host.spawn(_await, result)

    # -- steering messages -----------------------------------------------------------------

    def messages(self) -> AsyncIterator[SteeringMessage]:
        """Steering messages clients sent to this generation (``POST {prefix}/{sid}/messages``,
        :meth:`StreamHub.send_message`), each once, in order, as they arrive; those sent before
        the first call are kept for it. Ends when this producer is cancelled or closed."""
        return self._get_inbox().messages()

    def messages_nowait(self) -> list[SteeringMessage]:
        """Steering messages that arrived and were not taken yet, without waiting."""
        return self._get_inbox().messages_nowait()

    async def load_stored_messages(self) -> None:
        """Read the steering messages stored before this generation listened, so the first
        ``messages_nowait()`` returns them (the runner calls it before a factory's generator)."""
        await self._get_inbox().prime()

    def _get_inbox(self) -> Inbox:
        if self._inbox is None:
            self._inbox = Inbox(self._host, self.session_id, self.generation, self._inbox_over)
        return self._inbox

    def _inbox_over(self) -> bool:
        """The inbox stops reading once this producer is cancelled or stops."""
        return self.cancelled.is_set() or self._phase is not _Phase.OPEN

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
        if self._phase is _Phase.CLOSED:
            assert self._state is not None  # set with the phase
            return self._state
        # Flushed first: a write that fails during the flush decides the state too.
        if await self._stop():
            if self.name is None and not isinstance(self.lost, SessionDeleted):
                # Replaced (a new turn, a restart) or failed by the store: the hook of this
                # generation runs here if the store still has it (a claim keeps it for that).
                self._host.finisher.ended(self.session_id, self.generation, self.on_finish)
            return State.FAILED
        lost = self.lost is not None
        cancel = self.cancel_reason if self.cancelled.is_set() else None
        error = None if lost else self._error
        seen = replace(
            requested, cancel_reason=cancel, error=error, lost=lost, shutdown=self._shutdown
        )
        state, reason = final_state(seen)
        if state is None:
            return self._closed_as(State.FAILED)
        if state is State.FAILED and self._error is None and not self._shutdown:
            self._telemetry.failure("generator_error")
        result = await self._finish_and_settle(state, reason)
        if isinstance(result, Lost):
            error = lost_error(result, self.session_id)
            self.mark_lost(error)
            self._closed_as(State.FAILED)
            raise error
        if result is not state:
            # The store decided otherwise: it holds fewer chunks than this producer accepted,
            # or the generation had ended already (its lease lapsed).
            log.warning("session %r ended %s in the store, not %s", self.session_id, result, state)
        return self._closed_as(result)

    def _closed_as(self, state: State) -> State:
        self._phase = _Phase.CLOSED
        self._state = state
        return state

    async def _finish_and_settle(self, state: State, reason: str | None) -> State | Lost:
        """Record the end and run the on_finish hook (before it with ``finish_before_end``)."""
        if self.name is not None:  # a fan-in part: the owner's end runs the hook
            return await self._finish(state, reason)
        finisher = self._host.finisher
        sid, gen = self.session_id, self.generation
        ending = finisher.before_end(sid, gen, self.on_finish, state, reason)
        if ending is not None:
            await finisher.wait(ending)
        try:
            result = await self._finish(state, reason)
        finally:
            if ending is not None:
                ending.closed.set()
        if ending is None and (not isinstance(result, Lost) or result.why != "gone"):
            # Ended here, by whoever failed its lapsed lease, or by a claim that replaced it
            # (which keeps it for its hook): the claim decides who runs it.
            finisher.ended(sid, gen, self.on_finish)
        return result

    async def _finish(self, state: State, reason: str | None) -> State | Lost:
        """Record the end; the store checks that it holds everything this producer sent."""
        sid, gen = self.session_id, self.generation
        return await self._backend.close(sid, gen, state, reason, last=self._buffer.claim())

    async def _stop(self) -> bool:
        """Flush and take no more chunks; True when the session was lost (closed as failed)."""
        self._phase = _Phase.STOPPING
        self._poke_inbox()
        await self._drain()
        self._buffer.fail_pending(StreamClosed(f"the producer of {self.session_id!r} stopped"))
        self._host.forget(self)
        if self.lost is not None:
            self._closed_as(State.FAILED)
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
        await self.close_after(None if swallowed else exc)
        return swallowed

    async def close_after(self, exc: BaseException | None) -> None:
        """Close after the producing code ended (raising ``exc``, or None), by the one ending
        rule; a failed close is logged, not raised: the record stays ``active`` until its lease
        lapses, and then reads ``failed``."""
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
        self._telemetry.failure("shutdown")
        self.request_cancel("shutdown")


async def _await(awaitable: Any) -> None:
    await awaitable
