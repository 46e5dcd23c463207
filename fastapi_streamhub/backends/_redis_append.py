"""The append hot path of the Redis backend: the writer's batches as fenced ``XADD``s.

One batch of a round trip is one ``XADD <log> NOMKSTREAM <gen>-<last offset>`` and one
``PUBLISH``; more batches of one slot are one call of ``append.lua`` with a single packed
argument (one reply to parse instead of one per ``XADD``). On a cluster the batches are grouped
per slot and sent in one pipeline (each node gets its part at once). Redis refuses an explicit
id at or below the stream's top: such a refusal is settled afterwards (a retry of our own
applied batch is fine, anything else is the generation's :class:`Lost`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .._codec import chunks_head, frame, stored_record
from .._errors import BackendUnavailable
from ._keys import Keys, slot_of
from ._redis_exec import Command, RedisExecutor
from ._replies import fields_of, raise_refused, refusal, xadd_code
from .base import Append, Lost

__all__ = ["Entry", "RedisAppender"]

_NAMES_KEPT = 10_000  # sessions whose encoded names are cached (then the cache starts over)


class Entry(NamedTuple):
    """One batch as the log and the data bus receive it."""

    key: bytes
    """The session's log."""
    entry_id: bytes
    """``<generation>-<last offset>``: the fence (Redis refuses an id at or below the top)."""
    trim: bytes
    """``MINID`` for ``maxlen`` (b"": no trimming)."""
    head: bytes
    """The live record's head; alone, a notice that readers fetch the chunks from the log."""
    value: bytes
    """The framed payloads, stored as the entry's field ``c``."""


