"""The Redis backend's Durable Streams: each operation one script (``lua/ds_*.lua``, with
``lua/_ds_lib.lua``) on the stream's three keys, which share its hash tag (one cluster slot).

Live readers are told on the data bus of the stream id, like a session's subscribers: an
append or a close publishes ``S<sid>:0:<tail>`` (a ``StoredMsg``), a delete ``D``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from ._ds import DsAppend, DsAppended, DsOutcome, DsSpec, DsStream
from ._keys import Keys
from ._redis_exec import RedisExecutor
from ._replies import as_bytes, as_str

__all__ = ["DS_SCRIPTS", "RedisDurable", "ds_script_bodies"]

DS_SCRIPTS = ("ds_create", "ds_append", "ds_read", "ds_delete")


def ds_script_bodies() -> dict[str, str]:
    """Each ``lua/ds_*.lua`` with ``_lib.lua`` and ``_ds_lib.lua`` in front."""
    files = resources.files(__package__)
    lib = files.joinpath("lua/_lib.lua").read_text("utf-8")
    ds_lib = files.joinpath("lua/_ds_lib.lua").read_text("utf-8")
    return {
        name: "\n".join((lib, ds_lib, files.joinpath(f"lua/{name}.lua").read_text("utf-8")))
        for name in DS_SCRIPTS
    }


def _stream(reply: list[Any]) -> DsStream:
    """The stream part of ``ds_reply``: tail, closed, ct, ttl, exp, expms, cl0."""
    ttl, exp, expms = as_str(reply[4]), as_str(reply[5]), as_str(reply[6])
    spec = DsSpec(
        as_str(reply[3]),
        int(ttl) if ttl else None,
        exp or None,
        int(expms) if expms else None,
        as_str(reply[7]) == "1",
    )
    return DsStream(spec, int(reply[1]), as_str(reply[2]) == "1")


def _flag(value: bool) -> str:
    return "1" if value else "0"


class RedisDurable:
    """Durable Streams of one :class:`RedisBackend` (it delegates its ``ds_*`` methods here)."""

    def __init__(
        self,
        executor: RedisExecutor,
        keys: Keys,
        channels: Callable[[str], tuple[str, str]],
        retention_ms: int,
    ) -> None:
        self._exec = executor
        self._keys = keys
        self._channels = channels
        self._retention_ms = retention_ms

    async def create(
        self, stream_id: str, spec: DsSpec, data: bytes
    ) -> tuple[bool | None, DsStream]:
        """See :meth:`Backend.ds_create`."""
        reply = await self._exec.script(
            "ds_create",
            [*self._keys.durable(stream_id), self._keys.meta(stream_id)],
            [
                spec.content_type,
                "" if spec.ttl is None else spec.ttl,
                spec.expires_at or "",
                "" if spec.expires_ms is None else spec.expires_ms,
                _flag(spec.closed),
                data,
                self._retention_ms,
            ],
            refusable=True,
        )
        outcome = as_str(reply[0])
        created = True if outcome == "created" else False if outcome == "exists" else None
        return created, _stream(reply)

    async def append(self, stream_id: str, append: DsAppend) -> DsAppended:
        """See :meth:`Backend.ds_append`."""
        producer = append.producer
        reply = await self._exec.script(
            "ds_append",
            self._keys.durable(stream_id),
            [
                append.data,
                append.content_type or "",
                append.seq or "",
                producer.id if producer else "",
                producer.epoch if producer else 0,
                producer.seq if producer else 0,
                _flag(append.close),
                self._retention_ms,
                stream_id,
                self._exec.pub,
                self._channels(stream_id)[0],
            ],
            refusable=True,
        )
        outcome = DsOutcome(as_str(reply[0]))
        if outcome is DsOutcome.NOT_FOUND:
            return DsAppended(outcome, None)
        return DsAppended(outcome, _stream(reply), int(reply[8]), int(reply[9]))

    async def read(
        self, stream_id: str, offset: int, limit: int, touch: bool
    ) -> tuple[DsStream, bytes] | None:
        """See :meth:`Backend.ds_read`."""
        reply = await self._exec.script(
            "ds_read",
            self._keys.durable(stream_id),
            [offset, limit, _flag(touch), self._retention_ms],
        )
        if as_str(reply[0]) == "not_found":
            return None
        return _stream(reply), as_bytes(reply[10])

    async def delete(self, stream_id: str) -> bool:
        """See :meth:`Backend.ds_delete`."""
        reply = await self._exec.script(
            "ds_delete",
            self._keys.durable(stream_id),
            [stream_id, self._exec.pub, self._channels(stream_id)[0]],
        )
        return bool(reply)
