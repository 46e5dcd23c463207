"""StreamHub: lifecycle, the producer registry, and the low-level producer/consumer API."""

from __future__ import annotations

import enum
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVarTuple

import anyio
from anyio.abc import TaskGroup

from ._adapt import as_backend, open_url
from ._budget import detached
from ._codec import HubClosingMsg, Message, ResyncMsg, encode_metadata
from ._config import Settings
from ._errors import LimitExceeded, SessionNotFound, StreamClosed
from ._fanin import Grant, SubProducer, join
from ._finish import Finisher, FinishHook
from ._keeper import LeaseKeeper
from ._outflow import Gauge, held_bytes
from ._producer import CancelCallback, Producer
from ._services import Services
from ._session import Registration, Session, as_cursor
from ._signals import chain_signals
from ._steering import MessageReceipt, send_message
from ._subscriber import SubscriberSlots, Subscription, read_snapshot
from ._telemetry import Telemetry
from ._types import Cursor, SessionInfo, State, validate_session_id, validate_turn
from ._writer import Writer
from .backends.base import Backend

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["Registration", "Session", "StreamHub"]

log = logging.getLogger("fastapi_streamhub")
Ts = TypeVarTuple("Ts")

_MAX_ACTIVE_QUERY = 1000


class _Phase(enum.Enum):
    """A running hub's phase: one value rather than flags that must agree."""

    RUNNING = "running"  # takes new streams
    CLOSING = "closing"  # begin_shutdown: new streams refused, the shutdown is scheduled
    SHUTTING_DOWN = "shutting down"  # producers get their grace, then are closed as failed


