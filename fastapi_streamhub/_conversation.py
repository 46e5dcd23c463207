"""Following a session across its generations: a chat's turns, one after another.

:func:`follow_conversation` yields the items of one generation after another, each framed by
:class:`GenerationStart` and :class:`GenerationEnd` (instead of the one terminal ``End``), until
the caller stops or the session is deleted. Cursors work across turns:

- none: the current generation from its start;
- one of the current generation: resume after it; the cursor of a finished generation's end
  marker (``GenerationEnd.offset``: one past its last chunk) waits for the next generation;
- one of an earlier generation: the current generation from its start. The store keeps one
  generation per session (a claim replaces the log), so an earlier turn's tail the client
  had not read, if any, is gone: the ``GenerationStart`` says a new generation begins.

A new generation is noticed when its first chunk or metadata is published (claims publish
nothing), through the live bus: the follower waits without polling.

``chunks=False`` (``?follow=turns``) yields only the markers: a :class:`GenerationStart` (with
the generation's turn) and its :class:`GenerationEnd`. Its subscription starts at the
generation's last stored chunk (replayed, then dropped: its arrival announces the generation
at once), so nothing else is replayed; live chunks reach it once per process (decoded once for
every local subscriber) and are dropped, which keeps the end cursor exact and the lease watch
of a plain subscriber.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import anyio

from ._codec import DeletedMsg, HubClosingMsg, Message
from ._errors import SessionNotFound, StreamClosed
from ._hub import StreamHub
from ._subscriber import Subscription
from ._types import (
    Batch,
    Chunk,
    Cursor,
    End,
    GenerationEnd,
    GenerationStart,
    Item,
    SessionInfo,
)

__all__ = ["ConversationItem", "follow_conversation"]


ConversationItem = Item | GenerationStart | GenerationEnd


async def follow_conversation(
    hub: StreamHub,
    session_id: str,
    after: Cursor | None = None,
    *,
    opened: anyio.Event | None = None,
    chunks: bool = True,
) -> AsyncGenerator[ConversationItem, None]:
    """Items of ``session_id``'s generations in turn, from ``after``; see the module doc.

    Raises SessionNotFound at once for an unknown session (before ``opened`` is set), and
    when it is deleted later; StreamClosed when the hub shuts down.
    """
    info = await hub.status(session_id)
    if info is None:
        raise SessionNotFound(f"session {session_id!r} not found")
    if opened is not None:
        opened.set()
    start: Cursor | None = None
    announce = True
    ended: int | None = None  # a generation whose end the client has seen
    if after is not None and after.generation >= info.generation:
        announce = False
        at_end = after.generation == info.generation and after.offset > info.chunks
        if info.state.finished and at_end:
            ended = info.generation
        start = after
    while True:
        if ended is None:
            if (
                not chunks
                and info.chunks
                and (start is None or start.generation == info.generation)
            ):
                # Markers only: replay nothing but the last stored chunk, whose arrival says
                # the subscription is open (its generation known) so the start can be sent.
                start = Cursor(info.generation, info.chunks - (1 if announce else 0))
            subscription = hub.subscribe(session_id, after=start, batch=True)
            last = start.offset if start is not None else 0
            async with subscription:
                async for item in subscription:
                    if subscription.generation != info.generation:
                        info = await _status(hub, session_id)
                    if announce:
                        announce = False
                        yield GenerationStart(subscription.generation, _turn(info, subscription))
                    if isinstance(item, End):
                        yield GenerationEnd(subscription.generation, last + 1, item)
                        break
                    if isinstance(item, Chunk | Batch):
                        last = item.cursor.offset
                    if chunks:
                        yield item
            ended = subscription.generation
        info = await _next_generation(hub, session_id, ended)
        start, announce, ended = None, True, None


def _turn(info: SessionInfo, subscription: Subscription) -> str | None:
    """The turn of the subscription's generation, when ``info`` describes it."""
    return info.turn if info.generation == subscription.generation else None


async def _status(hub: StreamHub, session_id: str) -> SessionInfo:
    info = await hub.status(session_id)
    if info is None:
        raise SessionNotFound(f"session {session_id!r} not found")
    return info


async def _next_generation(hub: StreamHub, session_id: str, beyond: int) -> SessionInfo:
    """Wait until the session has a generation newer than ``beyond``; its record."""
    # A subscription the hub knows of, never iterated: the hub's shutdown reaches its listener.
    waiter = hub.subscribe(session_id)
    try:
        async with hub.backend.listen(session_id, waiter.listener):
            while True:
                # Read after listening: a generation that started meanwhile is not missed.
                info = await _status(hub, session_id)
                if info.generation > beyond:
                    return info
                msg: Message | None = await waiter.listener.get()
                while msg is not None:
                    if isinstance(msg, HubClosingMsg):
                        raise StreamClosed("the StreamHub is shutting down")
                    if isinstance(msg, DeletedMsg):
                        raise SessionNotFound(f"session {session_id!r} was deleted")
                    msg = waiter.listener.get_nowait()
    finally:
        await waiter.aclose()
