"""Fan-in on the Redis backend: one script per transition (``lua/admit.lua``, ``join.lua``,
``append_shared.lua``, ``end_part.lua``), each declaring the session's keys (one slot)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._codec import frame
from .._errors import BackendUnavailable
from .._types import State
from .base import Lost, SharedAppend

if TYPE_CHECKING:
    from .._config import Settings
    from ._bus import Bus
    from ._keys import Keys

__all__ = ["FANIN_SCRIPTS", "RedisFanIn", "part_lost"]

FANIN_SCRIPTS = ("admit", "join", "append_shared", "end_part")

# A part's own refusals ({'part', <reason>}) as the refusal of the write they stop.
_PART: dict[str, Lost] = {
    "replaced": Lost("stale", reason="replaced"),
    "part_ended": Lost("closed", reason="part_ended"),
    "not_admitted": Lost("gone", reason="not_admitted"),
}


def _s(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def part_lost(reply: Sequence[Any]) -> Lost | None:
    """The refusal in a fan-in script's reply, or None for ``{'ok', ...}``."""
    head = _s(reply[0])
    if head == "ok":
        return None
    if head == "part":
        return _PART[_s(reply[1])]
    if head == "closed":
        return Lost("closed", State(_s(reply[1])), _s(reply[2]) or None)
    return Lost("stale" if head == "stale" else "gone")


class RedisFanIn:
    """The fan-in methods of :class:`RedisBackend`."""

    if TYPE_CHECKING:
        keys: Keys
        settings: Settings
        cluster: bool
        _pub: str
        _bus: Bus | None

        def channels(self, session_id: str) -> tuple[str, str]: ...
        async def _script(
            self, name: str, keys: list[str], args: list[Any], *, limited: bool = True
        ) -> Any: ...
        async def _pipeline(
            self,
            commands: list[tuple[Any, ...]],
            *,
            limited: bool = True,
            refusable: bool = False,
        ) -> list[Any]: ...
        def _waits(self, keys: Sequence[bytes | str]) -> list[tuple[Any, ...]]: ...
        def _check_waits(self, replies: Sequence[Any]) -> None: ...

    async def admit(self, session_id: str, generation: int, name: str) -> Lost | None:
        r = await self._script("admit", [self.keys.meta(session_id)], [generation, name])
        return part_lost(r)

    async def join(self, session_id: str, generation: int, name: str, token: str) -> Lost | None:
        if self.cluster:
            # Cancels reach this producer on its slot's control channel: listen before writing.
            assert self._bus is not None, "start() first"
            await self._bus.subscribe(self.channels(session_id)[1])
        r = await self._script("join", [self.keys.meta(session_id)], [generation, name, token])
        return part_lost(r)

    async def append_shared(self, batches: Sequence[SharedAppend]) -> list[int | Lost]:
        # One script call per batch, all in one pipeline (a cluster sends each node its part).
        k = self.keys
        maxlen = self.settings.maxlen or 0
        publish = self.settings.max_publish_bytes
        commands: list[tuple[Any, ...]] = []
        for b in batches:
            sid = b.session_id
            args = [sid, b.generation, b.name, b.token, b.seq, len(b.payloads)]
            args += [frame(b.payloads), maxlen, self._pub, self.channels(sid)[0], publish]
            commands.append(("EVALSHA", "append_shared", [k.meta(sid), k.log(sid)], args))
        waits = self._waits([k.log(b.session_id) for b in batches])
        replies = await self._pipeline(commands + waits, limited=False, refusable=True)
        self._check_waits(replies[len(commands) :])
        out: list[int | Lost] = []
        for r in replies[: len(commands)]:
            if isinstance(r, Exception):
                raise BackendUnavailable(f"append failed: {r}")
            lost = part_lost(r)
            out.append(int(r[1]) if lost is None else lost)
        return out

    async def end_part(
        self, session_id: str, generation: int, name: str, token: str, *, last: int | None = None
    ) -> Lost | None:
        args = [generation, name, token, "" if last is None else last]
        return part_lost(await self._script("end_part", [self.keys.meta(session_id)], args))
