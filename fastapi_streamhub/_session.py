"""The results of the hub's calls a caller holds on to: a Registration, and a consumer's Session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ._errors import SessionNotFound
from ._producer import Producer
from ._subscriber import Subscription
from ._types import Cursor, SessionInfo, State

__all__ = ["Registration", "Session", "SessionSource", "as_cursor"]


class SessionSource(Protocol):
    """What a :class:`Session` asks of its hub (a :class:`StreamHub`)."""

    async def status(self, session_id: str) -> SessionInfo | None: ...

    def subscribe(
        self,
        session_id: str,
        after: Cursor | str | None = None,
        *,
        buffer: int | None = None,
        batch_replay: bool = False,
        batch: bool = False,
    ) -> Subscription: ...

    async def cancel(self, session_id: str, wait: float | None = None) -> State: ...


@dataclass(frozen=True, slots=True)
class Registration:
    """Result of :meth:`StreamHub.register`; unpacks as ``producer, created``."""

    producer: Producer | None
    created: bool
    generation: int
    state: State

    def __iter__(self) -> Iterator[Any]:
        yield self.producer
        yield self.created


def as_cursor(after: Cursor | str | None) -> Cursor | None:
    """``after`` as a cursor (a string is parsed; raises ValueError)."""
    if after is None or isinstance(after, Cursor):
        return after
    return Cursor.parse(after)


class Session:
    """A consumer's handle on one session (from :meth:`StreamHub.get`)."""

    def __init__(self, hub: SessionSource, info: SessionInfo) -> None:
        self.hub = hub
        self.session_id = info.session_id
        self.info = info

    def __repr__(self) -> str:
        return f"<Session {self.session_id!r} {self.info.state.value}>"

    def subscribe(
        self,
        after: Cursor | str | None = None,
        *,
        buffer: int | None = None,
        batch_replay: bool = False,
        batch: bool = False,
    ) -> Subscription:
        """Replay from ``after`` (exclusive; None = from the start), then follow live."""
        return self.hub.subscribe(
            self.session_id, after=after, buffer=buffer, batch_replay=batch_replay, batch=batch
        )

    async def refresh(self) -> SessionInfo:
        """Re-read the record."""
        info = await self.hub.status(self.session_id)
        if info is None:
            raise SessionNotFound(f"session {self.session_id!r} not found")
        self.info = info
        return info

    async def metadata(self) -> Any:
        """The current metadata (None if never set)."""
        return (await self.refresh()).metadata

    async def state(self) -> State:
        """The current state."""
        return (await self.refresh()).state

    async def done(self) -> bool:
        """True once the session finished (done, cancelled or failed)."""
        return (await self.state()).finished

    async def cancel(self, wait: float | None = None) -> State:
        """Ask the producer to stop; see :meth:`StreamHub.cancel`."""
        return await self.hub.cancel(self.session_id, wait=wait)