class StreamHub:
    """Registry of resumable streams on one backend (memory, Redis, Redis Cluster).

    ``StreamHub(redis_client_or_backend, **settings)`` or ``StreamHub.from_url(url, **settings)``.
    Use it as ``async with hub:`` or as FastAPI's ``lifespan=hub.lifespan``; every background
    task runs in the hub's task group and ends when the hub exits. ``on_finish`` (sync or
    async) receives a :class:`FinishedGeneration` once per generation that ends, whatever ended
    it (README, "Saving finished answers"). ``tracer_provider`` and
    ``meter_provider`` (OpenTelemetry) replace the global ones for this hub's telemetry.
    """

    def __init__(
        self,
        backend: Any = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        on_finish: FinishHook | None = None,
        **options: Any,
    ) -> None:
        self.settings = Settings(**options)
        # (and the clients from_url made, closed at exit)
        self.backend: Backend
        self.backend, self._owned = as_backend(backend)
        self._telemetry = Telemetry(self.settings.telemetry, tracer_provider, meter_provider)
        finishing = (self._telemetry, on_finish, self.spawn)
        self._finisher = Finisher(self.backend, self.settings, *finishing)
        self._writer = Writer(self.backend, self._telemetry, self.settings)
        self.out_bytes = Gauge()  # bytes in the output buffers of this hub's SSE responses
        self._tg: TaskGroup | None = None
        self._producers: dict[str, Producer] = {}
        self._parts: dict[str, set[SubProducer]] = {}  # fan-in producers joined here
        keeper_of = (self._producers, self._parts, self._finisher)
        self._leases = LeaseKeeper(self.backend, self.settings, self._telemetry, *keeper_of)
        self._slots = SubscriberSlots(self.settings.max_subscribers, self._telemetry)
        self._subscribers = self._slots.counts  # subscriptions per session, here
        self._services = Services(
            backend=self.backend,
            settings=self.settings,
            telemetry=self._telemetry,
            writer=self._writer,
            finisher=self._finisher,
            spawn=self.spawn,
            forget=self._forget,
            subscriber_slot=self._slots.hold,
            watch=self._leases.watch,
            unwatch=self._leases.unwatch,
        )
        # Subscriptions not yet collected: told when the hub shuts down, and closed at exit if
        # abandoned (a loop left with break).
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._phase = _Phase.RUNNING
        self._shutdown_done = anyio.Event()
        self._producers_changed = anyio.Event()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> StreamHub:
        """``memory://``, ``redis://``, ``rediss://``, ``unix://``,
        ``redis+cluster://host:port[,host:port...]`` or
        ``redis+sentinel://host:port[,host:port...]/service_name[/db]``,
        ``postgresql://...`` or ``postgres://...`` (libpq URLs; ``pip install
        'fastapi-streamhub[postgres]'``); options as for the constructor."""
        return cls(open_url(url), **options)

    def __repr__(self) -> str:
        return f"<StreamHub {type(self.backend).__name__} prefix={self.settings.key_prefix!r}>"

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> StreamHub:
        if self._tg is not None:
            raise RuntimeError("this StreamHub is already running")
        self._phase = _Phase.RUNNING
        self._shutdown_done = anyio.Event()
        self._shutdown_asked = anyio.Event()
        self._telemetry.start()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            await self.backend.start(self.settings, tg, self._on_control)
            tg.start_soon(self._writer.run)
            tg.start_soon(self._leases.run)
            tg.start_soon(self._shutdown_when_asked)
        except BaseException as exc:
            tg.cancel_scope.cancel()
            self._tg = None
            error = exc
            try:
                await tg.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseExceptionGroup as group:
                # anyio wraps the start's own error in a group: callers catch the error itself
                # (BackendUnavailable, ...); a group holding anything more is raised as it is.
                if group.subgroup(
                    lambda e: e is not error and not isinstance(e, BaseExceptionGroup)
                ):
                    raise
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg = self._tg
        if tg is None:
            return
        with anyio.CancelScope(shield=True):
            await self._shutdown()
            await self._close_abandoned_subscriptions()
        tg.cancel_scope.cancel()
        try:
            await tg.__aexit__(None, None, None)
        finally:
            self._tg = None
            with anyio.CancelScope(shield=True):
                await self.backend.aclose()
                for client in self._owned:
                    await client.aclose()

    def begin_shutdown(self) -> None:
        """Start the graceful shutdown now (the lifespan calls this on SIGTERM/SIGINT).

        New streams are refused; running producers get ``shutdown_grace`` seconds to finish,
        then are cancelled and closed as ``failed`` with reason ``shutdown``; open responses
        then end, so clients resume on another instance with their cursor.
        """
        if self._tg is not None and self._phase is _Phase.RUNNING:
            self._phase = _Phase.CLOSING
            # Only sets an event: the signal handler calls this outside any task, where anyio
            # cannot start one once sniffio is installed (it raises NoEventLoopError).
            self._shutdown_asked.set()

    async def _shutdown_when_asked(self) -> None:
        await self._shutdown_asked.wait()
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._phase is _Phase.SHUTTING_DOWN:
            await self._shutdown_done.wait()
            return
        self._phase = _Phase.SHUTTING_DOWN
        try:
            with anyio.move_on_after(self.settings.shutdown_grace):
                while self._producers:
                    self._producers_changed = anyio.Event()
                    await self._producers_changed.wait()
            remaining: list[Producer] = list(self._producers.values())
            remaining += [part for parts in self._parts.values() for part in parts]
            for producer in remaining:
                producer.shutdown()
            with anyio.move_on_after(self.settings.shutdown_grace):
                async with anyio.create_task_group() as tg:
                    for producer in remaining:
                        tg.start_soon(self._close_for_shutdown, producer)
            for subscription in list(self._subscriptions):
                subscription.listener.push(_HUB_CLOSING)
            # The hooks of the generations that ended here run before the hub stops.
            await self._finisher.drain(self.settings.shutdown_grace)
        finally:
            self._shutdown_done.set()

    async def _close_abandoned_subscriptions(self) -> None:
        for subscription in list(self._subscriptions):
            try:
                await subscription.aclose()
            except RuntimeError as exc:
                # Still being iterated by another task: it ends with StreamClosed on its own.
                log.debug("subscription of %r left to its task: %s", subscription.session_id, exc)

    async def _close_for_shutdown(self, producer: Producer) -> None:
        try:
            await producer.close()  # its shutdown flag is set: the rule stores failed/shutdown
        except Exception as exc:
            log.warning("could not close %r at shutdown: %s", producer, exc)

    @asynccontextmanager
    async def lifespan(
        self, app: Any = None, *, handle_signals: bool = True
    ) -> AsyncIterator[dict[str, Any]]:
        """FastAPI/Starlette lifespan: runs the hub and sets ``app.state.streamhub``.

        Compose it with your own lifespan by entering it inside yours:
        ``async with hub.lifespan(app): yield``.
        """
        if app is not None:
            app.state.streamhub = self
        async with self:
            restore = chain_signals(self.begin_shutdown, enabled=handle_signals)
            try:
                yield {"streamhub": self}
            finally:
                restore()

    def spawn(self, fn: Callable[[*Ts], Coroutine[Any, Any, Any]], *args: *Ts) -> None:
        """Run ``fn(*args)`` in the hub's task group."""
        if self._tg is None:
            raise RuntimeError("the StreamHub is not running: use 'async with hub' or its lifespan")
        self._tg.start_soon(detached, fn, *args)

    def _require_running(self) -> None:
        if self._tg is None:
            raise RuntimeError("the StreamHub is not running: use 'async with hub' or its lifespan")
        if self._phase is not _Phase.RUNNING:
            raise StreamClosed("the StreamHub is shutting down")

    # -- producers -------------------------------------------------------------------------

    async def register(
        self,
        session_id: str,
        on_cancel: CancelCallback | None = None,
        *,
        metadata: Any = None,
        restart: bool = False,
        turn: str | None = None,
    ) -> Registration:
        """Claim ``session_id``: ``created`` is True for exactly one caller among concurrent ones.

        An unknown or failed session is claimed with a new, higher generation; an active one is
        left to its producer; a finished one is left alone unless ``restart=True``.

        ``turn`` (what the generation answers: a chat message id) decides instead of ``restart``:
        the same turn, running or finished, is joined; a running generation of another turn
        ends ``cancelled`` (reason ``superseded``) as the session is claimed, atomically.
        """
        validate_session_id(session_id)
        self._require_running()
        validate_turn(turn)
        limit = self.settings.max_metadata_bytes
        blob = None if metadata is None else encode_metadata(metadata, limit)
        claiming = self.backend.claim(
            session_id,
            token=uuid.uuid4().hex,
            restart=restart,
            metadata=blob,
            # Only when given: backends written before turns keep working.
            **({"turn": turn} if turn is not None else {}),
        )
        if self._telemetry.enabled:
            claiming = self._telemetry.register(session_id, restart, claiming)
        result = await claiming
        if not result.created:
            return Registration(None, False, result.generation, result.state)
        await self._finisher.expect(session_id, result.generation)
        producer = Producer(self._services, session_id, result.generation, on_cancel=on_cancel)
        previous = self._producers.get(session_id)
        if previous is not None:
            previous.mark_stale()
        self._producers[session_id] = producer
        self._leases.wake()
        return Registration(producer, True, result.generation, State.ACTIVE)

    def _forget(self, producer: Producer) -> None:
        if self._producers.get(producer.session_id) is producer:
            del self._producers[producer.session_id]
            self._producers_changed.set()
        parts = self._parts.get(producer.session_id)
        if parts is not None and isinstance(producer, SubProducer):
            parts.discard(producer)
            if not parts:
                del self._parts[producer.session_id]

    async def join(
        self, grant: Grant | str, on_cancel: CancelCallback | None = None
    ) -> SubProducer:
        """Write into another producer's session under the name of ``grant`` (fan-in).

        ``grant`` comes from the owner's :meth:`Producer.admit` (or its ``str()``, on another
        instance). A later join under the same name takes the part over from an earlier
        handle. Raises :class:`OwnershipLost` (or a subclass) when the owner's generation is
        over or the name was not admitted, :class:`StreamClosed` when that producer ended its
        part.
        """
        if isinstance(grant, str):
            grant = Grant.parse(grant)
        self._require_running()
        part = await join(self._services, grant, on_cancel)
        self._parts.setdefault(grant.session_id, set()).add(part)
        return part

    # -- consumers -------------------------------------------------------------------------

    async def status(self, session_id: str) -> SessionInfo | None:
        """The session's record, or None when unknown."""
        validate_session_id(session_id)
        return (await self.backend.info([session_id]))[0]

    async def get(self, session_id: str) -> Session | None:
        """A consumer handle on the session, or None when unknown."""
        info = await self.status(session_id)
        return None if info is None else Session(self, info)

    async def active(self, session_ids: Sequence[str]) -> list[str]:
        """The ids among ``session_ids`` whose producer holds a live lease."""
        ids = list(dict.fromkeys(validate_session_id(s) for s in session_ids))
        if len(ids) > _MAX_ACTIVE_QUERY:
            raise LimitExceeded(f"at most {_MAX_ACTIVE_QUERY} session ids per query")
        if not ids:
            return []
        infos = await self.backend.info(ids)
        return [
            info.session_id
            for info in infos
            if info is not None and info.state is State.ACTIVE and info.lease_remaining > 0
        ]

    async def metadata(self, session_id: str) -> Any:
        """The session's metadata; raises SessionNotFound for an unknown session."""
        info = await self.status(session_id)
        if info is None:
            raise SessionNotFound(f"session {session_id!r} not found")
        return info.metadata

    async def state(self, session_id: str) -> State:
        """The session's state; raises SessionNotFound for an unknown session."""
        info = await self.status(session_id)
        if info is None:
            raise SessionNotFound(f"session {session_id!r} not found")
        return info.state

    async def done(self, session_id: str) -> bool:
        """True once the session finished."""
        return (await self.state(session_id)).finished

    def subscribe(
        self,
        session_id: str,
        after: Cursor | str | None = None,
        *,
        buffer: int | None = None,
        batch_replay: bool = False,
        batch: bool = False,
    ) -> Subscription:
        """Items of the session after ``after`` (replay, then live), ending with :class:`End`.

        A cursor of another generation, or one whose data is gone, yields a :class:`Reset`
        and the replay starts from the first stored chunk. Raises SessionNotFound on first
        iteration for an unknown session. ``batch_replay=True`` delivers replayed chunks as
        :class:`Batch` items (one per page read); ``batch=True`` live chunks too (one per write
        received), for consumers that handle many chunks at a time.
        """
        validate_session_id(session_id)
        size = self.settings.subscriber_buffer if buffer is None else buffer
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError("buffer must be a positive integer")
        subscription = Subscription(
            self._services,
            session_id,
            after=as_cursor(after),
            buffer=size,
            batch_replay=batch_replay,
            batch=batch,
        )
        self._subscriptions.add(subscription)
        return subscription

    async def cancel(self, session_id: str, wait: float | None = None) -> State:
        """Ask the session's producer, wherever it runs, to stop.

        Returns at once with the state seen (``active`` while the producer is still stopping)
        unless ``wait`` is given: then it returns the final state as soon as the stream ends,
        or the current state when ``wait`` seconds pass. Raises SessionNotFound (creating
        nothing) for an unknown session.
        """
        validate_session_id(session_id)
        if wait is not None and (isinstance(wait, bool) or not wait >= 0):
            raise ValueError("wait must be a non-negative number of seconds")
        cancelling = self.backend.cancel(session_id)
        if self._telemetry.enabled:
            cancelling = self._telemetry.cancel(session_id, wait, cancelling)
        info = await cancelling
        if info is None:
            raise SessionNotFound(f"session {session_id!r} not found")
        local = self._producers.get(session_id)
        if local is not None and local.generation == info.generation:
            local.request_cancel("cancelled")
        if info.state.finished or not wait:
            return info.state
        return await self._leases.wait_finished(session_id, wait)

    async def snapshot(self, session_id: str) -> dict[str, Any]:
        """The whole output so far in one value: ``text`` joins the text chunks."""
        info = await self.status(session_id)
        if info is None:
            raise SessionNotFound(f"session {session_id!r} not found")
        return await read_snapshot(self.backend, self.settings.replay_batch, info)

    async def send_message(
        self, session_id: str, data: Any, *, key: str | None = None
    ) -> MessageReceipt:
        """Send a steering message (any JSON value) to the session's running producer,
        wherever it runs; it reads it from :meth:`Producer.messages`.

        Stored for the current generation and delivered to it exactly once, in order.
        ``key`` (1-200 characters of ``[A-Za-z0-9._:-]``) makes a retry safe: a key already
        used answers the first message's receipt (``duplicate=True``). Raises SessionNotFound
        (creating nothing), SessionFinished when the generation is over, LimitExceeded over
        ``max_message_bytes`` (per message) or ``max_messages(_bytes)`` (per generation).
        """
        return await send_message(self, session_id, data, key)

    async def delete(self, session_id: str) -> bool:
        """Stop a running producer (as a cancel) and remove every key of the session."""
        validate_session_id(session_id)
        return await self.backend.delete(session_id)

    # -- subscriber bookkeeping -------------------------------------------------------

    def buffered_bytes(self) -> int:
        """Bytes of chunks held here now for producers and readers (README, "Memory sizing")."""
        queues = [p.pending_bytes for p in self._producers.values()]
        queues += [s.listener.held_bytes for s in list(self._subscriptions)]
        return held_bytes(queues, self.out_bytes)

    def _on_control(self, session_id: str, msg: Message) -> None:
        """A signal from the control bus: route it to the local producer of the session."""
        if isinstance(msg, ResyncMsg):
            # Signals may have been missed: renew now, which also reads the durable cancel flags.
            self._leases.renew_soon()
            for local in self._producers.values():
                local.on_control(msg)  # and read the steering messages again
            return
        producer = self._producers.get(session_id)
        if producer is not None:
            producer.on_control(msg)
        for part in tuple(self._parts.get(session_id, ())):
            part.on_control(msg)


_HUB_CLOSING = HubClosingMsg()
