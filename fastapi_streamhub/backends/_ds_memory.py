"""The memory backend's Durable Streams: records in a dict, each operation one synchronous step.

Expiry is lazy: a stream past its deadline is dropped by the next operation that looks it up.
Live readers are told through the backend's fan-out: an append or a close dispatches a
``StoredMsg(0, tail)``, a delete a ``DeletedMsg``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .._codec import DeletedMsg, Message, StoredMsg
from ._ds import DsAppend, DsAppended, DsOutcome, DsSpec, DsStream, producer_verdict

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

    def view(self) -> DsStream:
        return DsStream(self.spec, len(self.data), self.closed)


class MemoryDurable:
    """Durable Streams of one :class:`MemoryBackend` (it delegates its ``ds_*`` methods here)."""

    def __init__(
        self,
        publish: Callable[[str, Message], None],
        retention: Callable[[], float],
        taken: Callable[[str], bool],
    ) -> None:
        self._streams: dict[str, _Stream] = {}
        self._publish = publish
        self._retention = retention
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
        return now + int(self._retention() * 1000)

    def _get(self, stream_id: str) -> _Stream | None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.deadline_ms <= _now_ms():
            del self._streams[stream_id]
            return None
        return stream

    def _touch(self, stream: _Stream) -> None:
        stream.deadline_ms = self._deadline(stream.spec)

    def create(self, stream_id: str, spec: DsSpec, data: bytes) -> tuple[bool | None, DsStream]:
        """See :meth:`Backend.ds_create`."""
        stream = self._get(stream_id)
        if stream is not None:
            return (False if stream.spec == spec else None), stream.view()
        if self._taken(stream_id):
            return None, DsStream(spec, 0, False)
        stream = _Stream(spec, bytearray(data), spec.closed, self._deadline(spec))
        self._streams[stream_id] = stream
        return True, stream.view()

    def append(self, stream_id: str, append: DsAppend) -> DsAppended:
        """See :meth:`Backend.ds_append`."""
        stream = self._get(stream_id)
        if stream is None:
            return DsAppended(DsOutcome.NOT_FOUND, None)
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
        if append.content_type is not None and append.content_type != stream.spec.content_type:
            return DsAppended(DsOutcome.TYPE_MISMATCH, stream.view(), epoch, seq)
        if append.seq is not None:
            # Bytewise, as the protocol asks (str comparison of UTF-8 would agree, but be plain).
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

    def read(
        self, stream_id: str, offset: int, limit: int, touch: bool
    ) -> tuple[DsStream, bytes] | None:
        """See :meth:`Backend.ds_read`."""
        stream = self._get(stream_id)
        if stream is None:
            return None
        if touch:
            self._touch(stream)
        return stream.view(), bytes(stream.data[offset : offset + limit])

    def delete(self, stream_id: str) -> bool:
        """See :meth:`Backend.ds_delete`."""
        if self._get(stream_id) is None:
            return False
        del self._streams[stream_id]
        self._publish(stream_id, DeletedMsg())
        return True
