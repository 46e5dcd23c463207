"""Redis backend: a hash and a stream per session, one Lua script per transition, one pub/sub connection.

It takes an already-built ``redis.asyncio.Redis``; ``StreamHub.from_url`` builds one for you.
Clients with ``decode_responses=True`` work too: every payload is valid UTF-8, so replies are
turned back into the exact bytes.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, TypeVar

import anyio
import orjson
from anyio.abc import TaskGroup
from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from .._codec import ResyncMsg, decode_end, decode_message, decode_payload
from .._config import Settings
from .._errors import BackendUnavailable
from .._fanout import Fanout, Listener
from .._types import Chunk, Cursor, End, SessionInfo, State
from ._keys import Keys
from .base import AppendResult, Backend, Channel, ClaimResult, Lost, ReadResult

__all__ = ["RedisBackend"]

log = logging.getLogger("fastapi_streamhub.redis")
T = TypeVar("T")

_RETRYABLE = (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, rexc.ReadOnlyError)
_SCRIPTS = ("claim", "append", "metadata", "renew", "close", "expire", "cancel", "delete", "info")


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


def _record(session_id: str, r: list[Any] | None) -> SessionInfo | None:
    if not r or r[0] is None:
        return None
    gen, state, reason, n, md, created, updated, cancel, lease, now = (list(r) + [None] * 10)[:10]
    return SessionInfo(
        session_id=session_id,
        state=State(_s(state)),
        generation=int(gen),
        chunks=int(n or 0),
        metadata=None if md is None else orjson.loads(_b(md)),
        created_at=int(created or 0) / 1000,
        updated_at=int(updated or 0) / 1000,
        reason=None if reason is None else (_s(reason) or None),
        cancel_requested=cancel is not None,
        lease_remaining=max(0.0, (int(lease or 0) - int(now or 0)) / 1000),
    )


class RedisBackend(Backend):
    """Sessions in Redis; live delivery through one pub/sub connection fanned out locally."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.settings = Settings()
        self.keys = Keys(self.settings.key_prefix)
        self._fanout = Fanout()
        self._pub = "PUBLISH"
        self._scripts: dict[str, AsyncScript] = {}
        self._subscribed: dict[bytes, anyio.Event] = {}
        self._pubsub: Any = None
        self._instance = uuid.uuid4().hex

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, settings: Settings, task_group: TaskGroup) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        lib = resources.files(__package__).joinpath("lua/_lib.lua").read_text("utf-8")
        for name in _SCRIPTS:
            body = resources.files(__package__).joinpath(f"lua/{name}.lua").read_text("utf-8")
            self._scripts[name] = self.client.register_script(lib + "\n" + body)
        self._pubsub = self.client.pubsub()
        hub_channel = self.keys.hub_channel(self._instance).encode()
        self._subscribed[hub_channel] = anyio.Event()
        await self._call(lambda: self._pubsub.subscribe(hub_channel))
        task_group.start_soon(self._reader)

    async def aclose(self) -> None:
        if self._pubsub is not None:
            with anyio.CancelScope(shield=True):
                await self._pubsub.aclose()
            self._pubsub = None

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis call, retrying connection errors with backoff for up to ``outage_timeout``."""
        deadline = time.monotonic() + self.settings.outage_timeout
        delay = 0.02
        while True:
            try:
                return await fn()
            except _RETRYABLE as exc:
                if time.monotonic() + delay >= deadline:
                    raise BackendUnavailable(
                        f"Redis unreachable for {self.settings.outage_timeout:g}s: {exc}"
                    ) from exc
                log.warning("redis call failed (%s); retrying in %.2fs", exc, delay)
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts[name]
        return await self._call(lambda: script(keys=keys, args=args))

    async def _pipeline(self, calls: list[tuple[str, list[str], list[Any]]]) -> list[Any]:
        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for name, keys, args in calls:
                    await self._scripts[name](keys=keys, args=args, client=pipe)
                return list(await pipe.execute())

        return await self._call(run)

    # -- pub/sub ---------------------------------------------------------------------------

    async def _reader(self) -> None:
        delay = 0.02
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=None)
            except _RETRYABLE as exc:
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
        kind = msg["type"]
        kind = _s(kind)
        if kind in ("message", "smessage"):
            self._fanout.dispatch(_b(msg["channel"]), decode_message(msg["data"]))
        elif kind in ("subscribe", "ssubscribe"):
            channel = _b(msg["channel"])
            confirmed = self._subscribed.get(channel)
            if confirmed is None:
                return
            if confirmed.is_set():
                # A re-subscription after a reconnect: anything published meanwhile was missed.
                self._fanout.dispatch(channel, ResyncMsg())
            else:
                confirmed.set()

    @asynccontextmanager
    async def listen(
        self, session_id: str, channel: Channel, listener: Listener
    ) -> AsyncIterator[None]:
        name = (
            self.keys.data_channel(session_id)
            if channel == "data"
            else self.keys.ctl_channel(session_id)
        ).encode()
        first = self._fanout.add(name, listener)
        try:
            if first:
                self._subscribed[name] = anyio.Event()
                await self._call(lambda: self._pubsub.subscribe(name))
            confirmed = self._subscribed[name]
            with anyio.move_on_after(self.settings.outage_timeout):
                await confirmed.wait()
            if not confirmed.is_set():
                raise BackendUnavailable(
                    f"Redis did not confirm the subscription within {self.settings.outage_timeout:g}s"
                )
            yield
        finally:
            if self._fanout.remove(name, listener):
                self._subscribed.pop(name, None)
                await self._unsubscribe(name)

    async def _unsubscribe(self, name: bytes) -> None:
        if self._pubsub is None:
            return  # the backend is closed: its connection and subscriptions are gone already
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self._pubsub.unsubscribe(name)
            except _RETRYABLE as exc:
                # The channel stays in redis-py's list and is re-subscribed on reconnect;
                # messages for a channel without listeners are dropped, so this costs bandwidth only.
                log.info("unsubscribe of %r failed (%s)", name, exc)

    # -- transitions -----------------------------------------------------------------------

    def _k3(self, session_id: str) -> list[str]:
        k = self.keys
        return [k.meta(session_id), k.log(session_id), k.data_channel(session_id)]

    async def claim(
        self, session_id: str, *, token: str, restart: bool, metadata: bytes | None
    ) -> ClaimResult:
        s = self.settings
        r = await self._script(
            "claim",
            self._k3(session_id),
            [s.lease_ms, s.retention_ms, int(restart), token, metadata or b"", self._pub],
        )
        return ClaimResult(bool(int(r[0])), int(r[1]), State(_s(r[2])))

    async def append(
        self, session_id: str, generation: int, writer: str, seq: int, payloads: Sequence[bytes]
    ) -> AppendResult | Lost:
        s = self.settings
        r = await self._script(
            "append",
            self._k3(session_id),
            [generation, writer, seq, s.retention_ms, s.maxlen or 0, self._pub, *payloads],
        )
        lost = _lost(r)
        if lost is not None:
            return lost
        return AppendResult(int(r[0]), bool(int(r[1])))

    async def set_metadata(self, session_id: str, generation: int, blob: bytes) -> Lost | None:
        k = self.keys
        r = await self._script(
            "metadata",
            [k.meta(session_id), k.data_channel(session_id)],
            [generation, blob, self._pub],
        )
        return _lost(r)

    async def renew(self, leases: Sequence[tuple[str, int]]) -> list[bool | Lost]:
        s = self.settings
        k = self.keys
        replies = await self._pipeline(
            [
                ("renew", [k.meta(sid), k.log(sid)], [gen, s.lease_ms, s.retention_ms])
                for sid, gen in leases
            ]
        )
        out: list[bool | Lost] = []
        for r in replies:
            lost = _lost(r)
            out.append(lost if lost is not None else bool(int(r[1])))
        return out

    async def close(
        self, session_id: str, generation: int, state: State, reason: str | None
    ) -> State | Lost:
        r = await self._script(
            "close",
            self._k3(session_id),
            [generation, state.value, reason or "", self.settings.retention_ms, self._pub],
        )
        lost = _lost(r)
        return lost if lost is not None else State(_s(r[1]))

    async def expire(self, session_ids: Sequence[str]) -> list[SessionInfo | None]:
        s = self.settings
        replies = await self._pipeline(
            [("expire", self._k3(sid), [s.retention_ms, self._pub]) for sid in session_ids]
        )
        return [_record(sid, r) for sid, r in zip(session_ids, replies, strict=True)]

    async def cancel(self, session_id: str) -> SessionInfo | None:
        keys = [*self._k3(session_id), self.keys.ctl_channel(session_id)]
        r = await self._script("cancel", keys, [self.settings.retention_ms, self._pub])
        return _record(session_id, r)

    async def delete(self, session_id: str) -> bool:
        keys = [*self._k3(session_id), self.keys.ctl_channel(session_id)]
        return bool(int(await self._script("delete", keys, [self._pub])))

    # -- reads -----------------------------------------------------------------------------

    async def info(self, session_ids: Sequence[str]) -> list[SessionInfo | None]:
        if len(session_ids) == 1:
            sid = session_ids[0]
            return [_record(sid, await self._script("info", [self.keys.meta(sid)], []))]
        replies = await self._pipeline([("info", [self.keys.meta(sid)], []) for sid in session_ids])
        return [_record(sid, r) for sid, r in zip(session_ids, replies, strict=True)]

    async def read(self, session_id: str, after: tuple[int, int], count: int) -> ReadResult:
        key = self.keys.log(session_id)
        start = f"({after[0]}-{after[1]}"
        client: Any = self.client
        entries: list[Any] = (
            await self._call(lambda: client.xrange(key, start, "+", count=count)) or []
        )
        chunks: list[Chunk] = []
        end: tuple[int, End] | None = None
        for entry_id, fields in entries:
            fields = fields or {}
            gen_s, _, off_s = _s(entry_id).partition("-")
            payload = fields.get(b"d", fields.get("d"))
            if payload is not None:
                chunks.append(decode_payload(_b(payload), Cursor(int(gen_s), int(off_s))))
                continue
            state, reason = decode_end(_b(fields.get(b"e", fields.get("e"))))
            end = (int(gen_s), End(state, reason))
        return ReadResult(chunks, end, end is None and len(entries) == count)
