"""The ``on_finish`` hook: run once per generation, whatever ended it, on whichever instance can.

The store holds a settled mark per generation and a claim on running its hook (see
``Backend.claim_finish`` / ``settle``), plus an index of generations whose hook has not run
(``expect_finish`` at the claim of a generation, ``unsettled`` for the sweep):

- the instance whose producer ended the generation claims it, runs the hook, marks it settled;
- with ``finish_before_end`` it claims and runs the hook *before* the producer records the end,
  so the ``end`` event reaches readers after the hook succeeded (or the wait ran out);
- a periodic, bounded sweep on every instance with a hub-level hook picks up the rest: a
  producer that died (its lapsed lease is failed here first), a hook whose instance died, a
  hook that failed every attempt (its claim lapses, it is tried again);
- a claim that replaces a generation whose hook has not settled (a new turn superseding a
  running answer, ``restart=True``, a failed generation claimed again) keeps its record and
  log in the store until it settles (``Backend.expect_finish``), so its hook still runs: on the
  instance whose producer was replaced, or on the sweep's after a crash.

So a hook runs once per generation without faults and at least once across crashes:
``(session_id, generation)`` is the idempotency key for whatever the hook writes.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from ._types import SessionInfo, State

if TYPE_CHECKING:
    from ._config import Settings
    from ._telemetry import Telemetry
    from .backends.base import Backend

__all__ = ["Ending", "FinishHook", "FinishedGeneration", "Finisher"]

log = logging.getLogger("fastapi_streamhub")

# Entries of the index one sweep examines at most.
_SWEEP_COUNT = 100
_MAX_BACKOFF = 10.0


@dataclass(frozen=True, slots=True)
class FinishedGeneration:
    """What the ``on_finish`` hook receives: one generation of a session, once it ended.

    ``text`` joins its plain text chunks, ``chunks`` holds the values of its JSON chunks in
    order, ``metadata`` is the session's metadata, ``truncated`` is True unless the generation
    ended ``done``. ``(session_id, generation)`` identifies it: use it as the idempotency key
    of whatever the hook writes (the hook may run more than once after a crash).
    """

    session_id: str
    generation: int
    state: State
    reason: str | None
    text: str
    chunks: tuple[Any, ...] = ()
    metadata: Any = None
    truncated: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "truncated", self.state is not State.DONE)


FinishHook = Callable[[FinishedGeneration], Any]
"""A sync or async callable; a sync one runs in a worker thread."""


@dataclass(slots=True)
class Ending:
    """A producer about to record its end with the hook run first (``finish_before_end``)."""

    state: State
    reason: str | None
    hook_done: anyio.Event = field(default_factory=anyio.Event)
    closed: anyio.Event = field(default_factory=anyio.Event)


class Finisher:
    """One per hub: runs hooks (in the hub's task group) and sweeps the store's index."""

    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        telemetry: Telemetry,
        hook: FinishHook | None,
        spawn: Callable[..., None],
    ) -> None:
        if hook is not None and not callable(hook):
            raise TypeError("on_finish must be a callable taking a FinishedGeneration")
        self._backend = backend
        self._settings = settings
        self._telemetry = telemetry
        self.hook = hook
        self._spawn = spawn
        self._running = 0
        self._idle = anyio.Event()
        self._idle.set()

    # -- the producing instance ------------------------------------------------------------

    async def expect(self, session_id: str, generation: int) -> None:
        """A generation was claimed here: index it, so the sweep finds it if this instance
        dies (only with a hub-level hook, the one the sweep can run)."""
        if self.hook is None:
            return
        try:
            await self._backend.expect_finish(session_id, generation)
        except Exception as exc:
            # Not indexed: its hook still runs here; only a crash of this instance would miss it.
            log.warning("could not index %r for on_finish: %s", session_id, exc)

    def before_end(
        self,
        session_id: str,
        generation: int,
        hook: FinishHook | None,
        state: State,
        reason: str | None,
    ) -> Ending | None:
        """Start the hook of a generation about to end as ``state`` (when the end waits for
        it), or None: the producer then calls :meth:`ended` once the end is recorded."""
        hook = hook or self.hook
        if hook is None or self._settings.finish_before_end is None:
            return None
        ending = Ending(state, reason)
        self._start(session_id, generation, hook, ending)
        return ending

    async def wait(self, ending: Ending) -> None:
        """Until the hook of ``ending`` succeeded or gave up, at most ``finish_before_end``."""
        with anyio.move_on_after(self._settings.finish_before_end or 0.0):
            await ending.hook_done.wait()

    def ended(self, session_id: str, generation: int, hook: FinishHook | None) -> None:
        """A generation's end was recorded here: run its hook."""
        hook = hook or self.hook
        if hook is not None:
            self._start(session_id, generation, hook, None)

    async def drain(self, grace: float) -> None:
        """Let the hooks running here finish (the hub's shutdown), at most ``grace`` seconds."""
        with anyio.move_on_after(grace):
            await self._idle.wait()

    def _start(
        self, session_id: str, generation: int, hook: FinishHook, ending: Ending | None
    ) -> None:
        try:
            self._spawn(self._run_counted, session_id, generation, hook, ending)
        except RuntimeError as exc:  # the hub is not running (a producer closed after its exit)
            log.warning(
                "on_finish of session %r generation %d not run here: %s",
                session_id,
                generation,
                exc,
            )
            if ending is not None:
                ending.hook_done.set()
            return
        self._running += 1
        self._idle = anyio.Event() if self._running == 1 else self._idle

    async def _run_counted(
        self, session_id: str, generation: int, hook: FinishHook, ending: Ending | None
    ) -> None:
        try:
            await self.run(session_id, generation, hook, ending)
        except Exception:
            log.exception("on_finish of session %r generation %d", session_id, generation)
        finally:
            if ending is not None:
                ending.hook_done.set()
            self._running -= 1
            if not self._running:
                self._idle.set()

    # -- one run -----------------------------------------------------------------------------

    async def run(
        self, session_id: str, generation: int, hook: FinishHook, ending: Ending | None = None
    ) -> bool:
        """Claim, call (with retries), settle; True when this call settled it."""
        token = uuid.uuid4().hex
        if not await self._claim(session_id, generation, token):
            return False
        if ending is not None:
            done = await self._build(session_id, generation, ending)
            ok = done is not None and await self._attempts(hook, done, token)
            ending.hook_done.set()
            await ending.closed.wait()
            if not ok or done is None:
                return False
            fresh = await self._build(session_id, generation, None)
            if fresh is None or fresh.state is State.ACTIVE:
                # Gone, or its end was not recorded: the sweep handles it once its lease lapses.
                return False
            if (fresh.state, fresh.reason) != (done.state, done.reason):
                # The store recorded another end than the producer asked for: run it again.
                log.warning(
                    "session %r ended %s in the store, not %s: on_finish runs again",
                    session_id,
                    fresh.state,
                    done.state,
                )
                if not await self._attempts(hook, fresh, token):
                    return False
        else:
            finished = await self._build(session_id, generation, None)
            if finished is None:
                await self._backend.settle(session_id, generation)
                return False
            if finished.state is State.ACTIVE:
                return False
            if not await self._attempts(hook, finished, token):
                return False
        await self._backend.settle(session_id, generation)
        return True

    async def _claim(self, session_id: str, generation: int, token: str) -> bool:
        ttl = self._settings.finish_claim_ttl
        claim = await self._backend.claim_finish(session_id, generation, token, ttl)
        if claim == "gone":
            await self._backend.settle(session_id, generation)  # drops its index entry
        return claim == "claimed"

    async def _build(
        self, session_id: str, generation: int, ending: Ending | None
    ) -> FinishedGeneration | None:
        """The generation's record and output, or None when it is gone."""
        texts: list[str] = []
        values: list[Any] = []
        offset = 0
        info: SessionInfo | None = None
        while True:
            # The current generation, or one a newer claim kept for this hook.
            record, page = await self._backend.read_generation(
                session_id, generation, offset, self._settings.replay_batch
            )
            if record is None:
                return None
            info = info or record
            other = False
            for chunk in page.chunks:
                if chunk.cursor.generation != generation:
                    other = True
                    break
                if chunk.kind == "text" and chunk.event is None:
                    texts.append(chunk.data)
                elif chunk.kind == "json":
                    values.append(chunk.data)
                offset = chunk.cursor.offset
            if other or page.end is not None or not page.more:
                break
        state, reason = (ending.state, ending.reason) if ending else (info.state, info.reason)
        return FinishedGeneration(
            session_id=session_id,
            generation=generation,
            state=state,
            reason=reason,
            text="".join(texts),
            chunks=tuple(values),
            metadata=info.metadata,
        )

    async def _attempts(self, hook: FinishHook, done: FinishedGeneration, token: str) -> bool:
        """Call the hook up to ``finish_attempts`` times with backoff; True once it returned."""
        sid, gen = done.session_id, done.generation
        delay = self._settings.finish_backoff
        attempts = self._settings.finish_attempts
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await anyio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                # Still ours? (extends the claim; another instance may have settled it)
                if not await self._claim(sid, gen, token):
                    return False
            try:
                await _call(hook, done)
            except Exception:
                self._telemetry.finish_called("error")
                log.exception(
                    "on_finish of session %r generation %d failed (attempt %d of %d)",
                    sid,
                    gen,
                    attempt,
                    attempts,
                )
            else:
                self._telemetry.finish_called("ok")
                return True
        log.error(
            "on_finish of session %r generation %d failed %d times; the sweep tries again "
            "once its claim lapses (%gs)",
            sid,
            gen,
            attempts,
            self._settings.finish_claim_ttl,
        )
        return False

    # -- the sweep -------------------------------------------------------------------------

    async def sweep(self) -> None:
        """One bounded round over the index: run the hub's hook of ended generations nobody
        settled (failing lapsed leases first); drop entries of sessions gone or replaced."""
        hook = self.hook
        if hook is None:
            return
        ttl = self._settings.lease_ttl
        entries = await self._backend.unsettled(_SWEEP_COUNT, ttl)
        if not entries:
            return
        infos = await self._backend.info([sid for sid, _ in entries])
        lapsed: list[tuple[str, int]] = []
        due: list[tuple[str, int]] = []
        now = time.time()
        for (sid, gen), current in zip(entries, infos, strict=True):
            info = current
            if info is not None and info.generation != gen:
                # Replaced: a generation the session kept for its hook, or gone.
                info = (await self._backend.read_generation(sid, gen, 0, 1))[0]
            if info is None:
                await self._backend.settle(sid, gen)  # gone: nothing to run
            elif info.state is State.ACTIVE:
                if info.lease_remaining <= 0:
                    lapsed.append((sid, gen))
            elif info.updated_at <= now - ttl:
                # Ended a while ago and still unsettled: its instance did not run the hook.
                due.append((sid, gen))
        if lapsed:
            remaining = await self._backend.expire(lapsed)
            due += [pair for pair, left in zip(lapsed, remaining, strict=True) if left is None]
        for sid, gen in due:
            self._start(sid, gen, hook, None)


async def _call(hook: FinishHook, done: FinishedGeneration) -> None:
    if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
        getattr(hook, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        await hook(done)
        return
    result = await anyio.to_thread.run_sync(hook, done)
    if inspect.isawaitable(result):
        await result
