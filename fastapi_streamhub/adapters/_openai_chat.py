"""``openai_chat``: OpenAI Chat Completions chunks (and LiteLLM's, which share their shape)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ._chunks import (
    count,
    events_of,
    finish,
    reasoning_delta,
    reasoning_end,
    reasoning_start,
    usage,
)
from ._tools import ToolCalls

__all__ = ["openai_chat"]

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "content_filter": "content-filter",
}


def chat_usage(raw: Any) -> dict[str, Any]:
    """Our ``usage`` chunk from a Chat Completions ``usage`` object."""
    completion = getattr(raw, "completion_tokens_details", None)
    prompt = getattr(raw, "prompt_tokens_details", None)
    return usage(
        count(getattr(raw, "prompt_tokens", None)),
        count(getattr(raw, "completion_tokens", None)),
        count(getattr(raw, "total_tokens", None)),
        reasoning_tokens=count(getattr(completion, "reasoning_tokens", None)),
        cached_input_tokens=count(getattr(prompt, "cached_tokens", None)),
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
    tools = ToolCalls()
    reasoning_open = False
    reasons = 0
    raw_reason: str | None = None
    async for chunk in events_of(stream):
        raw_usage = getattr(chunk, "usage", None)
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            delta = getattr(choice, "delta", None)
            thought = getattr(delta, "reasoning_content", None)
            if isinstance(thought, str) and thought:
                if not reasoning_open:
                    reasoning_open = True
                    yield reasoning_start(f"reasoning-{reasons}")
                yield reasoning_delta(f"reasoning-{reasons}", thought)
            text = getattr(delta, "content", None)
            calls = getattr(delta, "tool_calls", None) or ()
            if reasoning_open and (text or calls or choice.finish_reason):
                reasoning_open = False
                yield reasoning_end(f"reasoning-{reasons}")
                reasons += 1
            if isinstance(text, str) and text:
                yield text
            for call in calls:
                for part in _tool_fragment(tools, call):
                    yield part
            if choice.finish_reason is not None:
                raw_reason = str(choice.finish_reason)
                for part in tools.finish():
                    yield part
        if raw_usage is not None:
            yield chat_usage(raw_usage)
    if reasoning_open:
        yield reasoning_end(f"reasoning-{reasons}")
    # A stream cut before its finish_reason still hands over the calls it carried.
    for part in tools.finish():
        yield part
    reason = "other" if raw_reason is None else _FINISH.get(raw_reason, "other")
    yield finish(reason, raw_reason)


def _tool_fragment(tools: ToolCalls, fragment: Any) -> list[dict[str, Any]]:
    """Chunks for one ``delta.tool_calls[j]`` fragment (the id and name come once, first)."""
    index = getattr(fragment, "index", None)
    function = getattr(fragment, "function", None)
    return tools.fragment(
        index if isinstance(index, int) else len(tools),
        getattr(fragment, "id", None),
        getattr(function, "name", None),
        getattr(function, "arguments", None),
    )
