"""In-process backend: the zero-setup default, with the same semantics as the Redis backend.

Every method runs without awaiting between its reads and writes, so each transition is atomic
under the event loop just as a Lua script is atomic in Redis. One instance may be shared by
several hubs in one process (that is how the conformance suite runs "two instances").
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, MutableSequence, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
from anyio.abc import TaskGroup

from .._codec import (
    CancelMsg,
    ChunksMsg,
    DeletedMsg,
    EndMsg,
    LostMsg,
    Message,
    MetadataMsg,
    SteerMsg,
    decode_chunks,
    decode_payload,
)
from .._config import Settings
from .._errors import InvalidSessionId
from .._fanout import Fanout, Listener
from .._trusted import trusted_cursor
from .._types import Chunk, End, SessionInfo, State
from ._compact import PackedLog
from ._ds import DurableMethods
from ._ds_memory import MemoryDurable
from ._fanin_memory import MemoryFanIn, Part
from ._finish_memory import MemoryFinish
from .base import (
    Append,
    Backend,
    ClaimResult,
    ControlHandler,
    FinishClaim,
    Lost,
    ReadResult,
    Reason,
    Sent,
    SharedAppend,
)

__all__ = ["MemoryBackend"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Record:
    generation: int
    created: int
    updated: int
    lease_until: float
    token: str
    state: State = State.ACTIVE
    reason: str | None = None
    n: int = 0
    cancel: bool = False
    metadata: bytes | None = None
    turn: str | None = None  # what this generation answers (claim's ``turn``)
    # (offset, payload) of the current generation; trimmed to maxlen from the left; a
    # PackedLog once the generation finished and was compacted.
    log: MutableSequence[tuple[int, bytes]] = field(default_factory=list)
    end: End | None = None
    expires_at: float = 0.0
    # Fan-in: the admitted producers of this generation by name ("" = the owner).
    parts: dict[str, Part] = field(default_factory=dict)
    # Fan-in: the first sub-producer whose part ended short of its batches (end_part).
    short: str | None = None
    # on_finish: the hook of this generation ran (settle), and who runs it until when;
    # finish_expected: expect_finish ran (a claim replacing it unsettled keeps it).
    settled: bool = False
    finish_expected: bool = False
    finish_claim: tuple[str, float] | None = None


@dataclass(slots=True)
class _Inbox:
    """Steering messages of a session: those of ``generation`` (seq 1, 2, ...) and the
    idempotency keys of every message it was sent (kept across generations, as in Redis)."""

    generation: int
    expires_at: float
    messages: list[bytes] = field(default_factory=list)
    size: int = 0  # bytes of ``messages``
    keys: dict[str, tuple[int, int]] = field(default_factory=dict)


_Expiring = TypeVar("_Expiring", _Record, _Inbox)


def _unexpired(entries: dict[str, _Expiring], session_id: str) -> _Expiring | None:
    """The session's entry, dropped (None) once past its ``expires_at``."""
    entry = entries.get(session_id)
    if entry is not None and entry.expires_at <= time.monotonic():
        del entries[session_id]
        return None
    return entry


