"""The producer handle: a group-committing writer, cancel delivery, and the close protocol."""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ._codec import CancelMsg, DeletedMsg, Message, dumps_json, encode_chunk
from ._errors import (
    BackendUnavailable,
    LeaseExpired,
    LimitExceeded,
    OwnershipLost,
    SessionDeleted,
    StaleGeneration,
    StreamClosed,
    StreamHubError,
)
from ._fanout import CallbackListener
from ._types import Cursor, State
from .backends.base import Lost

if TYPE_CHECKING:
    from ._hub import StreamHub

__all__ = ["Producer"]

log = logging.getLogger("fastapi_streamhub")

CancelCallback = Callable[["Producer"], Any]


def lost_error(lost: Lost, session_id: str) -> OwnershipLost:
    """The typed error for a refused write."""
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
        self._settings = hub.settings
        self._on_cancel: list[CancelCallback] = [on_cancel] if on_cancel else []
        self._writer = uuid.uuid4().hex[:16]
        self._seq = 0
        self._pending: list[tuple[bytes, _Ack | None]] = []
        self._wake = anyio.Event()
        self._room = anyio.Event()
        self._stopping = False
        self._inflight = False
        self._idle = anyio.Event()
        self._writer_done = anyio.Event()
        self._error: StreamHubError | None = None
        self._state: State | None = None
        self._last = Cursor(generation, 0)
        self._scope: anyio.CancelScope | None = None
        self._shutdown = False

    def __repr__(self) -> str:
        return f"<Producer {self.session_id!r} generation={self.generation}>"

    @property
    def cursor(self) -> Cursor:
        """Cursor of the last persisted chunk (offset 0 before the first)."""
        return self._last

    @property
    def closed(self) -> bool:
        """True once :meth:`close` finished."""
        return self._state is not None

    # -- writing ---------------------------------------------------------------------------

    def _encode(self, chunk: object) -> bytes:
        payload = encode_chunk(chunk)
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
        self._check_open()
        while len(self._pending) >= self._settings.max_pending:
            self._room = anyio.Event()
            await self._room.wait()
            self._check_open()
        self._pending.append((payload, ack))
        self._wake.set()

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

    async def flush(self) -> Cursor:
        """Wait until every queued chunk is persisted; return the last cursor."""
        while (self._pending or self._inflight) and self._error is None:
            self._idle = anyio.Event()
            await self._idle.wait()
        if self._error is not None:
            raise self._error
        return self._last

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

    async def run_writer(self) -> None:
        """The writer task (started by the hub): listens for cancels and commits batches."""
        listener = CallbackListener(self._on_ctl)
        try:
            async with self._backend.listen(self.session_id, "ctl", listener):
                await self._write_loop()
        except StreamHubError as exc:
            self._fail(exc)
        except Exception as exc:
            # Anything unexpected must not take the hub's task group down; it fails this stream.
            log.exception("writer of %r crashed", self.session_id)
            self._fail(BackendUnavailable(f"writer crashed: {describe(exc)}"))
        finally:
            self._fail_pending(StreamClosed(f"the producer of {self.session_id!r} stopped"))
            self._inflight = False
            self._idle.set()
            self._writer_done.set()

    async def _write_loop(self) -> None:
        max_batch = self._settings.max_batch
        while True:
            while not self._pending:
                if self._stopping:
                    return
                self._wake = anyio.Event()
                await self._wake.wait()
            batch = self._pending[:max_batch]
            del self._pending[:max_batch]
            self._room.set()
            self._seq += 1
            self._inflight = True
            try:
                result = await self._backend.append(
                    self.session_id,
                    self.generation,
                    self._writer,
                    self._seq,
                    [payload for payload, _ in batch],
                )
            except BackendUnavailable as exc:
                self._fail(exc, batch)
                return
            if isinstance(result, Lost):
                error = lost_error(result, self.session_id)
                self._mark_lost(error)
                self._fail(error, batch)
                return
            first = result.first
            for i, (_, ack) in enumerate(batch):
                if ack is not None:
                    ack.cursor = Cursor(self.generation, first + i)
                    ack.event.set()
            self._last = Cursor(self.generation, first + len(batch) - 1)
            self._inflight = False
            if not self._pending:
                self._idle.set()
            if result.cancel_requested:
                self.request_cancel("cancelled")

    def _fail(self, error: StreamHubError, batch: list[tuple[bytes, _Ack | None]] = ()) -> None:  # type: ignore[assignment]
        if self._error is None:
            self._error = error
            log.warning("producer of %r failed: %s", self.session_id, error)
        for _, ack in batch:
            if ack is not None:
                ack.error = error
                ack.event.set()
        self._fail_pending(error)
        self.request_cancel("error")

    def _fail_pending(self, error: StreamHubError) -> None:
        pending, self._pending = self._pending, []
        for _, ack in pending:
            if ack is not None:
                ack.error = error
                ack.event.set()
        self._room.set()

    # -- cancel ----------------------------------------------------------------------------

    def _on_ctl(self, msg: Message) -> None:
        if isinstance(msg, CancelMsg) and msg.generation == self.generation:
            self.request_cancel("cancelled")
        elif isinstance(msg, DeletedMsg):
            self._mark_lost(SessionDeleted(f"session {self.session_id!r} was deleted"))

    def _mark_lost(self, error: OwnershipLost) -> None:
        if self.lost is None:
            self.lost = error
            self._error = error
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

    # -- closing ---------------------------------------------------------------------------

    async def close(self, state: State | None = None, reason: str | None = None) -> State:
        """Flush, then finish the generation (default ``done``, or ``cancelled`` after a cancel)."""
        if self._state is not None:
            return self._state
        self._stopping = True
        self._wake.set()
        await self._writer_done.wait()
        self._hub._forget(self)
        if self.lost is not None:
            self._state = State.FAILED
            return self._state
        if state is None:
            state = State.CANCELLED if self.cancelled.is_set() and not self._error else State.DONE
            if self._error is not None:
                state, reason = State.FAILED, reason or str(self._error)
        result = await self._backend.close(self.session_id, self.generation, state, reason)
        if isinstance(result, Lost):
            error = lost_error(result, self.session_id)
            self._mark_lost(error)
            self._state = State.FAILED
            raise error
        self._state = result
        return result

    async def __aenter__(self) -> Producer:
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
        state: State | None
        reason: str | None = None
        if self.lost is not None:
            state = None  # another generation owns the session: nothing may be written
        elif self._shutdown:
            state, reason = State.FAILED, "shutdown"
        elif self._error is not None:
            state, reason = State.FAILED, describe(self._error)
        elif exc is None or swallowed:
            state = State.CANCELLED if self.cancelled.is_set() else State.DONE
            reason = self.cancel_reason if self.cancelled.is_set() else None
        elif isinstance(exc, anyio.get_cancelled_exc_class()):
            state, reason = State.CANCELLED, "cancelled"
        else:
            state, reason = State.FAILED, describe(exc)
        if state is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await self.close(state, reason)
                except OwnershipLost as lost:
                    log.warning("producer of %r could not close: %s", self.session_id, lost)
                except StreamHubError as error:
                    log.error("producer of %r could not close: %s", self.session_id, error)
        return swallowed

    def shutdown(self) -> None:
        """Called by the hub when its grace period ran out: cancel, and close as failed."""
        self._shutdown = True
        self.request_cancel("shutdown")


def describe(exc: BaseException) -> str:
    """A short, single-line reason for a failure."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.replace("\r", " ").replace("\n", " ")[:500]


async def _await(awaitable: Any) -> None:
    await awaitable
