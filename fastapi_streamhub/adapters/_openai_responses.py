"""``openai_responses``: the typed events of the OpenAI Responses API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ._chunks import (
    UpstreamError,
    count,
    events_of,
    finish,
    reasoning_delta,
    reasoning_end,
    reasoning_start,
    tool_input_available,
    tool_input_delta,
    tool_input_start,
    usage,
)

__all__ = ["openai_responses"]

_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content-filter"}


def _usage(raw: Any) -> dict[str, Any]:
    return usage(
        count(getattr(raw, "input_tokens", None)),
        count(getattr(raw, "output_tokens", None)),
        count(getattr(raw, "total_tokens", None)),
        reasoning_tokens=count(
            getattr(getattr(raw, "output_tokens_details", None), "reasoning_tokens", None)
        ),
        cached_input_tokens=count(
            getattr(getattr(raw, "input_tokens_details", None), "cached_tokens", None)
        ),
    )


async def openai_responses(stream: Any) -> AsyncIterator[str | dict[str, Any]]:
    """Chunks of ``await AsyncOpenAI().responses.create(..., stream=True)`` or of
    ``AsyncOpenAI().responses.stream(...)`` (the manager itself, or the stream it yields).

    ``response.output_text.delta`` becomes ``str`` chunks; a ``function_call`` output item gives
    ``tool-input-start`` (its ``call_id`` is the tool call id), a ``tool-input-delta`` per
    ``response.function_call_arguments.delta`` and ``tool-input-available`` when the item is
    done; each reasoning summary part is a reasoning block (``reasoning-start`` / ``-delta`` /
    ``-end``, with ``providerMetadata.openai.itemId``). ``response.completed`` and
    ``response.incomplete`` give ``usage`` and ``finish``; ``response.failed`` and ``error``
    raise :class:`UpstreamError`.
    """
    call_ids: dict[str, str] = {}  # output item id -> call_id
    open_summaries: dict[tuple[str, int], str] = {}
    called_tools = False
    async for event in events_of(stream):
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            if event.delta:
                yield event.delta
        elif kind == "response.output_item.added" and event.item.type == "function_call":
            call_ids[event.item.id] = event.item.call_id
            yield tool_input_start(event.item.call_id, event.item.name)
        elif kind == "response.function_call_arguments.delta":
            call_id = call_ids.get(event.item_id)
            if call_id is not None and event.delta:
                yield tool_input_delta(call_id, event.delta)
        elif kind == "response.output_item.done" and event.item.type == "function_call":
            called_tools = True
            call_ids.pop(event.item.id, None)
            yield tool_input_available(event.item.call_id, event.item.name, event.item.arguments)
        elif kind == "response.reasoning_summary_text.delta":
            key = (event.item_id, event.summary_index)
            part_id = open_summaries.get(key)
            if part_id is None:
                part_id = open_summaries[key] = f"{event.item_id}:{event.summary_index}"
                yield reasoning_start(part_id)
            if event.delta:
                yield reasoning_delta(part_id, event.delta)
        elif kind == "response.reasoning_summary_text.done":
            part_id = open_summaries.pop((event.item_id, event.summary_index), None)
            if part_id is not None:
                yield reasoning_end(part_id, {"openai": {"itemId": event.item_id}})
        elif kind in ("response.completed", "response.incomplete"):
            response = event.response
            if getattr(response, "usage", None) is not None:
                yield _usage(response.usage)
            if kind == "response.completed":
                raw = "completed"
                reason = "tool-calls" if called_tools else "stop"
            else:
                details = getattr(response, "incomplete_details", None)
                raw = getattr(details, "reason", None) or "incomplete"
                reason = _INCOMPLETE.get(raw, "other")
            yield finish(reason, raw)
            return
        elif kind == "response.failed":
            error = getattr(event.response, "error", None)
            code = getattr(error, "code", None)
            message = getattr(error, "message", None) or "no message"
            raise UpstreamError(f"the response failed ({code}): {message}")
        elif kind == "error":
            message = getattr(event, "message", None) or "no message"
            raise UpstreamError(f"the Responses stream reported an error: {message}")
    raise UpstreamError("the Responses stream ended before response.completed")
