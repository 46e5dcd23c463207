"""The Vercel AI SDK's UI message stream protocol (v1): a session's items as the SDK's parts.

Pure, like ``sse.py``: :class:`UIMessageStreamEncoder` turns subscription items into the bytes
of one ``text/event-stream`` that the ``ai`` package's ``DefaultChatTransport`` reads. Every
event is a single ``data:`` line holding one JSON part (the SDK ignores event names and ids, so
none are sent), and the stream ends with ``data: [DONE]``.

Mapping, in the order the parts go out:

- the first item: ``{"type": "start", "messageId": "<session id>-<generation>"}``: the id is
  the same on every replay of one generation, so a resumed message replaces the partial one;
- a text chunk: ``text-delta`` (``text-start`` before the first delta of a run of text, with
  the id ``text-<n>``);
- a JSON chunk that is an object with a string ``type``: passed through as a part of its own
  (``data-*``, ``reasoning-*``, ``tool-*``, ``source-url``, ...); any other JSON chunk:
  ``{"type": "data-json", "data": <value>}``; a chunk sent under an event name ``name``:
  ``{"type": "data-<name>", "data": <data>}``. Each of these first closes the open text run
  (``text-end``), so text and other parts keep their order in the message;
- the two chunk types of ``fastapi_streamhub.adapters`` the SDK has no part for: ``usage``
  becomes ``{"type": "message-metadata", "messageMetadata": {"usage": <counts>}}`` (the SDK
  merges it into the message's metadata), and ``finish`` sends nothing by itself: its
  ``finishReason`` goes on the ``finish`` part that ends a ``done`` generation (a second
  ``finish`` part in the middle of a message would end it early);
- metadata: ``{"type": "message-metadata", "messageMetadata": <value>}``;
- the end: ``text-end`` if a text run is open, then ``finish`` (``done``; ``finishReason`` is
  the last ``finish`` chunk's, else ``stop``), ``abort`` with the
  reason (``cancelled``) or ``error`` with the reason as ``errorText`` (``failed``), then
  ``[DONE]``;
- a reset (the session restarted while this client followed it, or stored data was lost):
  ``error`` and ``[DONE]``: the SDK has no way to take back parts it has shown, and a silent
  mix of two answers is worse than an error the app can react to (by resuming again).

The SDK rebuilds the whole message from the ``start`` part on a resume (its transport's
``resumeStreamIsReplay``), so this protocol always streams a generation from its beginning and
ignores ``Last-Event-ID``.
"""

from __future__ import annotations

from typing import Any

import orjson

from .._types import Batch, Chunk, End, Metadata, Reset, State

__all__ = ["DONE", "UI_MESSAGE_STREAM_HEADERS", "UIMessageStreamEncoder", "encode_part"]

# The header the SDK's own server helpers send; clients may use it to tell the protocol apart.
UI_MESSAGE_STREAM_HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
DONE: bytes = b"data: [DONE]\n\n"
# The SDK's finish reasons (its schema refuses any other on a finish part).
_FINISH_REASONS = frozenset({"stop", "length", "content-filter", "tool-calls", "error", "other"})


def encode_part(part: dict[str, Any]) -> bytes:
    """One UI message part as an SSE event: a single ``data:`` line of JSON."""
    # orjson escapes every control character, so the JSON always fits on one line.
    return b"data: " + orjson.dumps(part) + b"\n\n"


class UIMessageStreamEncoder:
    """Encodes the items of one subscription as UI message stream parts (see the module doc).

    Stateful: it remembers whether ``start`` went out and which text run is open. One encoder
    per response.
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.started = False
        self.finished = False
        self._text_runs = 0
        self._text_open = False
        self._finish_reason = "stop"

    def encode(self, item: Chunk | Batch | Metadata | Reset | End, generation: int) -> bytes:
        """The parts for ``item``; ``generation`` names the message in ``start``."""
        parts: list[dict[str, Any]] = []
        self._start(parts, generation)
        if isinstance(item, Chunk):
            self._chunk(item, parts)
        elif isinstance(item, Batch):
            for chunk in item.chunks:
                self._chunk(chunk, parts)
        elif isinstance(item, Metadata):
            parts.append({"type": "message-metadata", "messageMetadata": item.value})
        elif isinstance(item, Reset):
            reason = f"the stream was reset ({item.reason}); resume it to read the current answer"
            return self._encode(parts) + self.interrupted(reason, generation)
        elif isinstance(item, End):
            self._close_text(parts)
            if item.state is State.DONE:
                parts.append({"type": "finish", "finishReason": self._finish_reason})
            elif item.state is State.CANCELLED:
                parts.append({"type": "abort", "reason": item.reason or "cancelled"})
            else:
                parts.append({"type": "error", "errorText": item.reason or "the stream failed"})
            self.finished = True
            return self._encode(parts) + DONE
        else:
            raise TypeError(f"cannot encode a {type(item).__name__} as a UI message part")
        return self._encode(parts)

    def interrupted(self, reason: str, generation: int) -> bytes:
        """``error`` and ``[DONE]``: the response ends before the session does."""
        parts: list[dict[str, Any]] = []
        self._start(parts, generation)
        self._close_text(parts)
        parts.append({"type": "error", "errorText": reason})
        self.finished = True
        return self._encode(parts) + DONE

    def _chunk(self, chunk: Chunk, parts: list[dict[str, Any]]) -> None:
        if chunk.event is None and chunk.kind == "text":
            if not self._text_open:
                self._text_open = True
                self._text_runs += 1
                parts.append({"type": "text-start", "id": self._text_id})
            parts.append({"type": "text-delta", "id": self._text_id, "delta": chunk.data})
            return
        data = chunk.data
        if chunk.event is None and isinstance(data, dict):
            kind = data.get("type")
            if kind == "finish":
                if data.get("finishReason") in _FINISH_REASONS:
                    self._finish_reason = data["finishReason"]
                return
            if kind == "usage":
                counts = {k: v for k, v in data.items() if k != "type"}
                parts.append({"type": "message-metadata", "messageMetadata": {"usage": counts}})
                return
        self._close_text(parts)
        if chunk.event is not None:
            parts.append({"type": f"data-{chunk.event}", "data": data})
        elif isinstance(data, dict) and isinstance(data.get("type"), str):
            parts.append(data)
        else:
            parts.append({"type": "data-json", "data": data})

    def _start(self, parts: list[dict[str, Any]], generation: int) -> None:
        if not self.started:
            self.started = True
            parts.append({"type": "start", "messageId": f"{self.session_id}-{generation}"})

    @property
    def _text_id(self) -> str:
        return f"text-{self._text_runs}"

    def _close_text(self, parts: list[dict[str, Any]]) -> None:
        if self._text_open:
            self._text_open = False
            parts.append({"type": "text-end", "id": self._text_id})

    @staticmethod
    def _encode(parts: list[dict[str, Any]]) -> bytes:
        return b"".join(encode_part(p) for p in parts)
