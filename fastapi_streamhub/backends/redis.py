"""Redis backend: a hash, a stream and a lease key per session; two bus channels per process.

It takes an already-built ``redis.asyncio.Redis``; ``StreamHub.from_url`` builds one for you.
Clients with ``decode_responses=True`` work too: every payload is valid UTF-8, so replies are
turned back into the exact bytes.

The hot paths are plain pipelined commands, not scripts (a script's inner commands count as
commands too):

- **append**: one ``XADD <log> NOMKSTREAM <gen>-<last offset>`` per batch, fenced by its explicit
  id (Redis refuses an id at or below the stream's top, so a stale generation, a finished one —
  its end marker is the top — or a replay of the same batch cannot add anything, and
  ``NOMKSTREAM`` cannot recreate a deleted log), then one ``PUBLISH`` of every batch of the
  round trip on the data bus. Many producers' batches share one pipeline and one ``PUBLISH``.
- **renew**: ``GETEX <lease:gen> PX <ttl>``: one command, fenced because the key name holds
  the generation; its value ``c`` is the durable cancel flag.
- **watching a lease**: ``PTTL <lease:gen>``; the expire script runs only when it is gone.

State transitions (claim, close, metadata, cancel, expire, delete) are Lua scripts called by
SHA (loaded on first ``NOSCRIPT``).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, TypeVar

import anyio
import orjson
from anyio.abc import TaskGroup
from redis import exceptions as rexc
from redis.asyncio import Redis

from .._codec import (
    ResyncMsg,
    chunks_head,
    decode_chunks,
    decode_end,
    decode_record,
    frame,
    records,
    unframe,
)
from .._config import Settings
from .._errors import BackendUnavailable
from .._fanout import Fanout, Listener
from .._types import Chunk, End, SessionInfo, State
from ._keys import Keys
from .base import Append, Backend, ClaimResult, ControlHandler, Lost, ReadResult

__all__ = ["RedisBackend"]

log = logging.getLogger("fastapi_streamhub.redis")
T = TypeVar("T")

_RETRYABLE = (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, rexc.ReadOnlyError)


def _lost_connection(exc: BaseException) -> bool:
    """A connection error, including uvloop's way of saying so.

    On uvloop a write to a transport that was closed under us raises ``RuntimeError``
    ("unable to perform operation on <TCPTransport closed=True ...>; the handler is closed")
    where asyncio raises an ``OSError`` that redis-py turns into ``ConnectionError``; redis-py
    has disconnected that connection either way, so a retry gets a fresh one.
    """
    if isinstance(exc, _RETRYABLE):
        return True
    return isinstance(exc, RuntimeError) and "handler is closed" in str(exc)


_SCRIPTS = ("claim", "append", "close", "metadata", "expire", "cancel", "delete", "info")
# Concurrent commands of one backend: callers queue here instead of exhausting the pool.
_MAX_CONCURRENT = 48


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


class RedisBackend(Backend):
    """Sessions in Redis; live delivery through one pub/sub connection fanned out locally."""

    # One entry: one appended batch (up to max_batch chunks); one more from the start of a
    # generation, whose first entry is its start marker.
    first_page = 1

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.settings = Settings()
        self.keys = Keys(self.settings.key_prefix)
        self._fanout = Fanout()
        self._pub = "PUBLISH"
        self._bodies: dict[str, str] = {}
        self._shas: dict[str, str] = {}
        self._pubsub: Any = None
        self._data_confirmed: anyio.Event | None = None
        self._ctl_confirmed = anyio.Event()
        self._on_control: ControlHandler = lambda session_id, msg: None
        self._slots = anyio.Semaphore(_MAX_CONCURRENT)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(
        self, settings: Settings, task_group: TaskGroup, on_control: ControlHandler
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._on_control = on_control
        lib = resources.files(__package__).joinpath("lua/_lib.lua").read_text("utf-8")
        for name in _SCRIPTS:
            body = resources.files(__package__).joinpath(f"lua/{name}.lua").read_text("utf-8")
            self._bodies[name] = lib + "\n" + body
            self._shas[name] = hashlib.sha1(self._bodies[name].encode()).hexdigest()
        self._pubsub = self.client.pubsub()
        ctl = self.keys.ctl_channel
        await self._call(lambda: self._pubsub.subscribe(ctl))
        task_group.start_soon(self._reader)
        await self._confirmed(self._ctl_confirmed)

    async def aclose(self) -> None:
        if self._pubsub is not None:
            with anyio.CancelScope(shield=True):
                await self._pubsub.aclose()
            self._pubsub = None

    async def _call(self, fn: Callable[[], Awaitable[T]], *, limited: bool = True) -> T:
        """Run a Redis call, retrying connection errors with backoff for up to ``outage_timeout``.

        ``limited`` calls queue for one of a bounded number of slots; the hub's writer (one
        call in flight at most) skips the queue, so a burst of other calls never delays chunks.
        """
        deadline = time.monotonic() + self.settings.outage_timeout
        delay = 0.02
        while True:
            try:
                # Each attempt is bounded too: a stalled connection answers nothing, no error.
                with anyio.fail_after(max(deadline - time.monotonic(), 0.001)):
                    if not limited:
                        return await fn()
                    async with self._slots:
                        return await fn()
            except TimeoutError as exc:
                raise BackendUnavailable(
                    f"Redis did not answer within {self.settings.outage_timeout:g}s"
                ) from exc
            except (*_RETRYABLE, RuntimeError) as exc:
                if not _lost_connection(exc):
                    raise
                if time.monotonic() + delay >= deadline:
                    raise BackendUnavailable(
                        f"Redis unreachable for {self.settings.outage_timeout:g}s: {exc}"
                    ) from exc
                log.warning("redis call failed (%s); retrying in %.2fs", exc, delay)
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    async def _load(self) -> None:
        client: Any = self.client
        for body in self._bodies.values():
            await client.script_load(body)

    async def _script(
        self, name: str, keys: list[str], args: list[Any], *, limited: bool = True
    ) -> Any:
        client: Any = self.client
        sha = self._shas[name]

        async def run() -> Any:
            try:
                return await client.evalsha(sha, len(keys), *keys, *args)
            except rexc.NoScriptError:
                await self._load()
                return await client.evalsha(sha, len(keys), *keys, *args)

        return await self._call(run, limited=limited)

    async def _pipeline(
        self, commands: list[tuple[Any, ...]], *, limited: bool = True
    ) -> list[Any]:
        """Commands in one round trip; replies in order, errors as exception objects.

        A script command is ``("EVALSHA", name, keys, args)``; scripts are loaded and the
        round trip repeated if Redis does not know them (all scripts are safe to repeat).
        """

        async def once() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for command in commands:
                    if command[0] == "EVALSHA":
                        _, name, keys, args = command
                        pipe.execute_command("EVALSHA", self._shas[name], len(keys), *keys, *args)
                    else:
                        pipe.execute_command(*command)
                return list(await pipe.execute(raise_on_error=False))

        async def run() -> list[Any]:
            replies = await once()
            if any(isinstance(r, rexc.NoScriptError) for r in replies):
                await self._load()
                replies = await once()
            for r in replies:
                if isinstance(r, _RETRYABLE):
                    raise r
            return replies

        return await self._call(run, limited=limited)

    # -- pub/sub ---------------------------------------------------------------------------

    async def _reader(self) -> None:
        delay = 0.02
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=None)
            except (*_RETRYABLE, RuntimeError) as exc:
                if not _lost_connection(exc):
                    raise
                log.warning("pub/sub connection lost (%s); reconnecting", exc)
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.02
            if msg is not None:
                try:
                    self._on_message(msg)
                except Exception:
                    # A message we cannot decode is a bug or a foreign publisher on our channel;
                    # report it and keep serving everyone else.
                    log.exception("could not handle pub/sub message %r", msg)

    def _on_message(self, msg: dict[str, Any]) -> None:
        kind = _s(msg["type"])
        channel = _s(msg["channel"])
        if kind in ("message", "smessage"):
            data = _b(msg["data"])
            if channel == self.keys.data_channel:
                fanout = self._fanout
                for tag, sid, body in records(data):
                    if fanout.has(sid):
                        fanout.dispatch(sid, decode_record(tag, body))
            else:
                for tag, sid, body in records(data):
                    self._on_control(sid.decode(), decode_record(tag, body))
        elif kind in ("subscribe", "ssubscribe"):
            confirmed = (
                self._data_confirmed if channel == self.keys.data_channel else self._ctl_confirmed
            )
            if confirmed is None:
                return
            if not confirmed.is_set():
                confirmed.set()
            elif confirmed is self._ctl_confirmed:
                # A re-subscription after a reconnect: signals sent meanwhile were missed.
                self._on_control("", ResyncMsg())
            else:
                self._fanout.dispatch_all(ResyncMsg())

    async def _confirmed(self, event: anyio.Event) -> None:
        with anyio.move_on_after(self.settings.outage_timeout):
            await event.wait()
        if not event.is_set():
            raise BackendUnavailable(
                f"Redis did not confirm a subscription within {self.settings.outage_timeout:g}s"
            )

    @asynccontextmanager
    async def listen(self, session_id: str, listener: Listener) -> AsyncIterator[None]:
        key = session_id.encode()
        self._fanout.add(key, listener)
        try:
            confirmed = self._data_confirmed
            if confirmed is None:
                # The first data listener of this process subscribes to the data bus; the
                # subscription then stays (processes that only produce never receive data).
                confirmed = self._data_confirmed = anyio.Event()
                channel = self.keys.data_channel
                try:
                    await self._call(lambda: self._pubsub.subscribe(channel))
                except BaseException:
                    self._data_confirmed = None
                    raise
            await self._confirmed(confirmed)
            yield
        finally:
            self._fanout.remove(key, listener)

    # -- transitions -----------------------------------------------------------------------

    async def claim(
        self, session_id: str, *, token: str, restart: bool, metadata: bytes | None
    ) -> ClaimResult:
        s = self.settings
        k = self.keys
        r = await self._script(
            "claim",
            k.three(session_id),
            [
                session_id,
                s.lease_ms,
                s.retention_ms,
                int(restart),
                token,
                metadata or b"",
                self._pub,
                k.data_channel,
                k.ctl_channel,
            ],
        )
        return ClaimResult(bool(int(r[0])), int(r[1]), State(_s(r[2])))

    async def append(self, batches: Sequence[Append]) -> list[Lost | None]:
        k = self.keys
        maxlen = self.settings.maxlen
        # Per batch: log key, entry id, trim id (b"" = none), live record head, entry value.
        fields: list[tuple[bytes, bytes, bytes, bytes, bytes]] = []
        for b in batches:
            value = frame(b.payloads)
            last = b.first + len(b.payloads) - 1
            # With maxlen, keep the entries holding the last `maxlen` chunks (ids are offsets).
            trim = b"%d-%d" % (b.generation, last - maxlen + 1) if maxlen and last > maxlen else b""
            head = chunks_head(b.session_id.encode(), b.generation, b.first, len(value))
            fields.append(
                (k.log_bytes(b.session_id), b"%d-%d" % (b.generation, last), trim, head, value)
            )
        if len(fields) == 1:
            # One batch: XADD + PUBLISH, two commands (the script would add itself as a third).
            key, entry_id, trim, head, value = fields[0]
            xadd: tuple[Any, ...] = ("XADD", key, "NOMKSTREAM")
            if trim:
                xadd += ("MINID", trim)
            replies = await self._pipeline(
                [(*xadd, entry_id, "c", value), (self._pub, k.data_channel, head + value)],
                limited=False,
            )
            codes = [0 if replies[0] is None else -1 if isinstance(replies[0], Exception) else 1]
        else:
            # Many batches: one script call with one argument for them all, one reply.
            blob = b"".join(
                b"%d:%s%d:%s%d:%s%d:%s%d:%s"
                % (len(key), key, len(eid), eid, len(trim), trim, len(head), head, len(v), v)
                for key, eid, trim, head, v in fields
            )
            reply = await self._script(
                "append",
                [k.log(batches[0].session_id)],
                [self._pub, k.data_channel, blob],
                limited=False,
            )
            codes = [int(c) for c in reply]
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
            value = _fields(entries[0][1]).get(b"c") if entries else None
            if value is not None and value == fields[i][4]:
                out[i] = None
            else:
                out[i] = _refusal(batches[i].generation, list(meta))

    async def set_metadata(self, session_id: str, generation: int, blob: bytes) -> Lost | None:
        k = self.keys
        r = await self._script(
            "metadata",
            [k.meta(session_id)],
            [session_id, generation, blob, self._pub, k.data_channel],
        )
        return _lost(r)

    async def renew(
        self, leases: Sequence[tuple[str, int]], *, retention: bool = False
    ) -> list[bool | Lost]:
        s = self.settings
        k = self.keys
        commands: list[tuple[Any, ...]] = []
        for sid, gen in leases:
            commands.append(("GETEX", k.lease(sid, gen), "PX", s.lease_ms))
            if retention:
                commands.append(("PEXPIRE", k.meta(sid), s.retention_ms))
                commands.append(("PEXPIRE", k.log(sid), s.retention_ms))
        replies = await self._pipeline(commands)
        step = 3 if retention else 1
        out: list[bool | Lost] = []
        missing: list[int] = []
        for i in range(len(leases)):
            reply = replies[i * step]
            if isinstance(reply, Exception):
                raise BackendUnavailable(f"lease renewal failed: {reply}")
            if reply is None:
                missing.append(i)
                out.append(False)
            else:
                out.append(_b(reply) == b"c")
        if missing:
            # The lease is gone: find out why, and fail the generation if nobody has yet.
            lapsed = [leases[i] for i in missing]
            await self.expire(lapsed)
            metas = await self._pipeline(
                [("HMGET", k.meta(sid), "gen", "state", "reason") for sid, _ in lapsed]
            )
            for i, (_, gen), meta in zip(missing, lapsed, metas, strict=True):
                out[i] = _refusal(gen, list(meta))
        return out

    async def close(
        self, session_id: str, generation: int, state: State, reason: str | None
    ) -> State | Lost:
        k = self.keys
        r = await self._script(
            "close",
            k.three(session_id),
            [
                session_id,
                generation,
                state.value,
                reason or "",
                self.settings.retention_ms,
                self._pub,
                k.data_channel,
            ],
        )
        lost = _lost(r)
        return lost if lost is not None else State(_s(r[1]))

    async def expire(self, leases: Sequence[tuple[str, int]]) -> list[float | None]:
        s = self.settings
        k = self.keys
        ttls = await self._pipeline([("PTTL", k.lease(sid, gen)) for sid, gen in leases])
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
                        [sid, gen, s.retention_ms, self._pub, k.data_channel, k.ctl_channel],
                    )
                    for sid, gen in lapsed
                ]
            )
        return out

    async def cancel(self, session_id: str) -> SessionInfo | None:
        k = self.keys
        r = await self._script(
            "cancel",
            k.three(session_id),
            [session_id, self.settings.retention_ms, self._pub, k.data_channel, k.ctl_channel],
        )
        return _record(session_id, r, self.settings.lease_ms)

    async def delete(self, session_id: str) -> bool:
        k = self.keys
        r = await self._script(
            "delete", k.three(session_id), [session_id, self._pub, k.data_channel, k.ctl_channel]
        )
        return bool(int(r))

    # -- reads -----------------------------------------------------------------------------

    async def info(self, session_ids: Sequence[str]) -> list[SessionInfo | None]:
        lease_ms = self.settings.lease_ms
        if len(session_ids) == 1:
            sid = session_ids[0]
            return [_record(sid, await self._script("info", self.keys.three(sid), []), lease_ms)]
        replies = await self._pipeline(
            [("EVALSHA", "info", self.keys.three(sid), []) for sid in session_ids]
        )
        out: list[SessionInfo | None] = []
        for sid, r in zip(session_ids, replies, strict=True):
            if isinstance(r, Exception):
                raise BackendUnavailable(f"could not read session {sid!r}: {r}")
            out.append(_record(sid, r, lease_ms))
        return out

    async def read(self, session_id: str, after: tuple[int, int], count: int) -> ReadResult:
        key = self.keys.log(session_id)
        start = f"({after[0]}-{after[1]}"
        client: Any = self.client
        entries = await self._call(lambda: client.xrange(key, start, "+", count=count))
        return _page(entries or [], after, count)

    async def open(
        self, session_id: str, after: tuple[int, int], count: int
    ) -> tuple[SessionInfo | None, ReadResult | None]:
        record, entries = await self._pipeline(
            [
                ("EVALSHA", "info", self.keys.three(session_id), []),
                (
                    "XRANGE",
                    self.keys.log(session_id),
                    f"({after[0]}-{after[1]}",
                    "+",
                    "COUNT",
                    count,
                ),
            ]
        )
        if isinstance(record, Exception):
            raise BackendUnavailable(f"could not read session {session_id!r}: {record}")
        info = _record(session_id, record, self.settings.lease_ms)
        if info is None:
            return None, None
        if isinstance(entries, rexc.ResponseError):
            # A cursor Redis cannot read after (e.g. offset 2^64-1): the caller resets anyway.
            return info, None
        if isinstance(entries, Exception):
            raise BackendUnavailable(f"could not read session {session_id!r}: {entries}")
        return info, _page(entries or [], after, count)


def _page(entries: list[Any], after: tuple[int, int], count: int) -> ReadResult:
    """Chunks (and the end marker) of ``XRANGE`` entries read after ``after``."""
    chunks: list[Chunk] = []
    end: tuple[int, End] | None = None
    for entry_id, fields in entries:
        fields = _fields(fields)
        gen_s, _, off_s = _s(entry_id).partition("-")
        value = fields.get(b"c")
        if value is not None:
            generation, last = int(gen_s), int(off_s)
            payloads = unframe(value)
            first = last - len(payloads) + 1
            if generation == after[0] and first <= after[1]:
                # The cursor points inside this entry: skip what the reader already has.
                payloads = payloads[after[1] - first + 1 :]
                first = after[1] + 1
            chunks.extend(decode_chunks(generation, first, payloads))
            continue
        marker = fields.get(b"e")
        if marker is not None:
            state, reason = decode_end(marker)
            end = (int(gen_s), End(state, reason))
            break
        # the start marker of a generation ('s') carries nothing
    return ReadResult(chunks, end, end is None and len(entries) == count)


def _fields(fields: Any) -> dict[bytes, bytes]:
    """An entry's fields as bytes, whatever the reply shape (a dict, or a flat list in a pipeline
    without redis-py's response callbacks) and ``decode_responses``."""
    if not fields:
        return {}
    if isinstance(fields, dict):
        return {_b(k): _b(v) for k, v in fields.items()}
    return {_b(fields[i]): _b(fields[i + 1]) for i in range(0, len(fields), 2)}
