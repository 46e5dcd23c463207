"""``anthropic_messages``: Anthropic Messages stream events, content blocks by index."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
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

__all__ = ["anthropic_messages"]

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool-calls",
    "refusal": "content-filter",
}
_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


@dataclass
class _Block:
    kind: str
    id: str
    name: str = ""
    parts: list[str] = field(default_factory=list)
    signature: str | None = None


async def anthropic_messages(stream: Any) -> AsyncIterator[str | dict[str, Any]]:
    """Chunks of ``AsyncAnthropic().messages.stream(...)`` (the manager itself, or the stream
    it yields) or of ``await AsyncAnthropic().messages.create(..., stream=True)``.

    Content blocks are followed by index: ``text`` deltas become ``str`` chunks; a ``tool_use``
    block gives ``tool-input-start``, a ``tool-input-delta`` per ``input_json_delta`` and
    ``tool-input-available`` at its end; a ``thinking`` block gives ``reasoning-start`` /
    ``-delta`` / ``-end``, the end carrying the block's signature as
    ``providerMetadata.anthropic.signature`` (the API wants it back on the next turn); a
    ``redacted_thinking`` block gives an empty reasoning block whose end carries
    ``providerMetadata.anthropic.redactedData``. Then ``usage`` and ``finish``. An ``error``
    event raises :class:`UpstreamError`. The helper events of ``messages.stream`` (``text``,
    ``input_json``, ...) repeat the raw ones and are skipped.
    """
    blocks: dict[int, _Block] = {}
    input_tokens: int | None = None
    cached: int | None = None
    output_tokens: int | None = None
    raw_reason: str | None = None
    async for event in events_of(stream):
        kind = getattr(event, "type", None)
        if kind == "message_start":
            raw = getattr(event.message, "usage", None)
            input_tokens = count(getattr(raw, "input_tokens", None))
            cached = count(getattr(raw, "cache_read_input_tokens", None))
            output_tokens = count(getattr(raw, "output_tokens", None))
        elif kind == "content_block_start":
            for part in _start(blocks, event.index, event.content_block):
                yield part
        elif kind == "content_block_delta":
            piece = _delta(blocks.get(event.index), event.delta)
            if piece is not None:
                yield piece
        elif kind == "content_block_stop":
            block = blocks.pop(event.index, None)
            if block is not None:
                end = _stop(block)
                if end is not None:
                    yield end
        elif kind == "message_delta":
            raw_reason = getattr(event.delta, "stop_reason", None) or raw_reason
            raw = getattr(event, "usage", None)
            # message_delta's counts are cumulative and replace message_start's.
            output_tokens = count(getattr(raw, "output_tokens", None)) or output_tokens
            input_tokens = count(getattr(raw, "input_tokens", None)) or input_tokens
        elif kind == "error":
            error = getattr(event, "error", None)
            message = getattr(error, "message", None) or str(error)
            raise UpstreamError(f"the Anthropic stream reported an error: {message}")
    for index in sorted(blocks):
        # A stream cut short still closes what it opened, so no part is left half-open.
        end = _stop(blocks.pop(index))
        if end is not None:
            yield end
    if input_tokens is not None or output_tokens is not None:
        yield usage(input_tokens, output_tokens, cached_input_tokens=cached)
    reason = "other" if raw_reason is None else _FINISH.get(raw_reason, "other")
    yield finish(reason, raw_reason)


def _start(blocks: dict[int, _Block], index: int, block: Any) -> list[str | dict[str, Any]]:
    kind = getattr(block, "type", "")
    if kind == "text":
        blocks[index] = _Block("text", f"text-{index}")
        text = getattr(block, "text", "")
        return [text] if text else []
    if kind in _TOOL_BLOCKS:
        blocks[index] = _Block("tool", block.id, block.name)
        return [tool_input_start(block.id, block.name)]
    if kind == "thinking":
        part_id = f"reasoning-{index}"
        blocks[index] = _Block("thinking", part_id, signature=getattr(block, "signature", None))
        out: list[str | dict[str, Any]] = [reasoning_start(part_id)]
        thinking = getattr(block, "thinking", "")
        if thinking:
            out.append(reasoning_delta(part_id, thinking))
        return out
    if kind == "redacted_thinking":
        part_id = f"reasoning-{index}"
        meta = {"anthropic": {"redactedData": block.data}}
        return [reasoning_start(part_id), reasoning_end(part_id, meta)]
    # Blocks without a chunk type of their own (server tool results, ...) are left out.
    return []


def _delta(block: _Block | None, delta: Any) -> str | dict[str, Any] | None:
    kind = getattr(delta, "type", "")
    if block is None:
        return None
    if kind == "text_delta":
        return str(delta.text) or None
    if kind == "input_json_delta":
        block.parts.append(delta.partial_json)
        return tool_input_delta(block.id, delta.partial_json) if delta.partial_json else None
    if kind == "thinking_delta":
        return reasoning_delta(block.id, delta.thinking) if delta.thinking else None
    if kind == "signature_delta":
        block.signature = delta.signature
    return None


def _stop(block: _Block) -> dict[str, Any] | None:
    if block.kind == "tool":
        return tool_input_available(block.id, block.name, "".join(block.parts))
    if block.kind == "thinking":
        meta = {"anthropic": {"signature": block.signature}} if block.signature else None
        return reasoning_end(block.id, meta)
    return None
