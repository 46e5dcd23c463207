"""Replies of Redis turned into the backend's values (pure: no I/O), whatever the reply shape
(a pipeline without redis-py's response callbacks, ``decode_responses``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from redis import exceptions as rexc

from .._codec import decode_end, decode_entry
from .._errors import BackendUnavailable
from .._types import Chunk, End, SessionInfo, State
from .base import PART_REFUSALS, Lost, ReadResult, Reason, WriteRefused

__all__ = [
    "as_bytes",
    "as_str",
    "fields_of",
    "lost_of",
    "page_of",
    "raise_refused",
    "record_of",
    "refusal",
    "xadd_code",
]


def as_bytes(value: Any) -> bytes:
    """A reply value as bytes, whether the client decodes responses or not."""
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def as_str(value: Any) -> str:
    """A reply value as text, whether the client decodes responses or not."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def lost_of(reply: Sequence[Any]) -> Lost | None:
    """The refusal in a script's reply, or None when the write went ahead.

    The one decoder of the fencing rule: ``{'stale'}``, ``{'gone'}``, ``{'closed', state,
    reason}`` (``_lib.lua``'s ``refusal``), and a fan-in part's own ``{'part', reason}``.
    Any other reply (``{'ok', ...}``, a count) is not a refusal.
    """
    head = as_str(reply[0]) if reply else ""
    if head == "stale":
        return Lost("stale")
    if head == "gone":
        return Lost("gone")
    if head == "closed":
        return Lost("closed", State(as_str(reply[1])), as_str(reply[2]) or None)
    if head == "part":
        return PART_REFUSALS[as_str(reply[1])]
    return None


def refusal(generation: int, meta: Sequence[Any]) -> Lost:
    """Why a write of ``generation`` failed, from ``HMGET meta gen state reason``: the checks of
    ``_lib.lua``'s ``refusal`` (decoded by :func:`lost_of`); if they pass, the lease lapsed."""
    gen, state, reason = meta
    if gen is None:
        reply: list[Any] = ["gone"]
    elif int(gen) != generation:
        reply = ["stale"]
    elif as_str(state) != "active":
        reply = ["closed", state, reason or ""]
    else:
        return Lost("closed", State.FAILED, Reason.LEASE_EXPIRED)
    lost = lost_of(reply)
    assert lost is not None  # every reply built above is a refusal
    return lost


def raise_refused(reply: Any) -> None:
    """Redis' answer to an argument over its limits, as the writer's :class:`WriteRefused`."""
    if isinstance(reply, rexc.ResponseError) and str(reply).startswith("Protocol error"):
        raise WriteRefused(f"Redis refused the write: {reply}")


def xadd_code(reply: Any) -> int:
    """1 appended, 0 log missing (``NOMKSTREAM``), -1 refused (id at or below the top)."""
    if reply is None:
        return 0
    if isinstance(reply, Exception) and "equal or smaller" not in str(reply):
        # Refused for another cause (OOM, ACL, ...): not a fencing answer; the write is lost.
        raise BackendUnavailable(f"append failed: {type(reply).__name__}: {reply}")
    return -1 if isinstance(reply, Exception) else 1


def record_of(session_id: str, r: list[Any] | None, lease_ms: int) -> SessionInfo | None:
    """The record of ``_lib.lua``'s ``describe`` (None: no such session)."""
    if not r or r[0] is None:
        return None
    fields = (list(r) + [None] * 11)[:11]
    gen, state, reason, n, md, created, updated, cancel, pttl, now, turn = fields
    remaining = max(0, int(pttl or 0))
    updated_ms = int(updated or 0)
    if remaining:
        # While active, the producer's last heartbeat counts as an update.
        updated_ms = max(updated_ms, int(now) - max(0, lease_ms - remaining))
    return SessionInfo(
        session_id=session_id,
        state=State(as_str(state)),
        generation=int(gen),
        chunks=int(n or 0),
        metadata=None if md is None else orjson.loads(as_bytes(md)),
        created_at=int(created or 0) / 1000,
        updated_at=updated_ms / 1000,
        reason=None if reason is None else (as_str(reason) or None),
        cancel_requested=cancel is not None,
        lease_remaining=remaining / 1000,
        turn=as_str(turn) if turn else None,
    )


def page_of(reply: list[Any], after: tuple[int, int], count: int) -> ReadResult:
    """Chunks (and the end marker) of a ``page.lua`` reply read after ``after``."""
    cut, entries = int(reply[0]), reply[1:]
    chunks: list[Chunk] = []
    end: tuple[int, End] | None = None
    for entry_id, fields in entries:
        fields = fields_of(fields)
        gen_s, _, off_s = as_str(entry_id).partition("-")
        value = fields.get(b"c")
        if value is not None:
            generation = int(gen_s)
            # The cursor may point inside this entry: what the reader already has is skipped.
            skip = after[1] if generation == after[0] else 0
            chunks.extend(decode_entry(generation, int(off_s), value, skip))
            continue
        marker = fields.get(b"e")
        if marker is not None:
            state, reason = decode_end(marker)
            end = (int(gen_s), End(state, reason))
            break
        # the start marker of a generation ('s') carries nothing
    return ReadResult(chunks, end, end is None and (bool(cut) or len(entries) == count))


def fields_of(fields: Any) -> dict[bytes, bytes]:
    """An entry's fields as bytes, whatever the reply shape (a dict, or a flat list in a pipeline
    without redis-py's response callbacks) and ``decode_responses``."""
    if not fields:
        return {}
    if isinstance(fields, dict):
        return {as_bytes(k): as_bytes(v) for k, v in fields.items()}
    return {as_bytes(fields[i]): as_bytes(fields[i + 1]) for i in range(0, len(fields), 2)}
