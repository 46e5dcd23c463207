"""``pydantic_ai_events``: the events of pydantic-ai's ``Agent.run_stream_events()``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from ._chunks import (
    count,
    events_of,
    finish,
    jsonable,
    reasoning_delta,
    reasoning_end,
    reasoning_start,
    tool_input_available,
    tool_input_delta,
    tool_input_start,
    tool_output_available,
    tool_output_error,
    usage,
)

__all__ = ["pydantic_ai_events"]

_FINISH = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_call": "tool-calls",
    "error": "error",
}


@dataclass
class _Part:
    kind: str  # "thinking" or "tool-call"
    id: str
    name: str = ""
    signature: str | None = None
    provider: str | None = None
    args: list[str] = field(default_factory=list)


def _args_text(args: Any) -> str:
    if args is None:
        return ""
    return args if isinstance(args, str) else orjson.dumps(jsonable(args)).decode()


async def pydantic_ai_events(stream: Any) -> AsyncIterator[str | dict[str, Any]]:
    """Chunks of ``agent.run_stream_events(...)`` (pydantic-ai).

    Text parts become ``str`` chunks; a thinking part a reasoning block (its signature, when
    the model gave one, in ``providerMetadata.<provider>.signature``); a tool call
    ``tool-input-start`` / ``-delta`` / ``-available``, and the result of a tool the agent ran
    ``tool-output-available`` (or ``tool-output-error`` for a retry prompt). The last model
    response's finish reason and the run's usage come from ``AgentRunResultEvent``. Parts are
    followed by index within each model response, over every step of the run; the events of a
    response that a retry or a fallback model superseded are dropped from then on.
    """
    parts: dict[Any, _Part] = {}
    latest: dict[tuple[str, int], Any] = {}  # (run_id, run_step) -> the newest origin seen
    reasonings = 0
    raw_reason: str | None = None
    async for event in events_of(stream):
        kind = getattr(event, "event_kind", None)
        if kind in ("part_start", "part_delta", "part_end"):
            key = _key(event, latest)
            if key is None:
                continue
        if kind == "part_start":
            part = event.part
            if part.part_kind == "text":
                if part.content:
                    yield part.content
            elif part.part_kind == "thinking":
                parts[key] = _Part(
                    "thinking",
                    f"reasoning-{reasonings}",
                    signature=part.signature,
                    provider=part.provider_name,
                )
                reasonings += 1
                yield reasoning_start(parts[key].id)
                if part.content:
                    yield reasoning_delta(parts[key].id, part.content)
            elif part.part_kind == "tool-call":
                text = _args_text(part.args)
                parts[key] = _Part("tool-call", part.tool_call_id, part.tool_name)
                yield tool_input_start(part.tool_call_id, part.tool_name)
                if text:
                    parts[key].args.append(text)
                    yield tool_input_delta(part.tool_call_id, text)
        elif kind == "part_delta":
            for piece in _delta(parts.get(key), event.delta):
                yield piece
        elif kind == "part_end":
            open_part = parts.pop(key, None)
            if open_part is not None:
                yield _end(open_part, event.part)
        elif kind == "function_tool_result":
            result = event.part
            if result.part_kind == "retry-prompt":
                yield tool_output_error(result.tool_call_id, result.model_response())
            else:
                yield tool_output_available(result.tool_call_id, result.content)
        elif kind == "agent_run_result":
            response = getattr(event.result, "response", None)
            raw_reason = getattr(response, "finish_reason", None) or raw_reason
            run_usage = event.result.usage
            yield usage(
                count(run_usage.input_tokens),
                count(run_usage.output_tokens),
                reasoning_tokens=count(getattr(run_usage, "output_reasoning_tokens", None)),
                cached_input_tokens=count(run_usage.cache_read_tokens),
            )
    reason = "other" if raw_reason is None else _FINISH.get(raw_reason, "other")
    yield finish(reason, raw_reason)


def _key(event: Any, latest: dict[tuple[str, int], Any]) -> Any:
    """Where a part event's state lives, or ``None`` to drop it: one request step can stream
    more than one response (a fallback model, a retry), and the parts of a response that a
    later one superseded must not mix with the new ones. (What such a response already sent
    stays in the stream: chunks are never taken back.)"""
    origin = getattr(event, "origin", None)
    if origin is None:
        return event.index
    step = (origin.run_id, origin.run_step)
    newest = latest.get(step)
    if newest is not None and newest is not origin and newest.supersedes(origin):
        return None
    if newest is None or origin.supersedes(newest):
        latest[step] = origin
    return (origin.run_id, origin.run_step, origin.attempt, event.index)


def _delta(part: _Part | None, delta: Any) -> list[str | dict[str, Any]]:
    kind = getattr(delta, "part_delta_kind", None)
    if kind == "text":
        return [delta.content_delta] if delta.content_delta else []
    if part is None:
        return []
    if kind == "thinking":
        if delta.signature_delta:
            part.signature = (part.signature or "") + delta.signature_delta
        part.provider = delta.provider_name or part.provider
        return [reasoning_delta(part.id, delta.content_delta)] if delta.content_delta else []
    if kind == "tool_call":
        text = _args_text(delta.args_delta)
        if text:
            part.args.append(text)
            return [tool_input_delta(part.id, text)]
    return []


def _end(part: _Part, final: Any) -> dict[str, Any]:
    if part.kind == "thinking":
        signature = getattr(final, "signature", None) or part.signature
        provider = getattr(final, "provider_name", None) or part.provider or "unknown"
        meta = {provider: {"signature": signature}} if signature else None
        return reasoning_end(part.id, meta)
    # The final part holds the whole input; the fragments are only what was streamed.
    return tool_input_available(part.id, part.name, _args_text(final.args))
