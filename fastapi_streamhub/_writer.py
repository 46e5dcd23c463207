"""The hub's writer: group commit of every local producer's pending chunks, bounded in bytes."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, cast

import anyio

from ._config import Settings
from ._ending import describe
from ._errors import BackendUnavailable, StreamHubError
from .backends.base import Append, Lost, SharedAppend, WriteRefused

if TYPE_CHECKING:
    from ._telemetry import Telemetry
    from .backends.base import Backend

__all__ = ["Batcher", "Writer"]

log = logging.getLogger("fastapi_streamhub")

# The writer lingers this long before a round trip when the previous one carried at least
# _BUSY producers' batches (a lone fast producer never waits: group commit needs no delay).
_LINGER = 0.002
_BUSY = 8


class Batcher(Protocol):
    """What the writer needs of a producer: its queued chunks, taken one batch at a time."""

    @property
    def pending_bytes(self) -> int: ...

    def next_size(self, budget: int) -> int:
        """Bytes of the batch :meth:`take_batch` would build within ``budget``."""

    def take_batch(self, budget: int) -> Append:
        """The next batch, in flight until :meth:`on_committed`."""

    def on_committed(self, result: Lost | StreamHubError | None, first: int | None = None) -> None:
        """The batch in flight was stored (``result`` None) or not."""


class Writer:
    """One per hub: commits the pending batches of every local producer in one round trip.

    While a round trip is in flight, chunks that arrive wait and go together in the next one
    (group commit across all producers), so a busy hub costs one ``XADD`` per producer and
    one ``PUBLISH`` per round trip (in one script call), not a round trip per chunk.
    """

    def __init__(self, backend: Backend, telemetry: Telemetry, settings: Settings) -> None:
        self._backend = backend
        self._telemetry = telemetry
        self._ready: dict[Batcher, None] = {}
        self._max_write = settings.max_write_bytes
        # One batch is one log entry, and a replay page holds one entry at least: an entry
        # bigger than replay_batch_bytes would make every reader of it hold that much.
        self._max_entry = min(self._max_write, settings.replay_batch_bytes)
        self._wake = anyio.Event()
        self._flying = 0  # batches in round trips in flight

    def ready(self, producer: Batcher) -> None:
        """``producer`` has chunks to write and none in flight."""
        self._ready[producer] = None
        self._wake.set()

    async def run(self) -> None:
        """The writer task (in the hub's task group)."""
        slots = self._backend.write_slots
        if slots == 1:
            await self._work(1)
            return
        # One worker per round trip in flight rather than a task per round trip: a lone
        # producer's round trip then costs what it costs with one slot (no task spawn, no
        # semaphore on the path of every chunk).
        async with anyio.create_task_group() as tg:
            for _ in range(slots):
                tg.start_soon(self._work, slots)

    async def _work(self, slots: int) -> None:
        """One of ``slots`` workers, each with one round trip in flight at most.

        With several, a round trip takes at most its share of the producers with chunks to
        write (ready or in flight): with every producer in each round trip, the next worker
        would find none ready and the round trips would run one at a time again. A producer
        has one batch in flight at most (it is not ready again until ``on_committed``), so
        its batches still commit in order.
        """
        busy = False
        while True:
            while not self._ready:
                if self._wake.is_set():  # (the workers share one event: never drop a waited one)
                    self._wake = anyio.Event()
                await self._wake.wait()
            if busy:
                # Many producers wrote in the last round trip: gather a little longer, so a
                # round trip (and the one PUBLISH all followers parse) carries more of them.
                await anyio.sleep(_LINGER)
                if not self._ready:
                    continue  # another worker took them meanwhile
            share = -(-(len(self._ready) + self._flying) // slots) if slots > 1 else 0
            producers, batches = self._gather(share)
            busy = len(producers) >= _BUSY
            self._flying += len(batches)
            try:
                await self._round_trip(producers, batches)
            finally:
                self._flying -= len(batches)

    async def _round_trip(self, producers: list[Batcher], batches: list[Append]) -> None:
        """Commit ``batches`` and tell each producer how its batch fared."""
        telemetry = self._telemetry.enabled
        start_ns = time.time_ns() if telemetry else 0
        firsts: list[int | None] = [None] * len(batches)
        results = await self._commit(batches, firsts)
        if telemetry:
            errors = [r for r in results if isinstance(r, StreamHubError)]
            self._telemetry.published(
                batches,
                None if errors else cast("list[Lost | None]", results),
                errors[0] if errors else None,
                start_ns,
            )
        for i, producer in enumerate(producers):
            producer.on_committed(results[i], firsts[i])

    def _gather(self, most: int = 0) -> tuple[list[Batcher], list[Append]]:
        """The next round trip: ready producers' batches up to ``max_write_bytes`` in all,
        each up to ``replay_batch_bytes`` (and ``most`` batches, when given).

        A producer whose next chunk does not fit stays ready, first in line for the next round
        trip; the first batch of a round trip always goes (a chunk over the bound goes alone).
        """
        budget, max_entry = self._max_write, self._max_entry
        ready, self._ready = self._ready, {}
        producers: list[Batcher] = []
        batches: list[Append] = []
        left: list[Batcher] = []  # ready, not taken this time: first in line next time
        size = 0
        waiting = iter(ready)
        for producer in waiting:
            room = budget - size
            if room > max_entry:
                room = max_entry
            pending = producer.pending_bytes
            if batches and pending > room and producer.next_size(room) > room:
                left.append(producer)
                continue
            batch = producer.take_batch(room)
            producers.append(producer)
            batches.append(batch)
            size += pending - producer.pending_bytes
            if size >= budget or len(batches) == most:
                break
        left += waiting
        if left:
            self._ready = dict.fromkeys(left)
        return producers, batches

    async def _commit(
        self, batches: list[Append], firsts: list[int | None]
    ) -> list[Lost | StreamHubError | None]:
        """Write ``batches``; each result is None (stored) or why that batch was not.

        When the store refuses the round trip as a whole (it closed the connection on it: too
        big for it), each batch is tried alone, so only the session it refuses fails; a
        refused batch of several chunks is tried again in halves (several smaller log entries),
        so a session fails only on a chunk the store refuses on its own.
        """
        try:
            if any(isinstance(b, SharedAppend) for b in batches):
                return list(await self._append_mixed(batches, firsts))
            return list(await self._backend.append(batches))
        except WriteRefused as exc:
            if len(batches) == 1:
                return [await self._halves(batches[0], exc)]
            log.warning("%s; writing its %d batches one by one", exc, len(batches))
            out: list[Lost | StreamHubError | None] = []
            for i, batch in enumerate(batches):
                one: list[int | None] = [None]
                out += await self._commit([batch], one)
                firsts[i] = one[0]
            return out
        except StreamHubError as exc:
            return [exc] * len(batches)
        except Exception as exc:
            # Anything unexpected must not take the hub down; it fails these streams.
            log.exception("append of %d batches failed", len(batches))
            return [BackendUnavailable(f"append failed: {describe(exc)}")] * len(batches)

    async def _halves(self, batch: Append, exc: WriteRefused) -> StreamHubError | Lost | None:
        """A refused batch written again as two (offsets fenced as ever), or why it cannot be."""
        n = len(batch.payloads)
        if n == 1 or isinstance(batch, SharedAppend):
            # (A fan-in batch is numbered as a whole for its exactly-once check: not split.)
            return _refused(exc, batch)
        half = n // 2
        for first, payloads in (
            (batch.first, batch.payloads[:half]),
            (batch.first + half, batch.payloads[half:]),
        ):
            part = Append(batch.session_id, batch.generation, first, payloads)
            result = (await self._commit([part], [None]))[0]
            if result is not None:
                return result
        return None

    async def _append_mixed(
        self, batches: Sequence[Append], firsts: list[int | None]
    ) -> list[Lost | None]:
        """A round trip that carries batches of fan-in producers (offsets assigned by the
        store, reported in ``firsts``) besides plain ones."""
        results: list[Lost | None] = [None] * len(batches)
        plain = [i for i, b in enumerate(batches) if not isinstance(b, SharedAppend)]
        shared = [(i, b) for i, b in enumerate(batches) if isinstance(b, SharedAppend)]
        if plain:
            appended = await self._backend.append([batches[i] for i in plain])
            for i, lost in zip(plain, appended, strict=True):
                results[i] = lost
        replies = await self._backend.append_shared([b for _, b in shared])
        for (i, _), reply in zip(shared, replies, strict=True):
            if isinstance(reply, Lost):
                results[i] = reply
            else:
                firsts[i] = reply
        return results


def _refused(exc: WriteRefused, batch: Append) -> WriteRefused:
    size = sum(map(len, batch.payloads))
    return WriteRefused(
        f"the store refused a write of {len(batch.payloads)} chunks ({size} bytes) of session "
        f"{batch.session_id!r}: {exc}"
    )
