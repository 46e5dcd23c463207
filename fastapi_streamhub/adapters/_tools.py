"""Tool calls streamed in fragments (Chat Completions, LangChain): the id and the name come
once, the argument text in pieces, and the call is complete when its message finishes."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ._chunks import UpstreamError, tool_input_available, tool_input_delta, tool_input_start

__all__ = ["ToolCalls"]


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    args: list[str] = field(default_factory=list)
    started: bool = False


class ToolCalls:
    """The open tool calls of a stream, each under a key (its index, or message and index)."""

    def __init__(self) -> None:
        self._calls: dict[Hashable, _Call] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def fragment(
        self, key: Hashable, call_id: str | None, name: str | None, args: Any
    ) -> list[dict[str, Any]]:
        """Chunks for one fragment: ``tool-input-start`` once the id and the name are known
        (with the argument text that came before them), then a ``tool-input-delta`` per piece."""
        call = self._calls.setdefault(key, _Call())
        call.id = call.id or call_id or ""
        call.name = call.name or name or ""
        out: list[dict[str, Any]] = []
        if not call.started and call.id and call.name:
            call.started = True
            out.append(tool_input_start(call.id, call.name))
            out.extend(tool_input_delta(call.id, a) for a in call.args)
        if isinstance(args, str) and args:
            call.args.append(args)
            if call.started:
                out.append(tool_input_delta(call.id, args))
        return out

    def finish(self, which: Callable[[Any], bool] = lambda key: True) -> list[dict[str, Any]]:
        """``tool-input-available`` for every open call whose key ``which`` accepts, in the
        order the calls began; those calls are closed."""
        out = []
        for key in [k for k in self._calls if which(k)]:
            call = self._calls.pop(key)
            if not call.started:
                # A call that never got both an id and a name cannot be announced under them:
                # say so rather than drop it.
                raise UpstreamError(
                    f"a tool call ended without an id and a name (id={call.id!r}, "
                    f"name={call.name!r})"
                )
            out.append(tool_input_available(call.id, call.name, "".join(call.args)))
        return out
