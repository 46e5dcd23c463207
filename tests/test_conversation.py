"""Conversations over HTTP: ``GET {prefix}/{sid}?follow=conversation`` across two instances.

``examples/ai_sdk`` runs twice under uvicorn on one Redis server. The turns of a chat are
posted to instance A in the AI SDK's request shape; a second tab follows the chat on instance B
with the Python client (``StreamClient.stream(chat, conversation=True)``), reconnects to A in
the middle of turn 2 with its cursor, and must see each question (the generation's metadata)
and each answer exactly once. The raw wire format of the new events is checked too.

``?follow=turns`` (``StreamClient.stream(chat, turns=True)``) is the same follower with the
generations' start and end events only: no chunk, no metadata, the turn in each start.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from support.sids import new_sid
from test_examples import AppProcess

from examples.chat.app import fake_answer
from fastapi_streamhub import Chunk, End, GenerationEnd, GenerationStart, Metadata, State
from fastapi_streamhub.client import StreamClient

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def instances(tmp_path: Path, redis_url: str) -> Iterator[list[AppProcess]]:
    env = {"REDIS_URL": redis_url, "FAKE_LLM_DELAY": "0.01", "GRACEFUL_SHUTDOWN": "2"}
    apps = [AppProcess("examples.ai_sdk", tmp_path / f"{n}.log", env=env) for n in "ab"]
    try:
        yield [app.start() for app in apps]
    finally:
        for app in apps:
            app.stop()


def request(chat: str, prompts: list[str]) -> dict[str, Any]:
    """The body useChat posts: the chat's user messages, the last one new."""
    messages = [
        {"id": f"m{i}", "role": "user", "parts": [{"type": "text", "text": p}]}
        for i, p in enumerate(prompts, 1)
    ]
    return {"id": chat, "messages": messages, "trigger": "submit-message"}


