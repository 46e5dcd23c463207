"""StreamHub: lifecycle, the low-level producer/consumer API, and the lease keeper."""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVarTuple

import anyio
from anyio.abc import TaskGroup

from ._budget import detached
from ._codec import DeletedMsg, EndMsg, HubClosingMsg, Message, ResyncMsg, dumps_json
from ._config import Settings
from ._errors import LimitExceeded, SessionNotFound, StreamClosed
from ._fanin import Grant, SubProducer, check_parts, join
from ._fanout import QueueListener
from ._outflow import Gauge, held_bytes
from ._producer import CancelCallback, Producer
from ._steering import MessageReceipt, send_message
from ._subscriber import Subscription
from ._telemetry import Telemetry
from ._types import Cursor, SessionInfo, Snapshot, State, validate_session_id
from ._writer import Writer
from .backends.base import Backend, Lost
from .backends.memory import MemoryBackend

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


@dataclass(frozen=True, slots=True)
class Registration:
    """Result of :meth:`StreamHub.register`; unpacks as ``producer, created``."""

    producer: Producer | None
    created: bool
    generation: int
    state: State

    def __iter__(self) -> Iterator[Any]:
        yield self.producer
        yield self.created


@dataclass(slots=True)
class _Watch:
    deadline: float
    generation: int
    listeners: set[QueueListener] = field(default_factory=set)


def _cursor(after: Cursor | str | None) -> Cursor | None:
    if after is None or isinstance(after, Cursor):
        return after
    return Cursor.parse(after)


class Session:
    """A consumer's handle on one session (from :meth:`StreamHub.get`)."""

    def __init__(self, hub: StreamHub, info: SessionInfo) -> None:
        self.hub = hub
        self.session_id = info.session_id
        self.info = info

    def __repr__(self) -> str:
        return f"<Session {self.session_id!r} {self.info.state.value}>"

    def subscribe(
        self,
        after: Cursor | str | None = None,
        *,
        buffer: int | None = None,
        batch_replay: bool = False,
        batch: bool = False,
    ) -> Subscription:
        """Replay from ``after`` (exclusive; None = from the start), then follow live."""
        return self.hub.subscribe(
            self.session_id, after=after, buffer=buffer, batch_replay=batch_replay, batch=batch
        )

    async def refresh(self) -> SessionInfo:
        """Re-read the record."""
        info = await self.hub.status(self.session_id)
        if info is None:
            raise SessionNotFound(f"session {self.session_id!r} not found")
        self.info = info
        return info

    async def metadata(self) -> Any:
        """The current metadata (None if never set)."""
        return (await self.refresh()).metadata

    async def state(self) -> State:
        """The current state."""
        return (await self.refresh()).state

    async def done(self) -> bool:
        """True once the session finished (done, cancelled or failed)."""
        return (await self.state()).finished

    async def cancel(self, wait: float | None = None) -> State:
        """Ask the producer to stop; see :meth:`StreamHub.cancel`."""
        return await self.hub.cancel(self.session_id, wait=wait)


