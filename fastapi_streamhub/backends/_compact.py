"""Compaction of a finished generation's log (ARCHITECTURE.md, "Compaction").

- :class:`CompactScheduler` runs a backend's own ``compact(session_id)`` in the background soon
  after a session ends, for the Redis and the PostgreSQL backends alike: after a delay with
  jitter, once at a time per session, a few sessions at a time, errors logged, cancelled when
  the backend closes.
- :func:`fold` (pure, like everything below it) turns the entries of a finished Redis log
  into *slices*: consecutive batch entries joined into one entry of the same form (id
  ``<gen>-<offset of its last chunk>``, value = the chunks' frames), so every read path reads
  a folded log unchanged. Slices are split where offsets jump (a hole must stay visible to
  readers) and kept to the size of an appended batch (a resume's first page stays small, so
  its first bytes still go out early).
- :class:`PackedLog` is the memory backend's folded log: one bytes object and an array of
  chunk boundaries instead of a tuple and a bytes object per chunk.
"""

from __future__ import annotations

import logging
import random
from array import array
from collections.abc import Awaitable, Callable, Iterable, MutableSequence
from dataclasses import dataclass
from typing import overload

import anyio
from anyio.abc import TaskGroup

from .._errors import BackendUnavailable

__all__ = [
    "COMPACT_CONCURRENCY",
    "COMPACT_DELAY",
    "SLICE_BYTES",
    "SLICE_CHUNKS",
    "CompactScheduler",
    "Folded",
    "PackedLog",
    "count_frames",
    "fold",
]

# Background compaction after a session finished: about this many seconds later (0.5x-1.5x),
# this many logs at a time per backend.
COMPACT_DELAY = 1.0
COMPACT_CONCURRENCY = 2

# A slice holds at most as many chunks as one appended batch (max_batch's default) and 1 MiB.
SLICE_CHUNKS = 512
SLICE_BYTES = 1024 * 1024


