"""The lease keeper: renews the leases of this instance's producers and expires the lapsed leases
of sessions followed here, so no follower waits forever on a producer that vanished."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from ._codec import DeletedMsg, EndMsg, ResyncMsg
from ._fanin import SubProducer, check_parts
from ._fanout import QueueListener
from ._types import State
from .backends.base import Lost

if TYPE_CHECKING:
    from ._config import Settings
    from ._finish import Finisher
    from ._producer import Producer
    from ._telemetry import Telemetry
    from .backends.base import Backend

__all__ = ["LeaseKeeper"]

log = logging.getLogger("fastapi_streamhub")


@dataclass(slots=True)
class _Watch:
    deadline: float
    generation: int
    listeners: set[QueueListener] = field(default_factory=set)


class LeaseKeeper:
    """One per hub: its task renews the leases of ``producers`` (and the hub's retention TTLs),
    runs the fan-in ``parts``' round, checks the leases of watched sessions, and (with a
    hub-level ``on_finish``) runs the ``finisher``'s sweep every ``lease_ttl``.

    ``producers`` and ``parts`` are the hub's own registries, read live (never changed here).
    """

    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        telemetry: Telemetry,
        producers: Mapping[str, Producer],
        parts: Mapping[str, Set[SubProducer]],
        finisher: Finisher,
    ) -> None:
        self._backend = backend
        self._finisher = finisher
        self._settings = settings
        self._telemetry = telemetry
        self._producers = producers
        self._parts = parts
        self._watched: dict[str, _Watch] = {}
        self._wake = anyio.Event()
        self._renew_now = False
        self._next_sweep = math.inf

    def wake(self) -> None:
        """Look again at the due times now (a producer or a watch was added)."""
        self._wake.set()

    def renew_soon(self) -> None:
        """Renew at once: signals may have been missed, and a renewal also reads the durable
        cancel flags."""
        self._renew_now = True
        self._wake.set()

    def watch(
        self, session_id: str, generation: int, lease_remaining: float, listener: QueueListener
    ) -> None:
        """Check the lease of a session followed here.

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
        self._wake.set()

    def unwatch(self, session_id: str, listener: QueueListener) -> None:
        """Stop the check :meth:`watch` asked for ``listener``."""
        watch = self._watched.get(session_id)
        if watch is not None:
            watch.listeners.discard(listener)
            if not watch.listeners:
                del self._watched[session_id]

    async def wait_finished(self, session_id: str, wait: float) -> State:
        """The session's final state as soon as it ends, or its state when ``wait`` seconds
        pass (``cancelled`` once it is deleted)."""
        listener = QueueListener(64, self._settings.subscriber_buffer_bytes)
        state = State.ACTIVE
        with anyio.move_on_after(wait):
            async with self._backend.listen(session_id, listener):
                info = (await self._backend.info([session_id]))[0]
                if info is None:
                    return State.CANCELLED
                state = info.state
                if state.finished:
                    return state
                self.watch(session_id, info.generation, info.lease_remaining, listener)
                try:
                    while True:
                        msg = await listener.get()
                        if isinstance(msg, EndMsg) and msg.generation == info.generation:
                            return msg.state
                        if isinstance(msg, DeletedMsg):
                            return State.CANCELLED
                        if isinstance(msg, ResyncMsg):
                            fresh = (await self._backend.info([session_id]))[0]
                            if fresh is None:
                                return State.CANCELLED
                            if fresh.state.finished or fresh.generation != info.generation:
                                return fresh.state
                finally:
                    self.unwatch(session_id, listener)
        return state

    async def run(self) -> None:
        """The keeper task (in the hub's task group)."""
        period = self._settings.renew_every
        # Retention TTLs are pushed forward well before they could run out mid-stream.
        retention_period = min(self._settings.retention / 4, 3600.0)
        next_renew = anyio.current_time() + period
        next_retention = anyio.current_time() + retention_period
        sweeping = self._finisher.hook is not None
        sweep_period = self._settings.lease_ttl
        self._next_sweep = anyio.current_time() + sweep_period if sweeping else math.inf
        while True:
            now = anyio.current_time()
            next_expiry = min((w.deadline for w in self._watched.values()), default=now + period)
            next_expiry = min(next_expiry, self._next_sweep)
            with anyio.move_on_after(max(0.0, min(next_renew, next_expiry) - now)):
                self._wake = anyio.Event()
                await self._wake.wait()
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
                        await check_parts(self._backend, self._parts)
                await self._expire_due(now)
                if now >= self._next_sweep:
                    self._next_sweep = now + sweep_period
                    await self._finisher.sweep()
            except Exception:
                log.exception("lease keeper round failed; retrying next round")

    async def _renew_all(self, retention: bool) -> None:
        producers = list(self._producers.values())
        if not producers:
            return
        results = await self._backend.renew(
            [(p.session_id, p.generation) for p in producers], retention=retention
        )
        for producer, result in zip(producers, results, strict=True):
            if isinstance(result, Lost):
                producer.mark_lost(result)
            elif result:
                producer.request_cancel("cancelled")

    async def _expire_due(self, now: float) -> None:
        if all(w.deadline > now for w in self._watched.values()):
            return
        # Once one check is due, the ones due soon go in the same round trip: followed
        # sessions' deadlines are spread over the lease, and one call each would cost a round
        # trip per session per lease (a check made early only learns the time left).
        horizon = now + self._settings.renew_every / 2
        due = []
        for sid, w in self._watched.items():
            if w.deadline > horizon:
                continue
            local = self._producers.get(sid)
            if local is not None and local.generation == w.generation:
                w.deadline = now + self._settings.renew_every  # produced here, and alive
            else:
                due.append((sid, w.generation))
        if not due:
            return
        remaining = await self._backend.expire(due)
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
        if ended and self._finisher.hook is not None:
            # Their hooks may be due (a lapsed lease): sweep again once they are in reach.
            self._next_sweep = min(self._next_sweep, now + self._settings.lease_ttl)
        if ended and self._telemetry.enabled:
            await self._telemetry.leases_lapsed(self._backend, ended)
