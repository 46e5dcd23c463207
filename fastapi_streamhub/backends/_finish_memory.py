"""The on_finish settle marks on the memory backend: the twins of ``lua/finish_*.lua`` and of
the keeping of replaced generations in ``claim.lua`` (each method without an ``await``, so
atomic under the event loop)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from .base import KEPT_GENERATIONS, FinishClaim

__all__ = ["FinishRecord", "MemoryFinish"]


class FinishRecord(Protocol):
    """What the settle marks read and write of a memory session record."""

    generation: int
    finish_expected: bool
    """``expect_finish`` ran for this generation: keep it when a claim replaces it unsettled."""
    settled: bool
    finish_claim: tuple[str, float] | None
    expires_at: float
    """Once kept: the replacing claim's time + retention (the TTL of ``kept`` in Redis)."""


_R = TypeVar("_R", bound=FinishRecord)


class MemoryFinish(Generic[_R]):
    """The settle-mark methods that :class:`MemoryBackend` delegates to."""

    def __init__(self, get: Callable[[str], _R | None]) -> None:
        self._get = get
        # (session, generation) whose hook has not run -> when last handed out.
        self._unsettled: dict[tuple[str, int], float] = {}
        # Replaced generations whose hook has not settled, per session, oldest first (the
        # twin of the ``kept`` hash and ``klog`` stream of ``claim.lua``).
        self._kept: dict[str, dict[int, _R]] = {}

    def find(self, session_id: str, generation: int) -> _R | None:
        """The record of ``generation``: the session's current one, or one it keeps."""
        rec = self._get(session_id)
        if rec is None:
            self._kept.pop(session_id, None)  # expired or deleted: so are the kept ones
            return None
        if rec.generation == generation:
            return rec
        kept = self._kept.get(session_id, {})
        old = kept.get(generation)
        if old is not None and old.expires_at <= time.monotonic():
            del kept[generation]
            return None
        return old

    def replaced(self, session_id: str, old: _R | None, expires_at: float) -> None:
        """A claim replaces ``old`` (None: the session was unknown): keep it until
        ``expires_at`` if its hook is expected and has not settled, with the newest
        ``KEPT_GENERATIONS`` kept at most (all of them until ``expires_at``, as in Redis)."""
        kept = self._kept.pop(session_id, {}) if old is not None else {}
        if old is not None and old.finish_expected and not old.settled:
            kept[old.generation] = old
        for rec in kept.values():
            rec.expires_at = expires_at
        while len(kept) > KEPT_GENERATIONS:
            del kept[next(iter(kept))]
        if kept:
            self._kept[session_id] = kept

    def forget(self, session_id: str) -> None:
        """The session was deleted: so are the generations it kept."""
        self._kept.pop(session_id, None)

    def expect_finish(self, session_id: str, generation: int) -> None:
        rec = self._get(session_id)
        if rec is not None and rec.generation == generation:
            rec.finish_expected = True
        self._unsettled.setdefault((session_id, generation), time.monotonic())

    def claim_finish(self, session_id: str, generation: int, token: str, ttl: float) -> FinishClaim:
        rec = self.find(session_id, generation)
        if rec is None:
            return "gone"
        if rec.settled:
            return "settled"
        now = time.monotonic()
        held = rec.finish_claim
        if held is not None and held[0] != token and held[1] > now:
            return "busy"
        rec.finish_claim = (token, now + ttl)
        return "claimed"

    def settle(self, session_id: str, generation: int) -> None:
        rec = self._get(session_id)
        if rec is not None and rec.generation == generation:
            rec.settled = True
        kept = self._kept.get(session_id)
        if kept is not None and kept.pop(generation, None) is not None and not kept:
            del self._kept[session_id]
        self._unsettled.pop((session_id, generation), None)

    def unsettled(self, count: int, idle: float) -> list[tuple[str, int]]:
        now = time.monotonic()
        due = sorted((t, key) for key, t in self._unsettled.items() if t <= now - idle)
        picked = [key for _, key in due[:count]]
        for key in picked:
            self._unsettled[key] = now
        return picked
