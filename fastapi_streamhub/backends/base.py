"""The contract every backend keeps: the session state machine, the log, and live delivery.

Each write method is one atomic state transition, fenced by generation in the store. The hub,
producers and subscribers hold no state a backend must know about beyond these calls.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from anyio.abc import TaskGroup

from .._codec import Message
from .._config import Settings
from .._errors import BackendUnavailable
from .._fanout import Listener
from .._types import Chunk, End, SessionInfo, State
from ._ds import DsAppend, DsAppended, DsCreated, DsFork, DsSpec, DsStream

__all__ = [
    "KEPT_GENERATIONS",
    "PART_REFUSALS",
    "Append",
    "Backend",
    "ClaimResult",
    "ControlHandler",
    "FinishClaim",
    "Lost",
    "ReadResult",
    "Reason",
    "Sent",
    "SharedAppend",
    "WriteRefused",
]

ControlHandler = Callable[[str, Message], None]
"""Receives signals for producers (cancel, deleted) of every session: ``(session_id, message)``."""


class WriteRefused(BackendUnavailable):
    """The store refused a write itself while it kept answering other commands (Redis closes
    the connection on an argument over its ``proto-max-bulk-len``): retrying it cannot help,
    and the other batches of the same round trip may be fine alone."""


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """Outcome of a claim: whether this caller became the producer, and of which generation."""

    created: bool
    generation: int
    state: State


@dataclass(slots=True)  # not frozen: one per batch on the writer's hot path (built, never changed)
class Append:
    """A batch of one producer: payloads for the offsets ``first``, ``first + 1``, ..."""

    session_id: str
    generation: int
    first: int
    payloads: list[bytes]


@dataclass(slots=True)
class SharedAppend(Append):
    """A batch of one producer of a fan-in session: the store assigns its offsets.

    ``name`` is the producer's part (``""``: the owner's), ``token`` the handle that writes it,
    ``seq`` the batch's number within that handle (a retried batch is applied once). ``first``
    is unknown (0) until the store answers.
    """

    name: str
    token: str
    seq: int


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A page of the log: chunks after the cursor, the end marker if reached, and whether more may follow."""

    chunks: list[Chunk]
    end: tuple[int, End] | None
    more: bool


class Reason(StrEnum):
    """Reasons the store itself gives when it ends a generation or refuses a producer's write.

    Defined once for Python; the Lua scripts write the same strings (Lua has no import):

    - ``lease_expired``: the generation failed because its lease lapsed. Stored as the end
      reason by ``claim.lua``, ``cancel.lua``, ``expire.lua`` and ``message.lua`` (each fails a
      lapsed lease before it acts), published by ``expire.lua`` on the data bus
      (``<gen>:lease_expired``), and by the memory backend's ``_expire_if_lapsed``.
    - ``replaced``, ``part_ended``, ``not_admitted``: a fan-in part's own refusal, returned
      as ``{'part', <reason>}`` by ``join.lua`` (``not_admitted``, ``part_ended``),
      ``append_shared.lua`` (all three) and ``end_part.lua`` (``replaced``, ``not_admitted``);
      the memory backend's fan-in returns the same.
    """

    LEASE_EXPIRED = "lease_expired"
    SUPERSEDED = "superseded"
    """Cancelled by a claim for another turn (``claim(turn=...)``; ``claim.lua``)."""
    REPLACED = "replaced"
    """Stale: another handle joined under the part's name."""
    PART_ENDED = "part_ended"
    """Closed: the part already ended."""
    NOT_ADMITTED = "not_admitted"
    """Gone: no producer of that name was admitted into the current generation."""


@dataclass(frozen=True, slots=True)
class Lost:
    """Why a producer's write was refused: ``stale``, ``closed``, ``gone``.

    For a fan-in producer, ``reason`` may name its part's own refusal (a :class:`Reason`):
    ``replaced`` (stale), ``part_ended`` (closed) or ``not_admitted`` (gone). For ``closed``
    it is otherwise the stored end reason of the generation.
    """

    why: Literal["stale", "closed", "gone"]
    state: State | None = None
    reason: str | None = None


