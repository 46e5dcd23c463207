"""Fan-in on the Redis backend: one script per transition (``lua/admit.lua``, ``join.lua``,
``append_shared.lua``, ``end_part.lua``), each declaring the session's keys (one slot)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from .._codec import frame
from .._errors import BackendUnavailable
from ._keys import Keys
from ._redis_exec import Command, RedisExecutor
from ._replies import lost_of
from .base import Lost, SharedAppend

__all__ = ["FANIN_SCRIPTS", "RedisFanIn"]

FANIN_SCRIPTS = ("admit", "join", "append_shared", "end_part")


class RedisFanIn:
    """The fan-in transitions that :class:`RedisBackend` delegates to."""

    def __init__(
        self,
        executor: RedisExecutor,
        keys: Keys,
        channels: Callable[[str], tuple[str, str]],
        subscribe: Callable[[str], Awaitable[None]],
    ) -> None:
        self._exec = executor
        self._keys = keys
        self._channels = channels
        self._subscribe = subscribe

    async def admit(self, session_id: str, generation: int, name: str) -> Lost | None:
        """See :meth:`Backend.admit`."""
        r = await self._exec.script("admit", [self._keys.meta(session_id)], [generation, name])
        return lost_of(r)

    async def join(self, session_id: str, generation: int, name: str, token: str) -> Lost | None:
        """See :meth:`Backend.join`."""
        if self._exec.cluster:
            # Cancels reach this producer on its slot's control channel: listen before writing.
            await self._subscribe(self._channels(session_id)[1])
        args = [generation, name, token]
        return lost_of(await self._exec.script("join", [self._keys.meta(session_id)], args))

    async def append_shared(self, batches: Sequence[SharedAppend]) -> list[int | Lost]:
        """See :meth:`Backend.append_shared`."""
        # One script call per batch, all in one pipeline (a cluster sends each node its part).
        k = self._keys
        settings = self._exec.settings
        maxlen = settings.maxlen or 0
        commands: list[Command] = []
        for b in batches:
            sid = b.session_id
            args = [sid, b.generation, b.name, b.token, b.seq, len(b.payloads), frame(b.payloads)]
            args += [maxlen, self._exec.pub, self._channels(sid)[0], settings.max_publish_bytes]
            commands.append(("EVALSHA", "append_shared", [k.meta(sid), k.log(sid)], args))
        waits = self._exec.waits([k.log(b.session_id) for b in batches])
        replies = await self._exec.pipeline(commands + waits, limited=False, refusable=True)
        self._exec.check_waits(replies[len(commands) :])
        out: list[int | Lost] = []
        for r in replies[: len(commands)]:
            if isinstance(r, Exception):
                raise BackendUnavailable(f"append failed: {r}")
            lost = lost_of(r)
            out.append(int(r[1]) if lost is None else lost)
        return out

    async def end_part(
        self, session_id: str, generation: int, name: str, token: str, *, last: int | None = None
    ) -> Lost | None:
        """See :meth:`Backend.end_part`."""
        args = [generation, name, token, "" if last is None else last]
        return lost_of(await self._exec.script("end_part", [self._keys.meta(session_id)], args))
