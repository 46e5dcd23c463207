"""``GET /{sid}?follow=conversation|turns``: one SSE response that follows a session's generations.

The engine side is ``_conversation.py``; this module encodes its items (``sse.py``'s events,
with ``generation`` and ``generation-end`` framing each generation instead of one terminal
``end``) and feeds them to the response's writer. The response lasts until the client leaves,
the session is deleted (``end`` with ``failed``, as for a plain follower), or the hub shuts down
(the response just ends; the client reconnects with its cursor). ``turns`` sends the
``generation`` and ``generation-end`` events only, no chunk nor metadata.
"""

from __future__ import annotations

import logging

import anyio

from .._conversation import ConversationItem, follow_conversation
from .._errors import BackendUnavailable, SessionNotFound, StreamClosed, StreamHubError
from .._hub import StreamHub
from .._outflow import OutBuffer
from .._types import Cursor, GenerationEnd, GenerationStart, State
from .sse import encode_end, encode_generation, encode_generation_end, encode_item

__all__ = ["encode_conversation_item", "feed_conversation"]

log = logging.getLogger("fastapi_streamhub")


def encode_conversation_item(item: ConversationItem) -> bytes:
    """The SSE bytes of one conversation item."""
    if isinstance(item, GenerationStart):
        return encode_generation(item.generation, item.turn)
    if isinstance(item, GenerationEnd):
        return encode_generation_end(item.generation, item.offset, item.end.state, item.end.reason)
    return encode_item(item)


async def feed_conversation(
    hub: StreamHub,
    session_id: str,
    cursor: Cursor | None,
    ready: anyio.Event,
    failed: list[StreamHubError],
    out: OutBuffer,
    chunks: bool = True,
) -> None:
    """Queue the encoded conversation in ``out`` (the markers only unless ``chunks``);
    ``ready`` once the session is found."""
    try:
        items = follow_conversation(hub, session_id, cursor, opened=ready, chunks=chunks)
        try:
            async for item in items:
                data = encode_conversation_item(item)
                if not out.put(data):
                    await out.put_wait(data)
        finally:
            await items.aclose()
    except StreamHubError as exc:
        if not ready.is_set() and isinstance(exc, SessionNotFound):
            failed.append(exc)  # before any header: a plain 404
            return
        if isinstance(exc, SessionNotFound):
            await out.put_wait(encode_end(State.FAILED, "session not found"))
        elif isinstance(exc, BackendUnavailable):
            log.warning("conversation of %r interrupted: %s", session_id, exc)
        elif not isinstance(exc, StreamClosed):
            raise
    finally:
        out.end()
        ready.set()