class RedisAppender:
    """Appends the writer's batches (:meth:`RedisBackend.append`)."""

    def __init__(
        self, executor: RedisExecutor, keys: Keys, channels: Callable[[str], tuple[str, str]]
    ) -> None:
        self._exec = executor
        self._keys = keys
        self._channels = channels
        # Session id -> (log key, id) as bytes: encoded once per session, not once per batch.
        self._names: dict[str, tuple[bytes, bytes]] = {}

    async def append(self, batches: Sequence[Append]) -> list[Lost | None]:
        """Store every batch; per batch None, or why its producer may not write."""
        groups = _by_slot(batches) if self._exec.cluster else [list(range(len(batches)))]
        if len(groups) == 1 and not self._exec.settings.wait_replicas:
            # The common case on one Redis: one round trip, no reply to sort out.
            codes = await self._append_one(batches, groups[0])
        else:
            codes = await self._append_many(batches, groups)
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
            await self._settle(batches, doubtful, out)
        return out

    def _names_of(self, session_id: str) -> tuple[bytes, bytes]:
        """The session's log key and id, as bytes."""
        names = self._names.get(session_id)
        if names is None:
            if len(self._names) >= _NAMES_KEPT:
                self._names.clear()
            names = self._names[session_id] = (
                self._keys.log_bytes(session_id),
                session_id.encode(),
            )
        return names

    def _entry(self, b: Append) -> Entry:
        return Entry(*self._fields(b))

    def _fields(self, b: Append) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        """:meth:`_entry`'s fields as a plain tuple (cheaper to build, for the script's
        argument)."""
        settings = self._exec.settings
        payloads = b.payloads
        value = frame(payloads)
        generation, first = b.generation, b.first
        last = first + len(payloads) - 1
        maxlen = settings.maxlen
        # With maxlen, keep the entries holding the last `maxlen` chunks (ids are offsets).
        trim = b"%d-%d" % (generation, last - maxlen + 1) if maxlen and last > maxlen else b""
        key, sid = self._names_of(b.session_id)
        head = chunks_head(sid, generation, first, len(value))
        if len(head) + len(value) > settings.max_publish_bytes:
            head = stored_record(sid, generation, last)  # readers fetch it from the log
        return key, b"%d-%d" % (generation, last), trim, head, value

    def _argument(self, batches: Sequence[Append], group: list[int]) -> bytes:
        """The batches of ``group`` as ``append.lua``'s one argument: per batch the five fields
        of its :class:`Entry`, each length-prefixed. Each entry is formatted as soon as it is
        built (none outlives this call: the round trip holds one bytes object, not an object
        per batch for the garbage collector to walk)."""
        parts = []
        for i in group:
            key, eid, trim, head, value = self._fields(batches[i])
            parts.append(
                b"%d:%s%d:%s%d:%s%d:%s%d:%s"
                % (
                    len(key),
                    key,
                    len(eid),
                    eid,
                    len(trim),
                    trim,
                    len(head),
                    head,
                    len(value),
                    value,
                )
            )
        return b"".join(parts)

    def _commands(self, batches: Sequence[Append], group: list[int]) -> list[Command]:
        """One batch: ``XADD`` + ``PUBLISH`` (the script would add itself as a third command);
        more: one script call with one argument for them all."""
        pub = self._exec.pub
        data_ch = self._channels(batches[group[0]].session_id)[0]
        if len(group) == 1:
            e = self._entry(batches[group[0]])
            xadd: Command = ("XADD", e.key, "NOMKSTREAM")
            if e.trim:
                xadd += ("MINID", e.trim)
            live = e.head + e.value if e.head[:1] == b"C" else e.head
            return [(*xadd, e.entry_id, "c", e.value), (pub, data_ch, live)]
        blob = self._argument(batches, group)
        # A cluster routes (and redirects) a script by its KEYS: declare every log it writes.
        if self._exec.cluster:
            keys = [self._names_of(batches[i].session_id)[0] for i in group]
        else:
            keys = [self._names_of(batches[group[0]].session_id)[0]]
        publish = self._exec.settings.max_publish_bytes
        return [("EVALSHA", "append", keys, [pub, data_ch, blob, publish])]

    async def _append_one(self, batches: Sequence[Append], group: list[int]) -> list[int]:
        commands = self._commands(batches, group)
        if len(commands) == 2:
            replies = await self._exec.pipeline(commands, limited=False, refusable=True)
            raise_refused(replies[0])
            return [xadd_code(replies[0])]
        _, name, keys, args = commands[0]
        reply = await self._exec.script(name, keys, args, limited=False, refusable=True)
        return [int(c) for c in reply]

    async def _append_many(self, batches: Sequence[Append], groups: list[list[int]]) -> list[int]:
        """Every group in one pipeline (a cluster sends each node its part at once), then
        ``WAIT`` when replicas must acknowledge."""
        commands: list[Command] = []
        starts: list[int] = []
        for group in groups:
            starts.append(len(commands))
            commands += self._commands(batches, group)
        targets = [self._names_of(batches[group[0]].session_id)[0] for group in groups]
        replies = await self._exec.pipeline(
            commands + self._exec.waits(targets), limited=False, refusable=True
        )
        self._exec.check_waits(replies[len(commands) :])
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

    async def _settle(self, batches: Sequence[Append], doubtful: list[int], out: list[Any]) -> None:
        """Refused ``XADD``s: a retry of our own applied batch is fine, anything else is lost."""
        commands: list[Command] = []
        entries = {i: self._entry(batches[i]) for i in doubtful}
        for i in doubtful:
            e = entries[i]
            commands.append(("XRANGE", e.key, e.entry_id, e.entry_id))
            meta = self._keys.meta(batches[i].session_id)
            commands.append(("HMGET", meta, "gen", "state", "reason"))
        replies = await self._exec.pipeline(commands)
        for j, i in enumerate(doubtful):
            stored, meta = replies[2 * j], replies[2 * j + 1]
            if isinstance(stored, Exception) or isinstance(meta, Exception):
                raise BackendUnavailable(f"could not check a refused append: {stored or meta}")
            value = fields_of(stored[0][1]).get(b"c") if stored else None
            if value is not None and value == entries[i].value:
                out[i] = None
            else:
                out[i] = refusal(batches[i].generation, list(meta))


def _by_slot(batches: Sequence[Append]) -> list[list[int]]:
    """Indices of ``batches`` grouped by cluster slot (a script touches one slot only)."""
    groups: dict[int, list[int]] = {}
    for i, b in enumerate(batches):
        groups.setdefault(slot_of(b.session_id), []).append(i)
    return list(groups.values())
