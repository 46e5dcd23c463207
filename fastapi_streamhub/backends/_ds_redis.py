"""The Redis backend's Durable Streams: each operation one script (``lua/ds_*.lua``, with
``lua/_ds_lib.lua``) on the stream's three keys, which share its hash tag (one cluster slot).

Live readers are told on the data bus of the stream id, like a session's subscribers: an
append or a close publishes ``S<sid>:0:<tail>`` (a ``StoredMsg``), a delete ``D``.

The store's streams are counted in one sorted set (``Keys.ds_index``) scored by an upper bound
of each one's expiry, so that expired streams (their keys gone by Redis' TTL) leave the count
when their score passes. On one Redis the create admits itself into it in its own script. On a
cluster the index is in a slot of its own: ``ds_admit.lua`` reserves the id first (atomic in the
index's slot, so two creates never both take the last place), and the create's outcome then
sets its real score or drops the reservation (``ds_index.lua``). A touch that moves an expiry
past its score answers a new score, set in the index by a second call (on both).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from importlib import resources
from typing import Any

from .._config import Settings
from ._ds import DsAppend, DsAppended, DsCreated, DsFork, DsOutcome, DsSpec, DsStream
from ._keys import Keys
from ._redis_exec import RedisExecutor
from ._replies import as_bytes, as_str

__all__ = ["DS_SCRIPTS", "RedisDurable", "ds_script_bodies"]

DS_SCRIPTS = (
    "ds_create",
    "ds_append",
    "ds_read",
    "ds_delete",
    "ds_fork_take",
    "ds_fork_release",
    "ds_admit",
    "ds_index",
)
# How long a cluster's reservation in the index holds before its create sets the real score.
_HOLD_MS = 60_000


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
        settings: Settings,
    ) -> None:
        self._exec = executor
        self._keys = keys
        self._channels = channels
        self._retention_ms = settings.retention_ms
        self._max = "" if settings.ds_max_streams is None else str(settings.ds_max_streams)
        self._index = keys.ds_index()

    async def create(
        self, stream_id: str, spec: DsSpec, data: bytes, fork: DsFork | None
    ) -> DsCreated:
        """See :meth:`Backend.ds_create`. A fork is two steps, each atomic in its own slot: the
        source's half (``ds_fork_take.lua``: checks, the fork's id counted, the prefix), then
        the fork's create; when that does not create, the count is given back
        (``ds_fork_release.lua``). A crash between the two leaves the source counting a fork
        that does not exist: it is released when the source, soft-deleted, looks its forks up
        (:meth:`_settle`)."""
        source, counted = "", False
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
                    stream_id,
                ],
            )
            outcome = as_str(taken[0])
            if outcome == "source_gone" and await self._settle(fork.source):
                outcome = "source_not_found"
            if outcome != "ok":
                return DsCreated(outcome, None)
            ttl, expms = as_str(taken[3]), as_str(taken[5])
            spec = replace(
                spec,
                content_type=as_str(taken[2]),
                ttl=int(ttl) if ttl else None,
                expires_at=as_str(taken[4]) or None,
                expires_ms=int(expms) if expms else None,
            )
            data = as_bytes(taken[1]) + data
            source, counted = fork.source, as_str(taken[6]) == "1"
        created: DsCreated | None = None
        try:
            created = await self._admitted(stream_id, spec, data, source)
            gone = created.outcome == "conflict" and created.stream and created.stream.gone
            if gone and await self._settle(stream_id):  # it went with its last (expired) fork
                created = await self._admitted(stream_id, spec, data, source)
        finally:
            if counted and (created is None or created.outcome != "created"):
                await self._release(source, stream_id)
        assert created is not None
        return created

    async def _admitted(self, stream_id: str, spec: DsSpec, data: bytes, source: str) -> DsCreated:
        """The create, counted in the index: in its own script on one Redis; on a cluster
        reserved there first, then given its score or dropped."""
        if not self._exec.cluster:
            created, bump = await self._create(stream_id, spec, data, source, with_index=True)
            if bump:
                await self._index_op("bump", stream_id, bump)
            return created
        admitted = as_str(
            (
                await self._exec.script(
                    "ds_admit", [self._index], [stream_id, self._max, _HOLD_MS], refusable=True
                )
            )[0]
        )
        if admitted == "full":
            return DsCreated("full", None)
        try:
            created, bump = await self._create(stream_id, spec, data, source, with_index=False)
        except BaseException:
            if admitted == "added":
                await self._index_op("drop", stream_id)
            raise
        if bump:
            await self._index_op("set" if created.outcome == "created" else "bump", stream_id, bump)
        elif created.stream is None and admitted == "added":
            await self._index_op("drop", stream_id)
        return created

    async def _create(
        self, stream_id: str, spec: DsSpec, data: bytes, source: str, *, with_index: bool
    ) -> tuple[DsCreated, str]:
        """``ds_create.lua``: its outcome and the index score it asks for ('' = none)."""
        keys = [*self._keys.durable(stream_id), self._keys.meta(stream_id)]
        reply = await self._exec.script(
            "ds_create",
            [*keys, self._index] if with_index else keys,
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
                stream_id,
                self._max,
            ],
            refusable=True,
        )
        outcome = as_str(reply[0])
        if len(reply) <= 1:
            return DsCreated(outcome, None), ""
        return DsCreated(outcome, _stream(reply)), as_str(reply[12])

    async def _index_op(self, op: str, stream_id: str, score: str = "") -> None:
        await self._exec.script("ds_index", [self._index], [op, stream_id, score], refusable=True)

    async def _release(self, source: str, fork_id: str) -> None:
        """``fork_id`` no longer counts as a fork of ``source``; a soft-deleted source goes
        with its last fork (and leaves the index), and its own source is released in turn."""
        while source:
            reply = await self._exec.script(
                "ds_fork_release", self._keys.durable(source), [fork_id], refusable=True
            )
            if as_str(reply[0]) != "deleted":
                return
            await self._index_op("drop", source)
            fork_id, source = source, as_str(reply[1])

    async def _settle(self, stream_id: str) -> bool:
        """A soft-deleted stream looks its forks up: each one that expired (or whose create
        never happened) releases it. True when it went with its last."""
        record = self._keys.durable(stream_id)[0]
        client: Any = self._exec.client
        names = await self._exec.call(lambda: client.hkeys(record))
        for name in names:
            field = as_str(name)
            if not field.startswith("f:"):
                continue
            fork_id = field[2:]
            src = await self._exec.call(self._source_of(fork_id))
            if src is None or as_str(src) != stream_id:
                await self._release(stream_id, fork_id)
        return not await self._exec.call(lambda: client.exists(record))

    def _source_of(self, stream_id: str) -> Callable[[], Awaitable[Any]]:
        """The call reading a stream's source id (None when it does not exist)."""
        client: Any = self._exec.client
        record = self._keys.durable(stream_id)[0]
        return lambda: client.hget(record, "src")

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
        if outcome is DsOutcome.GONE and await self._settle(stream_id):
            return DsAppended(DsOutcome.NOT_FOUND, None)
        await self._bumped(stream_id, reply)
        return DsAppended(outcome, _stream(reply), int(reply[8]), int(reply[9]))

    async def _bumped(self, stream_id: str, reply: list[Any]) -> None:
        """Set the index score a touch asked for (see ``ds_touch`` in ``_ds_lib.lua``)."""
        bump = as_str(reply[12])
        if bump:
            await self._index_op("bump", stream_id, bump)

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
        stream = _stream(reply)
        if stream.gone and await self._settle(stream_id):
            return None
        await self._bumped(stream_id, reply)
        return stream, as_bytes(reply[13])

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
            await self._index_op("drop", stream_id)
            await self._release(as_str(reply[1]), stream_id)
        elif outcome in ("soft", "gone") and await self._settle(stream_id):
            # Its forks had all expired: it went now (a second delete finds nothing).
            outcome = "deleted" if outcome == "soft" else "not_found"
        return outcome
