"""The contract every backend keeps: the session state machine, the log, and live delivery.

Each write method is one atomic state transition, fenced by generation in the store. The hub,
producers and subscribers hold no state a backend must know about beyond these calls.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal

from anyio.abc import TaskGroup

from .._config import Settings
from .._fanout import Listener
from .._types import Chunk, End, SessionInfo, State

__all__ = ["AppendResult", "Backend", "ClaimResult", "Lost", "ReadResult"]

Channel = Literal["data", "ctl"]


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """Outcome of a claim: whether this caller became the producer, and of which generation."""

    created: bool
    generation: int
    state: State


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Offset given to the first chunk of a batch, and whether a cancel is pending."""

    first: int
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A page of the log: chunks after the cursor, the end marker if reached, and whether more may follow."""

    chunks: list[Chunk]
    end: tuple[int, End] | None
    more: bool


@dataclass(frozen=True, slots=True)
class Lost:
    """Why a producer's write was refused: ``stale``, ``closed``, ``gone``."""

    why: Literal["stale", "closed", "gone"]
    state: State | None = None
    reason: str | None = None


class Backend(abc.ABC):
    """Store of sessions. Thirteen methods: lifecycle (2), transitions (7), reads (3), live (1)."""

    settings: Settings

    @abc.abstractmethod
    async def start(self, settings: Settings, task_group: TaskGroup) -> None:
        """Bind settings and start background work (pub/sub reader) in the hub's task group."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections; background tasks end with the hub's task group."""

    @abc.abstractmethod
    async def claim(
        self, session_id: str, *, token: str, restart: bool, metadata: bytes | None
    ) -> ClaimResult:
        """Become the producer of a new generation unless a live or finished one holds the session."""

    @abc.abstractmethod
    async def append(
        self, session_id: str, generation: int, writer: str, seq: int, payloads: Sequence[bytes]
    ) -> AppendResult | Lost:
        """Append a batch (idempotent per ``writer``/``seq``) and publish it live."""

    @abc.abstractmethod
    async def set_metadata(self, session_id: str, generation: int, blob: bytes) -> Lost | None:
        """Replace the metadata and publish it live."""

    @abc.abstractmethod
    async def renew(self, leases: Sequence[tuple[str, int]]) -> list[bool | Lost]:
        """Extend several leases at once; each result is the pending-cancel flag or why it was lost."""

    @abc.abstractmethod
    async def close(
        self, session_id: str, generation: int, state: State, reason: str | None
    ) -> State | Lost:
        """Finish a generation: set the state, append the end marker, publish it live."""

    @abc.abstractmethod
    async def expire(self, session_ids: Sequence[str]) -> list[SessionInfo | None]:
        """Fail every given session whose lease has lapsed; return the current records."""

    @abc.abstractmethod
    async def cancel(self, session_id: str) -> SessionInfo | None:
        """Set the durable cancel flag and signal the producer; None for an unknown session."""

    @abc.abstractmethod
    async def delete(self, session_id: str) -> bool:
        """Remove every key of the session, telling its producer and subscribers first."""

    @abc.abstractmethod
    async def info(self, session_ids: Sequence[str]) -> list[SessionInfo | None]:
        """The records of several sessions in one round trip."""

    @abc.abstractmethod
    async def read(self, session_id: str, after: tuple[int, int], count: int) -> ReadResult:
        """Up to ``count`` log entries after ``(generation, offset)``."""

    @abc.abstractmethod
    def listen(
        self, session_id: str, channel: Channel, listener: Listener
    ) -> AbstractAsyncContextManager[None]:
        """Deliver the session's live messages to ``listener`` while the context is open."""
