"""Fan-in on the memory backend: the transitions of ``lua/admit.lua``, ``join.lua``,
``append_shared.lua`` and ``end_part.lua`` as plain Python (each without an ``await``, so
atomic under the event loop)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .._types import State
from .base import PART_REFUSALS, Append, Lost, Reason, SharedAppend

__all__ = ["FanInRecord", "MemoryFanIn", "Part"]


@dataclass(slots=True)
class Part:
    """One admitted producer of a generation: its writing handle and its last batch."""

    token: str = ""
    seq: int = 0
    first: int = 0
    ended: bool = False


class FanInRecord(Protocol):
    """What fan-in reads and writes of a memory session record."""

    generation: int
    state: State
    n: int
    parts: dict[str, Part]
    """The admitted producers of this generation by name (``""``: the owner)."""
    short: str | None
    """The first producer whose part ended short of its batches (see ``end_part.lua``)."""


class MemoryFanIn:
    """The fan-in transitions that :class:`MemoryBackend` delegates to.

    ``active(session_id, generation)`` is the backend's record of that generation while it is
    active, else why a write is refused; ``append`` stores a batch as the backend's own append.
    """

    def __init__(
        self,
        active: Callable[[str, int], FanInRecord | Lost],
        append: Callable[[Append], Lost | None],
    ) -> None:
        self._active = active
        self._append = append

    def _part(self, session_id: str, generation: int, name: str) -> tuple[FanInRecord, Part] | Lost:
        rec = self._active(session_id, generation)
        if isinstance(rec, Lost):
            return rec
        part = rec.parts.get(name)
        return PART_REFUSALS[Reason.NOT_ADMITTED] if part is None else (rec, part)

    def admit(self, session_id: str, generation: int, name: str) -> Lost | None:
        """See :meth:`Backend.admit`."""
        rec = self._active(session_id, generation)
        if isinstance(rec, Lost):
            return rec
        rec.parts.setdefault(name, Part())
        rec.parts.setdefault("", Part())
        return None

    def join(self, session_id: str, generation: int, name: str, token: str) -> Lost | None:
        """See :meth:`Backend.join`."""
        found = self._part(session_id, generation, name)
        if isinstance(found, Lost):
            return found
        rec, part = found
        if part.ended:
            return PART_REFUSALS[Reason.PART_ENDED]
        if part.token != token:
            rec.parts[name] = Part(token)
        return None

    def append_shared(self, b: SharedAppend) -> int | Lost:
        """One batch of :meth:`Backend.append_shared`."""
        found = self._part(b.session_id, b.generation, b.name)
        if isinstance(found, Lost):
            return found
        rec, part = found
        if part.token != b.token:
            return PART_REFUSALS[Reason.REPLACED]
        if part.seq == b.seq:
            return part.first  # the same batch again: applied once already
        if part.ended:
            return PART_REFUSALS[Reason.PART_ENDED]
        first = rec.n + 1
        self._append(Append(b.session_id, b.generation, first, b.payloads))
        part.seq, part.first = b.seq, first
        return first

    def end_part(
        self, session_id: str, generation: int, name: str, token: str, last: int | None
    ) -> Lost | None:
        """See :meth:`Backend.end_part` (the caller answers for a finished generation)."""
        found = self._part(session_id, generation, name)
        if isinstance(found, Lost):
            return found
        rec, part = found
        if part.token != token:
            return PART_REFUSALS[Reason.REPLACED]
        if not part.ended and last is not None and last != part.seq and rec.short is None:
            rec.short = name  # the first part that ended short of its batches (end_part.lua)
        part.ended = True
        return None
