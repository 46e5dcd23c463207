"""The typed JSON chunks every adapter yields, built in one place (see the package docstring)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import orjson
from pydantic_core import to_jsonable_python

from .._errors import StreamHubError

__all__ = [
    "FINISH_REASONS",
    "UpstreamError",
    "count",
    "events_of",
    "finish",
    "jsonable",
    "reasoning_delta",
    "reasoning_end",
    "reasoning_start",
    "tool_input_available",
    "tool_input_delta",
    "tool_input_parsed",
    "tool_input_start",
    "tool_output_available",
    "tool_output_error",
    "usage",
]

# The AI SDK's finish reasons; an adapter maps its provider's reason onto one of these.
FINISH_REASONS = frozenset({"stop", "length", "content-filter", "tool-calls", "error", "other"})


class UpstreamError(StreamHubError):
    """The provider reported an error inside its stream (the generation ends ``failed``)."""


def tool_input_start(tool_call_id: str, tool_name: str) -> dict[str, Any]:
    """A tool call begins; its input follows as ``tool-input-delta`` fragments."""
    return {"type": "tool-input-start", "toolCallId": tool_call_id, "toolName": tool_name}


def tool_input_delta(tool_call_id: str, delta: str) -> dict[str, Any]:
    """One fragment of a tool call's JSON input, as the provider sent it."""
    return {"type": "tool-input-delta", "toolCallId": tool_call_id, "inputTextDelta": delta}


def tool_input_available(tool_call_id: str, tool_name: str, raw_input: str) -> dict[str, Any]:
    """The whole input of a tool call, parsed: ``tool-input-available``.

    Models do emit malformed JSON now and then: that gives ``tool-input-error`` with the text
    as it came and ``errorText`` saying why, rather than failing the whole answer over one call.
    """
    part: dict[str, Any] = {"toolCallId": tool_call_id, "toolName": tool_name}
    try:
        parsed = orjson.loads(raw_input) if raw_input.strip() else {}
    except orjson.JSONDecodeError as exc:
        error = f"the input of tool {tool_name!r} is not valid JSON: {exc}"
        return {"type": "tool-input-error", **part, "input": raw_input, "errorText": error}
    return {"type": "tool-input-available", **part, "input": parsed}


def tool_input_parsed(tool_call_id: str, tool_name: str, value: Any) -> dict[str, Any]:
    """``tool-input-available`` for an input the SDK already parsed."""
    return {
        "type": "tool-input-available",
        "toolCallId": tool_call_id,
        "toolName": tool_name,
        "input": jsonable(value),
    }


def tool_output_available(tool_call_id: str, output: Any) -> dict[str, Any]:
    """The result of a tool the framework ran (pydantic-ai, LangGraph), as JSON."""
    return {"type": "tool-output-available", "toolCallId": tool_call_id, "output": jsonable(output)}


def tool_output_error(tool_call_id: str, error_text: str) -> dict[str, Any]:
    """A tool the framework ran failed, or its input was refused (the model is asked again)."""
    return {"type": "tool-output-error", "toolCallId": tool_call_id, "errorText": error_text}


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON values: tools return models, dataclasses, datetimes... and a
    chunk must be JSON. Anything pydantic cannot convert becomes its ``str``."""
    return to_jsonable_python(value, fallback=str)


def reasoning_start(part_id: str) -> dict[str, Any]:
    """A block of reasoning (thinking, or a reasoning summary) begins."""
    return {"type": "reasoning-start", "id": part_id}


def reasoning_delta(part_id: str, delta: str) -> dict[str, Any]:
    """Text of an open reasoning block."""
    return {"type": "reasoning-delta", "id": part_id, "delta": delta}


def reasoning_end(
    part_id: str, provider_metadata: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """A reasoning block ends; ``providerMetadata`` keeps what the provider needs back on the
    next turn (Anthropic's ``signature``)."""
    part: dict[str, Any] = {"type": "reasoning-end", "id": part_id}
    if provider_metadata:
        part["providerMetadata"] = {k: dict(v) for k, v in provider_metadata.items()}
    return part


def count(value: Any) -> int | None:
    """A token count as the provider gave it, or ``None`` when it gave none."""
    # bool is an int subclass, and never a count.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage(
    input_tokens: int | None,
    output_tokens: int | None,
    total_tokens: int | None = None,
    *,
    reasoning_tokens: int | None = None,
    cached_input_tokens: int | None = None,
) -> dict[str, Any]:
    """Token counts of the whole answer, under the AI SDK's names."""
    if total_tokens is None and input_tokens is not None and output_tokens is not None:
        total_tokens = input_tokens + output_tokens
    part: dict[str, Any] = {
        "type": "usage",
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "totalTokens": total_tokens,
    }
    if reasoning_tokens is not None:
        part["reasoningTokens"] = reasoning_tokens
    if cached_input_tokens is not None:
        part["cachedInputTokens"] = cached_input_tokens
    return part


def finish(reason: str, raw_reason: str | None) -> dict[str, Any]:
    """The last chunk of an answer: why the model stopped (one of :data:`FINISH_REASONS`)."""
    if reason not in FINISH_REASONS:
        raise ValueError(f"unknown finish reason {reason!r}")
    return {"type": "finish", "finishReason": reason, "rawFinishReason": raw_reason}


async def events_of(stream: Any) -> AsyncIterator[Any]:
    """The events of ``stream``: an async iterable, or a stream manager (``messages.stream(...)``,
    ``responses.stream(...)``) that is entered first, so the request is closed on every exit."""
    if not hasattr(stream, "__aiter__") and hasattr(stream, "__aenter__"):
        async with stream as entered:
            async for event in entered:
                yield event
        return
    if not hasattr(stream, "__aiter__"):
        raise TypeError(
            f"expected an async stream of SDK events, got {type(stream).__name__}: pass the "
            "result of an async client (AsyncOpenAI, AsyncAnthropic) called with stream=True"
        )
    iterable: AsyncIterable[Any] = stream
    try:
        async for event in iterable:
            yield event
    finally:
        # The SDKs' streams hold an HTTP response open until read to the end or closed; a
        # cancel in the middle must release it now, not when the garbage collector runs.
        close = getattr(stream, "close", None) or getattr(stream, "aclose", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result
