"""The Redis backend's Durable Streams: each operation one script (``lua/ds_*.lua``, with
``lua/_ds_lib.lua``) on the stream's three keys, which share its hash tag (one cluster slot).

Live readers are told on the data bus of the stream id, like a session's subscribers: an
append or a close publishes ``S<sid>:0:<tail>`` (a ``StoredMsg``), a delete ``D``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from typing import Any

from ._ds import DsAppend, DsAppended, DsCreated, DsFork, DsOutcome, DsSpec, DsStream
from ._keys import Keys
from ._redis_exec import RedisExecutor
from ._replies import as_bytes, as_str

__all__ = ["DS_SCRIPTS", "RedisDurable", "ds_script_bodies"]

DS_SCRIPTS = ("ds_create", "ds_append", "ds_read", "ds_delete", "ds_fork_take", "ds_fork_release")


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
    """The stream part of ``ds_reply``: tail, closed, ct, ttl, exp, expms, cl0, (two numbers),
    gone, fork."""
    ttl, exp, expms = as_str(reply[4]), as_str(reply[5]), as_str(reply[6])
    spec = DsSpec(
        as_str(reply[3]),
        int(ttl) if ttl else None,
        exp or None,
        int(expms) if expms else None,
        as_str(reply[7]) == "1",
        as_str(reply[11]) or None,
    )
    return DsStream(spec, int(reply[1]), as_str(reply[2]) == "1", as_str(reply[10]) == "1")


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
        self, stream_id: str, spec: DsSpec, data: bytes, fork: DsFork | None
    ) -> DsCreated:
        """See :meth:`Backend.ds_create`. A fork is two steps, each atomic in its own slot: the
        source's half (``ds_fork_take.lua``: checks, one more fork counted, the prefix), then
        the fork's create; when that does not create, the count is given back
        (``ds_fork_release.lua``). A crash between the two leaves the source counting a fork
        that does not exist: deleting it then only soft-deletes it (410) until it expires."""
        source = ""
        if fork is not None:
            taken = await self._exec.script(
                "ds_fork_take",
                self._keys.durable(fork.source),
                [
                    "" if fork.offset is None else fork.offset,
                    fork.sub,
                    spec.content_type,
                    "" if spec.ttl is None else spec.ttl,
                    spec.expires_at or "",
                    "" if spec.expires_ms is None else spec.expires_ms,
                ],
            )
            if as_str(taken[0]) != "ok":
                return DsCreated(as_str(taken[0]), None)
            ttl, expms = as_str(taken[3]), as_str(taken[5])
            spec = replace(
                spec,
                content_type=as_str(taken[2]),
                ttl=int(ttl) if ttl else None,
                expires_at=as_str(taken[4]) or None,
                expires_ms=int(expms) if expms else None,
            )
            data = as_bytes(taken[1]) + data
            source = fork.source
        try:
            created = await self._create(stream_id, spec, data, source)
        except BaseException:
            if source:
                await self._release(source)
            raise
        if source and created.outcome != "created":
            await self._release(source)
        return created

    async def _create(self, stream_id: str, spec: DsSpec, data: bytes, source: str) -> DsCreated:
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
                spec.fork or "",
                source,
            ],
            refusable=True,
        )
        outcome = as_str(reply[0])
        return DsCreated(outcome, _stream(reply) if len(reply) > 1 else None)

    async def _release(self, source: str) -> None:
        """One fork of ``source`` is gone; a soft-deleted source goes with its last fork, and
        its own source is released in turn."""
        while source:
            reply = await self._exec.script(
                "ds_fork_release", self._keys.durable(source), [], refusable=True
            )
            source = as_str(reply[1]) if as_str(reply[0]) == "deleted" else ""

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
        return _stream(reply), as_bytes(reply[12])

    async def delete(self, stream_id: str) -> str:
        """See :meth:`Backend.ds_delete`."""
        reply = await self._exec.script(
            "ds_delete",
            self._keys.durable(stream_id),
            [stream_id, self._exec.pub, self._channels(stream_id)[0]],
            refusable=True,
        )
        outcome = as_str(reply[0])
        if outcome == "deleted":
            await self._release(as_str(reply[1]))
        return outcome
