"""Durable Streams records as the backends store them: what a create, an append and a read
carry and answer (the contract's types; the methods are in ``base.py``).

A Durable Streams stream is a byte log with a content type, no producer and no lease. Its
position is a byte count (``tail``): an append adds bytes at the tail, a read returns the bytes
from an offset. JSON streams store one compact JSON text per message, each followed by ``\\n``
(the HTTP layer frames them), so a message boundary is a byte offset like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = [
    "DsAppend",
    "DsAppended",
    "DsCreated",
    "DsFork",
    "DsOutcome",
    "DsProducer",
    "DsSpec",
    "DsStream",
    "DurableMethods",
    "DurableStore",
    "fork_cut",
    "is_json_type",
    "media_type",
    "producer_verdict",
]


@dataclass(frozen=True, slots=True)
class DsSpec:
    """What a create asks for; two creates match when every field is equal.

    ``ttl``: seconds of the sliding expiry window (reads and writes restart it);
    ``expires_at``: the absolute expiry as given (RFC 3339) and ``expires_ms`` the same in
    Unix milliseconds. Neither: the stream lasts the backend's ``retention`` after its last
    read or write. ``closed``: created closed.
    """

    content_type: str
    ttl: int | None = None
    expires_at: str | None = None
    expires_ms: int | None = None
    closed: bool = False
    fork: str | None = None
    """A fork's origin as asked: ``<source>:<offset or "">:<sub-offset>`` (compared, not read)."""


@dataclass(frozen=True, slots=True)
class DsFork:
    """Create as a fork of ``source``: its bytes up to ``offset`` (None: its tail), then
    ``sub`` more bytes, or ``sub`` more messages of a JSON stream, are copied (offsets keep
    their meaning: the copied prefix never changes in the source)."""

    source: str
    offset: int | None
    sub: int = 0


@dataclass(frozen=True, slots=True)
class DsCreated:
    """A create's outcome: ``created``, ``exists`` (equal spec), ``conflict``, ``full`` (the
    store holds ``ds_max_streams`` streams: nothing was created); for a fork also
    ``source_not_found``, ``source_gone`` (soft-deleted), ``bad_fork_offset`` (past the
    source's tail, inside a JSON message, or a sub-offset past its end)."""

    outcome: str
    stream: DsStream | None


@dataclass(frozen=True, slots=True)
class DsStream:
    """A stream's record as the store holds it after the operation that answered it."""

    spec: DsSpec
    tail: int
    closed: bool
    gone: bool = False
    """Soft-deleted while forks of it live: every request but a fork's read answers 410."""


@dataclass(frozen=True, slots=True)
class DsProducer:
    """An idempotent producer's headers: one batch ``seq`` of ``epoch`` of producer ``id``."""

    id: str
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class DsAppend:
    """One POST: ``data`` (may be empty only when ``close``) appended atomically with its checks.

    ``content_type``: a media type (lower case, no parameters), compared with the stream's
    media type; None skips the check (a close without a body). ``seq``: the
    ``Stream-Seq`` header, which must be bytewise greater than the last one stored.
    """

    data: bytes
    content_type: str | None
    seq: str | None = None
    producer: DsProducer | None = None
    close: bool = False


class DsOutcome(StrEnum):
    """How the store answered an append (checked in this order)."""

    NOT_FOUND = "not_found"
    GONE = "gone"
    """410: soft-deleted."""
    STALE_EPOCH = "stale_epoch"
    """403: the producer's epoch is below the stored one (``epoch`` holds the stored one)."""
    BAD_EPOCH_SEQ = "bad_epoch_seq"
    """400: a new epoch must start at seq 0."""
    DUPLICATE = "duplicate"
    """204: this producer's batch was applied before (``seq`` holds its last seq)."""
    SEQ_GAP = "seq_gap"
    """409: ``seq`` holds the expected seq."""
    CLOSED = "closed"
    """409: the stream is closed (a close without data on a closed stream is APPENDED)."""
    TYPE_MISMATCH = "type_mismatch"
    STREAM_SEQ = "stream_seq"
    """409: ``Stream-Seq`` not above the last one."""
    APPENDED = "appended"