PART_REFUSALS: dict[str, Lost] = {
    Reason.REPLACED: Lost("stale", reason=Reason.REPLACED),
    Reason.PART_ENDED: Lost("closed", reason=Reason.PART_ENDED),
    Reason.NOT_ADMITTED: Lost("gone", reason=Reason.NOT_ADMITTED),
}
"""A fan-in part's own refusal as the refusal of the write it stops (both backends)."""


@dataclass(frozen=True, slots=True)
class Sent:
    """Outcome of :meth:`Backend.send_message` for a known session.

    ``id`` (``<generation>-<seq>``) when the message is stored for ``generation`` (``duplicate``:
    stored earlier under the same idempotency key); None when refused: the generation is
    ``state`` (finished), or ``full`` says which per-generation limit it reached
    (``max_messages`` or ``max_messages_bytes``).
    """

    generation: int
    state: State
    id: str | None
    duplicate: bool = False
    full: Literal["count", "bytes"] | None = None


FinishClaim = Literal["claimed", "busy", "settled", "gone"]
"""Outcome of :meth:`Backend.claim_finish`: ``claimed`` (the caller runs the hook now),
``busy`` (another caller's claim on it has not lapsed), ``settled`` (it ran already), ``gone``
(the session is unknown, or a newer generation replaced this one and does not keep it)."""

KEPT_GENERATIONS = 3
"""Replaced generations a session keeps at most for their ``on_finish`` hook (the newest)."""


