"""The Vercel AI SDK compatibility: the UI message stream encoder, and the real SDK end to end.

- the encoder alone (pure): every kind of item as the SDK's parts, each end state, a reset;
- ``ResumableStreamingResponse(protocol="ai-sdk")`` in process: the wire format, and a failed
  generator as an ``error`` part;
- ``examples/ai_sdk`` under uvicorn, driven by ``tests/node/ai_sdk.mjs`` with the npm package
  ``ai`` (pinned in ``tests/node/package.json``, installed by ``npm ci`` on first use): a
  reconnect mid-answer with ``DefaultChatTransport``, ``AbstractChat.resumeStream()`` after the
  first chat went away (what ``useChat({ resume: true })`` does on a reload), 204 when nothing
  runs, two turns in one chat, and a cancel;
- the router's chat transport (``/~/chat-transport.js``) in the SDK's ``AbstractChat``: Stop
  stops the producer (``cancelled``, the chunk count stops growing) and a resume and the
  cancel carry the headers the app gave ``sendMessage``; Stop in a second tab ends the first
  tab's answer without a finish reason; Stop then a new question answers the question; a new
  question posted while an answer runs supersedes it (``turn``). These run on ``ai`` 7 and on
  ``ai`` 6 (the npm alias ``ai6``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import pytest
from support.node import NODE, node_modules, run_node
from test_examples import ROOT, AppProcess

from examples.chat.app import fake_answer, fake_tokens
from fastapi_streamhub import (
    Batch,
    Chunk,
    Cursor,
    End,
    Event,
    Metadata,
    Reset,
    ResumableStreamingResponse,
    SessionStreamResponse,
    State,
    StreamHub,
)
from fastapi_streamhub._http.aisdk import UIMessageStreamEncoder

NODE_DIR = ROOT / "tests" / "node"
DELAY = "0.02"  # seconds per token: 3-6 s per answer, long enough to act mid-answer
PROMPT = "How does the AI SDK resume an answer?"
FULL, TOKENS = fake_answer(PROMPT), fake_tokens(PROMPT)


def parts_of(raw: bytes) -> list[Any]:
    """The JSON parts of a UI message stream (``[DONE]`` kept as the string)."""
    out: list[Any] = []
    for event in raw.decode().split("\n\n"):
        lines = [line for line in event.split("\n") if line and not line.startswith(":")]
        data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
        if not data:
            assert all(line.startswith("retry: ") for line in lines), event
            continue
        assert len(lines) == len(data) == 1, f"one data line per event: {event!r}"
        out.append(data[0] if data[0] == "[DONE]" else json.loads(data[0]))
    return out


# -- the encoder ------------------------------------------------------------------------------


def chunk(
    offset: int, data: Any, kind: Literal["text", "json"] = "text", event: str | None = None
) -> Chunk:
    return Chunk(Cursor(7, offset), data, kind, event)


def test_encoder_maps_every_kind_of_item() -> None:
    encoder = UIMessageStreamEncoder("chat-1")
    raw = b"".join(
        [
            encoder.encode(Metadata({"model": "m"}), 7),
            encoder.encode(chunk(1, "Hello "), 7),
            encoder.encode(Batch((chunk(2, "a\r\nb\0"), chunk(3, "c")), Cursor(7, 3)), 7),
            encoder.encode(chunk(4, {"type": "data-weather", "data": {"t": 21}}, "json"), 7),
            encoder.encode(chunk(5, [1, {"x": None}], "json"), 7),
            encoder.encode(chunk(6, "more"), 7),
            encoder.encode(chunk(7, {"note": 1}, "json", "note"), 7),
            encoder.encode(chunk(8, {"no": "type"}, "json"), 7),
            encoder.encode(End(State.DONE), 7),
        ]
    )
    assert b"\nid:" not in raw and not raw.startswith(b"id:")
    assert encoder.finished
    assert parts_of(raw) == [
        {"type": "start", "messageId": "chat-1-7"},
        {"type": "message-metadata", "messageMetadata": {"model": "m"}},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "Hello "},
        {"type": "text-delta", "id": "text-1", "delta": "a\r\nb\0"},
        {"type": "text-delta", "id": "text-1", "delta": "c"},
        {"type": "text-end", "id": "text-1"},
        {"type": "data-weather", "data": {"t": 21}},
        {"type": "data-json", "data": [1, {"x": None}]},
        {"type": "text-start", "id": "text-2"},
        {"type": "text-delta", "id": "text-2", "delta": "more"},
        {"type": "text-end", "id": "text-2"},
        {"type": "data-note", "data": {"note": 1}},
        {"type": "data-json", "data": {"no": "type"}},
        {"type": "finish", "finishReason": "stop"},
        "[DONE]",
    ]


@pytest.mark.parametrize(
    ("end", "last"),
    [
        (End(State.DONE), {"type": "finish", "finishReason": "stop"}),
        (End(State.CANCELLED, "user stop"), {"type": "abort", "reason": "user stop"}),
        (End(State.CANCELLED), {"type": "abort", "reason": "cancelled"}),
        (End(State.FAILED, "boom"), {"type": "error", "errorText": "boom"}),
        (End(State.FAILED), {"type": "error", "errorText": "the stream failed"}),
    ],
    ids=["done", "cancelled", "cancelled-no-reason", "failed", "failed-no-reason"],
)
def test_encoder_end_states(end: End, last: dict[str, Any]) -> None:
    encoder = UIMessageStreamEncoder("s")
    raw = encoder.encode(chunk(1, "x"), 3) + encoder.encode(end, 3)
    assert parts_of(raw)[-3:] == [{"type": "text-end", "id": "text-1"}, last, "[DONE]"]


def test_encoder_reset_and_interruption_are_errors_that_end_the_stream() -> None:
    encoder = UIMessageStreamEncoder("s")
    raw = encoder.encode(chunk(1, "x"), 3) + encoder.encode(Reset("restarted", 4), 3)
    parts = parts_of(raw)
    assert encoder.finished and parts[-1] == "[DONE]"
    assert parts[-3] == {"type": "text-end", "id": "text-1"}
    assert parts[-2]["type"] == "error" and "restarted" in parts[-2]["errorText"]

    fresh = UIMessageStreamEncoder("s")  # nothing sent yet: the error still follows a start
    assert parts_of(fresh.interrupted("shutting down", 9)) == [
        {"type": "start", "messageId": "s-9"},
        {"type": "error", "errorText": "shutting down"},
        "[DONE]",
    ]


def test_protocol_is_validated() -> None:
    async def nothing() -> AsyncIterator[str]:
        yield ""

    with pytest.raises(ValueError, match="protocol must be one of"):
        SessionStreamResponse("s", protocol="ai")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="always streams from the start"):
        SessionStreamResponse("s", protocol="ai-sdk", after="1-1")
    generator = nothing()
    with pytest.raises(ValueError, match="protocol must be one of"):
        ResumableStreamingResponse("s", generator, protocol="vercel")  # type: ignore[arg-type]


# -- the response in process --------------------------------------------------------------------


@pytest.mark.anyio
async def test_response_speaks_the_protocol_and_reports_a_failure() -> None:
    from fastapi import FastAPI

    async def failing() -> AsyncIterator[Any]:
        yield "partial "
        yield Event({"step": 1}, "progress")
        raise RuntimeError("model overloaded")

    async with StreamHub.from_url("memory://") as hub:
        app = FastAPI()

        @app.post("/chat/{sid}")
        async def chat(sid: str) -> ResumableStreamingResponse:
            return ResumableStreamingResponse(sid, failing(), hub=hub, protocol="ai-sdk")

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            resp = await client.post(
                "/chat/c1", headers={"last-event-id": "garbage, ignored by this protocol"}
            )
    assert resp.status_code == 200
    assert resp.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
    parts = parts_of(resp.content)
    assert parts[0]["type"] == "start" and parts[0]["messageId"].startswith("c1-")
    assert parts[1:5] == [
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "partial "},
        {"type": "text-end", "id": "text-1"},
        {"type": "data-progress", "data": {"step": 1}},
    ]
    assert parts[5]["type"] == "error" and "model overloaded" in parts[5]["errorText"]
    assert parts[6:] == ["[DONE]"]


# -- the example app and the real SDK -----------------------------------------------------------


needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed (Node 18+ needed)")
# Both SDK generations: "ai" is ai 7, "ai6" the npm alias of ai 6 (tests/node/package.json).
both_sdks = pytest.mark.parametrize("lane", ["ai", "ai6"], ids=["ai7", "ai6"])


@pytest.fixture(scope="session")
def ai_package() -> Path:
    """``tests/node/node_modules`` with the ``ai`` package, installed with npm when missing."""
    return node_modules(NODE_DIR, "ai")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[AppProcess]:
    env = {"REDIS_URL": "memory://", "FAKE_LLM_DELAY": DELAY, "GRACEFUL_SHUTDOWN": "2"}
    app = AppProcess("examples.ai_sdk", tmp_path / "ai_sdk.log", env=env)
    try:
        yield app.start()
    finally:
        app.stop()


def sdk(backend: AppProcess, scenario: str, log_dir: Path, **config: Any) -> dict[str, Any]:
    """Run a scenario of ``ai_sdk.mjs`` (a new chat id and ``PROMPT`` unless given)."""
    config = {"base": backend.url, "chat_id": new_chat_id(), "prompt": PROMPT, **config}
    log = log_dir / f"{scenario}.log"
    result = run_node(NODE_DIR, "ai_sdk.mjs", scenario, config, log)
    shown = {k: v for k, v in result.items() if k not in ("text", "firstText", "turns")}
    print(f"ai sdk {scenario}:", json.dumps(shown)[:1500])
    return result


def new_chat_id() -> str:
    return uuid.uuid4().hex[:16]


@needs_node
@both_sdks
def test_transport_reconnects_mid_answer(
    backend: AppProcess, ai_package: Path, tmp_path: Path, lane: str
) -> None:
    result = sdk(backend, "reconnect", tmp_path, ai_package=lane, abort_after_deltas=30)
    # The first request was cut after 30 deltas, mid-answer. The user's turn (the
    # generation's metadata, for followers of the conversation) comes first.
    assert result["firstTypes"] == {
        "start": 1,
        "message-metadata": 1,
        "text-start": 1,
        "text-delta": 30,
    }
    assert FULL.startswith(result["firstText"]) and result["firstText"] == "".join(TOKENS[:30])
    # The resume replayed the answer from its start (the SDK rebuilds the message) and then
    # followed it live to the end: every token once, the usage part, finish.
    assert result["resumedFirst"] == {"type": "start", "messageId": result["firstMessageId"]}
    assert result["resumedTypes"] == {
        "start": 1,
        "message-metadata": 1,
        "text-start": 1,
        "text-delta": len(TOKENS),
        "text-end": 1,
        "data-usage": 1,
        "finish": 1,
    }
    assert result["resumedLast"] == {"type": "finish", "finishReason": "stop"}
    assert result["dataParts"] == [{"type": "data-usage", "data": {"tokens": len(TOKENS)}}]
    assert result["text"] == FULL
    assert result["messageId"] == result["firstMessageId"]
    assert result["messageParts"] == ["text", "data-usage"]
    assert backend.count("fake LLM started") == 1  # resumed, not generated again


@needs_node
@both_sdks
def test_chat_resume_stream_after_the_page_went_away(
    backend: AppProcess, ai_package: Path, tmp_path: Path, lane: str
) -> None:
    result = sdk(backend, "chat", tmp_path, ai_package=lane, stop_after_chars=150)
    assert 150 <= result["stoppedAt"] < len(FULL)
    assert result["roles"] == ["user", "assistant"]
    assert result["text"] == FULL
    assert result["messageId"] == result["firstMessageId"]
    assert result["usage"] == [{"tokens": len(TOKENS)}]
    assert result["status"] == "ready" and result["errors"] == []
    assert result["statuses"][-1] == "ready" and "error" not in result["statuses"]
    assert backend.count("fake LLM started") == 1


@needs_node
def test_resume_is_204_when_nothing_runs(
    backend: AppProcess, ai_package: Path, tmp_path: Path
) -> None:
    finished = new_chat_id()
    sdk(backend, "turns", tmp_path, chat_id=finished, prompts=["hi"])
    result = sdk(backend, "idle", tmp_path, chat_ids=[new_chat_id(), finished])
    assert list(result["answers"].values()) == [None, None]
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{backend.url}/api/chat/{finished}/stream").status_code == 204
        assert client.get(f"{backend.url}/api/chat/bad%20id/stream").status_code == 422
        assert client.post(f"{backend.url}/api/chat/{finished}/stream").status_code == 405


@needs_node
def test_two_turns_in_one_chat(backend: AppProcess, ai_package: Path, tmp_path: Path) -> None:
    prompts = ["First question?", "And a second one?"]
    chat_id = new_chat_id()
    result = sdk(backend, "turns", tmp_path, chat_id=chat_id, prompts=prompts)
    turns = result["turns"]
    assert [t["text"] for t in turns] == [fake_answer(p) for p in prompts]
    # One session, one generation per answer: each message has its own id.
    ids = [t["messageId"] for t in turns]
    assert ids[0] != ids[1] and all(i.startswith(f"{chat_id}-") for i in ids)
    assert all(t["last"] == {"type": "finish", "finishReason": "stop"} for t in turns)
    assert backend.count("fake LLM started") == 2


@needs_node
def test_cancel_ends_the_answer_with_abort(
    backend: AppProcess, ai_package: Path, tmp_path: Path
) -> None:
    result = sdk(backend, "cancel", tmp_path, cancel_after_deltas=20)
    assert result["cancel"]["status"] in (200, 202)
    assert result["lastParts"] == [
        {"type": "text-end", "id": "text-1"},
        {"type": "abort", "reason": "cancelled"},
    ]
    assert FULL.startswith(result["text"]) and 20 <= len(result["text"]) < len(FULL)
    assert "finish" not in result["types"]


def test_chat_route_refuses_bad_requests(backend: AppProcess) -> None:
    message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    bad = [
        {"messages": [message]},  # no chat id
        {"id": "bad id", "messages": [message]},
        {"id": "c1", "messages": []},
        {"id": "c1", "messages": [message], "trigger": "nonsense"},
        {"id": "c1", "messages": [{**message, "parts": [{"type": "file", "url": "x"}]}]},
    ]
    with httpx.Client(timeout=10) as client:
        for body in bad:
            resp = client.post(f"{backend.url}/api/chat", json=body)
            assert resp.status_code == 422, (body, resp.text)
            assert "detail" in resp.json()
        resp = client.post(f"{backend.url}/api/chat", content=b"{not json")
        assert resp.status_code == 422
    assert backend.count("fake LLM started") == 0


@needs_node
@both_sdks
def test_stop_through_the_transport_stops_the_server(
    backend: AppProcess, ai_package: Path, tmp_path: Path, lane: str
) -> None:
    result = sdk(backend, "stop", tmp_path, ai_package=lane, stop_after_chars=60, settle_ms=500)
    assert FULL.startswith(result["stoppedText"]) and 60 <= len(result["stoppedText"]) < len(FULL)
    assert result["roles"] == ["user", "assistant"] and result["status"] == "ready"
    finished = result["finished"]
    assert finished["status"]["state"] == "cancelled", finished
    assert finished["afterMs"] < 1000
    # Nothing is produced once cancelled: the count is the same half a second later.
    assert result["later"]["state"] == "cancelled"
    assert result["later"]["chunks"] == finished["status"]["chunks"] < len(TOKENS) + 1
    sent = [(r["method"], r["url"].rsplit("/", 1)[-1]) for r in result["requests"]]
    assert sent == [("POST", "chat"), ("GET", "stream"), ("POST", "cancel")]
    for request in result["requests"]:  # sendMessage's headers on the resume and the cancel
        assert request["headers"]["authorization"] == "Bearer t1", request
        assert request["headers"]["x-app"] == "static", request
    assert backend.count("fake LLM started") == 1


@needs_node
@both_sdks
def test_stop_in_another_tab_ends_the_answer_as_aborted(
    backend: AppProcess, ai_package: Path, tmp_path: Path, lane: str
) -> None:
    result = sdk(backend, "stop_elsewhere", tmp_path, ai_package=lane, stop_after_chars=60)
    assert result["final"]["state"] == "cancelled"
    assert result["firstStatus"] == "ready"
    [finish] = result["finishes"]
    # The abort part leaves the SDK without a finish reason: not taken for a complete answer
    # (whose finish part carries finishReason "stop"); isAbort is the SDK's own abort only.
    assert finish.get("finishReason") is None and finish["isAbort"] is False, finish
    assert FULL.startswith(finish["text"]) and 60 <= len(finish["text"]) < len(FULL)
    assert backend.count("fake LLM started") == 1


@needs_node
@both_sdks
def test_stop_then_a_new_question_is_answered(
    backend: AppProcess, ai_package: Path, tmp_path: Path, lane: str
) -> None:
    second = "What happens after Stop?"
    result = sdk(
        backend,
        "stop_then_ask",
        tmp_path,
        ai_package=lane,
        stop_after_chars=60,
        second_prompt=second,
    )
    assert result["afterStop"]["status"]["state"] == "cancelled"
    messages = result["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    stopped, answer = messages[1], messages[3]
    assert FULL.startswith(stopped["text"]) and 60 <= len(stopped["text"]) < len(FULL)
    assert answer["text"] == fake_answer(second)
    assert stopped["id"] != answer["id"]
    assert result["status"] == "ready" and result["errors"] == []
    assert result["final"]["state"] == "done"
    assert backend.count("fake LLM started") == 2


@needs_node
@both_sdks
def test_a_new_question_supersedes_the_running_answer(
    backend: AppProcess, ai_package: Path, tmp_path: Path, lane: str
) -> None:
    second = "A question asked mid-answer?"
    result = sdk(
        backend,
        "ask_while_running",
        tmp_path,
        ai_package=lane,
        abort_after_deltas=10,
        second_prompt=second,
    )
    assert result["text"] == fake_answer(second)
    assert result["messageId"] != result["firstMessageId"]
    assert result["last"] == {"type": "finish", "finishReason": "stop"}
    assert result["final"]["state"] == "done"
    assert backend.count("fake LLM started") == 2


@pytest.mark.anyio
async def test_a_repeated_turn_joins_and_a_new_turn_supersedes() -> None:
    """``turn=`` on the response, in process: a repeat follows, a new turn takes over."""
    from fastapi import FastAPI

    release = anyio.Event()  # never set: the first answer waits until it is superseded
    waiting = anyio.Event()

    async def held(name: str) -> AsyncIterator[str]:
        yield f"{name} starts "
        if name == "first":
            waiting.set()
            await release.wait()
        yield f"{name} ends"

    async with StreamHub.from_url("memory://") as hub:
        app = FastAPI()

        @app.post("/chat/{sid}")
        async def chat(sid: str, turn: str) -> ResumableStreamingResponse:
            return ResumableStreamingResponse(sid, held(turn), hub=hub, turn=turn)

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers: dict[str, httpx.Response] = {}

            async def post(turn: str, key: str) -> None:
                answers[key] = await client.post(f"/chat/c?turn={turn}")

            async with anyio.create_task_group() as tg:
                tg.start_soon(post, "first", "first")  # ASGITransport answers at the body's end
                with anyio.fail_after(10):
                    await waiting.wait()
                    async with hub.subscribe("c") as sub:  # its first chunk is stored
                        async for item in sub:
                            if isinstance(item, Chunk | Batch):
                                break
                # The new turn supersedes the held answer, whose request then ends.
                await post("second", "second")
            done = await hub.status("c")
            await post("second", "repeat")  # a repeat of a finished turn replays it
            after = await hub.status("c")
    rest = answers["first"].text.splitlines()
    assert "data: first starts " in rest and "data: first ends" not in rest
    assert 'data: {"state":"cancelled","reason":"superseded"}' in rest
    assert "data: second starts " in answers["second"].text
    assert answers["repeat"].text == answers["second"].text  # the same events, ids included
    assert done is not None and after is not None and done.state is State.DONE
    assert after.generation == done.generation  # replayed, not generated again
