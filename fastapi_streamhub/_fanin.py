"""Fan-in: several named producers writing one session, totally ordered by its cursor.

The session's owner (the producer :meth:`StreamHub.register` created) admits other producers
with :meth:`Producer.admit`, which returns a :class:`Grant`; a process anywhere turns the grant
into a :class:`SubProducer` with :meth:`StreamHub.join`. Every chunk of a sub-producer carries
its name (``Chunk.producer``). From the first admission on, the owner's and every
sub-producer's batches get their offsets from the store (``append_shared``) instead of from
the client, so the writers cannot collide; a session nobody was admitted into keeps the
single-producer path untouched.

Fencing: a grant names the owner's generation; every write of a sub-producer is checked
against it in the store, so when the owner's generation ends (closed, lease lapsed, claimed
again, deleted) its sub-producers' writes are refused and their cancel fires. A sub-producer
holds no lease of its own: the owner's lease keeps the session alive. Its hub checks the
session's record every renewal interval (and hears cancels and losses on the control bus), so
a sub-producer also learns without writing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Set

from ._errors import SessionDeleted, StreamClosed
from ._grant import Grant
from ._producer import CancelCallback, Producer, ProducerHost, lost_error
from ._types import State
from .backends.base import Backend, Lost

__all__ = ["Grant", "SubProducer", "check_parts", "join"]


class SubProducer(Producer):
    """A named producer admitted into a session (fan-in). Obtain it from :meth:`StreamHub.join`.

    ``publish``, ``send``, ``flush``, ``set_metadata``, ``admit`` and ``async with`` work as on
    the owner's :class:`Producer`; its chunks carry ``producer=name``. :meth:`close` ends this
    producer's part only: the session ends when its owner closes it.
    """

    def __init__(
        self, host: ProducerHost, grant: Grant, token: str, on_cancel: CancelCallback | None = None
    ) -> None:
        super().__init__(host, grant.session_id, grant.generation, on_cancel=on_cancel)
        self.grant = grant
        self.name = grant.name
        self._buffer.part = (grant.name, token)

    def __repr__(self) -> str:
        return f"<SubProducer {self.name!r} of {self.session_id!r} generation={self.generation}>"

    async def close(self, state: State | None = None, reason: str | None = None) -> State:
        """Flush, then end this producer's part (the session goes on); returns ``done``,
        ``cancelled`` or ``failed`` for this part (``failed`` when a chunk it accepted was
        not stored)."""
        return await super().close(state, reason)

    async def _finish(self, state: State, reason: str | None) -> State | Lost:
        # Same rule as the owner's close; only the store's transition differs: the part ends.
        name, token = self._buffer.part or ("", "")
        sid, gen = self.session_id, self.generation
        lost = await self._backend.end_part(sid, gen, name, token, last=self._buffer.claim())
        return state if lost is None else lost


async def join(
    host: ProducerHost, grant: Grant, on_cancel: CancelCallback | None = None
) -> SubProducer:
    """:meth:`StreamHub.join` (the hub checked it runs, and registers the part)."""
    token = uuid.uuid4().hex
    lost = await host.backend.join(grant.session_id, grant.generation, grant.name, token)
    if lost is not None:
        if lost.reason == "part_ended":
            raise StreamClosed(f"producer {grant.name!r} already ended its part")
        raise lost_error(lost, grant.session_id)
    return SubProducer(host, grant, token, on_cancel)


async def check_parts(backend: Backend, joined: Mapping[str, Set[SubProducer]]) -> None:
    """The keeper's round for the sub-producers ``joined`` here: learn, without writing, that
    the owner's generation ended (or lapsed: fail it), or that a cancel was asked."""
    parts = [p for ps in joined.values() for p in ps]
    sids = list(dict.fromkeys(p.session_id for p in parts))
    infos = dict(zip(sids, await backend.info(sids), strict=True))
    lapsed: list[tuple[str, int]] = []
    for part in parts:
        info = infos[part.session_id]
        if info is None:
            part.mark_lost(SessionDeleted(f"session {part.session_id!r} was deleted"))
        elif info.generation != part.generation:
            part.mark_stale()
        elif info.state.finished:
            part.mark_lost(Lost("closed", info.state, info.reason))
        elif info.lease_remaining <= 0:
            lapsed.append((part.session_id, part.generation))
        elif info.cancel_requested:
            part.request_cancel("cancelled")
    if lapsed:
        # The owner stopped renewing: fail its generation (its end reaches every subscriber);
        # the next round, or the control bus, tells the sub-producers.
        await backend.expire(list(dict.fromkeys(lapsed)))
