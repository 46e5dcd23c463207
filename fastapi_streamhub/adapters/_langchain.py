"""``langgraph_messages`` and ``langchain_events``: LangGraph / LangChain message chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._chunks import (
    count,
    events_of,
    finish,
    reasoning_delta,
    reasoning_end,
    reasoning_start,
    tool_input_parsed,
    tool_input_start,
    tool_output_available,
    tool_output_error,
    usage,
)
from ._tools import ToolCalls

__all__ = ["langchain_events", "langgraph_messages"]

# OpenAI's finish_reason and Anthropic's stop_reason, as the chat model integrations report them
# in response_metadata.
_FINISH = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "tool_calls": "tool-calls",
    "tool_use": "tool-calls",
    "content_filter": "content-filter",
    "refusal": "content-filter",
}


@dataclass
class _Run:
    """What the chunks of every model call of one run add up to."""

    calls: ToolCalls = field(default_factory=ToolCalls)
    reasoning: str | None = None  # the id of the open reasoning block
    reasonings: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    raw_reason: str | None = None

    def message(self, message: Any) -> Iterator[str | dict[str, Any]]:
        kind = getattr(message, "type", None)
        if kind == "AIMessageChunk":
            yield from self._ai_chunk(message)
        elif kind == "ai":
            yield from self._ai_message(message)
        elif kind == "tool":
            yield from self.tool_result(message)

    def tool_result(self, message: Any) -> Iterator[str | dict[str, Any]]:
        """A ToolMessage: the tool ran, so every call before it is complete."""
        yield from self.flush(None)
        if getattr(message, "status", "success") == "error":
            yield tool_output_error(message.tool_call_id, str(message.content))
        else:
            yield tool_output_available(message.tool_call_id, message.content)

    def _ai_chunk(self, chunk: Any) -> Iterator[str | dict[str, Any]]:
        message_id = str(getattr(chunk, "id", None) or "")
        thoughts, texts = _split_content(chunk)
        for thought in thoughts:
            if self.reasoning is None:
                self.reasoning = f"reasoning-{self.reasonings}"
                self.reasonings += 1
                yield reasoning_start(self.reasoning)
            yield reasoning_delta(self.reasoning, thought)
        fragments = getattr(chunk, "tool_call_chunks", None) or ()
        if self.reasoning is not None and (texts or fragments):
            yield reasoning_end(self.reasoning)
            self.reasoning = None
        yield from texts
        for fragment in fragments:
            yield from self._fragment(message_id, fragment)
        self._count(getattr(chunk, "usage_metadata", None))
        metadata = getattr(chunk, "response_metadata", None) or {}
        reason = metadata.get("finish_reason") or metadata.get("stop_reason")
        if reason:
            self.raw_reason = str(reason)
        if reason or getattr(chunk, "chunk_position", None) == "last":
            yield from self.flush(message_id)

    def _ai_message(self, message: Any) -> Iterator[str | dict[str, Any]]:
        """A whole AIMessage (a node that did not stream its model call)."""
        thoughts, texts = _split_content(message)
        if thoughts:
            part_id = f"reasoning-{self.reasonings}"
            self.reasonings += 1
            yield reasoning_start(part_id)
            yield reasoning_delta(part_id, "".join(thoughts))
            yield reasoning_end(part_id)
        yield from texts
        for call in getattr(message, "tool_calls", None) or ():
            yield tool_input_start(call["id"], call["name"])
            yield tool_input_parsed(call["id"], call["name"], call["args"])
        self._count(getattr(message, "usage_metadata", None))
        metadata = getattr(message, "response_metadata", None) or {}
        reason = metadata.get("finish_reason") or metadata.get("stop_reason")
        self.raw_reason = str(reason) if reason else self.raw_reason

    def _fragment(self, message_id: str, fragment: Any) -> list[dict[str, Any]]:
        index = fragment.get("index")
        key = (message_id, index if isinstance(index, int) else len(self.calls))
        return self.calls.fragment(
            key, fragment.get("id"), fragment.get("name"), fragment.get("args")
        )

    def flush(self, message_id: str | None) -> Iterator[str | dict[str, Any]]:
        """Close the open reasoning block and the tool calls of ``message_id`` (all: ``None``)."""
        if self.reasoning is not None:
            yield reasoning_end(self.reasoning)
            self.reasoning = None
        yield from self.calls.finish(lambda key: message_id is None or key[0] == message_id)

    def finish(self) -> Iterator[str | dict[str, Any]]:
        yield from self.flush(None)
        if self.tokens:
            yield usage(
                self.tokens.get("input_tokens"),
                self.tokens.get("output_tokens"),
                self.tokens.get("total_tokens"),
                reasoning_tokens=self.tokens.get("reasoning"),
                cached_input_tokens=self.tokens.get("cache_read"),
            )
        reason = "other" if self.raw_reason is None else _FINISH.get(self.raw_reason, "other")
        yield finish(reason, self.raw_reason)

    def _count(self, reported: Any) -> None:
        # Each chunk carries its own share (LangChain adds them up the same way).
        if not reported:
            return
        counts = {k: reported.get(k) for k in ("input_tokens", "output_tokens", "total_tokens")}
        counts["reasoning"] = (reported.get("output_token_details") or {}).get("reasoning")
        counts["cache_read"] = (reported.get("input_token_details") or {}).get("cache_read")
        for key, value in counts.items():
            number = count(value)
            if number is not None:
                self.tokens[key] = self.tokens.get(key, 0) + number


def _split_content(message: Any) -> tuple[list[str], list[str]]:
    """(reasoning texts, answer texts) of a message: ``content`` is a string or a list of
    blocks (Anthropic's ``thinking``, the standard ``reasoning``), and some integrations put
    reasoning in ``additional_kwargs["reasoning_content"]``."""
    thoughts: list[str] = []
    texts: list[str] = []
    extra = (getattr(message, "additional_kwargs", None) or {}).get("reasoning_content")
    if isinstance(extra, str) and extra:
        thoughts.append(extra)
    content = getattr(message, "content", "")
    if isinstance(content, str):
        if content:
            texts.append(content)
        return thoughts, texts
    for block in content or ():
        if isinstance(block, str):
            texts.append(block)
        elif block.get("type") == "text" and block.get("text"):
            texts.append(block["text"])
        elif block.get("type") == "thinking" and block.get("thinking"):
            thoughts.append(block["thinking"])
        elif block.get("type") == "reasoning" and block.get("reasoning"):
            thoughts.append(block["reasoning"])
    return thoughts, texts


async def langgraph_messages(stream: Any) -> AsyncIterator[str | dict[str, Any]]:
    """Chunks of ``graph.astream(..., stream_mode="messages")`` (LangGraph), or of LangChain's
    ``model.astream(...)``.

    Every model call of every node adds to one answer: text as ``str`` chunks, reasoning
    (``reasoning_content``, ``thinking`` / ``reasoning`` content blocks) as reasoning blocks,
    ``tool_call_chunks`` assembled by message and index into ``tool-input-start`` / ``-delta``
    / ``-available``, and each ``ToolMessage`` a tool node sends back as
    ``tool-output-available`` (``tool-output-error`` when its status is ``error``). ``usage``
    adds up every call's ``usage_metadata``; ``finish`` has the last call's reason.
    """
    run = _Run()
    async for item in events_of(stream):
        # stream_mode="messages" yields (message, metadata); a model's own astream, chunks;
        # version="v2" stream parts are dicts holding the pair under "data".
        if isinstance(item, dict) and "data" in item:
            item = item["data"]
        message = item[0] if isinstance(item, tuple) else item
        for chunk in run.message(message):
            yield chunk
    for chunk in run.finish():
        yield chunk


async def langchain_events(stream: Any) -> AsyncIterator[str | dict[str, Any]]:
    """Chunks of ``runnable.astream_events(..., version="v2")`` (LangChain, LangGraph).

    ``on_chat_model_stream`` chunks and ``on_tool_end`` outputs are read as
    :func:`langgraph_messages` reads messages; ``on_chat_model_end`` closes that call's tool
    calls. Other events (chains, retrievers, custom events) are left out.
    """
    run = _Run()
    async for event in events_of(stream):
        name = event.get("event")
        data = event.get("data") or {}
        if name == "on_chat_model_stream":
            for chunk in run.message(data["chunk"]):
                yield chunk
        elif name == "on_chat_model_end":
            output = data.get("output")
            for chunk in run.flush(str(getattr(output, "id", None) or "") or None):
                yield chunk
        elif name == "on_tool_end" and getattr(data.get("output"), "type", None) == "tool":
            for chunk in run.tool_result(data["output"]):
                yield chunk
    for chunk in run.finish():
        yield chunk
