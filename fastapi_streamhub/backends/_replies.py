"""Decoding the Redis backend's replies: records, refusals and append codes (pure)."""

from __future__ import annotations

from typing import Any

import orjson

from .._errors import BackendUnavailable
from .._types import SessionInfo, State
from .base import Lost

__all__ = ["_b", "_lost", "_record", "_refusal", "_s", "_xadd_code"]


def _b(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _s(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _lost(reply: list[Any]) -> Lost | None:
    head = _s(reply[0]) if reply else ""
    if head == "stale":
        return Lost("stale")
    if head == "gone":
        return Lost("gone")
    if head == "closed":
        return Lost("closed", State(_s(reply[1])), _s(reply[2]) or None)
    return None


def _xadd_code(reply: Any) -> int:
    """1 appended, 0 log missing (``NOMKSTREAM``), -1 refused (id at or below the top)."""
    if reply is None:
        return 0
    if isinstance(reply, Exception) and "equal or smaller" not in str(reply):
        # Refused for another cause (OOM, ACL, ...): not a fencing answer; the write is lost.
        raise BackendUnavailable(f"append failed: {type(reply).__name__}: {reply}")
    return -1 if isinstance(reply, Exception) else 1


def _refusal(generation: int, m: list[Any]) -> Lost:
    """Why a write of ``generation`` failed, from ``HMGET meta gen state reason``."""
    gen, state, reason = m
    if gen is None:
        return Lost("gone")
    if int(gen) != generation:
        return Lost("stale")
    if _s(state) != "active":
        return Lost("closed", State(_s(state)), None if reason is None else (_s(reason) or None))
    return Lost("closed", State.FAILED, "lease_expired")


def _record(session_id: str, r: list[Any] | None, lease_ms: int) -> SessionInfo | None:
    if not r or r[0] is None:
        return None
    gen, state, reason, n, md, created, updated, cancel, pttl, now = (list(r) + [None] * 10)[:10]
    remaining = max(0, int(pttl or 0))
    updated_ms = int(updated or 0)
    if remaining:
        # While active, the producer's last heartbeat counts as an update.
        updated_ms = max(updated_ms, int(now) - max(0, lease_ms - remaining))
    return SessionInfo(
        session_id=session_id,
        state=State(_s(state)),
        generation=int(gen),
        chunks=int(n or 0),
        metadata=None if md is None else orjson.loads(_b(md)),
        created_at=int(created or 0) / 1000,
        updated_at=updated_ms / 1000,
        reason=None if reason is None else (_s(reason) or None),
        cancel_requested=cancel is not None,
        lease_remaining=remaining / 1000,
    )