class Backend(abc.ABC):
    """Store of sessions. Fifteen methods: lifecycle (2), transitions (8), reads (4), live (1);
    ``compact`` has a default. Optional groups (raising NotImplementedError by default):
    steering messages, fan-in, and ``on_finish``'s settle marks."""

    settings: Settings
    # Log entries a resuming reader reads first, to send its first bytes early (0: a full page).
    first_page: int = 0
    # Writer round trips the backend runs at once (on as many connections); 1: one at a time.
    write_slots: int = 1

    @abc.abstractmethod
    async def start(
        self, settings: Settings, task_group: TaskGroup, on_control: ControlHandler
    ) -> None:
        """Bind settings, start background work (pub/sub reader) and deliver producer signals."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections; background tasks end with the hub's task group."""

    @abc.abstractmethod
    async def claim(
        self,
        session_id: str,
        *,
        token: str,
        restart: bool,
        metadata: bytes | None,
        turn: str | None = None,
    ) -> ClaimResult:
        """Become the producer of a new generation unless a live or finished one holds the session.

        ``turn`` (what the generation answers, stored with it) replaces ``restart``: a live or
        finished generation of the same turn is left alone (a failed one is reclaimed); a
        live one of another turn (or of none) first ends ``cancelled`` with reason
        ``superseded`` (end marker, published, its producer told ``stale``), all in the same
        transition, then the session is claimed as for ``restart``.
        """

    @abc.abstractmethod
    async def append(self, batches: Sequence[Append]) -> list[Lost | None]:
        """Append batches of several sessions in one round trip and publish them live.

        Each batch is fenced by its explicit offsets: it is refused unless it continues its
        generation's log, and a retry of a batch already applied is recognised as such.
        """

    @abc.abstractmethod
    async def set_metadata(self, session_id: str, generation: int, blob: bytes) -> Lost | None:
        """Replace the metadata and publish it live."""

    @abc.abstractmethod
    async def renew(
        self, leases: Sequence[tuple[str, int]], *, retention: bool = False
    ) -> list[bool | Lost]:
        """Extend several leases at once; each result is the pending-cancel flag or why it was lost.

        With ``retention``, also push the retention TTL of the sessions' keys forward.
        """

    @abc.abstractmethod
    async def close(
        self,
        session_id: str,
        generation: int,
        state: State,
        reason: str | None,
        *,
        last: int | None = None,
    ) -> State | Lost:
        """Finish a generation: set the state, append the end marker, publish it live.

        ``last`` is the producer's claim of what it wrote: the offset of its last chunk, or,
        once the generation is fan-in (store-assigned offsets), the sequence number of the
        owner's last batch. The store checks it in the same transition: a ``done`` or
        ``cancelled`` end whose claim the log does not match exactly, or of a fan-in session
        with a part :meth:`end_part` found short, is stored as ``failed`` (reason ``backend:
        the store holds N of M chunks``, ``... batches`` or ``backend: producer <name> lost a
        write``), and that state is returned. None skips the check. Returns the state stored (the stored one
        when this generation had finished already), or why the producer may not close.
        """

    @abc.abstractmethod
    async def expire(self, leases: Sequence[tuple[str, int]]) -> list[float | None]:
        """Check the leases of ``(session, generation)`` pairs; fail those that lapsed.

        Each result is the lease's remaining seconds, or None when that generation is over.
        """

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

    async def open(
        self, session_id: str, after: tuple[int, int], count: int
    ) -> tuple[SessionInfo | None, ReadResult | None]:
        """The record and the first page after ``after`` (a subscription's start).

        Backends may read both in one round trip; the page is a guess the caller checks.
        """
        info = (await self.info([session_id]))[0]
        if info is None:
            return None, None
        return info, await self.read(session_id, after, count)

    async def compact(self, session_id: str) -> bool:
        """Fold a finished session's log into its compact form; True when this call did it.

        Backends compact on their own when ``compact_finished`` is set; this is for the rest
        (tests, tools). Readers stay exact before, during and after.
        """
        return False

    @abc.abstractmethod
    def listen(self, session_id: str, listener: Listener) -> AbstractAsyncContextManager[None]:
        """Deliver the session's live messages to ``listener`` while the context is open."""

    # -- steering messages (clients -> the running producer) ---------------------------------

    async def send_message(self, session_id: str, blob: bytes, key: str | None) -> Sent | None:
        """Store a message for the current generation if it is active, and signal its producer.

        None for an unknown session (nothing is created). ``key`` makes a retry idempotent: a
        key already stored answers the first message's outcome, whatever the state now.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support steering messages")

    async def read_messages(
        self, session_id: str, generation: int, after: int, count: int
    ) -> list[tuple[int, bytes]]:
        """Up to ``count`` messages of ``generation`` after sequence ``after``: ``(seq, blob)``."""
        raise NotImplementedError(f"{type(self).__name__} does not support steering messages")

    # -- fan-in (several producers in one session): optional, the built-in backends have them

    async def admit(self, session_id: str, generation: int, name: str) -> Lost | None:
        """Admit the producer ``name`` into ``generation``; the owner's writes switch to
        :meth:`append_shared`."""
        raise NotImplementedError(f"{type(self).__name__} does not support fan-in")

    async def join(self, session_id: str, generation: int, name: str, token: str) -> Lost | None:
        """Let the handle ``token`` write the part of the admitted producer ``name``."""
        raise NotImplementedError(f"{type(self).__name__} does not support fan-in")

    async def append_shared(self, batches: Sequence[SharedAppend]) -> list[int | Lost]:
        """Append batches whose offsets the store assigns; each result is its first offset."""
        raise NotImplementedError(f"{type(self).__name__} does not support fan-in")

    async def end_part(
        self, session_id: str, generation: int, name: str, token: str, *, last: int | None = None
    ) -> Lost | None:
        """End the part of producer ``name`` (the session goes on).

        ``last``: the sequence number of the part's last batch as its producer counts them; a
        part the store does not hold all of is marked lost, and the session's ``close`` then
        stores ``failed`` rather than ``done`` or ``cancelled``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support fan-in")

    # -- Durable Streams (streams with no producer and no lease): optional -------------------
    #
    # A stream's keys are its own (never a session's): expire, cancel and the lease keeper
    # never see them, and ``claim`` refuses a stream's id (InvalidSessionId) in the same
    # atomic step. A create on an id a session holds answers a conflict. Live
    # readers use ``listen``: every append or close publishes ``StoredMsg(0, tail)`` on the
    # stream id's channel, a delete ``DeletedMsg``.

    async def ds_create(
        self, stream_id: str, spec: DsSpec, data: bytes, fork: DsFork | None = None
    ) -> DsCreated:
        """Create a stream holding ``data`` (after the prefix a ``fork`` copies from its source,
        whose fork count goes up; an unset type, TTL or expiry is the source's).
        ``created``; ``exists`` when it exists with an equal spec (nothing changes); else
        ``conflict``, ``full`` (the store already holds ``settings.ds_max_streams`` unexpired
        streams, checked in the same atomic step as the create) or a fork's refusal (see
        :class:`DsCreated`)."""
        raise NotImplementedError(f"{type(self).__name__} does not support Durable Streams")

    async def ds_append(self, stream_id: str, append: DsAppend) -> DsAppended:
        """Check and apply one append atomically: producer, closed, content type, Stream-Seq
        (see :class:`DsOutcome` for the order), then the data, the close, the expiry window."""
        raise NotImplementedError(f"{type(self).__name__} does not support Durable Streams")

    async def ds_read(
        self, stream_id: str, offset: int, limit: int, *, touch: bool
    ) -> tuple[DsStream, bytes] | None:
        """The record and up to ``limit`` bytes from ``offset``; ``touch`` restarts the expiry
        window in the same step. None when the stream does not exist (or expired); a
        soft-deleted one answers its record (``gone``) and no bytes."""
        raise NotImplementedError(f"{type(self).__name__} does not support Durable Streams")

    async def ds_delete(self, stream_id: str) -> str:
        """Delete a stream and tell its live readers: ``deleted`` (its source loses a fork, and
        goes too when soft-deleted and that was its last; a fork that expires releases its
        source the same way, at the latest when the source is next looked up), ``soft`` (forks of it live: it
        answers 410 until they are gone), ``gone`` (already soft-deleted), ``not_found``."""
        raise NotImplementedError(f"{type(self).__name__} does not support Durable Streams")

    # -- the on_finish hook's settle marks: optional, the built-in backends have them ---------

    async def expect_finish(self, session_id: str, generation: int) -> None:
        """Add ``(session_id, generation)`` to the store's index of generations whose hook has
        not run (the hub calls it right after a claim it won, before producing), and mark the
        record of ``generation`` (if it is still the current one) as expecting its hook.

        A claim that replaces a marked generation whose hook has not settled (``restart``, a
        new ``turn``, a failed generation claimed again) *keeps* it, in the same transition:
        its record (state, reason, metadata, times, chunk count, the hook's claim) and its log
        stay readable through :meth:`read_generation` and claimable through
        :meth:`claim_finish` until :meth:`settle`, :meth:`delete` or the retention TTL removes
        them. A session keeps the newest :data:`KEPT_GENERATIONS` at most (an older one is
        dropped). Unmarked generations are never kept: hubs without a hook pay nothing."""
        raise NotImplementedError(f"{type(self).__name__} does not support on_finish")

    async def claim_finish(
        self, session_id: str, generation: int, token: str, ttl: float
    ) -> FinishClaim:
        """Claim running the hook of ``generation`` for ``ttl`` seconds, atomically.

        ``gone`` when the session is unknown or ``generation`` is neither its current one nor
        one it keeps; ``settled`` when :meth:`settle` marked it; ``busy`` when a claim of another token on
        this generation has not lapsed; else the claim is (re)set to ``token`` until now +
        ``ttl`` (the same token extends its own claim) and the answer is ``claimed``. The
        state is not checked: callers claim generations they saw end (or are about to end).
        """
        raise NotImplementedError(f"{type(self).__name__} does not support on_finish")

    async def settle(self, session_id: str, generation: int) -> None:
        """Mark the hook of ``generation`` as run (if the session still exists: the settled
        mark only grows), drop the kept record and log of ``generation`` if the session kept
        it, and remove ``(session_id, generation)`` from the index."""
        raise NotImplementedError(f"{type(self).__name__} does not support on_finish")

    async def read_generation(
        self, session_id: str, generation: int, after: int, count: int
    ) -> tuple[SessionInfo | None, ReadResult]:
        """The record of ``generation`` and up to ``count`` entries of its log after offset
        ``after``, whether it is the session's current generation or one it keeps (see
        :meth:`expect_finish`); ``(None, empty)`` when it is neither. Entries of another
        generation may follow in the page: the caller stops at them.

        This default reads the current generation only (a backend that keeps none)."""
        info = (await self.info([session_id]))[0]
        if info is None or info.generation != generation:
            return None, ReadResult([], None, False)
        return info, await self.read(session_id, (generation, after), count)

    async def unsettled(self, count: int, idle: float) -> list[tuple[str, int]]:
        """Up to ``count`` entries of the index not handed out for ``idle`` seconds, oldest
        first; each counts as handed out now (so instances sweeping together take turns)."""
        raise NotImplementedError(f"{type(self).__name__} does not support on_finish")