@dataclass(frozen=True, slots=True)
class DsAppended:
    """An append's outcome and the stream after it (None when not found)."""

    outcome: DsOutcome
    stream: DsStream | None
    epoch: int = 0
    seq: int = 0


def producer_verdict(
    stored: tuple[int, int] | None, producer: DsProducer
) -> tuple[DsOutcome | None, int, int]:
    """The producer check (the protocol's rules), for stores that run Python atomically.

    ``stored``: ``(epoch, last seq)`` or None for a new producer. Answers ``(refusal or None,
    epoch, seq)``: for a refusal the headers it carries, else the state to store.
    """
    if stored is None:
        if producer.seq != 0:
            return DsOutcome.SEQ_GAP, producer.epoch, 0
        return None, producer.epoch, 0
    epoch, last = stored
    if producer.epoch < epoch:
        return DsOutcome.STALE_EPOCH, epoch, last
    if producer.epoch > epoch:
        if producer.seq != 0:
            return DsOutcome.BAD_EPOCH_SEQ, epoch, last
        return None, producer.epoch, 0
    if producer.seq <= last:
        return DsOutcome.DUPLICATE, epoch, last
    if producer.seq != last + 1:
        return DsOutcome.SEQ_GAP, epoch, last + 1
    return None, epoch, producer.seq


def media_type(content_type: str) -> str:
    """A content type without its parameters, lower case (what appends are compared by)."""
    return content_type.partition(";")[0].strip().lower()


def is_json_type(content_type: str) -> bool:
    """Whether a stream of this type keeps JSON message boundaries (``application/json``)."""
    return media_type(content_type) == "application/json"


def fork_cut(after: bytes, json_stream: bool, sub: int) -> int | None:
    """Bytes past the fork offset a sub-offset covers: ``sub`` bytes, or ``sub`` messages of a
    JSON stream (``after``: the stored bytes from the fork offset on). None when past the end."""
    if not json_stream:
        return sub if sub <= len(after) else None
    cut = 0
    for _ in range(sub):
        end = after.find(b"\n", cut)
        if end < 0:
            return None
        cut = end + 1
    return cut


class DurableStore(Protocol):
    """What a backend's Durable Streams object does (``MemoryDurable``, ``RedisDurable``)."""

    async def create(
        self, stream_id: str, spec: DsSpec, data: bytes, fork: DsFork | None
    ) -> DsCreated: ...

    async def append(self, stream_id: str, append: DsAppend) -> DsAppended: ...

    async def read(
        self, stream_id: str, offset: int, limit: int, touch: bool
    ) -> tuple[DsStream, bytes] | None: ...

    async def delete(self, stream_id: str) -> str: ...


class DurableMethods:
    """The ``ds_*`` methods of a backend that holds a :class:`DurableStore` as ``_durable``
    (see ``Backend`` for what each does); inherited by the built-in backends, so that their
    modules stay about sessions."""

    _durable: DurableStore

    async def ds_create(
        self, stream_id: str, spec: DsSpec, data: bytes, fork: DsFork | None = None
    ) -> DsCreated:
        """See :meth:`Backend.ds_create`."""
        return await self._durable.create(stream_id, spec, data, fork)

    async def ds_append(self, stream_id: str, append: DsAppend) -> DsAppended:
        """See :meth:`Backend.ds_append`."""
        return await self._durable.append(stream_id, append)

    async def ds_read(
        self, stream_id: str, offset: int, limit: int, *, touch: bool
    ) -> tuple[DsStream, bytes] | None:
        """See :meth:`Backend.ds_read`."""
        return await self._durable.read(stream_id, offset, limit, touch)

    async def ds_delete(self, stream_id: str) -> str:
        """See :meth:`Backend.ds_delete`."""
        return await self._durable.delete(stream_id)
