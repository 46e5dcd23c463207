"""Every Redis key and channel name, built in this one place.

All keys of one session share the hash tag ``{<session id>}`` so they live in one cluster slot
and every Lua script touches one slot only. Live messages of all sessions share two bus
channels (data, control) so a batch of many sessions' chunks is one ``PUBLISH``. Session ids
are validated before they get here and once more here, so no name is ever built from unchecked
input.
"""

from __future__ import annotations

import functools

from .._types import validate_session_id

__all__ = ["Keys"]


@functools.lru_cache(maxsize=16384)
def _base(prefix: str, session_id: str) -> str:
    # Cached: the writer builds a log key per batch; validation runs once per session id.
    return f"{prefix}:{{{validate_session_id(session_id)}}}"


@functools.lru_cache(maxsize=16384)
def _log_bytes(prefix: str, session_id: str) -> bytes:
    return (_base(prefix, session_id) + ":log").encode()


class Keys:
    """Names of a session's keys and channels under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _base(self, session_id: str) -> str:
        return _base(self.prefix, session_id)

    def meta(self, session_id: str) -> str:
        """Hash: generation, state, reason, cancel flag, metadata, times, owner token; and the
        chunk count once the generation finished."""
        return self._base(session_id) + ":meta"

    def log(self, session_id: str) -> str:
        """Stream: one entry per appended batch with id ``<generation>-<last offset>``."""
        return self._base(session_id) + ":log"

    def log_bytes(self, session_id: str) -> bytes:
        """:meth:`log`, encoded (the writer packs it for every batch)."""
        return _log_bytes(self.prefix, session_id)

    def lease_prefix(self, session_id: str) -> str:
        """Prefix of the lease key of a generation (the generation number follows)."""
        return self._base(session_id) + ":lease:"

    def lease(self, session_id: str, generation: int) -> str:
        """String with a TTL: alive while the generation's producer renews it; ``c`` = cancel."""
        return f"{self.lease_prefix(session_id)}{generation}"

    def three(self, session_id: str) -> list[str]:
        """The KEYS of every script: meta, log, lease prefix."""
        return [self.meta(session_id), self.log(session_id), self.lease_prefix(session_id)]

    @property
    def data_channel(self) -> str:
        """Bus of live chunks, metadata, ends and deletions of every session."""
        return f"{self.prefix}:bus:data"

    @property
    def ctl_channel(self) -> str:
        """Bus of signals to producers (cancel, deleted) of every session."""
        return f"{self.prefix}:bus:ctl"
