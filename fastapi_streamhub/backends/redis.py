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

import functools
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup
from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from .._budget import retry_budget
from .._codec import (
    ResyncMsg,
    chunks_head,
    decode_record,
    frame,
    records,
    stored_record,
)
from .._config import Settings
from .._errors import BackendUnavailable
from .._fanout import Fanout, Listener
from .._types import SessionInfo, State
from ._bus import RETRYABLE, Bus, ShardedBus, SingleBus, lost_connection, require_sharded_pubsub
from ._compact import fold
from ._fanin_redis import FANIN_SCRIPTS, RedisFanIn
from ._keys import Keys, slot_of
from ._replies import (
    as_bytes,
    as_str,
    fields_of,
    lost_of,
    page_of,
    raise_refused,
    record_of,
    refusal,
    xadd_code,
)
from .base import (
    Append,
    Backend,
    ClaimResult,
    ControlHandler,
    Lost,
    ReadResult,
    Sent,
    WriteRefused,
)

__all__ = ["RedisBackend"]

log = logging.getLogger("fastapi_streamhub.redis")
T = TypeVar("T")

_SCRIPTS = (
    *("claim", "append", "close", "metadata", "expire", "cancel", "delete", "info"),
    *("message", "compact", "page"),
    *FANIN_SCRIPTS,
)
# Concurrent commands of one backend: callers queue here instead of exhausting the pool.
_MAX_CONCURRENT = 48
# Compaction after a stream finished: after about this many seconds, this many logs at a time.
_COMPACT_DELAY = 1.0
_COMPACT_CONCURRENCY = 2
# Compaction reads a log in pages of this many entries, and leaves logs over this size alone
# (the swap script takes the whole folded log as arguments).
_COMPACT_PAGE = 1000
_COMPACT_MAX_BYTES = 16 * 1024 * 1024
_COMPACT_INLINE = 1000