class CompactScheduler:
    """Runs ``compact(session_id)`` in the background soon after a session finished.

    Housekeeping, not urgent: each run waits ``delay`` (0.5x-1.5x, so a burst of sessions
    ending together is spread out instead of competing with the chunks still streaming), then
    takes one of ``slots`` (a burst never folds more than that many logs at once: each fold
    reads a whole log and rewrites it). One run at a time per session. A failure is logged:
    readers stay exact on an uncompacted log, and a later reader schedules it again.
    """

    def __init__(
        self,
        compact: Callable[[str], Awaitable[bool]],
        log: logging.Logger,
        *,
        delay: float = COMPACT_DELAY,
        slots: int = COMPACT_CONCURRENCY,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self._compact = compact
        self._log = log
        self.delay = delay
        self._slot_count = slots
        self._slots: anyio.Semaphore | None = None
        self._tg: TaskGroup | None = None
        self._pending: dict[str, anyio.CancelScope] = {}

    def attach(self, task_group: TaskGroup) -> None:
        """Run from now on in ``task_group`` (the backend's, from its ``start``)."""
        self._tg = task_group
        self._slots = anyio.Semaphore(self._slot_count)

    def soon(self, session_id: str) -> None:
        """Compact the session in the background (nothing when a run for it is under way here,
        or before :meth:`attach` / after :meth:`close`)."""
        if self._tg is None or session_id in self._pending:
            return
        scope = anyio.CancelScope()
        self._pending[session_id] = scope
        try:
            self._tg.start_soon(self._run, session_id, scope)
        except RuntimeError:  # the task group is closing: a later reader schedules it again
            del self._pending[session_id]

    def close(self) -> None:
        """Cancel every pending or running compaction (the backend is closing its connections);
        nothing is scheduled after this."""
        self._tg = None
        for scope in self._pending.values():
            scope.cancel()

    @property
    def pending(self) -> int:
        """How many compactions are waiting or running."""
        return len(self._pending)

    async def _run(self, session_id: str, scope: anyio.CancelScope) -> None:
        try:
            with scope:
                await anyio.sleep(self.delay * (0.5 + random.random()))
                assert self._slots is not None
                async with self._slots:
                    await self._compact(session_id)
        except BackendUnavailable as exc:
            self._log.warning("could not compact session %r: %s", session_id, exc)
        except Exception:
            # Not a store outage: a bug, or a log this code does not understand. Say all of it.
            self._log.exception("could not compact session %r", session_id)
        finally:
            if self._pending.get(session_id) is scope:
                del self._pending[session_id]


@dataclass(frozen=True, slots=True)
class Folded:
    """The folded form of a log: its slices (id, value) and its end marker (id, value)."""

    entries: int  # how many entries the log had
    slices: list[tuple[bytes, bytes]]
    end: tuple[bytes, bytes]


def count_frames(value: bytes) -> int:
    """How many ``<len>:<payload>`` frames ``value`` holds (without copying them)."""
    n = pos = 0
    size = len(value)
    while pos < size:
        colon = value.index(b":", pos)
        pos = colon + 1 + int(value[pos:colon])
        n += 1
    if pos != size:
        raise ValueError("truncated frame")
    return n


def fold(
    entries: list[tuple[bytes, dict[bytes, bytes]]],
    generation: int,
    *,
    slice_chunks: int = SLICE_CHUNKS,
    slice_bytes: int = SLICE_BYTES,
) -> Folded | None:
    """The folded form of a finished log's entries, or None when it must be left alone.

    Left alone: a log that does not end with this generation's end marker, or that holds an
    entry of another generation or with fields other than a batch's (``c``) or the start
    marker's (``s``): a log this code does not fully understand is never rewritten.
    """
    prefix = b"%d-" % generation
    if not entries:
        return None
    end_id, end_fields = entries[-1]
    end_value = end_fields.get(b"e")
    if end_value is None or len(end_fields) != 1 or not end_id.startswith(prefix):
        return None
    slices: list[tuple[bytes, bytes]] = []
    values: list[bytes] = []
    last_id = b""
    chunks = size = 0
    prev = -1
    for entry_id, fields in entries[:-1]:
        if not entry_id.startswith(prefix) or len(fields) != 1:
            return None
        value = fields.get(b"c")
        if value is None:
            if b"s" in fields:
                continue  # the start marker: a folded log does without it
            return None
        offset = int(entry_id[len(prefix) :])
        colon = value.find(b":")
        # One chunk per entry is the common case (an LLM's pace): no need to walk the frames.
        n = 1 if colon > 0 and colon + 1 + int(value[:colon]) == len(value) else count_frames(value)
        if values and (
            offset - n != prev or chunks + n > slice_chunks or size + len(value) > slice_bytes
        ):
            slices.append((last_id, b"".join(values)))
            values, chunks, size = [], 0, 0
        values.append(value)
        last_id, prev = entry_id, offset
        chunks += n
        size += len(value)
    if values:
        slices.append((last_id, b"".join(values)))
    return Folded(len(entries), slices, (end_id, end_value))


class PackedLog(MutableSequence[tuple[int, bytes]]):
    """A finished memory log, read-only: ``(offset, payload)`` items like the list it replaces."""

    __slots__ = ("_blob", "_ends", "_first")

    def __init__(self, items: Iterable[tuple[int, bytes]]) -> None:
        items = list(items)
        self._first = items[0][0] if items else 0
        self._blob = b"".join(payload for _, payload in items)
        self._ends = array("Q")
        pos = 0
        for _, payload in items:
            pos += len(payload)
            self._ends.append(pos)

    def __len__(self) -> int:
        return len(self._ends)

    def _item(self, i: int) -> tuple[int, bytes]:
        start = self._ends[i - 1] if i else 0
        return self._first + i, self._blob[start : self._ends[i]]

    @overload
    def __getitem__(self, index: int) -> tuple[int, bytes]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[int, bytes]]: ...

    def __getitem__(self, index: int | slice) -> tuple[int, bytes] | list[tuple[int, bytes]]:
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("log index out of range")
        return self._item(index)

    def __setitem__(self, index: object, value: object) -> None:
        raise TypeError("a compacted log is read-only")

    def __delitem__(self, index: int | slice) -> None:
        raise TypeError("a compacted log is read-only")

    def insert(self, index: int, value: tuple[int, bytes]) -> None:
        raise TypeError("a compacted log is read-only")
