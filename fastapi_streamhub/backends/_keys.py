"""Every Redis key and channel name, built in this one place.

All names of one session share the hash tag ``{<session id>}`` so they live in one cluster slot
and every Lua script touches one slot only. Session ids are validated before they get here and
once more here, so no name is ever built from unchecked input.
"""

from __future__ import annotations

from .._types import validate_session_id

__all__ = ["Keys"]


class Keys:
    """Names of a session's keys and channels under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _base(self, session_id: str) -> str:
        return f"{self.prefix}:{{{validate_session_id(session_id)}}}"

    def meta(self, session_id: str) -> str:
        """Hash: generation, state, lease, chunk count, cancel flag, metadata, writer sequence numbers."""
        return self._base(session_id) + ":meta"

    def log(self, session_id: str) -> str:
        """Stream: one entry per chunk with id ``<generation>-<offset>``, then the end marker."""
        return self._base(session_id) + ":log"

    def data_channel(self, session_id: str) -> str:
        """Channel of live chunks, metadata and the end of a generation."""
        return self._base(session_id) + ":data"

    def ctl_channel(self, session_id: str) -> str:
        """Channel of signals to the producer (cancel, delete)."""
        return self._base(session_id) + ":ctl"

    def hub_channel(self, instance: str) -> str:
        """A process's own channel, subscribed so the pub/sub connection is always open."""
        return f"{self.prefix}:hub:{instance}"

    def all_for(self, session_id: str) -> list[str]:
        """Every key of a session (for TTL checks and deletion)."""
        return [self.meta(session_id), self.log(session_id)]
