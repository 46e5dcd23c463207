"""Conformance: following a conversation (``_conversation.follow_conversation``) on every backend.

A follower on one hub sees every generation a producer on another hub writes, one after the
other, each framed by ``GenerationStart`` / ``GenerationEnd``, and resumes by cursor across
turns: mid-turn, after a turn's end (it waits for the next), and from an earlier turn. With
``chunks=False`` (``?follow=turns``) it sees only those markers, each generation's start as soon
as it follows, with the generation's turn.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import anyio
import pytest
from support.conformance import HubFactory, start

from fastapi_streamhub import (
    Batch,
    Chunk,
    Cursor,
    End,
    GenerationEnd,
    GenerationStart,
    Metadata,
    SessionNotFound,
    State,
)
from fastapi_streamhub._conversation import ConversationItem, follow_conversation

pytestmark = pytest.mark.anyio


def flat(items: list[ConversationItem]) -> list[Any]:
    """Items as comparable values: chunks by text, batches flattened."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, Batch):
            out += [c.data for c in item.chunks]
        elif isinstance(item, Chunk):
            out.append(item.data)
        else:
            out.append(item)
    return out


async def take(
    items: AsyncGenerator[ConversationItem, None], until: Any, within: float = 10.0
) -> list[ConversationItem]:
    """Items up to and including the first one ``until(item)`` holds for."""
    got: list[ConversationItem] = []
    with anyio.fail_after(within):
        async for item in items:
            got.append(item)
            if until(item):
                return got
    raise AssertionError(f"the conversation ended early: {got[-3:]!r}")


def ends(generation: int) -> Any:
    return lambda item: isinstance(item, GenerationEnd) and item.generation == generation


async def test_a_follower_sees_every_turn_and_resumes_across_them(make_hub: HubFactory) -> None:
    producing, following = await make_hub(), await make_hub()
    one = await start(producing, "conv", turn="q1", metadata={"user": "first?"})
    await one.publish("a1 ")
    conversation = follow_conversation(following, "conv")
    first = await take(conversation, lambda item: isinstance(item, Chunk | Batch))
    await one.publish("b1")
    await one.close()
    first += await take(conversation, ends(one.generation))
    assert flat(first) == [
        GenerationStart(one.generation, "q1"),
        Metadata({"user": "first?"}),
        "a1 ",
        "b1",
        GenerationEnd(one.generation, 3, End(State.DONE)),
    ]

    # The next turn, on the producing hub: the follower goes on with it.
    two = await start(producing, "conv", turn="q2", metadata={"user": "second?"})
    await two.publish("a2 ")
    second = await take(conversation, lambda item: isinstance(item, Chunk | Batch))
    assert flat(second) == [
        GenerationStart(two.generation, "q2"),
        Metadata({"user": "second?"}),
        "a2 ",
    ]
    await conversation.aclose()

    # A reconnect mid-turn with the last cursor: the rest of the turn, exactly.
    await two.publish("b2")
    await two.close()
    resumed = follow_conversation(following, "conv", Cursor(two.generation, 1))
    rest = await take(resumed, ends(two.generation))
    assert flat(rest) == [
        Metadata({"user": "second?"}),
        "b2",
        GenerationEnd(two.generation, 3, End(State.DONE)),
    ]
    await resumed.aclose()

    # From the end of the finished turn: nothing until the next one starts.
    waiting = follow_conversation(following, "conv", Cursor(two.generation, 3))
    async with anyio.create_task_group() as tg:
        got: list[ConversationItem] = []

        async def read() -> None:
            got.extend(await take(waiting, lambda item: isinstance(item, Chunk | Batch)))

        tg.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        three = await start(producing, "conv", turn="q3")
        await three.publish("a3")
    assert flat(got) == [GenerationStart(three.generation, "q3"), "a3"]
    await waiting.aclose()

    # From an earlier turn: the current turn from its start, announced.
    late = follow_conversation(following, "conv", Cursor(one.generation, 3))
    assert flat(await take(late, lambda item: isinstance(item, Chunk | Batch))) == [
        GenerationStart(three.generation, "q3"),
        "a3",
    ]
    await late.aclose()
    await three.close()