class MemoryBackend(DurableMethods, Backend):
    """Sessions in a dict of this process; live delivery by direct dispatch."""

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}
        self._inboxes: dict[str, _Inbox] = {}
        self._fanout = Fanout()
        self._controls: list[ControlHandler] = []
        self._fanin = MemoryFanIn(self._active, self._append)
        self._durable: MemoryDurable = MemoryDurable(
            self._publish, lambda: self.settings, lambda sid: self._get(sid) is not None
        )
        self._finishes = MemoryFinish(self._get)
        self.settings = Settings()

    async def start(
        self, settings: Settings, task_group: TaskGroup, on_control: ControlHandler
    ) -> None:
        self.settings = settings
        self._controls.append(on_control)

    async def aclose(self) -> None:
        # Several hubs may share this backend; a closed hub ignores the signals it still gets.
        return None

    # -- helpers ---------------------------------------------------------------------------

    def _get(self, session_id: str) -> _Record | None:
        return _unexpired(self._records, session_id)

    def _touch(self, rec: _Record) -> None:
        rec.expires_at = time.monotonic() + self.settings.retention

    def _publish(self, session_id: str, msg: Message) -> None:
        self._fanout.dispatch(session_id.encode(), msg)

    def _signal(self, session_id: str, msg: Message) -> None:
        for handler in tuple(self._controls):
            handler(session_id, msg)

    def _finish(self, session_id: str, rec: _Record, state: State, reason: str | None) -> None:
        rec.state = state
        rec.reason = reason
        rec.cancel = False
        rec.updated = _now_ms()
        rec.end = End(state, reason)
        self._touch(rec)
        if self.settings.compact_finished:
            self._compact(rec)
        self._publish(session_id, EndMsg(rec.generation, rec.n + 1, state, reason))

    def _expire_if_lapsed(self, session_id: str, rec: _Record) -> None:
        if rec.state is State.ACTIVE and rec.lease_until <= time.monotonic():
            self._finish(session_id, rec, State.FAILED, Reason.LEASE_EXPIRED.value)

    def _check(self, rec: _Record | None, generation: int) -> Lost | None:
        if rec is None:
            return Lost("gone")
        if rec.generation != generation:
            return Lost("stale")
        if rec.state is not State.ACTIVE:
            return Lost("closed", rec.state, rec.reason)
        return None

    def _active(self, session_id: str, generation: int) -> _Record | Lost:
        """The session's record while ``generation`` is active, else why it may not write."""
        rec = self._get(session_id)
        lost = self._check(rec, generation)
        if lost is not None:
            return lost
        assert rec is not None  # for mypy: _check returned None
        return rec

    def _info(self, session_id: str, rec: _Record) -> SessionInfo:
        return SessionInfo(
            session_id=session_id,
            state=rec.state,
            generation=rec.generation,
            chunks=rec.n,
            metadata=None if rec.metadata is None else orjson.loads(rec.metadata),
            created_at=rec.created / 1000,
            updated_at=rec.updated / 1000,
            reason=rec.reason,
            cancel_requested=rec.cancel,
            lease_remaining=max(0.0, rec.lease_until - time.monotonic()),
            turn=rec.turn,
        )

    # -- transitions -----------------------------------------------------------------------

    async def claim(
        self,
        session_id: str,
        *,
        token: str,
        restart: bool,
        metadata: bytes | None,
        turn: str | None = None,
    ) -> ClaimResult:
        if self._durable.exists(session_id):
            raise InvalidSessionId(f"{session_id!r} is a Durable Streams stream")
        now = _now_ms()
        rec = self._get(session_id)
        generation = now
        created = now
        if rec is not None:
            if rec.state is State.ACTIVE and rec.token == token:
                return ClaimResult(True, rec.generation, rec.state)
            self._expire_if_lapsed(session_id, rec)
            if turn is not None:
                if rec.turn == turn and rec.state is not State.FAILED:
                    return ClaimResult(False, rec.generation, rec.state)
                if rec.state is State.ACTIVE:
                    # The twin of claim.lua: a new turn ends the running one, then claims.
                    self._finish(session_id, rec, State.CANCELLED, Reason.SUPERSEDED.value)
                    self._signal(session_id, LostMsg(rec.generation, "stale"))
            elif rec.state is State.ACTIVE or (rec.state is not State.FAILED and not restart):
                return ClaimResult(False, rec.generation, rec.state)
            generation = max(rec.generation + 1, now)
            created = rec.created
        # Kept for its on_finish hook (until retention), or dropped.
        self._finishes.replaced(session_id, rec, time.monotonic() + self.settings.retention)
        rec = _Record(
            generation=generation,
            created=created,
            updated=now,
            lease_until=time.monotonic() + self.settings.lease_ttl,
            token=token,
            metadata=metadata,
            turn=turn,
        )
        self._touch(rec)
        self._records[session_id] = rec
        return ClaimResult(True, generation, State.ACTIVE)

    async def append(self, batches: Sequence[Append]) -> list[Lost | None]:
        return [self._append(b) for b in batches]

    def _append(self, batch: Append) -> Lost | None:
        rec = self._active(batch.session_id, batch.generation)
        if isinstance(rec, Lost):
            return rec
        first = rec.n + 1
        if batch.first != first:
            raise RuntimeError(f"batch at offset {batch.first} does not follow offset {rec.n}")
        payloads = batch.payloads
        for i, payload in enumerate(payloads):
            rec.log.append((first + i, payload))
        rec.n += len(payloads)
        maxlen = self.settings.maxlen
        if maxlen is not None and len(rec.log) > maxlen:
            del rec.log[: len(rec.log) - maxlen]
        rec.updated = _now_ms()
        chunks = tuple(decode_chunks(batch.generation, first, payloads))
        size = sum(map(len, payloads))
        self._publish(batch.session_id, ChunksMsg(batch.generation, chunks, size))
        return None

    async def set_metadata(self, session_id: str, generation: int, blob: bytes) -> Lost | None:
        rec = self._active(session_id, generation)
        if isinstance(rec, Lost):
            return rec
        rec.metadata = blob
        rec.updated = _now_ms()
        self._publish(session_id, MetadataMsg(generation, orjson.loads(blob)))
        return None

    async def renew(
        self, leases: Sequence[tuple[str, int]], *, retention: bool = False
    ) -> list[bool | Lost]:
        results: list[bool | Lost] = []
        for session_id, generation in leases:
            rec = self._active(session_id, generation)
            if isinstance(rec, Lost):
                results.append(rec)
                continue
            rec.lease_until = time.monotonic() + self.settings.lease_ttl
            self._touch(rec)
            results.append(rec.cancel)
        return results

    async def close(
        self,
        session_id: str,
        generation: int,
        state: State,
        reason: str | None,
        *,
        last: int | None = None,
    ) -> State | Lost:
        rec = self._get(session_id)
        if rec is not None and rec.generation == generation and rec.state.finished:
            return rec.state
        lost = self._check(rec, generation)
        if lost is not None:
            return lost
        assert rec is not None
        if last is not None and state is not State.FAILED:
            # The twin of close.lua: the claim is checked against the store, not trusted.
            owner = rec.parts.get("")
            held, unit = (rec.n, "chunks") if owner is None else (owner.seq, "batches")
            if held != last:
                state, reason = State.FAILED, f"backend: the store holds {held} of {last} {unit}"
            elif rec.short is not None:
                state, reason = State.FAILED, f"backend: producer {rec.short} lost a write"
        self._finish(session_id, rec, state, reason)
        return state

    async def expire(self, leases: Sequence[tuple[str, int]]) -> list[float | None]:
        out: list[float | None] = []
        for session_id, generation in leases:
            rec = self._get(session_id)
            if rec is not None:
                self._expire_if_lapsed(session_id, rec)
            if rec is None or rec.generation != generation or rec.state.finished:
                out.append(None)
            else:
                out.append(max(0.0, rec.lease_until - time.monotonic()))
        return out

    async def cancel(self, session_id: str) -> SessionInfo | None:
        rec = self._get(session_id)
        if rec is None:
            return None
        self._expire_if_lapsed(session_id, rec)
        if rec.state is State.ACTIVE:
            rec.cancel = True
            self._signal(session_id, CancelMsg(rec.generation))
        return self._info(session_id, rec)

    # -- on_finish settle marks ------------------------------------------------------------

    async def expect_finish(self, session_id: str, generation: int) -> None:
        self._finishes.expect_finish(session_id, generation)

    async def claim_finish(
        self, session_id: str, generation: int, token: str, ttl: float
    ) -> FinishClaim:
        return self._finishes.claim_finish(session_id, generation, token, ttl)

    async def settle(self, session_id: str, generation: int) -> None:
        self._finishes.settle(session_id, generation)

    async def unsettled(self, count: int, idle: float) -> list[tuple[str, int]]:
        return self._finishes.unsettled(count, idle)

    async def read_generation(
        self, session_id: str, generation: int, after: int, count: int
    ) -> tuple[SessionInfo | None, ReadResult]:
        rec = self._finishes.find(session_id, generation)
        if rec is None:
            return None, ReadResult([], None, False)
        return self._info(session_id, rec), self._page(rec, (generation, after), count)

    async def delete(self, session_id: str) -> bool:
        rec = self._get(session_id)
        if rec is None:
            return False
        del self._records[session_id]
        self._inboxes.pop(session_id, None)
        self._finishes.forget(session_id)
        self._signal(session_id, DeletedMsg())
        self._publish(session_id, DeletedMsg())
        return True

    # -- steering messages -----------------------------------------------------------------

    async def send_message(self, session_id: str, blob: bytes, key: str | None) -> Sent | None:
        rec = self._get(session_id)
        if rec is None:
            return None
        inbox = _unexpired(self._inboxes, session_id)
        if key is not None and inbox is not None and key in inbox.keys:
            generation, seq = inbox.keys[key]
            return Sent(generation, State.ACTIVE, f"{generation}-{seq}", True)
        self._expire_if_lapsed(session_id, rec)
        if rec.state is not State.ACTIVE:
            return Sent(rec.generation, rec.state, None)
        if inbox is None:
            inbox = self._inboxes[session_id] = _Inbox(rec.generation, 0.0)
        if inbox.generation != rec.generation:
            inbox.generation = rec.generation
            inbox.messages = []
            inbox.size = 0
        if len(inbox.messages) >= self.settings.max_messages:
            return Sent(rec.generation, State.ACTIVE, None, full="count")
        if inbox.size + len(blob) > self.settings.max_messages_bytes:
            return Sent(rec.generation, State.ACTIVE, None, full="bytes")
        inbox.messages.append(blob)
        inbox.size += len(blob)
        seq = len(inbox.messages)
        if key is not None:
            inbox.keys[key] = (rec.generation, seq)
        inbox.expires_at = time.monotonic() + self.settings.retention
        self._signal(session_id, SteerMsg(rec.generation, seq))
        return Sent(rec.generation, State.ACTIVE, f"{rec.generation}-{seq}")

    async def read_messages(
        self, session_id: str, generation: int, after: int, count: int
    ) -> list[tuple[int, bytes]]:
        inbox = _unexpired(self._inboxes, session_id)
        if inbox is None or inbox.generation != generation:
            return []
        page = inbox.messages[after : after + count]
        return [(after + 1 + i, blob) for i, blob in enumerate(page)]

    # -- fan-in ----------------------------------------------------------------------------

    async def admit(self, session_id: str, generation: int, name: str) -> Lost | None:
        return self._fanin.admit(session_id, generation, name)

    async def join(self, session_id: str, generation: int, name: str, token: str) -> Lost | None:
        return self._fanin.join(session_id, generation, name, token)

    async def append_shared(self, batches: Sequence[SharedAppend]) -> list[int | Lost]:
        return [self._fanin.append_shared(b) for b in batches]

    async def end_part(
        self, session_id: str, generation: int, name: str, token: str, *, last: int | None = None
    ) -> Lost | None:
        rec = self._get(session_id)
        if rec is not None and rec.generation == generation and rec.state.finished:
            return None  # a part may end after its session did (as in end_part.lua)
        return self._fanin.end_part(session_id, generation, name, token, last)

    # -- reads -----------------------------------------------------------------------------

    async def info(self, session_ids: Sequence[str]) -> list[SessionInfo | None]:
        out: list[SessionInfo | None] = []
        for session_id in session_ids:
            rec = self._get(session_id)
            out.append(None if rec is None else self._info(session_id, rec))
        return out

    async def read(self, session_id: str, after: tuple[int, int], count: int) -> ReadResult:
        rec = self._get(session_id)
        if rec is None:
            return ReadResult([], None, False)
        return self._page(rec, after, count)

    def _page(self, rec: _Record, after: tuple[int, int], count: int) -> ReadResult:
        if (rec.generation, rec.n + 1) <= after:
            return ReadResult([], None, False)
        generation = rec.generation
        start_offset = after[1] if generation == after[0] else 0
        log = rec.log
        # Offsets in the log are consecutive, so the first entry past the cursor is found by index.
        base = log[0][0] if log else rec.n + 1
        start = max(0, start_offset + 1 - base)
        page = log[start : start + count]
        budget = self.settings.replay_batch_bytes
        size = 0
        for i, (_, payload) in enumerate(page):
            size += len(payload)
            if size > budget and i:
                page = page[:i]  # a page holds about replay_batch_bytes (one chunk at least)
                break
        # Offsets of the store's own log: valid cursors, built without the constructor's checks.
        chunks: list[Chunk] = [decode_payload(p, trusted_cursor(generation, o)) for o, p in page]
        more = start + len(page) < len(log)
        end = None
        if not more and rec.end is not None and len(page) < count:
            end = (generation, rec.end)
        elif not more and rec.end is not None:
            more = True
        return ReadResult(chunks, end, more)

    async def compact(self, session_id: str) -> bool:
        rec = self._get(session_id)
        return rec is not None and self._compact(rec)

    @staticmethod
    def _compact(rec: _Record) -> bool:
        if not rec.state.finished or isinstance(rec.log, PackedLog):
            return False
        rec.log = PackedLog(rec.log)
        return True

    @asynccontextmanager
    async def listen(self, session_id: str, listener: Listener) -> AsyncIterator[None]:
        key = session_id.encode()
        self._fanout.add(key, listener)
        try:
            yield
        finally:
            self._fanout.remove(key, listener)
