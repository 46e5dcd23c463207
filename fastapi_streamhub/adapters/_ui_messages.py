"""Pre-encoded AI SDK UI message streams (pydantic-ai's ``VercelAIAdapter``, ai-python's
``to_sse``, any server that speaks the protocol) as streamhub chunks, parsed exactly once."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from ._chunks import FINISH_REASONS, UpstreamError, finish

__all__ = ["ui_message_stream"]

# Parts the hub's own ``protocol="ai-sdk"`` writes itself around every generation, or that
# only frame a run of text: dropped (their text goes as text chunks, see below).
_FRAMING = frozenset({"start", "text-start", "text-end"})


async def ui_message_stream(stream: Any) -> AsyncIterator[Any]:
    """The parts of an AI SDK UI message stream as chunks.

    ``stream`` yields the stream's SSE text (``str`` or ``bytes``, split anywhere: what
    ``VercelAIAdapter.encode_stream(...)`` or ai-python's ``to_sse`` produce) or its parts
    already decoded (dicts, or pydantic models such as ``VercelAIAdapter.run_stream()``'s).
    Each part becomes one chunk, so nothing is stored encoded and nothing is encoded twice:

    - ``text-delta`` becomes a text chunk (its ``delta``); ``start``, ``text-start`` and
      ``text-end`` are dropped (``protocol="ai-sdk"`` writes its own around every generation);
    - ``finish`` becomes the adapters' ``finish`` chunk (its ``finishReason``, else ``stop``);
      ``error`` and ``abort`` raise :class:`UpstreamError` (the generation ends ``failed``);
      ``[DONE]`` ends the stream;
    - every other part (``tool-*``, ``reasoning-*``, ``start-step``, ``finish-step``,
      ``message-metadata``, ``data-*``, ``source-*``, ``file``) is a JSON chunk as it came.
    """
    lines = _Lines()
    # Bytes may split a character: decoded incrementally.
    decoder = codecs.getincrementaldecoder("utf-8")()
    async for item in stream:
        if isinstance(item, (str, bytes)):
            parts = lines.feed(decoder.decode(item) if isinstance(item, bytes) else item)
        else:
            parts = [_as_part(item)]
        for part in parts:
            if part is None:  # [DONE]
                return
            for chunk in _chunks_of(part):
                yield chunk
    for part in lines.feed(decoder.decode(b"", final=True) + "\n\n"):  # an unterminated event
        if part is None:
            return
        for chunk in _chunks_of(part):
            yield chunk


def _chunks_of(part: dict[str, Any]) -> list[Any]:
    kind = part.get("type")
    if kind == "text-delta":
        delta = part.get("delta")
        return [delta] if isinstance(delta, str) and delta else []
    if kind in _FRAMING:
        return []
    if kind == "finish":
        reason = part.get("finishReason")
        return [finish(reason if reason in FINISH_REASONS else "stop", None)]
    if kind == "error":
        raise UpstreamError(str(part.get("errorText") or "the stream reported an error"))
    if kind == "abort":
        raise UpstreamError(f"the stream was aborted: {part.get('reason') or 'no reason given'}")
    return [part]


def _as_part(item: Any) -> dict[str, Any]:
    if hasattr(item, "model_dump"):  # pydantic-ai's chunk models
        item = item.model_dump(mode="json", by_alias=True, exclude_none=True)
    if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
        raise TypeError(
            "ui_message_stream takes SSE text or UI message parts (objects with a string "
            f"'type'), got {type(item).__name__}"
        )
    return dict(item)


class _Lines:
    """The ``data:`` of each event of an SSE text fed in pieces (comments and other fields are
    ignored, as a browser does), each parsed as one part; None for ``[DONE]``."""

    def __init__(self) -> None:
        self._rest = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = []
        text = self._rest + text
        # A CR at the end of a piece may be half of a CRLF: it waits for the next piece.
        held = "\r" if text.endswith("\r") else ""
        text = text[: len(text) - len(held)].replace("\r\n", "\n").replace("\r", "\n")
        *lines, rest = text.split("\n")
        self._rest = rest + held
        for line in lines:
            if line:
                if line.startswith("data:"):
                    value = line[5:]
                    self._data.append(value[1:] if value.startswith(" ") else value)
                continue
            if not self._data:
                continue
            data, self._data = "\n".join(self._data), []
            if data == "[DONE]":
                out.append(None)
                continue
            try:
                part = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise UpstreamError(
                    f"an event of the UI message stream is not JSON: {exc}"
                ) from exc
            out.append(_as_part(part))
        return out