async def test_a_superseded_turn_ends_and_the_next_follows(make_hub: HubFactory) -> None:
    hub = await make_hub()
    one = await start(hub, "sup", turn="q1")
    await one.publish("partial")
    conversation = follow_conversation(hub, "sup")
    await take(conversation, lambda item: isinstance(item, Chunk | Batch))
    two = await start(hub, "sup", turn="q2")
    await two.publish("answer")
    got = await take(conversation, lambda item: isinstance(item, Chunk | Batch))
    assert flat(got) == [
        GenerationEnd(one.generation, 2, End(State.CANCELLED, "superseded")),
        GenerationStart(two.generation, "q2"),
        "answer",
    ]
    await conversation.aclose()
    await two.close()


async def test_unknown_and_deleted_conversations(make_hub: HubFactory) -> None:
    hub = await make_hub()
    with pytest.raises(SessionNotFound):
        await take(follow_conversation(hub, "nobody"), lambda item: True)
    one = await start(hub, "gone")
    await one.close()
    conversation = follow_conversation(hub, "gone")
    await take(conversation, ends(one.generation))
    async with anyio.create_task_group() as tg:

        async def read() -> None:
            with pytest.raises(SessionNotFound):
                await take(conversation, lambda item: True)

        tg.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        await hub.delete("gone")


async def test_turns_only_gives_the_markers_of_each_generation(make_hub: HubFactory) -> None:
    producing, following = await make_hub(), await make_hub()
    one = await start(producing, "turns", turn="q1", metadata={"user": "first?"})
    await one.publish("a1 ")
    turns = follow_conversation(following, "turns", chunks=False)
    # Announced at once, without waiting for output; nothing of the chunks stored before.
    assert await take(turns, lambda item: True) == [GenerationStart(one.generation, "q1")]
    await one.publish("b1")
    await one.close()
    # The end's cursor is exact (one past the last chunk), though no chunk was sent.
    assert await take(turns, ends(one.generation)) == [
        GenerationEnd(one.generation, 3, End(State.DONE))
    ]

    # The next turn is announced when it is noticed, and ends; no chunk nor metadata between.
    two = await start(producing, "turns", turn="q2", metadata={"user": "second?"})
    await two.publish("a2")
    assert await take(turns, lambda item: True) == [GenerationStart(two.generation, "q2")]
    three = await start(producing, "turns", turn="q3")  # supersedes the running turn
    await three.publish("a3")
    got = await take(turns, lambda item: isinstance(item, GenerationStart))
    assert got == [
        GenerationEnd(two.generation, 2, End(State.CANCELLED, "superseded")),
        GenerationStart(three.generation, "q3"),
    ]
    await turns.aclose()

    # A reconnect with the start's cursor: no second start, the end when it comes.
    resumed = follow_conversation(following, "turns", Cursor(three.generation, 0), chunks=False)
    async with anyio.create_task_group() as tg:
        rest: list[ConversationItem] = []

        async def read() -> None:
            rest.extend(await take(resumed, ends(three.generation)))

        tg.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        assert rest == []
        await three.publish("b3")
        await three.close()
    assert rest == [GenerationEnd(three.generation, 3, End(State.DONE))]
    await resumed.aclose()

    # From the end's cursor: nothing until the next generation, which has no turn.
    waiting = follow_conversation(following, "turns", Cursor(three.generation, 3), chunks=False)
    async with anyio.create_task_group() as tg:
        got = []

        async def wait() -> None:
            got.extend(await take(waiting, lambda item: True))

        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        four = await start(producing, "turns", restart=True)
        await four.publish("a4")
    assert got == [GenerationStart(four.generation, None)]
    await waiting.aclose()
    await four.close()
