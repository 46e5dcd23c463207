"""The memory backend's Durable Streams: records in a dict, each operation one synchronous step
(so a fork, which reads its source and writes itself, is atomic too).

Expiry is lazy: a stream past its deadline is dropped by the next operation that looks it up
(its source's fork count drops with it); a soft-deleted source looks its forks up whenever it is
looked up itself, so it goes as soon as its last fork has expired. A create past
``ds_max_streams`` first drops every expired stream, then counts. Live readers are told
through the backend's fan-out: an append or a close dispatches a ``StoredMsg(0, tail)``, a
delete a ``DeletedMsg``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .._codec import DeletedMsg, Message, StoredMsg
from .._config import Settings
from ._ds import (
    DsAppend,
    DsAppended,
    DsCreated,
    DsFork,
    DsOutcome,
    DsSpec,
    DsStream,
    fork_cut,
    is_json_type,
    media_type,
    producer_verdict,
)

__all__ = ["MemoryDurable"]


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class _Stream:
    spec: DsSpec
    data: bytearray
    closed: bool
    deadline_ms: int
    seq: str | None = None
    producers: dict[str, tuple[int, int]] = field(default_factory=dict)
    source: str | None = None
    forks: set[str] = field(default_factory=set)
    """The ids of the forks of it that live (or were not looked up since they expired)."""
    gone: bool = False

    def view(self) -> DsStream:
        return DsStream(self.spec, len(self.data), self.closed, self.gone)


class MemoryDurable:
    """Durable Streams of one :class:`MemoryBackend` (it delegates its ``ds_*`` methods here)."""

    def __init__(
        self,
        publish: Callable[[str, Message], None],
        settings: Callable[[], Settings],
        taken: Callable[[str], bool],
    ) -> None:
        self._streams: dict[str, _Stream] = {}
        self._publish = publish
        self._settings = settings
        self._taken = taken

    def exists(self, stream_id: str) -> bool:
        """Whether a live (unexpired) stream has this id."""
        return self._get(stream_id) is not None

    def _deadline(self, spec: DsSpec) -> int:
        now = _now_ms()
        if spec.expires_ms is not None:
            return spec.expires_ms
        if spec.ttl is not None:
            return now + spec.ttl * 1000
        return now + int(self._settings().retention * 1000)

    def _get(self, stream_id: str) -> _Stream | None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.deadline_ms <= _now_ms():
            self._drop(stream_id, stream)
            return None
        if stream is not None and stream.gone:
            self._prune_forks(stream)
            if self._streams.get(stream_id) is not stream:
                return None  # its last fork had expired: it went with it
        return stream

    def _prune_forks(self, stream: _Stream) -> None:
        """Look each fork of ``stream`` up, so that the expired ones are dropped (and release
        it)."""
        for fork_id in list(stream.forks):
            self._get(fork_id)

    def _full(self) -> bool:
        """Whether the store holds ``ds_max_streams`` streams, after dropping the expired."""
        limit = self._settings().ds_max_streams
        if limit is None or len(self._streams) < limit:
            return False
        now = _now_ms()
        for stream_id, stream in list(self._streams.items()):
            if self._streams.get(stream_id) is stream and stream.deadline_ms <= now:
                self._drop(stream_id, stream)
        return len(self._streams) >= limit

    def _drop(self, stream_id: str, stream: _Stream) -> None:
        """Remove a stream; a soft-deleted source it was the last fork of goes with it."""
        del self._streams[stream_id]
        source_id = stream.source
        while source_id is not None:
            source = self._streams.get(source_id)
            if source is None:
                return
            source.forks.discard(stream_id)
            if not (source.gone and not source.forks):
                return
            del self._streams[source_id]
            stream_id, source_id = source_id, source.source

    def _touch(self, stream: _Stream) -> None:
        stream.deadline_ms = self._deadline(stream.spec)

    async def create(
        self, stream_id: str, spec: DsSpec, data: bytes, fork: DsFork | None
    ) -> DsCreated:
        """See :meth:`Backend.ds_create`."""
        prefix = b""
        source: _Stream | None = None
        if fork is not None:
            source = self._get(fork.source)
            if source is None:
                return DsCreated("source_not_found", None)
            if source.gone:
                return DsCreated("source_gone", None)
            if spec.content_type and spec.content_type != source.spec.content_type:
                return DsCreated("conflict", None)
            at = len(source.data) if fork.offset is None else fork.offset
            json_stream = is_json_type(source.spec.content_type)
            inside = json_stream and at > 0 and source.data[at - 1 : at] != b"\n"
            cut = fork_cut(bytes(source.data[at:]), json_stream, fork.sub)
            if at > len(source.data) or inside or cut is None:
                return DsCreated("bad_fork_offset", None)
            prefix = bytes(source.data[: at + cut])
            inherited = spec.ttl is None and spec.expires_ms is None
            spec = replace(
                spec,
                content_type=source.spec.content_type,
                ttl=source.spec.ttl if inherited else spec.ttl,
                expires_at=source.spec.expires_at if inherited else spec.expires_at,
                expires_ms=source.spec.expires_ms if inherited else spec.expires_ms,
            )
        stream = self._get(stream_id)
        if stream is not None:
            if stream.gone:
                return DsCreated("conflict", stream.view())
            return DsCreated("exists" if stream.spec == spec else "conflict", stream.view())
        if self._taken(stream_id):
            return DsCreated("conflict", None)
        if self._full():
            return DsCreated("full", None)
        stream = _Stream(spec, bytearray(prefix + data), spec.closed, self._deadline(spec))
        if fork is not None and source is not None:
            stream.source = fork.source
            source.forks.add(stream_id)
        self._streams[stream_id] = stream
        return DsCreated("created", stream.view())

    async def append(self, stream_id: str, append: DsAppend) -> DsAppended:
        """See :meth:`Backend.ds_append`."""
        stream = self._get(stream_id)
        if stream is None:
            return DsAppended(DsOutcome.NOT_FOUND, None)
        if stream.gone:
            return DsAppended(DsOutcome.GONE, stream.view())
        epoch = seq = 0
        producer = append.producer
        if producer is not None:
            refusal, epoch, seq = producer_verdict(stream.producers.get(producer.id), producer)
            if refusal is not None:
                return DsAppended(refusal, stream.view(), epoch, seq)
        if stream.closed:
            # Closing again is idempotent, unless it carries data or is some producer's batch
            # (that producer's own retry was answered DUPLICATE above).
            if append.data or not append.close or producer is not None:
                return DsAppended(DsOutcome.CLOSED, stream.view(), epoch, seq)
            return DsAppended(DsOutcome.APPENDED, stream.view(), epoch, seq)
        media = media_type(stream.spec.content_type)
        if append.content_type is not None and append.content_type != media:
            return DsAppended(DsOutcome.TYPE_MISMATCH, stream.view(), epoch, seq)
        if append.seq is not None:
            # Bytewise, as the protocol asks.
            if stream.seq is not None and append.seq.encode() <= stream.seq.encode():
                return DsAppended(DsOutcome.STREAM_SEQ, stream.view(), epoch, seq)
            stream.seq = append.seq
        if producer is not None:
            stream.producers[producer.id] = (epoch, seq)
        stream.data += append.data
        if append.close:
            stream.closed = True
        self._touch(stream)
        self._publish(stream_id, StoredMsg(0, len(stream.data)))
        return DsAppended(DsOutcome.APPENDED, stream.view(), epoch, seq)

    async def read(
        self, stream_id: str, offset: int, limit: int, touch: bool
    ) -> tuple[DsStream, bytes] | None:
        """See :meth:`Backend.ds_read`."""
        stream = self._get(stream_id)
        if stream is None:
            return None
        if stream.gone:
            return stream.view(), b""
        if touch:
            self._touch(stream)
        return stream.view(), bytes(stream.data[offset : offset + limit])

    async def delete(self, stream_id: str) -> str:
        """See :meth:`Backend.ds_delete`."""
        stream = self._get(stream_id)
        if stream is None:
            return "not_found"
        if stream.gone:
            return "gone"
        self._prune_forks(stream)
        if stream.forks:
            stream.gone = True
            stream.data = bytearray()
            stream.producers.clear()
            outcome = "soft"
        else:
            self._drop(stream_id, stream)
            outcome = "deleted"
        self._publish(stream_id, DeletedMsg())
        return outcome
