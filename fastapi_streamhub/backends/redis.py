"""Redis backend: a hash, a stream and a lease key per session; bus channels for live messages.

It takes an already-built ``redis.asyncio.Redis`` (a Sentinel-managed primary is one too) or
``redis.asyncio.RedisCluster``; ``StreamHub.from_url`` builds one for you. Clients with
``decode_responses=True`` work too: every payload is valid UTF-8, so replies are turned back
into the exact bytes.

On a cluster every script touches the keys of one session (one slot) and declares them all, the
bus is sharded (``SPUBLISH`` to a channel of the session's slot, see ``_keys.py``) and one round
trip of the writer groups its batches per slot.

The hot paths are plain pipelined commands, not scripts (a script's inner commands count as
commands too):

- **append**: one ``XADD <log> NOMKSTREAM <gen>-<last offset>`` per batch, fenced by its explicit
  id (Redis refuses an id at or below the stream's top, so a stale generation, a finished one —
  its end marker is the top — or a replay of the same batch cannot add anything, and
  ``NOMKSTREAM`` cannot recreate a deleted log), then one ``PUBLISH`` of every batch of the
  round trip on the data bus. Many producers' batches share one pipeline and one ``PUBLISH``.
- **renew**: ``GETEX <lease> PX <ttl>``: one command; its value names the generation that owns
  the lease (a stale producer learns it lost) and carries the durable cancel flag.
- **watching a lease**: ``PTTL <lease>``; the expire script runs only when it is gone.

State transitions (claim, close, metadata, cancel, expire, delete) are Lua scripts called by
SHA (loaded on first ``NOSCRIPT``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from anyio.abc import TaskGroup
from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from .._codec import ResyncMsg, decode_record, iter_records, records
from .._config import Settings
from .._errors import BackendUnavailable, InvalidSessionId
from .._fanout import Fanout, Listener
from .._types import SessionInfo, State
from ._bus import Bus, ShardedBus, SingleBus, require_sharded_pubsub
from ._ds import DurableMethods
from ._ds_redis import RedisDurable, ds_script_bodies
from ._fanin_redis import FANIN_SCRIPTS, RedisFanIn
from ._keys import Keys, slot_of
from ._redis_append import RedisAppender
from ._redis_compact import RedisCompactor
from ._redis_exec import RedisExecutor, script_bodies
from ._redis_finish import FINISH_SCRIPTS, FinishMethods, RedisFinish
from ._replies import as_bytes, as_str, fields_of, lost_of, page_of, record_of, refusal
from .base import (
    Append,
    Backend,
    ClaimResult,
    ControlHandler,
    Lost,
    ReadResult,
    Sent,
    SharedAppend,
)

__all__ = ["RedisBackend"]

_SCRIPTS = (
    *("claim", "append", "close", "metadata", "expire", "cancel", "delete", "info"),
    *("message", "compact", "page"),
    *FANIN_SCRIPTS,
    *FINISH_SCRIPTS,
)


class RedisBackend(FinishMethods, DurableMethods, Backend):
    """Sessions in Redis; live delivery through one pub/sub connection fanned out locally.

    The state transitions and reads live here; it holds the parts that do the rest: the
    command runner (``_redis_exec``), the append path (``_redis_append``), compaction
    (``_redis_compact``) and fan-in (``_fanin_redis``).
    """

    # One entry: one appended batch (up to max_batch chunks); one more from the start of a
    # generation, whose first entry is its start marker.
    first_page = 1

    def __init__(self, client: Redis | RedisCluster) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        if self.cluster:
            require_sharded_pubsub()
        self._exec = RedisExecutor(client, {**script_bodies(_SCRIPTS), **ds_script_bodies()})
        self._fanout = Fanout()
        self._bus: Bus | None = None
        self._data_channels: set[str] = set()
        self._on_control: ControlHandler = lambda session_id, msg: None
        self._configure(Settings(), None)

    def _configure(self, settings: Settings, task_group: TaskGroup | None) -> None:
        """Settings (and so the key prefix) are known at :meth:`start`: the parts are built
        again with them."""
        self.settings = self._exec.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._appender = RedisAppender(self._exec, self.keys, self.channels)
        self._compactor = RedisCompactor(self._exec, self.keys, task_group)
        self._fanin = RedisFanIn(self._exec, self.keys, self.channels, self._subscribe)
        self._durable = RedisDurable(self._exec, self.keys, self.channels, settings)
        self._finish = RedisFinish(self._exec, self.keys)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(
        self, settings: Settings, task_group: TaskGroup, on_control: ControlHandler
    ) -> None:
        self._configure(settings, task_group)
        self._on_control = on_control
        args = (self._exec.call, self._on_bus, self._on_resync, settings.outage_timeout)
        if isinstance(self.client, RedisCluster):
            cluster = self.client
            await self._exec.call(cluster.initialize)  # the slot map, which the bus needs
            self._bus = ShardedBus(cluster, *args)
            await self._bus.start(task_group)
            # Control channels are per slot: subscribed before claiming a session of that slot.
        else:
            self._bus = SingleBus(self.client, *args)
            await self._bus.start(task_group)
            await self._bus.subscribe(self.keys.ctl_channel)

    async def aclose(self) -> None:
        self._compactor.scheduler.close()
        if self._bus is not None:
            await self._bus.aclose()
            self._bus = None

    def channels(self, session_id: str) -> tuple[str, str]:
        """The data and control bus channels of a session."""
        if self.cluster:
            return self.keys.slot_channels(slot_of(session_id))
        return self.keys.data_channel, self.keys.ctl_channel

    async def _subscribe(self, channel: str) -> None:
        assert self._bus is not None, "start() first"
        await self._bus.subscribe(channel)

    # -- pub/sub ---------------------------------------------------------------------------

    def _on_bus(self, channel: str, data: bytes) -> None:
        if channel in self._data_channels:
            listening = self._fanout.get
            for tag, sid, body in iter_records(data):
                listeners = listening(sid)
                if listeners:  # decoded once for all of this process's listeners
                    msg = decode_record(tag, body)
                    for listener in tuple(listeners):
                        listener.push(msg)
        else:
            for tag, sid, body in records(data):
                self._on_control(sid.decode(), decode_record(tag, body))

    def _on_resync(self, channels: set[str]) -> None:
        """Messages on ``channels`` may have been missed (a reconnect, a moved slot)."""
        if channels - self._data_channels:
            self._on_control("", ResyncMsg())
        if channels & self._data_channels:
            self._fanout.dispatch_all(ResyncMsg())

    @asynccontextmanager
    async def listen(self, session_id: str, listener: Listener) -> AsyncIterator[None]:
        key = session_id.encode()
        self._fanout.add(key, listener)
        try:
            # The first data listener of this process (of this slot, on a cluster) subscribes to
            # the data bus; the subscription then stays (processes that only produce never
            # receive data).
            channel = self.channels(session_id)[0]
            self._data_channels.add(channel)
            await self._subscribe(channel)
            yield
        finally:
            self._fanout.remove(key, listener)

    # -- transitions -----------------------------------------------------------------------

    async def claim(
        self,
        session_id: str,
        *,
        token: str,
        restart: bool,
        metadata: bytes | None,
        turn: str | None = None,
    ) -> ClaimResult:
        s = self.settings
        data_ch, ctl_ch = self.channels(session_id)
        if self.cluster:
            # Cancels reach the producer on its slot's control channel: listen before claiming.
            await self._subscribe(ctl_ch)
        r = await self._exec.script(
            "claim",
            self.keys.claim(session_id),
            [
                session_id,
                s.lease_ms,
                s.retention_ms,
                int(restart),
                token,
                metadata or b"",
                self._exec.pub,
                data_ch,
                ctl_ch,
                turn or "",
            ],
        )
        if as_str(r[2]) == "ds":
            raise InvalidSessionId(f"{session_id!r} is a Durable Streams stream")
        return ClaimResult(bool(int(r[0])), int(r[1]), State(as_str(r[2])))

    async def append(self, batches: Sequence[Append]) -> list[Lost | None]:
        return await self._appender.append(batches)

    async def set_metadata(self, session_id: str, generation: int, blob: bytes) -> Lost | None:
        r = await self._exec.script(
            "metadata",
            [self.keys.meta(session_id)],
            [session_id, generation, blob, self._exec.pub, self.channels(session_id)[0]],
        )
        return lost_of(r)

    async def renew(
        self, leases: Sequence[tuple[str, int]], *, retention: bool = False
    ) -> list[bool | Lost]:
        s = self.settings
        k = self.keys
        commands: list[tuple[Any, ...]] = []
        for sid, _ in leases:
            commands.append(("GETEX", k.lease(sid), "PX", s.lease_ms))
            if retention:
                commands.append(("PEXPIRE", k.meta(sid), s.retention_ms))
                commands.append(("PEXPIRE", k.log(sid), s.retention_ms))
        # Like the writer, the lease keeper (one call at a time) skips the queue of other
        # calls: a burst of reads must not delay a renewal past the lease.
        replies = await self._exec.pipeline(commands, limited=False)
        step = 3 if retention else 1
        out: list[bool | Lost] = []
        missing: list[int] = []
        for i, (_, gen) in enumerate(leases):
            reply = replies[i * step]
            if isinstance(reply, Exception):
                raise BackendUnavailable(f"lease renewal failed: {reply}")
            owner, _, flag = (b"" if reply is None else as_bytes(reply)).partition(b":")
            if owner != b"%d" % gen:
                # Gone, or another generation's: find out why below. (A stale producer's GETEX
                # lengthens the new generation's lease by one period at most, once: harmless.)
                missing.append(i)
                out.append(False)
            else:
                out.append(flag == b"c")
        if missing:
            # The lease is not ours: find out why, and fail the generation if nobody has yet.
            lapsed = [leases[i] for i in missing]
            await self.expire(lapsed)
            metas = await self._exec.pipeline(
                [("HMGET", k.meta(sid), "gen", "state", "reason") for sid, _ in lapsed]
            )
            for i, (_, gen), meta in zip(missing, lapsed, metas, strict=True):
                out[i] = refusal(gen, list(meta))
        return out

    async def close(
        self,
        session_id: str,
        generation: int,
        state: State,
        reason: str | None,
        *,
        last: int | None = None,
    ) -> State | Lost:
        keys = self.keys.three(session_id)
        args = [
            session_id,
            generation,
            state.value,
            reason or "",
            self.settings.retention_ms,
            self._exec.pub,
            self.channels(session_id)[0],
            "" if last is None else last,
        ]
        if self.settings.wait_replicas:
            replies = await self._exec.pipeline(
                [("EVALSHA", "close", keys, args), *self._exec.waits(keys)]
            )
            self._exec.check_waits(replies[1:])
            r = replies[0]
            if isinstance(r, Exception):
                raise BackendUnavailable(f"could not close session {session_id!r}: {r}")
        else:
            r = await self._exec.script("close", keys, args)
        lost = lost_of(r)
        if lost is not None:
            return lost
        self._compactor.soon(session_id)
        return State(as_str(r[1]))

    async def expire(self, leases: Sequence[tuple[str, int]]) -> list[float | None]:
        s = self.settings
        k = self.keys
        ttls = await self._exec.pipeline([("PTTL", k.lease(sid)) for sid, _ in leases])
        out: list[float | None] = []
        lapsed: list[tuple[str, int]] = []
        for (sid, gen), ttl in zip(leases, ttls, strict=True):
            if isinstance(ttl, Exception):
                raise BackendUnavailable(f"lease check failed: {ttl}")
            ttl = int(ttl)
            if ttl == -2:
                lapsed.append((sid, gen))
                out.append(None)
            else:
                out.append(s.lease_ttl if ttl < 0 else ttl / 1000)
        if lapsed:
            await self._exec.pipeline(
                [
                    (
                        "EVALSHA",
                        "expire",
                        k.three(sid),
                        [sid, gen, s.retention_ms, self._exec.pub, *self.channels(sid)],
                    )
                    for sid, gen in lapsed
                ]
            )
            for sid, _ in lapsed:
                self._compactor.soon(sid)
        return out

    async def cancel(self, session_id: str) -> SessionInfo | None:
        r = await self._exec.script(
            "cancel",
            self.keys.three(session_id),
            [session_id, self.settings.retention_ms, self._exec.pub, *self.channels(session_id)],
        )
        info = record_of(session_id, r, self.settings.lease_ms)
        if info is not None and info.state.finished:
            self._compactor.soon(session_id)  # it may have failed a lapsed lease just now
        return info

    async def delete(self, session_id: str) -> bool:
        r = await self._exec.script(
            "delete",
            [
                *self.keys.three(session_id),
                *self._message_keys(session_id),
                self.keys.kept(session_id),
                self.keys.klog(session_id),
            ],
            [session_id, self._exec.pub, *self.channels(session_id)],
        )
        return bool(int(r))

    # -- steering messages -----------------------------------------------------------------

    def _message_keys(self, session_id: str) -> list[str]:
        return [self.keys.msgs(session_id), self.keys.msg_keys(session_id)]

    async def send_message(self, session_id: str, blob: bytes, key: str | None) -> Sent | None:
        r = await self._exec.script(
            "message",
            [*self.keys.three(session_id), *self._message_keys(session_id)],
            [
                session_id,
                blob,
                key or "",
                self.settings.retention_ms,
                self._exec.pub,
                *self.channels(session_id),
                self.settings.max_messages,
                self.settings.max_messages_bytes,
            ],
        )
        if not r:
            return None
        generation = int(r[1])
        if as_str(r[0]) == "ok":
            return Sent(generation, State.ACTIVE, f"{generation}-{int(r[2])}", bool(int(r[3])))
        if as_str(r[0]) == "full":
            return Sent(
                generation, State.ACTIVE, None, full="count" if as_str(r[2]) == "count" else "bytes"
            )
        return Sent(generation, State(as_str(r[2])), None)

    async def read_messages(
        self, session_id: str, generation: int, after: int, count: int
    ) -> list[tuple[int, bytes]]:
        key = self.keys.msgs(session_id)
        client: Any = self.client
        entries = await self._exec.call(
            lambda: client.xrange(
                key, f"({generation}-{after}", f"{generation}-18446744073709551615", count=count
            )
        )
        return [
            (int(as_str(eid).partition("-")[2]), fields_of(f)[b"d"]) for eid, f in entries or []
        ]

    # -- reads -----------------------------------------------------------------------------

    async def info(self, session_ids: Sequence[str]) -> list[SessionInfo | None]:
        lease_ms = self.settings.lease_ms
        if len(session_ids) == 1:
            sid = session_ids[0]
            return [
                record_of(sid, await self._exec.script("info", self.keys.three(sid), []), lease_ms)
            ]
        replies = await self._exec.pipeline(
            [("EVALSHA", "info", self.keys.three(sid), []) for sid in session_ids]
        )
        out: list[SessionInfo | None] = []
        for sid, r in zip(session_ids, replies, strict=True):
            if isinstance(r, Exception):
                raise BackendUnavailable(f"could not read session {sid!r}: {r}")
            out.append(record_of(sid, r, lease_ms))
        return out

    async def read(self, session_id: str, after: tuple[int, int], count: int) -> ReadResult:
        reply = await self._exec.script("page", *self._page_args(session_id, after, count))
        return page_of(reply, after, count)

    def _page_args(
        self, session_id: str, after: tuple[int, int], count: int
    ) -> tuple[list[str], list[Any]]:
        """Keys and arguments of ``page.lua``: ``count`` entries, ``replay_batch_bytes``."""
        start = f"({after[0]}-{after[1]}"
        return [self.keys.log(session_id)], [start, count, self.settings.replay_batch_bytes]

    async def open(
        self, session_id: str, after: tuple[int, int], count: int
    ) -> tuple[SessionInfo | None, ReadResult | None]:
        record, reply = await self._exec.pipeline(
            [
                ("EVALSHA", "info", self.keys.three(session_id), []),
                ("EVALSHA", "page", *self._page_args(session_id, after, count)),
            ]
        )
        if isinstance(record, Exception):
            raise BackendUnavailable(f"could not read session {session_id!r}: {record}")
        info = record_of(session_id, record, self.settings.lease_ms)
        if info is None:
            return None, None
        if isinstance(reply, rexc.ResponseError):
            # A cursor Redis cannot read after (e.g. offset 2^64-1): the caller resets anyway.
            return info, None
        if isinstance(reply, Exception):
            raise BackendUnavailable(f"could not read session {session_id!r}: {reply}")
        entries = reply[1:]
        if info.state.finished and entries and fields_of(entries[0][1]).keys() == {b"s"}:
            # A finished log still holding its start marker was never folded (compaction was
            # off, failed, or predates it): fold it now, for the next readers.
            self._compactor.soon(session_id)
        return info, page_of(reply, after, count)

    # -- fan-in ----------------------------------------------------------------------------

    async def admit(self, session_id: str, generation: int, name: str) -> Lost | None:
        return await self._fanin.admit(session_id, generation, name)

    async def join(self, session_id: str, generation: int, name: str, token: str) -> Lost | None:
        return await self._fanin.join(session_id, generation, name, token)

    async def append_shared(self, batches: Sequence[SharedAppend]) -> list[int | Lost]:
        return await self._fanin.append_shared(batches)

    async def end_part(
        self, session_id: str, generation: int, name: str, token: str, *, last: int | None = None
    ) -> Lost | None:
        return await self._fanin.end_part(session_id, generation, name, token, last=last)

    # -- compaction ------------------------------------------------------------------------

    async def compact(self, session_id: str) -> bool:
        """Fold the finished log (see ``_redis_compact``); False when there is nothing to do."""
        return await self._compactor.compact(session_id)
