"""Fan-in on the memory backend: the transitions of ``lua/admit.lua``, ``join.lua``,
``append_shared.lua`` and ``end_part.lua`` as plain Python (each without an ``await``, so
atomic under the event loop)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Append, Lost, SharedAppend

if TYPE_CHECKING:
    from .memory import _Record

__all__ = ["MemoryFanIn", "Part"]


@dataclass(slots=True)
class Part:
    """One admitted producer of a generation: its writing handle and its last batch."""

    token: str = ""
    seq: int = 0
    first: int = 0
    ended: bool = False


class MemoryFanIn:
    """The fan-in methods of :class:`MemoryBackend`."""

    if TYPE_CHECKING:

        def _get(self, session_id: str) -> _Record | None: ...
        def _check(self, rec: _Record | None, generation: int) -> Lost | None: ...
        def _append(self, batch: Append) -> Lost | None: ...

    def _active(self, session_id: str, generation: int) -> _Record | Lost:
        rec = self._get(session_id)
        lost = self._check(rec, generation)
        if lost is not None:
            return lost
        assert rec is not None  # for mypy: _check returned None
        return rec

    def _part(self, session_id: str, generation: int, name: str) -> tuple[_Record, Part] | Lost:
        rec = self._active(session_id, generation)
        if isinstance(rec, Lost):
            return rec
        part = rec.parts.get(name)
        return Lost("gone", reason="not_admitted") if part is None else (rec, part)

    async def admit(self, session_id: str, generation: int, name: str) -> Lost | None:
        rec = self._active(session_id, generation)
        if isinstance(rec, Lost):
            return rec
        rec.parts.setdefault(name, Part())
        rec.parts.setdefault("", Part())
        return None

    async def join(self, session_id: str, generation: int, name: str, token: str) -> Lost | None:
        found = self._part(session_id, generation, name)
        if isinstance(found, Lost):
            return found
        rec, part = found
        if part.ended:
            return Lost("closed", reason="part_ended")
        if part.token != token:
            rec.parts[name] = Part(token)
        return None

    async def append_shared(self, batches: Sequence[SharedAppend]) -> list[int | Lost]:
        return [self._append_shared(b) for b in batches]

    def _append_shared(self, b: SharedAppend) -> int | Lost:
        found = self._part(b.session_id, b.generation, b.name)
        if isinstance(found, Lost):
            return found
        rec, part = found
        if part.token != b.token:
            return Lost("stale", reason="replaced")
        if part.seq == b.seq:
            return part.first  # the same batch again: applied once already
        if part.ended:
            return Lost("closed", reason="part_ended")
        first = rec.n + 1
        self._append(Append(b.session_id, b.generation, first, b.payloads))
        part.seq, part.first = b.seq, first
        return first

    async def end_part(
        self, session_id: str, generation: int, name: str, token: str, *, last: int | None = None
    ) -> Lost | None:
        rec = self._get(session_id)
        if rec is not None and rec.generation == generation and rec.state.finished:
            return None
        found = self._part(session_id, generation, name)
        if isinstance(found, Lost):
            return found
        rec, part = found
        if part.token != token:
            return Lost("stale", reason="replaced")
        if not part.ended and last is not None and last != part.seq and rec.short is None:
            rec.short = name  # the first part that ended short of its batches (end_part.lua)
        part.ended = True
        return None
