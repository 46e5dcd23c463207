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

import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import SessionDeleted, StreamClosed
from ._producer import CancelCallback, Producer, lost_error
from ._types import State, validate_session_id
from .backends.base import Lost

if TYPE_CHECKING:
    from ._hub import StreamHub

__all__ = ["Grant", "SubProducer", "admit", "check_parts", "join"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValueError(
            "producer name must be 1-64 characters of letters, digits and _ . -, "
            "starting with a letter or a digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission for the producer ``name`` to write into one generation of a session.

    ``str(grant)`` is ``<generation>:<name>:<session id>``, for handing it to another process;
    :meth:`parse` reads it back. It is not a secret: guard the route that joins with it.
    """

    session_id: str
    generation: int
    name: str

    def __post_init__(self) -> None:
        validate_session_id(self.session_id)
        _check_name(self.name)
        if type(self.generation) is not int or self.generation <= 0:
            raise ValueError("grant generation must be a positive integer")

    def __str__(self) -> str:
        return f"{self.generation}:{self.name}:{self.session_id}"

    @classmethod
    def parse(cls, value: str) -> Grant:
        """Read ``<generation>:<name>:<session id>``; raises ValueError."""
        parts = value.split(":", 2) if isinstance(value, str) else []
        if len(parts) != 3 or not parts[0].isdigit():
            raise ValueError("grant must look like '<generation>:<name>:<session id>'")
        return cls(parts[2], int(parts[0]), parts[1])


class SubProducer(Producer):
    """A named producer admitted into a session (fan-in). Obtain it from :meth:`StreamHub.join`.

    ``publish``, ``send``, ``flush``, ``set_metadata``, ``admit`` and ``async with`` work as on
    the owner's :class:`Producer`; its chunks carry ``producer=name``. :meth:`close` ends this
    producer's part only: the session ends when its owner closes it.
    """

    def __init__(
        self, hub: StreamHub, grant: Grant, token: str, on_cancel: CancelCallback | None = None
    ) -> None:
        super().__init__(hub, grant.session_id, grant.generation, on_cancel=on_cancel)
        self.grant = grant
        self.name = grant.name
        self._part = (grant.name, token)

    def __repr__(self) -> str:
        return f"<SubProducer {self.name!r} of {self.session_id!r} generation={self.generation}>"

    async def close(self, state: State | None = None, reason: str | None = None) -> State:
        """Flush, then end this producer's part (the session goes on); returns ``done``,
        ``cancelled`` or ``failed`` for this part (``failed`` when a chunk it accepted was
        not stored)."""
        return await super().close(state, reason)

    async def _finish(self, state: State, reason: str | None) -> State | Lost:
        # Same rule as the owner's close; only the store's transition differs: the part ends.
        name, token = self._part or ("", "")
        sid, gen = self.session_id, self.generation
        lost = await self._backend.end_part(sid, gen, name, token, last=self._claim())
        return state if lost is None else lost


async def admit(producer: Producer, name: str) -> Grant:
    """:meth:`Producer.admit`."""
    _check_name(name)
    producer._check_open()
    lost = await producer._backend.admit(producer.session_id, producer.generation, name)
    if lost is not None:
        error = lost_error(lost, producer.session_id)
        producer._mark_lost(error)
        raise error
    if producer._part is None:
        # The owner's part ("", no token: one owner per generation) exists now; batches taken
        # from here on get their offsets from the store.
        producer._part = ("", "")
    # One batch taken before may be in flight with offsets of its own: wait for it (and the
    # rest) before anyone can hold the grant.
    await producer.flush()
    return Grant(producer.session_id, producer.generation, name)


async def join(
    hub: StreamHub, grant: Grant | str, on_cancel: CancelCallback | None = None
) -> SubProducer:
    """:meth:`StreamHub.join`."""
    if isinstance(grant, str):
        grant = Grant.parse(grant)
    hub._require_running()
    token = uuid.uuid4().hex
    lost = await hub.backend.join(grant.session_id, grant.generation, grant.name, token)
    if lost is not None:
        if lost.reason == "part_ended":
            raise StreamClosed(f"producer {grant.name!r} already ended its part")
        raise lost_error(lost, grant.session_id)
    part = SubProducer(hub, grant, token, on_cancel)
    hub._parts.setdefault(grant.session_id, set()).add(part)
    return part


async def check_parts(hub: StreamHub) -> None:
    """The keeper's round for sub-producers: learn, without writing, that the owner's
    generation ended (or lapsed: fail it), or that a cancel was asked."""
    parts = [p for ps in hub._parts.values() for p in ps]
    sids = list(dict.fromkeys(p.session_id for p in parts))
    infos = dict(zip(sids, await hub.backend.info(sids), strict=True))
    lapsed: list[tuple[str, int]] = []
    for part in parts:
        info = infos[part.session_id]
        if info is None:
            part._mark_lost(SessionDeleted(f"session {part.session_id!r} was deleted"))
        elif info.generation != part.generation:
            part._mark_lost_stale()
        elif info.state.finished:
            part._mark_lost_from(Lost("closed", info.state, info.reason))
        elif info.lease_remaining <= 0:
            lapsed.append((part.session_id, part.generation))
        elif info.cancel_requested:
            part.request_cancel("cancelled")
    if lapsed:
        # The owner stopped renewing: fail its generation (its end reaches every subscriber);
        # the next round, or the control bus, tells the sub-producers.
        await hub.backend.expire(list(dict.fromkeys(lapsed)))
