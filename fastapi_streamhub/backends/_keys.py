"""Every Redis key and channel name, built in this one place.

All keys of one session share the hash tag ``{<session id>}`` so they live in one cluster slot
and every Lua script touches one slot only. On one Redis, live messages of all sessions share two
bus channels (data, control), so a batch of many sessions' chunks is one ``PUBLISH``. On a
cluster a message must stay in the shard that owns its session (``SPUBLISH``, which a script may
only call for a channel of its own slot), so there are two bus channels per slot, named with a
hash tag that maps to that slot. Session ids are validated before they get here and once more
here, so no name is ever built from unchecked input.
"""

from __future__ import annotations

import functools
import itertools

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .._types import validate_session_id

__all__ = ["Keys"]


@functools.lru_cache(maxsize=16384)
def _base(prefix: str, session_id: str) -> str:
    # Cached: the writer builds a log key per batch; validation runs once per session id.
    return f"{prefix}:{{{validate_session_id(session_id)}}}"


@functools.lru_cache(maxsize=16384)
def _log_bytes(prefix: str, session_id: str) -> bytes:
    return (_base(prefix, session_id) + ":log").encode()


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    """For every cluster slot, the shortest decimal string whose hash slot it is."""
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    missing = REDIS_CLUSTER_HASH_SLOTS
    for i in itertools.count():
        tag = str(i)
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
            if not missing:
                return tuple(t for t in tags if t is not None)
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=16384)
def slot_of(session_id: str) -> int:
    """The cluster slot of a session's keys (cached: the writer asks for every batch)."""
    return key_slot(validate_session_id(session_id).encode())


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

    @property
    def meta_pattern(self) -> str:
        """``SCAN ... MATCH`` pattern of every session's :meth:`meta` key under this prefix."""
        return f"{self.prefix}:{{*}}:meta"

    def session_of_meta(self, key: str) -> str | None:
        """The session id a :meth:`meta` key names, or None for any other key."""
        head, tail = f"{self.prefix}:{{", "}:meta"
        return key[len(head) : -len(tail)] if key.startswith(head) and key.endswith(tail) else None

    def log(self, session_id: str) -> str:
        """Stream: one entry per appended batch with id ``<generation>-<last offset>``."""
        return self._base(session_id) + ":log"

    def log_bytes(self, session_id: str) -> bytes:
        """:meth:`log`, encoded (the writer packs it for every batch)."""
        return _log_bytes(self.prefix, session_id)

    def lease(self, session_id: str) -> str:
        """String with a TTL, alive while the current generation's producer renews it; its value
        is that generation (``<gen>``, or ``<gen>:c`` once a cancel was asked)."""
        return self._base(session_id) + ":lease"

    def msgs(self, session_id: str) -> str:
        """Stream: steering messages of the current generation, ids ``<generation>-<seq>``,
        field ``d`` (JSON)."""
        return self._base(session_id) + ":msgs"

    def msg_keys(self, session_id: str) -> str:
        """Hash: idempotency key of a steering message -> its id ``<generation>-<seq>``."""
        return self._base(session_id) + ":msgkeys"

    def durable(self, stream_id: str) -> list[str]:
        """A Durable Streams stream's keys (never a session's; see ``lua/_ds_lib.lua``): the
        record (hash), the data (string), the idempotent producers (hash)."""
        base = self._base(stream_id)
        return [base + ":ds", base + ":dsdata", base + ":dsprod"]

    def ds_index(self) -> str:
        """Sorted set: the id of every Durable Streams stream, scored by (an upper bound of) its
        expiry in Unix ms (``lua/_ds_lib.lua``). Its hash tag holds ``#``, which no session id
        does, so it names no session's slot on purpose."""
        return f"{self.prefix}:{{#ds}}:index"

    def kept(self, session_id: str) -> str:
        """Hash: the records of replaced generations kept for their on_finish hook (fields
        ``<gen>:<field>``; ``gens``, the kept generations oldest first, space-separated)."""
        return self._base(session_id) + ":kept"

    def klog(self, session_id: str) -> str:
        """Stream: the logs of the generations in :meth:`kept`, entries as in :meth:`log`."""
        return self._base(session_id) + ":klog"

    def claim(self, session_id: str) -> list[str]:
        """The KEYS of ``claim.lua``: meta, log, lease, kept, klog, and the Durable Streams record
        of the same id (a stream's id is never claimed)."""
        base = self._base(session_id)
        return [base + name for name in (":meta", ":log", ":lease", ":kept", ":klog", ":ds")]

    def three(self, session_id: str) -> list[str]:
        """The KEYS of most scripts: meta, log, lease."""
        return [self.meta(session_id), self.log(session_id), self.lease(session_id)]

    @property
    def data_channel(self) -> str:
        """Bus of live chunks, metadata, ends and deletions of every session."""
        return f"{self.prefix}:bus:data"

    @property
    def ctl_channel(self) -> str:
        """Bus of signals to producers (cancel, deleted) of every session."""
        return f"{self.prefix}:bus:ctl"

    def slot_channels(self, slot: int) -> tuple[str, str]:
        """Cluster: the data and control bus channels of the sessions of one slot."""
        tag = _slot_tags()[slot]
        return f"{self.prefix}:bus:data:{{{tag}}}", f"{self.prefix}:bus:ctl:{{{tag}}}"