class RedisBackend(RedisFanIn, Backend):
    """Sessions in Redis; live delivery through one pub/sub connection fanned out locally."""

    # One entry: one appended batch (up to max_batch chunks); one more from the start of a
    # generation, whose first entry is its start marker.
    first_page = 1

    def __init__(self, client: Redis | RedisCluster) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        if self.cluster:
            require_sharded_pubsub()
        self.settings = Settings()
        self.keys = Keys(self.settings.key_prefix)
        self._fanout = Fanout()
        self._pub = "SPUBLISH" if self.cluster else "PUBLISH"
        self._bodies: dict[str, str] = {}
        self._shas: dict[str, str] = {}
        self._bus: Bus | None = None
        self._data_channels: set[str] = set()
        self._on_control: ControlHandler = lambda session_id, msg: None
        self._slots = anyio.Semaphore(_MAX_CONCURRENT)
        self._tg: TaskGroup | None = None
        self._compacting: set[str] = set()  # sessions whose compaction is under way here
        self._compact_slots = anyio.Semaphore(_COMPACT_CONCURRENCY)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(
        self, settings: Settings, task_group: TaskGroup, on_control: ControlHandler
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._on_control = on_control
        self._tg = task_group
        lib = resources.files(__package__).joinpath("lua/_lib.lua").read_text("utf-8")
        for name in _SCRIPTS:
            body = resources.files(__package__).joinpath(f"lua/{name}.lua").read_text("utf-8")
            self._bodies[name] = lib + "\n" + body
            self._shas[name] = hashlib.sha1(self._bodies[name].encode()).hexdigest()
        args = (self._call, self._on_bus, self._on_resync, settings.outage_timeout)
        if isinstance(self.client, RedisCluster):
            cluster = self.client
            await self._call(cluster.initialize)  # the slot map, which the bus needs
            self._bus = ShardedBus(cluster, *args)
            await self._bus.start(task_group)
            # Control channels are per slot: subscribed before claiming a session of that slot.
        else:
            self._bus = SingleBus(self.client, *args)
            await self._bus.start(task_group)
            await self._bus.subscribe(self.keys.ctl_channel)

    async def aclose(self) -> None:
        if self._bus is not None:
            await self._bus.aclose()
            self._bus = None

    def channels(self, session_id: str) -> tuple[str, str]:
        """The data and control bus channels of a session."""
        if self.cluster:
            return self.keys.slot_channels(slot_of(session_id))
        return self.keys.data_channel, self.keys.ctl_channel

    async def _call(
        self, fn: Callable[[], Awaitable[T]], *, limited: bool = True, refusable: bool = False
    ) -> T:
        """Run a Redis call, retrying connection errors with backoff for up to ``outage_timeout``.

        ``limited`` calls queue for one of a bounded number of slots; the hub's writer (one
        call in flight at most) skips the queue, so a burst of other calls never delays chunks.
        A ``refusable`` call (a write) that loses its connection twice while Redis answers a
        ``PING`` raises :class:`WriteRefused` at once: Redis closes the connection on an
        argument over its ``proto-max-bulk-len``, and retrying that for ``outage_timeout``
        would only hold up every other write.
        """
        budget = retry_budget(self.settings.outage_timeout)
        deadline = time.monotonic() + budget
        delay = 0.02
        refusals = 0
        while True:
            try:
                # Each attempt is bounded too: a stalled connection answers nothing, no error.
                with anyio.fail_after(max(deadline - time.monotonic(), 0.001)):
                    if not limited:
                        return await fn()
                    async with self._slots:
                        return await fn()
            except TimeoutError as exc:
                raise BackendUnavailable(f"Redis did not answer within {budget:g}s") from exc
            except rexc.ResponseError as exc:
                if refusable:
                    raise_refused(exc)
                raise
            except (*RETRYABLE, RuntimeError) as exc:
                if not lost_connection(exc):
                    raise
                if refusable and await self._answers(deadline):
                    refusals += 1
                    if refusals >= 2:
                        raise WriteRefused(
                            f"Redis closed the connection on this write {refusals} times while "
                            "answering other commands (is it over proto-max-bulk-len?)"
                        ) from exc
                if time.monotonic() + delay >= deadline:
                    raise BackendUnavailable(f"Redis unreachable for {budget:g}s: {exc}") from exc
                log.warning("redis call failed (%s); retrying in %.2fs", exc, delay)
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    async def _answers(self, deadline: float) -> bool:
        """True when Redis answers a ``PING`` (before ``deadline``, within a second)."""
        client: Any = self.client
        with anyio.move_on_after(min(1.0, max(deadline - time.monotonic(), 0.001))):
            try:
                await client.ping()
            except (*RETRYABLE, RuntimeError, rexc.ResponseError):
                return False
            return True
        return False

    async def _load(self) -> None:
        client: Any = self.client
        for body in self._bodies.values():
            await client.script_load(body)

    async def _script(
        self,
        name: str,
        keys: list[str],
        args: list[Any],
        *,
        limited: bool = True,
        refusable: bool = False,
    ) -> Any:
        client: Any = self.client
        sha = self._shas[name]

        async def run() -> Any:
            try:
                return await client.evalsha(sha, len(keys), *keys, *args)
            except rexc.NoScriptError:
                await self._load()
                return await client.evalsha(sha, len(keys), *keys, *args)

        return await self._call(run, limited=limited, refusable=refusable)

    async def _pipeline(
        self, commands: list[tuple[Any, ...]], *, limited: bool = True, refusable: bool = False
    ) -> list[Any]:
        """Commands in one round trip; replies in order, errors as exception objects.

        A script command is ``("EVALSHA", name, keys, args)``; scripts are loaded and the
        round trip repeated if Redis does not know them (all scripts are safe to repeat).
        ``("WAIT@", node, replicas, ms)`` is a cluster's ``WAIT`` sent to one node.
        """

        async def once() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for command in commands:
                    if command[0] == "EVALSHA":
                        _, name, keys, args = command
                        pipe.execute_command("EVALSHA", self._shas[name], len(keys), *keys, *args)
                    elif command[0] == "WAIT@":  # a cluster's WAIT, on the node written to
                        _, node, *args = command
                        pipe.execute_command("WAIT", *args, target_nodes=node)
                    else:
                        pipe.execute_command(*command)
                return list(await pipe.execute(raise_on_error=False))

        async def run() -> list[Any]:
            replies = await once()
            if any(isinstance(r, rexc.NoScriptError) for r in replies):
                await self._load()
                replies = await once()
            for r in replies:
                if isinstance(r, RETRYABLE):
                    raise r
            return replies

        return await self._call(run, limited=limited, refusable=refusable)

    # -- pub/sub ---------------------------------------------------------------------------

    def _on_bus(self, channel: str, data: bytes) -> None:
        if channel in self._data_channels:
            fanout = self._fanout
            for tag, sid, body in records(data):
                if fanout.has(sid):
                    fanout.dispatch(sid, decode_record(tag, body))
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
            assert self._bus is not None, "start() first"
            await self._bus.subscribe(channel)
            yield
        finally:
            self._fanout.remove(key, listener)

    # -- transitions -----------------------------------------------------------------------

    async def claim(
        self, session_id: str, *, token: str, restart: bool, metadata: bytes | None
    ) -> ClaimResult:
        s = self.settings
        data_ch, ctl_ch = self.channels(session_id)
        if self.cluster:
            # Cancels reach the producer on its slot's control channel: listen before claiming.
            assert self._bus is not None, "start() first"
            await self._bus.subscribe(ctl_ch)
        r = await self._script(
            "claim",
            self.keys.three(session_id),
            [
                session_id,
                s.lease_ms,
                s.retention_ms,
                int(restart),
                token,
                metadata or b"",
                self._pub,
                data_ch,
                ctl_ch,
            ],
        )
        return ClaimResult(bool(int(r[0])), int(r[1]), State(as_str(r[2])))

    async def append(self, batches: Sequence[Append]) -> list[Lost | None]:
        k = self.keys
        maxlen = self.settings.maxlen
        publish = self.settings.max_publish_bytes
        # Per batch: log key, entry id, trim id (b"" = none), live record head, entry value.
        fields: list[tuple[bytes, bytes, bytes, bytes, bytes]] = []
        for b in batches:
            value = frame(b.payloads)
            last = b.first + len(b.payloads) - 1
            # With maxlen, keep the entries holding the last `maxlen` chunks (ids are offsets).
            trim = b"%d-%d" % (b.generation, last - maxlen + 1) if maxlen and last > maxlen else b""
            sid = b.session_id.encode()
            head = chunks_head(sid, b.generation, b.first, len(value))
            if len(head) + len(value) > publish:
                head = stored_record(sid, b.generation, last)  # readers fetch it from the log
            fields.append(
                (k.log_bytes(b.session_id), b"%d-%d" % (b.generation, last), trim, head, value)
            )
        groups = self._by_slot(batches) if self.cluster else [list(range(len(batches)))]
        if len(groups) == 1 and not self.settings.wait_replicas:
            # The common case on one Redis: one round trip, no reply to sort out.
            codes = await self._append_one(batches, fields, groups[0])
        else:
            codes = await self._append_many(batches, fields, groups)
        out: list[Lost | None] = []
        doubtful: list[int] = []
        for i, code in enumerate(codes):
            if code == 0:
                out.append(Lost("gone"))  # NOMKSTREAM: the log was deleted or expired
            else:
                out.append(None)
                if code < 0:
                    doubtful.append(i)
        if doubtful:
            await self._settle(batches, fields, doubtful, out)
        return out

    def _by_slot(self, batches: Sequence[Append]) -> list[list[int]]:
        """Indices of ``batches`` grouped by cluster slot (a script touches one slot only)."""
        groups: dict[int, list[int]] = {}
        for i, b in enumerate(batches):
            groups.setdefault(slot_of(b.session_id), []).append(i)
        return list(groups.values())

    def _append_commands(
        self,
        batches: Sequence[Append],
        fields: list[tuple[bytes, bytes, bytes, bytes, bytes]],
        group: list[int],
    ) -> list[tuple[Any, ...]]:
        """One batch: ``XADD`` + ``PUBLISH`` (the script would add itself as a third command);
        more: one script call with one argument for them all."""
        data_ch = self.channels(batches[group[0]].session_id)[0]
        if len(group) == 1:
            key, entry_id, trim, head, value = fields[group[0]]
            xadd: tuple[Any, ...] = ("XADD", key, "NOMKSTREAM")
            if trim:
                xadd += ("MINID", trim)
            live = head + value if head[:1] == b"C" else head
            return [(*xadd, entry_id, "c", value), (self._pub, data_ch, live)]
        blob = b"".join(
            b"%d:%s%d:%s%d:%s%d:%s%d:%s"
            % (len(key), key, len(eid), eid, len(trim), trim, len(head), head, len(v), v)
            for key, eid, trim, head, v in (fields[i] for i in group)
        )
        # A cluster routes (and redirects) a script by its KEYS: declare every log it writes.
        keys = [fields[i][0] for i in group] if self.cluster else [fields[group[0]][0]]
        publish = self.settings.max_publish_bytes
        return [("EVALSHA", "append", keys, [self._pub, data_ch, blob, publish])]

    async def _append_one(
        self,
        batches: Sequence[Append],
        fields: list[tuple[bytes, bytes, bytes, bytes, bytes]],
        group: list[int],
    ) -> list[int]:
        commands = self._append_commands(batches, fields, group)
        if len(commands) == 2:
            replies = await self._pipeline(commands, limited=False, refusable=True)
            raise_refused(replies[0])
            return [xadd_code(replies[0])]
        _, name, keys, args = commands[0]
        reply = await self._script(name, keys, args, limited=False, refusable=True)
        return [int(c) for c in reply]

    async def _append_many(
        self,
        batches: Sequence[Append],
        fields: list[tuple[bytes, bytes, bytes, bytes, bytes]],
        groups: list[list[int]],
    ) -> list[int]:
        """Every group in one pipeline (a cluster sends each node its part at once), then
        ``WAIT`` when replicas must acknowledge."""
        commands: list[tuple[Any, ...]] = []
        starts: list[int] = []
        for group in groups:
            starts.append(len(commands))
            commands += self._append_commands(batches, fields, group)
        targets = [fields[group[0]][0] for group in groups]
        replies = await self._pipeline(
            commands + self._waits(targets), limited=False, refusable=True
        )
        self._check_waits(replies[len(commands) :])
        codes = [0] * len(batches)
        for group, at in zip(groups, starts, strict=True):
            reply = replies[at]
            raise_refused(reply)
            if len(group) == 1:
                codes[group[0]] = xadd_code(reply)
                continue
            if isinstance(reply, Exception):
                raise BackendUnavailable(f"append failed: {reply}")
            for i, code in zip(group, reply, strict=True):
                codes[i] = int(code)
        return codes

    def _waits(self, keys: Sequence[bytes | str]) -> list[tuple[Any, ...]]:
        """``WAIT`` commands that follow writes to ``keys`` (one per node), if configured."""
        n = self.settings.wait_replicas
        if not n:
            return []
        timeout = self.settings.wait_timeout_ms
        if not self.cluster:
            return [("WAIT", n, timeout)]
        client: Any = self.client
        nodes = {client.get_node_from_key(key).name: client.get_node_from_key(key) for key in keys}
        return [("WAIT@", node, n, timeout) for node in nodes.values()]

    def _check_waits(self, replies: Sequence[Any]) -> None:
        n = self.settings.wait_replicas
        for reply in replies:
            if isinstance(reply, Exception):
                raise BackendUnavailable(f"WAIT failed: {reply}")
            if int(reply) < n:
                # Written on the primary; a failover now could lose it. Say so, keep going.
                log.warning(
                    "only %d of %d replicas acknowledged a write within %.0f ms",
                    int(reply),
                    n,
                    self.settings.wait_timeout_ms,
                )

    async def _settle(
        self,
        batches: Sequence[Append],
        fields: list[tuple[bytes, bytes, bytes, bytes, bytes]],
        doubtful: list[int],
        out: list[Any],
    ) -> None:
        """Refused ``XADD``s: a retry of our own applied batch is fine, anything else is lost."""
        commands: list[tuple[Any, ...]] = []
        for i in doubtful:
            key, entry_id, _, _, _ = fields[i]
            commands.append(("XRANGE", key, entry_id, entry_id))
            commands.append(
                ("HMGET", self.keys.meta(batches[i].session_id), "gen", "state", "reason")
            )
        replies = await self._pipeline(commands)
        for j, i in enumerate(doubtful):
            entries, meta = replies[2 * j], replies[2 * j + 1]
            if isinstance(entries, Exception) or isinstance(meta, Exception):
                raise BackendUnavailable(f"could not check a refused append: {entries or meta}")
            value = fields_of(entries[0][1]).get(b"c") if entries else None
            if value is not None and value == fields[i][4]:
                out[i] = None
            else:
                out[i] = refusal(batches[i].generation, list(meta))

    async def set_metadata(self, session_id: str, generation: int, blob: bytes) -> Lost | None:
        r = await self._script(
            "metadata",
            [self.keys.meta(session_id)],
            [session_id, generation, blob, self._pub, self.channels(session_id)[0]],
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
        replies = await self._pipeline(commands, limited=False)
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
            metas = await self._pipeline(
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
            self._pub,
            self.channels(session_id)[0],
            "" if last is None else last,
        ]
        if self.settings.wait_replicas:
            replies = await self._pipeline([("EVALSHA", "close", keys, args), *self._waits(keys)])
            self._check_waits(replies[1:])
            r = replies[0]
            if isinstance(r, Exception):
                raise BackendUnavailable(f"could not close session {session_id!r}: {r}")
        else:
            r = await self._script("close", keys, args)
        lost = lost_of(r)
        if lost is not None:
            return lost
        self._compact_soon(session_id)
        return State(as_str(r[1]))

    async def expire(self, leases: Sequence[tuple[str, int]]) -> list[float | None]:
        s = self.settings
        k = self.keys
        ttls = await self._pipeline([("PTTL", k.lease(sid)) for sid, _ in leases])
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
            await self._pipeline(
                [
                    (
                        "EVALSHA",
                        "expire",
                        k.three(sid),
                        [sid, gen, s.retention_ms, self._pub, *self.channels(sid)],
                    )
                    for sid, gen in lapsed
                ]
            )
            for sid, _ in lapsed:
                self._compact_soon(sid)
        return out

    async def cancel(self, session_id: str) -> SessionInfo | None:
        r = await self._script(
            "cancel",
            self.keys.three(session_id),
            [session_id, self.settings.retention_ms, self._pub, *self.channels(session_id)],
        )
        info = record_of(session_id, r, self.settings.lease_ms)
        if info is not None and info.state.finished:
            self._compact_soon(session_id)  # it may have failed a lapsed lease just now
        return info

    async def delete(self, session_id: str) -> bool:
        r = await self._script(
            "delete",
            [*self.keys.three(session_id), *self._message_keys(session_id)],
            [session_id, self._pub, *self.channels(session_id)],
        )
        return bool(int(r))

    # -- steering messages -----------------------------------------------------------------

    def _message_keys(self, session_id: str) -> list[str]:
        return [self.keys.msgs(session_id), self.keys.msg_keys(session_id)]

    async def send_message(self, session_id: str, blob: bytes, key: str | None) -> Sent | None:
        r = await self._script(
            "message",
            [*self.keys.three(session_id), *self._message_keys(session_id)],
            [
                session_id,
                blob,
                key or "",
                self.settings.retention_ms,
                self._pub,
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
        entries = await self._call(
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
            return [record_of(sid, await self._script("info", self.keys.three(sid), []), lease_ms)]
        replies = await self._pipeline(
            [("EVALSHA", "info", self.keys.three(sid), []) for sid in session_ids]
        )
        out: list[SessionInfo | None] = []
        for sid, r in zip(session_ids, replies, strict=True):
            if isinstance(r, Exception):
                raise BackendUnavailable(f"could not read session {sid!r}: {r}")
            out.append(record_of(sid, r, lease_ms))
        return out

    async def read(self, session_id: str, after: tuple[int, int], count: int) -> ReadResult:
        reply = await self._script("page", *self._page_args(session_id, after, count))
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
        record, reply = await self._pipeline(
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
            self._compact_soon(session_id)
        return info, page_of(reply, after, count)

    # -- compaction ------------------------------------------------------------------------

    def _compact_soon(self, session_id: str) -> None:
        """Compact the session's finished log in the background (once at a time per session)."""
        if not self.settings.compact_finished or self._tg is None:
            return
        if session_id in self._compacting:
            return
        self._compacting.add(session_id)
        try:
            self._tg.start_soon(self._compact_quietly, session_id)
        except RuntimeError:  # the hub has stopped: a later reader compacts it
            self._compacting.discard(session_id)

    async def _compact_quietly(self, session_id: str) -> None:
        try:
            # Housekeeping, not urgent: wait a little (a burst of streams ending together is
            # spread out instead of competing with the chunks still streaming) and fold a few
            # logs at a time.
            await anyio.sleep(_COMPACT_DELAY * (0.5 + random.random()))
            async with self._compact_slots:
                await self.compact(session_id)
        except Exception as exc:  # readers stay exact on an uncompacted log: just say so
            log.warning("could not compact session %r: %s", session_id, exc)
        finally:
            self._compacting.discard(session_id)

    async def compact(self, session_id: str) -> bool:
        """Read the finished log, fold it here, swap it in with ``compact.lua`` (which checks
        that the log is still the one read): Redis only serves reads and one short write."""
        meta, key = self.keys.meta(session_id), self.keys.log(session_id)
        m, page = await self._pipeline(
            [
                ("HMGET", meta, "gen", "state", "compact"),
                ("XRANGE", key, "-", "+", "COUNT", _COMPACT_PAGE),
            ]
        )
        if isinstance(m, Exception) or isinstance(page, Exception):
            raise BackendUnavailable(f"could not read session {session_id!r}: {m or page}")
        gen, state, done = m
        if gen is None or state is None or as_str(state) == "active" or done == gen:
            return False
        client: Any = self.client
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        size = 0
        while True:
            for entry_id, raw in page:
                fields = fields_of(raw)
                entries.append((as_bytes(entry_id), fields))
                size += sum(map(len, fields.values()))
            if size > _COMPACT_MAX_BYTES:
                return False
            if len(page) < _COMPACT_PAGE:
                break
            after = b"(" + entries[-1][0]
            page = await self._call(
                functools.partial(client.xrange, key, after, "+", count=_COMPACT_PAGE)
            )
        if len(entries) > _COMPACT_INLINE:
            # ~1.5 us per entry: a long log is folded in a thread, so the event loop (every
            # other stream of this process) is held for a GIL switch interval at most.
            folded = await anyio.to_thread.run_sync(fold, entries, int(gen))
        else:
            folded = fold(entries, int(gen))
        if folded is None:
            return False
        args: list[Any] = [int(gen), folded.entries, *folded.end]
        for entry_id, value in folded.slices:
            args += [entry_id, value]
        return bool(int(await self._script("compact", [meta, key], args)))