class StreamHub:
    """Registry of resumable streams on one backend (memory, Redis, Redis Cluster).

    ``StreamHub(redis_client_or_backend, **settings)`` or ``StreamHub.from_url(url, **settings)``.
    Use it as ``async with hub:`` or as FastAPI's ``lifespan=hub.lifespan``; every background
    task runs in the hub's task group and ends when the hub exits. ``tracer_provider`` and
    ``meter_provider`` (OpenTelemetry) replace the global ones for this hub's telemetry.
    """

    def __init__(
        self,
        backend: Any = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        **options: Any,
    ) -> None:
        self.settings = Settings(**options)
        self.backend: Backend = _as_backend(backend)
        self._telemetry = Telemetry(self.settings.telemetry, tracer_provider, meter_provider)
        self._writer = Writer(self.backend, self._telemetry, self.settings)
        self.out_bytes = Gauge()  # bytes in the output buffers of this hub's SSE responses
        self._owned: list[Any] = []  # clients from_url made, closed at exit
        self._tg: TaskGroup | None = None
        self._producers: dict[str, Producer] = {}
        self._parts: dict[str, set[SubProducer]] = {}  # fan-in producers joined here
        self._watched: dict[str, _Watch] = {}
        self._subscribers: dict[str, int] = {}
        # Subscriptions not yet collected: told when the hub shuts down, and closed at exit if
        # abandoned (a loop left with break).
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._phase = _Phase.RUNNING
        self._shutdown_done = anyio.Event()
        self._keeper_wake = anyio.Event()
        self._renew_now = False
        self._producers_changed = anyio.Event()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> StreamHub:
        """``memory://``, ``redis://``, ``rediss://``, ``unix://``,
        ``redis+cluster://host:port[,host:port...]`` or
        ``redis+sentinel://host:port[,host:port...]/service_name[/db]``; options as for the
        constructor."""
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme == "memory":
            return cls(MemoryBackend(), **options)
        from .backends._urls import redis_client

        client, owned = redis_client(url)
        hub = cls(client, **options)
        hub._owned = owned
        return hub

    def __repr__(self) -> str:
        return f"<StreamHub {type(self.backend).__name__} prefix={self.settings.key_prefix!r}>"

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> StreamHub:
        if self._tg is not None:
            raise RuntimeError("this StreamHub is already running")
        self._phase = _Phase.RUNNING
        self._shutdown_done = anyio.Event()
        self._telemetry.start()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            await self.backend.start(self.settings, tg, self._on_control)
            tg.start_soon(self._writer.run)
            tg.start_soon(self._keeper)
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
            self._tg.start_soon(self._shutdown)

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
            restore = self._hook_signals() if handle_signals else _nothing
            try:
                yield {"streamhub": self}
            finally:
                restore()

    def _hook_signals(self) -> Callable[[], None]:
        """Chain SIGTERM/SIGINT to :meth:`begin_shutdown`, keeping the server's own handler.

        Servers such as uvicorn wait for open responses to finish before running the lifespan
        shutdown; SSE responses only finish once the hub starts shutting down, so the hub must
        hear the signal first.
        """
        if threading.current_thread() is not threading.main_thread():
            return _nothing
        loop = asyncio.get_running_loop()
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            loop.call_soon_threadsafe(self.begin_shutdown)
            chained = previous.get(signum)
            if callable(chained):
                chained(signum, frame)

        for sig in (signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(sig)
            if callable(current):
                previous[sig] = current
                signal.signal(sig, handler)

        def restore() -> None:
            for sig, original in previous.items():
                if signal.getsignal(sig) is handler:
                    signal.signal(sig, original)

        return restore

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
    ) -> Registration:
        """Claim ``session_id``: ``created`` is True for exactly one caller among concurrent ones.

        An unknown or failed session is claimed with a new, higher generation; an active one is
        left to its producer; a finished one is left alone unless ``restart=True``.
        """
        validate_session_id(session_id)
        self._require_running()
        blob = None
        if metadata is not None:
            blob = dumps_json(metadata, what="metadata")
            if len(blob) > self.settings.max_metadata_bytes:
                raise LimitExceeded("metadata is over max_metadata_bytes")
        claiming = self.backend.claim(
            session_id, token=uuid.uuid4().hex, restart=restart, metadata=blob
        )
        if self._telemetry.enabled:
            claiming = self._telemetry.register(session_id, restart, claiming)
        result = await claiming
        if not result.created:
            return Registration(None, False, result.generation, result.state)
        producer = Producer(self, session_id, result.generation, on_cancel=on_cancel)
        previous = self._producers.get(session_id)
        if previous is not None:
            previous._mark_lost_stale()
        self._producers[session_id] = producer
        self._keeper_wake.set()
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
        self._require_running()
        return await join(self, grant, on_cancel)

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
            self,
            session_id,
            after=_cursor(after),
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
        return await self._wait_finished(session_id, wait)

    async def _wait_finished(self, session_id: str, wait: float) -> State:
        listener = QueueListener(64, self.settings.subscriber_buffer_bytes)
        state = State.ACTIVE
        with anyio.move_on_after(wait):
            async with self.backend.listen(session_id, listener):
                info = await self.status(session_id)
                if info is None:
                    return State.CANCELLED
                state = info.state
                if state.finished:
                    return state
                self._watch(session_id, info.generation, info.lease_remaining, listener)
                try:
                    while True:
                        msg = await listener.get()
                        if isinstance(msg, EndMsg) and msg.generation == info.generation:
                            return msg.state
                        if isinstance(msg, DeletedMsg):
                            return State.CANCELLED
                        if isinstance(msg, ResyncMsg):
                            fresh = await self.status(session_id)
                            if fresh is None:
                                return State.CANCELLED
                            if fresh.state.finished or fresh.generation != info.generation:
                                return fresh.state
                finally:
                    self._unwatch(session_id, listener)
        return state

    async def snapshot(self, session_id: str) -> dict[str, Any]:
        """The whole output so far in one value: ``text`` joins the text chunks."""
        info = await self.status(session_id)
        if info is None:
            raise SessionNotFound(f"session {session_id!r} not found")
        parts: list[str] = []
        last: Cursor | None = None
        position = (info.generation, 0)
        while True:
            page = await self.backend.read(session_id, position, self.settings.replay_batch)
            for chunk in page.chunks:
                if chunk.cursor.generation != info.generation:
                    break
                if chunk.kind == "text" and chunk.event is None:
                    parts.append(chunk.data)
                last = chunk.cursor
                position = (last.generation, last.offset)
            if page.end is not None or not page.more:
                break
        return Snapshot(
            session_id=session_id,
            state=info.state,
            text="".join(parts),
            last_event_id=None if last is None else str(last),
            metadata=info.metadata,
        ).as_dict()

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

    # -- subscriber bookkeeping and the lease keeper ----------------------------------------

    def buffered_bytes(self) -> int:
        """Bytes of chunks held here now for producers and readers (README, "Memory sizing")."""
        queues = [p.pending_bytes for p in self._producers.values()]
        queues += [s.listener.held_bytes for s in list(self._subscriptions)]
        return held_bytes(queues, self.out_bytes)

    @asynccontextmanager
    async def _subscriber_slot(self, session_id: str) -> AsyncIterator[None]:
        count = self._subscribers.get(session_id, 0)
        if count >= self.settings.max_subscribers:
            raise LimitExceeded(
                f"session {session_id!r} already has {count} subscribers on this instance"
            )
        self._subscribers[session_id] = count + 1
        self._telemetry.subscribers(1)
        try:
            yield
        finally:
            self._telemetry.subscribers(-1)
            left = self._subscribers[session_id] - 1
            if left:
                self._subscribers[session_id] = left
            else:
                del self._subscribers[session_id]

    def _on_control(self, session_id: str, msg: Message) -> None:
        """A signal from the control bus: route it to the local producer of the session."""
        if isinstance(msg, ResyncMsg):
            # Signals may have been missed: renew now, which also reads the durable cancel flags.
            self._renew_now = True
            self._keeper_wake.set()
            for local in self._producers.values():
                local._poke_inbox()  # and read the steering messages again
            return
        producer = self._producers.get(session_id)
        if producer is not None:
            producer.on_control(msg)
        for part in tuple(self._parts.get(session_id, ())):
            part.on_control(msg)

    def _watch(
        self, session_id: str, generation: int, lease_remaining: float, listener: QueueListener
    ) -> None:
        """Have the keeper check the lease of a session followed here.

        Sessions produced here are watched too: while their producer lives here the check is
        skipped, but a producer that vanishes without an end (its close failed, its log was
        lost) must not leave local followers waiting forever.
        """
        watch = self._watched.get(session_id)
        deadline = anyio.current_time() + lease_remaining
        if watch is None or watch.generation != generation:
            watch = self._watched[session_id] = _Watch(deadline, generation)
        else:
            watch.deadline = min(watch.deadline, deadline)
        watch.listeners.add(listener)
        self._keeper_wake.set()

    def _unwatch(self, session_id: str, listener: QueueListener) -> None:
        watch = self._watched.get(session_id)
        if watch is not None:
            watch.listeners.discard(listener)
            if not watch.listeners:
                del self._watched[session_id]

    async def _keeper(self) -> None:
        """Renew the leases of local producers and expire lapsed leases of followed sessions."""
        period = self.settings.renew_every
        # Retention TTLs are pushed forward well before they could run out mid-stream.
        retention_period = min(self.settings.retention / 4, 3600.0)
        next_renew = anyio.current_time() + period
        next_retention = anyio.current_time() + retention_period
        while True:
            now = anyio.current_time()
            next_expiry = min((w.deadline for w in self._watched.values()), default=now + period)
            with anyio.move_on_after(max(0.0, min(next_renew, next_expiry) - now)):
                self._keeper_wake = anyio.Event()
                await self._keeper_wake.wait()
            now = anyio.current_time()
            try:
                if now >= next_renew or self._renew_now:
                    self._renew_now = False
                    next_renew = now + period
                    retention = now >= next_retention
                    if retention:
                        next_retention = now + retention_period
                    await self._renew_all(retention)
                    if self._parts:
                        await check_parts(self)
                await self._expire_due(now)
            except Exception:
                log.exception("lease keeper round failed; retrying next round")

    async def _renew_all(self, retention: bool) -> None:
        producers = list(self._producers.values())
        if not producers:
            return
        results = await self.backend.renew(
            [(p.session_id, p.generation) for p in producers], retention=retention
        )
        for producer, result in zip(producers, results, strict=True):
            if isinstance(result, Lost):
                producer._mark_lost_from(result)
            elif result:
                producer.request_cancel("cancelled")

    async def _expire_due(self, now: float) -> None:
        due = []
        for sid, w in self._watched.items():
            if w.deadline > now:
                continue
            local = self._producers.get(sid)
            if local is not None and local.generation == w.generation:
                w.deadline = now + self.settings.renew_every  # produced here, and alive
            else:
                due.append((sid, w.generation))
        if not due:
            return
        remaining = await self.backend.expire(due)
        ended: list[tuple[str, int]] = []
        for (sid, generation), left in zip(due, remaining, strict=True):
            if left is None:
                # Even when unwatched meanwhile: its subscribers may have received the end.
                ended.append((sid, generation))
            watch = self._watched.get(sid)
            if watch is None or watch.generation != generation:
                continue
            if left is None:
                # The end is also published; the resync covers a lost pub/sub message.
                for listener in tuple(watch.listeners):
                    listener.push(ResyncMsg())
                del self._watched[sid]
            else:
                # A little slack: the producer renews before its lease runs out.
                watch.deadline = anyio.current_time() + max(left, 0.01) + 0.05
        if ended and self._telemetry.enabled:
            await self._telemetry.leases_lapsed(self.backend, ended)


_HUB_CLOSING = HubClosingMsg()


def _nothing() -> None:
    return None


def _as_backend(backend: Any) -> Backend:
    if backend is None:
        return MemoryBackend()
    if isinstance(backend, Backend):
        return backend
    from redis.asyncio import Redis, RedisCluster

    if isinstance(backend, (Redis, RedisCluster)):
        from .backends.redis import RedisBackend

        return RedisBackend(backend)
    raise TypeError(
        "StreamHub takes a redis.asyncio.Redis or RedisCluster client or a Backend instance "
        f"(got {type(backend).__name__}); use StreamHub.from_url for URLs"
    )