def post_in(
    tg: anyio.abc.TaskGroup, http: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> list[httpx.Response]:
    """POST ``body`` in a task of ``tg``; the list holds the response once it is read."""
    answers: list[httpx.Response] = []

    async def post() -> None:
        answers.append(await http.post(url, json=body))

    tg.start_soon(post)
    return answers


class Tab:
    """What a follower of the conversation has seen, turn by turn."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def turns(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in self.items:
            if isinstance(item, GenerationStart):
                out.append({"generation": item.generation, "text": "", "user": None, "end": None})
            elif isinstance(item, Metadata):
                out[-1]["user"] = item.value["user"]["text"]
            elif isinstance(item, Chunk) and item.kind == "text" and item.event is None:
                out[-1]["text"] += item.data
            elif isinstance(item, GenerationEnd):
                assert item.generation == out[-1]["generation"]
                out[-1]["end"] = item.end.state
        return out


async def test_a_second_tab_follows_every_turn_across_instances(
    instances: list[AppProcess],
) -> None:
    a, b = instances
    chat = new_sid("conv")
    q1, q2 = "What is a conversation?", "And what is a turn?"
    tab = Tab()
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.post(f"{a.url}/api/chat", json=request(chat, [q1]))
        assert first.status_code == 200 and '"type":"finish"' in first.text

        async with StreamClient(b.url, prefix="/api/chat") as client:
            stream = client.stream(chat, conversation=True)
            async for item in stream:
                tab.items.append(item)
                if isinstance(item, GenerationEnd):
                    break  # turn 1, replayed; the stream would now wait for turn 2
            # Turn 2 on instance A, read there to its end, while the tab follows on B.
            async with anyio.create_task_group() as tg:
                second = post_in(tg, http, f"{a.url}/api/chat", request(chat, [q1, q2]))
                text_chunks = 0
                async for item in stream:
                    tab.items.append(item)
                    if isinstance(item, Chunk) and item.kind == "text":
                        text_chunks += 1
                        if text_chunks == 10:
                            break  # mid-turn 2: this tab's connection drops
                cursor = stream.cursor
                await stream.aclose()
                assert cursor is not None and cursor.endswith("-10")

            # The tab comes back on the other instance, after its cursor.
            other = StreamClient(a.url, prefix="/api/chat")
            async with other, other.stream(chat, after=cursor, conversation=True) as resumed:
                async for item in resumed:
                    if not isinstance(item, Metadata):  # sent again on each connection
                        tab.items.append(item)
                    if isinstance(item, GenerationEnd):
                        break
        status = (await http.get(f"{b.url}/api/chat/{chat}/status")).json()
        history = (await http.get(f"{a.url}/api/history/{chat}")).json()

    turns = tab.turns()
    assert [(t["user"], t["text"], t["end"]) for t in turns] == [
        (q1, fake_answer(q1), State.DONE),
        (q2, fake_answer(q2), State.DONE),
    ]
    assert turns[0]["generation"] < turns[1]["generation"] == status["generation"]
    assert '"type":"finish"' in second[0].text
    assert [t["user"]["text"] for t in history["turns"]] == [q1, q2]
    assert [t["answer"] for t in history["turns"]] == [fake_answer(q1), fake_answer(q2)]
    assert a.count("fake LLM started") == 2 and b.count("fake LLM started") == 0


async def test_the_wire_format_of_a_conversation(instances: list[AppProcess]) -> None:
    a, _ = instances
    chat = new_sid("wire")
    async with httpx.AsyncClient(timeout=30) as http:
        await http.post(f"{a.url}/api/chat", json=request(chat, ["Hi?"]))
        status = (await http.get(f"{a.url}/api/chat/{chat}/status")).json()
        gen, n = status["generation"], status["chunks"]
        url = f"{a.url}/api/chat/{chat}?follow=conversation"
        raw = b""
        async with http.stream("GET", url) as response:
            assert response.status_code == 200
            async for data in response.aiter_bytes():
                raw += data
                if b"event: generation-end" in raw and raw.endswith(b"\n\n"):
                    break
        assert raw.startswith(b"retry: ")
        assert status["turn"] == "message:m1"
        start = (
            f'event: generation\ndata: {{"generation":{gen},"turn":"message:m1"}}\nid: {gen}-0\n\n'
        )
        assert start.encode() in raw
        end = f'"generation":{gen},"state":"done","reason":null}}\nid: {gen}-{n + 1}\n\n'
        assert raw.endswith(end.encode())
        assert b"event: end" not in raw
        # Bad values of the option are refused before any stream.
        bad = await http.get(f"{a.url}/api/chat/{chat}?follow=everything")
        assert bad.status_code == 422
        unknown = await http.get(f"{a.url}/api/chat/{new_sid('none')}?follow=conversation")
        assert unknown.status_code == 404


async def test_a_turns_follower_sees_each_turn_start_and_end_only(
    instances: list[AppProcess],
) -> None:
    a, b = instances
    chat = new_sid("turns")
    q1, q2 = "What is a turn?", "And the next one?"
    seen: list[Any] = []
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.post(f"{a.url}/api/chat", json=request(chat, [q1]))
        assert first.status_code == 200
        one = (await http.get(f"{a.url}/api/chat/{chat}/status")).json()

        async with StreamClient(b.url, prefix="/api/chat") as client:
            stream = client.stream(chat, turns=True)
            async for item in stream:
                seen.append(item)
                if isinstance(item, GenerationEnd):
                    break  # turn 1 (finished): its start and end, nothing between
            async with anyio.create_task_group() as tg:
                second = post_in(tg, http, f"{a.url}/api/chat", request(chat, [q1, q2]))
                async for item in stream:
                    seen.append(item)
                    break  # turn 2 started; this tab's connection drops
                cursor = stream.cursor
                await stream.aclose()
            # Back on the other instance after the start's cursor: the end only.
            other = StreamClient(a.url, prefix="/api/chat")
            async with other, other.stream(chat, after=cursor, turns=True) as resumed:
                async for item in resumed:
                    seen.append(item)
                    if isinstance(item, GenerationEnd):
                        break
        two = (await http.get(f"{b.url}/api/chat/{chat}/status")).json()
        # The raw stream: the two events and nothing else.
        raw = b""
        async with http.stream("GET", f"{a.url}/api/chat/{chat}?follow=turns") as response:
            assert response.status_code == 200
            async for data in response.aiter_bytes():
                raw += data
                if b"event: generation-end" in raw and raw.endswith(b"\n\n"):
                    break

    g1, g2 = one["generation"], two["generation"]
    assert '"type":"finish"' in second[0].text and two["turn"] == "message:m2"
    assert seen == [
        GenerationStart(g1, "message:m1"),
        GenerationEnd(g1, one["chunks"] + 1, End(State.DONE)),
        GenerationStart(g2, "message:m2"),
        GenerationEnd(g2, two["chunks"] + 1, End(State.DONE)),
    ]
    assert cursor == f"{g2}-0"
    events = [line for line in raw.split(b"\n") if line and not line.startswith(b"retry:")]
    assert events == [
        b"event: generation",
        b'data: {"generation":%d,"turn":"message:m2"}' % g2,
        b"id: %d-0" % g2,
        b"event: generation-end",
        b'data: {"generation":%d,"state":"done","reason":null}' % g2,
        b"id: %d-%d" % (g2, two["chunks"] + 1),
    ]


def test_the_client_asks_for_turns_and_reads_their_turn() -> None:
    """``turns=True`` asks for ``?follow=turns``; a start's turn is decoded (pure)."""
    from fastapi_streamhub._client.api import Options
    from fastapi_streamhub._http.sse import encode_generation

    options = Options("http://t", "/streams", None, 30.0, 5.0)
    follow = options.follow("c", "7-0", turns=True)
    path, params, headers = follow.request()
    assert (path, params, headers["last-event-id"]) == ("/streams/c", {"follow": "turns"}, "7-0")
    assert follow.feed(encode_generation(9, "message:x")) == [GenerationStart(9, "message:x")]
    assert follow.cursor == "9-0"
    with pytest.raises(ValueError, match="exclude"):
        options.follow("c", None, conversation=True, turns=True)


def test_the_client_reads_a_conversation_and_resumes_across_turns() -> None:
    """The client's decoding alone (pure): frames become items, and the cursor moves with them."""
    from fastapi_streamhub._client.api import Options
    from fastapi_streamhub._http.sse import encode_generation, encode_generation_end, encode_item
    from fastapi_streamhub._types import Cursor, End

    follow = Options("http://t", "/streams", None, 30.0, 5.0).follow("c", None, True)
    path, params, headers = follow.request()
    assert (path, params) == ("/streams/c", {"follow": "conversation"})
    assert "last-event-id" not in headers
    raw = b"".join(
        [
            encode_generation(7),
            encode_item(Metadata({"user": "q1"})),
            encode_item(Chunk(Cursor(7, 1), "a1", "text")),
            encode_generation_end(7, 2, State.DONE, None),
            encode_generation(9),
            encode_item(Metadata({"user": "q2"})),
            encode_item(Chunk(Cursor(9, 1), "a2", "text")),
        ]
    )
    items = follow.feed(raw)
    assert items == [
        GenerationStart(7),
        Metadata({"user": "q1"}),
        Chunk(Cursor(7, 1), "a1", "text"),
        GenerationEnd(7, 2, End(State.DONE)),
        GenerationStart(9),
        Metadata({"user": "q2"}),
        Chunk(Cursor(9, 1), "a2", "text"),
    ]
    assert follow.end is None and follow.text == "a2" and follow.cursor == "9-1"
    follow.feed(encode_generation_end(9, 2, State.CANCELLED, "superseded"))
    assert follow.cursor == "9-2" and follow.end is None
    _, params, headers = follow.request()  # the reconnect resumes after the turn's end
    assert params == {"follow": "conversation"} and headers["last-event-id"] == "9-2"
