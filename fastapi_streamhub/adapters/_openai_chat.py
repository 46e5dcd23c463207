"""``openai_chat``: OpenAI Chat Completions chunks (and LiteLLM's, which share their shape)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from . import _chunks as c

__all__ = ["openai_chat"]

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "content_filter": "content-filter",
}


@dataclass
class _ToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    started: bool = False


def chat_usage(raw: Any) -> dict[str, Any]:
    """Our ``usage`` chunk from a Chat Completions ``usage`` object."""
    completion = getattr(raw, "completion_tokens_details", None)
    prompt = getattr(raw, "prompt_tokens_details", None)
    return c.usage(
        c.count(getattr(raw, "prompt_tokens", None)),
        c.count(getattr(raw, "completion_tokens", None)),
        c.count(getattr(raw, "total_tokens", None)),
        reasoning_tokens=c.count(getattr(completion, "reasoning_tokens", None)),
        cached_input_tokens=c.count(getattr(prompt, "cached_tokens", None)),
    )


async def openai_chat(stream: Any) -> AsyncIterator[str | dict[str, Any]]:
    """Chunks of ``await AsyncOpenAI().chat.completions.create(..., stream=True)``.

    Also reads ``await litellm.acompletion(..., stream=True)``. Text deltas become ``str``
    chunks; ``reasoning_content`` deltas (LiteLLM, DeepSeek-style servers) a reasoning block;
    tool calls are assembled by index: ``tool-input-start`` once the id and name are known,
    ``tool-input-delta`` per argument fragment and ``tool-input-available`` (the parsed input)
    when the choice finishes. ``usage`` comes when the request asked for it
    (``stream_options={"include_usage": True}``), and ``finish`` is always the last chunk.
    Only the first choice (``index`` 0) is read: an answer is one message.
    """
    tools: dict[int, _ToolCall] = {}
    reasoning_open = False
    reasons = 0
    raw_reason: str | None = None
    async for chunk in c.events_of(stream):
        raw_usage = getattr(chunk, "usage", None)
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            delta = getattr(choice, "delta", None)
            thought = getattr(delta, "reasoning_content", None)
            if isinstance(thought, str) and thought:
                if not reasoning_open:
                    reasoning_open = True
                    yield c.reasoning_start(f"reasoning-{reasons}")
                yield c.reasoning_delta(f"reasoning-{reasons}", thought)
            text = getattr(delta, "content", None)
            calls = getattr(delta, "tool_calls", None) or ()
            if reasoning_open and (text or calls or choice.finish_reason):
                reasoning_open = False
                yield c.reasoning_end(f"reasoning-{reasons}")
                reasons += 1
            if isinstance(text, str) and text:
                yield text
            for call in calls:
                for part in _tool_fragment(tools, call):
                    yield part
            if choice.finish_reason is not None:
                raw_reason = str(choice.finish_reason)
                for part in _finish_tools(tools):
                    yield part
        if raw_usage is not None:
            yield chat_usage(raw_usage)
    if reasoning_open:
        yield c.reasoning_end(f"reasoning-{reasons}")
    # A stream cut before its finish_reason still hands over the calls it carried.
    for part in _finish_tools(tools):
        yield part
    reason = "other" if raw_reason is None else _FINISH.get(raw_reason, "other")
    yield c.finish(reason, raw_reason)


def _tool_fragment(tools: dict[int, _ToolCall], fragment: Any) -> list[dict[str, Any]]:
    """Chunks for one ``delta.tool_calls[j]`` fragment (the id and name come once, first)."""
    index = getattr(fragment, "index", None)
    if not isinstance(index, int):
        index = len(tools)
    call = tools.setdefault(index, _ToolCall())
    out: list[dict[str, Any]] = []
    function = getattr(fragment, "function", None)
    if getattr(fragment, "id", None):
        call.id = fragment.id
    name = getattr(function, "name", None)
    if name:
        call.name = name
    if not call.started and call.id and call.name:
        call.started = True
        out.append(c.tool_input_start(call.id, call.name))
        # Fragments that came before the id and the name were held back until now.
        out.extend(c.tool_input_delta(call.id, a) for a in call.arguments if a)
    arguments = getattr(function, "arguments", None)
    if isinstance(arguments, str) and arguments:
        call.arguments.append(arguments)
        if call.started:
            out.append(c.tool_input_delta(call.id, arguments))
    return out


def _finish_tools(tools: dict[int, _ToolCall]) -> list[dict[str, Any]]:
    """``tool-input-available`` for every open call, in index order; the calls are closed."""
    out = []
    for index in sorted(tools):
        call = tools.pop(index)
        if not call.started:
            # A call that never got both an id and a name cannot be announced under them:
            # say so rather than drop it.
            raise c.UpstreamError(
                f"tool call #{index} ended without an id and a name "
                f"(id={call.id!r}, name={call.name!r})"
            )
        out.append(c.tool_input_available(call.id, call.name, "".join(call.arguments)))
    return out
