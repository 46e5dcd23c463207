"""The SDK adapters (``fastapi_streamhub.adapters``) with the real SDK packages.

``tests/adapters_app.py`` runs under uvicorn on a real Redis; its routes call the real
``openai``, ``litellm`` and ``anthropic`` clients, pointed at the stand-in provider
(``tests/support/provider.py``, mounted in the same app) over real loopback HTTP, and stream the
adapters' chunks with ``ResumableStreamingResponse``. The tests read them back through the
Python client (``StreamClient``) and as the AI SDK's UI message stream. Nothing is mocked and
nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from support.apps import AppServer, start_servers
from support.node import NODE, node_modules, run_node
from support.redis_server import RedisServer
from support.sids import new_sid
from test_browser import BROWSER_DIR, CHROMIUM, _expected_chunk, run_chat

from fastapi_streamhub import Chunk as HubChunk
from fastapi_streamhub import Cursor, End, State
from fastapi_streamhub._http.aisdk import UIMessageStreamEncoder
from fastapi_streamhub.client import Backoff, Chunk, StreamClient

pytestmark = pytest.mark.anyio

FAST = Backoff(cap=0.3, max_attempts=50, max_elapsed=20)
CHAT_SDKS = ["openai_chat", "litellm"]
RESPONSES_SDKS = ["openai_responses", "openai_responses_manager"]
ANTHROPIC_SDKS = ["anthropic_stream", "anthropic_create"]
AGENT_SDKS = ["pydantic_ai", "langgraph", "langchain_events"]
ALL_SDKS = CHAT_SDKS + RESPONSES_SDKS + ANTHROPIC_SDKS + AGENT_SDKS

WEATHER = {"city": "Paris", "unit": "celsius"}
WEATHER_FRAGMENTS = ['{"city": "Pa', 'ris", "unit": ', '"celsius"}']


def tool_call(call_id: str, name: str, fragments: list[str]) -> list[Any]:
    """The chunks of one streamed tool call, as every adapter yields them."""
    return [
        {"type": "tool-input-start", "toolCallId": call_id, "toolName": name},
        *(
            {"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": f}
            for f in fragments
        ),
    ]


def available(call_id: str, name: str, args: Any) -> dict[str, Any]:
    return {"type": "tool-input-available", "toolCallId": call_id, "toolName": name, "input": args}


def reasoning(part_id: str, deltas: list[str], meta: Any = None) -> list[Any]:
    end: dict[str, Any] = {"type": "reasoning-end", "id": part_id}
    if meta is not None:
        end["providerMetadata"] = meta
    return [
        {"type": "reasoning-start", "id": part_id},
        *({"type": "reasoning-delta", "id": part_id, "delta": d} for d in deltas),
        end,
    ]


# What each adapter makes of the stand-in's recorded stream (tests/support/provider.py).
CHAT_CHUNKS: list[Any] = [
    *reasoning("reasoning-0", ["The user wants the weather;", " one tool call."]),
    "Let me check ",
    "the weather\nin Paris.",
    *tool_call("call_w1", "get_weather", WEATHER_FRAGMENTS),
    *tool_call("call_t2", "get_time", ['{"tz": ', '"Europe/Paris"}']),
    available("call_w1", "get_weather", WEATHER),
    available("call_t2", "get_time", {"tz": "Europe/Paris"}),
    {
        "type": "usage",
        "inputTokens": 31,
        "outputTokens": 42,
        "totalTokens": 73,
        "reasoningTokens": 11,
        "cachedInputTokens": 8,
    },
    {"type": "finish", "finishReason": "tool-calls", "rawFinishReason": "tool_calls"},
]
RESPONSES_CHUNKS: list[Any] = [
    *reasoning("rs_1:0", ["Weather asked;", " call the tool."], {"openai": {"itemId": "rs_1"}}),
    "Checking ",
    "Paris.\r\n",
    *tool_call("call_w1", "get_weather", WEATHER_FRAGMENTS),
    available("call_w1", "get_weather", WEATHER),
    {
        "type": "usage",
        "inputTokens": 20,
        "outputTokens": 30,
        "totalTokens": 50,
        "reasoningTokens": 12,
        "cachedInputTokens": 4,
    },
    {"type": "finish", "finishReason": "tool-calls", "rawFinishReason": "completed"},
]
SIGNATURE = {"anthropic": {"signature": "EqQBCgIYAhIM-standin-signature"}}
ANTHROPIC_CHUNKS: list[Any] = [
    *reasoning("reasoning-0", ["The user wants", " the weather."], SIGNATURE),
    "Let me check ",
    "the weather\x00.",
    *tool_call("toolu_w1", "get_weather", WEATHER_FRAGMENTS),
    available("toolu_w1", "get_weather", WEATHER),
    {
        "type": "usage",
        "inputTokens": 25,
        "outputTokens": 48,
        "totalTokens": 73,
        "cachedInputTokens": 5,
    },
    {"type": "finish", "finishReason": "tool-calls", "rawFinishReason": "tool_use"},
]
# The agents (tests/adapters_app.py) run both tools and call the model again, which answers.
TIME = {"tz": "Europe/Paris"}
TOOL_CALLS: list[Any] = [
    *tool_call("call_w1", "get_weather", WEATHER_FRAGMENTS),
    available("call_w1", "get_weather", WEATHER),
    *tool_call("call_t2", "get_time", ['{"tz": ', '"Europe/Paris"}']),
    available("call_t2", "get_time", TIME),
]
WEATHER_OUT = {"city": "Paris", "temperature": 18, "unit": "celsius"}
TIME_OUT = "14:00 in Europe/Paris"
AGENT_END: list[Any] = [
    "It is 18 °C ",
    "in Paris.",
    {
        "type": "usage",
        "inputTokens": 91,
        "outputTokens": 51,
        "totalTokens": 142,
        "reasoningTokens": 22,
        "cachedInputTokens": 16,
    },
    {"type": "finish", "finishReason": "stop", "rawFinishReason": "stop"},
]


def output(call_id: str, value: Any) -> dict[str, Any]:
    return {"type": "tool-output-available", "toolCallId": call_id, "output": value}


PYDANTIC_AI_CHUNKS: list[Any] = [
    *reasoning("reasoning-0", ["The user wants the weather;", " one tool call."]),
    "Let me check ",
    "the weather\nin Paris.",
    # pydantic-ai ends each part when the next one starts.
    *TOOL_CALLS,
    output("call_w1", WEATHER_OUT),
    output("call_t2", TIME_OUT),
    *AGENT_END,
]
# LangChain's ChatOpenAI reads no reasoning_content, and its ToolMessage holds a tool's dict
# as JSON text.
LANGGRAPH_CHUNKS: list[Any] = [
    "Let me check ",
    "the weather\nin Paris.",
    *CHAT_CHUNKS[6:15],
    output("call_w1", json.dumps(WEATHER_OUT)),
    output("call_t2", TIME_OUT),
    *AGENT_END,
]
EXPECTED = {
    **dict.fromkeys(CHAT_SDKS, CHAT_CHUNKS),
    **dict.fromkeys(RESPONSES_SDKS, RESPONSES_CHUNKS),
    **dict.fromkeys(ANTHROPIC_SDKS, ANTHROPIC_CHUNKS),
    "pydantic_ai": PYDANTIC_AI_CHUNKS,
    **dict.fromkeys(["langgraph", "langchain_events"], LANGGRAPH_CHUNKS),
}


def in_order(sdk: str, values: list[Any]) -> list[Any]:
    """``values`` with the tools' results in call order: pydantic-ai and astream_events report
    the tools of one step in the order they finish, and both run them concurrently."""
    if sdk not in ("pydantic_ai", "langchain_events"):
        return values
    outputs = [v for v in values if isinstance(v, dict) and v["type"] == "tool-output-available"]
    calls = [
        v["toolCallId"] for v in values if isinstance(v, dict) and v["type"] == "tool-input-start"
    ]
    ordered = iter(sorted(outputs, key=lambda v: calls.index(v["toolCallId"])))
    return [next(ordered) if v in outputs else v for v in values]


@pytest.fixture(scope="module")
def app(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_dir = tmp_path_factory.mktemp("adapters")
    # A dead proxy for everything but loopback: an SDK that tried to reach the internet (a
    # price list, telemetry) would fail loudly instead of quietly depending on the network.
    env = {
        "REDIS_URL": redis_server.url,
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    server = AppServer("adapters", env, log_dir, "adapters_app:app")
    start_servers([server])
    try:
        yield server.url
        # Only the generator that fails on purpose may have left a traceback.
        log = server.log().replace("UpstreamError", "")
        assert "Error" not in log and "Warning" not in log, log
    finally:
        server.stop()


def value(chunk: Chunk) -> Any:
    """A chunk as the adapter yielded it: text as ``str``, JSON as the value."""
    assert chunk.event is None, chunk
    if chunk.kind == "text":
        assert isinstance(chunk.data, str)
    else:
        assert not isinstance(chunk.data, str), chunk
    return chunk.data


async def read(stream: Any) -> tuple[list[Chunk], End | None]:
    chunks = []
    async for item in stream:
        if isinstance(item, Chunk):
            chunks.append(item)
    return chunks, stream.end


async def read_into_a_tool_call(stream: Any) -> list[Chunk]:
    """The chunks up to the first fragment of a tool call's input; then the stream is closed."""
    chunks: list[Chunk] = []
    async for item in stream:
        if isinstance(item, Chunk):
            chunks.append(item)
            if isinstance(item.data, dict) and item.data["type"] == "tool-input-delta":
                break
    await stream.aclose()
    return chunks


@pytest.mark.parametrize("sdk", ALL_SDKS)
async def test_adapter_chunks_through_the_python_client(app: str, sdk: str) -> None:
    """Every SDK's stream becomes exactly the documented chunks, text as text chunks, the
    rest as JSON chunks; the snapshot joins the text chunks and only those."""
    sid = new_sid(f"ad-{sdk}")
    async with StreamClient(app, backoff=FAST) as client:
        chunks, end = await read(client.start(f"/chat/{sid}", {"sdk": sdk}))
        snapshot = await client.snapshot(sid)
    assert end is not None and end.state is State.DONE, end
    assert in_order(sdk, [value(c) for c in chunks]) == EXPECTED[sdk]
    assert snapshot.text == "".join(x for x in EXPECTED[sdk] if isinstance(x, str))
    assert snapshot.last_event_id == chunks[-1].id


@pytest.mark.parametrize("sdk", ALL_SDKS)
async def test_resume_in_the_middle_of_a_tool_call_rebuilds_the_same_message(
    app: str, sdk: str
) -> None:
    """A client cut after the first fragment of a tool call's input, while the provider is
    still holding the rest back, resumes with its cursor and ends with exactly the chunks of an
    uninterrupted read: nothing lost, nothing twice."""
    sid = new_sid(f"ad-{sdk}")
    model = f"hold-{sid}"
    async with StreamClient(app, backoff=FAST) as client:
        first = await read_into_a_tool_call(
            client.start(f"/chat/{sid}", {"sdk": sdk, "model": model})
        )
        cursor = first[-1].id
        assert (await client.status(sid)).state is State.ACTIVE
        async with httpx.AsyncClient(base_url=app) as http:
            (await http.post(f"/provider/release/{model}")).raise_for_status()
        rest, end = await read(client.stream(sid, after=cursor))
        whole, whole_end = await read(client.stream(sid))
    assert end is not None and end.state is State.DONE
    assert whole_end == end
    resumed = first + rest
    assert [c.id for c in resumed] == [c.id for c in whole]
    assert [value(c) for c in resumed] == [value(c) for c in whole]
    assert in_order(sdk, [value(c) for c in whole]) == EXPECTED[sdk]
    # The cut really was inside the tool call: its start went out, its end had not.
    kinds = [x["type"] for x in map(value, first) if isinstance(x, dict)]
    assert kinds[-2:] == ["tool-input-start", "tool-input-delta"]


def ui_parts(body: bytes) -> list[Any]:
    datas = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert datas[-1] == b"[DONE]"
    return [orjson.loads(d) for d in datas[:-1]]


def expected_parts(message_id: str, chunks: list[Any], usage: dict[str, Any]) -> list[Any]:
    """The UI message stream parts documented for ``chunks`` (text runs as text-start/-delta/
    -end, usage as message metadata, the finish reason on the final finish part)."""
    parts: list[Any] = [{"type": "start", "messageId": message_id}]
    run = 0
    open_run = False
    for chunk in chunks:
        if isinstance(chunk, str):
            if not open_run:
                run += 1
                open_run = True
                parts.append({"type": "text-start", "id": f"text-{run}"})
            parts.append({"type": "text-delta", "id": f"text-{run}", "delta": chunk})
            continue
        if chunk["type"] == "usage":
            parts.append({"type": "message-metadata", "messageMetadata": {"usage": usage}})
            continue
        if chunk["type"] == "finish":
            continue
        if open_run:
            open_run = False
            parts.append({"type": "text-end", "id": f"text-{run}"})
        parts.append(chunk)
    if open_run:
        parts.append({"type": "text-end", "id": f"text-{run}"})
    return [*parts, {"type": "finish", "finishReason": chunks[-1]["finishReason"]}]


@pytest.mark.parametrize(
    "sdk", ["openai_chat", "openai_responses", "anthropic_stream", "pydantic_ai", "langgraph"]
)
async def test_protocol_ai_sdk_maps_the_chunks_to_ui_message_parts(app: str, sdk: str) -> None:
    """With protocol="ai-sdk", tool and reasoning chunks are the SDK's own parts, the usage
    arrives as message metadata and the finish part carries the adapter's finish reason."""
    sid = new_sid(f"ad-{sdk}")
    async with httpx.AsyncClient(base_url=app, timeout=20) as http:
        response = await http.get(f"/chat/{sid}", params={"sdk": sdk, "protocol": "ai-sdk"})
    assert response.status_code == 200
    parts = ui_parts(response.content)
    usage = {k: v for k, v in EXPECTED[sdk][-2].items() if k != "type"}
    assert EXPECTED[sdk][-2]["type"] == "usage"
    message_id = parts[0]["messageId"]
    assert message_id.startswith(f"{sid}-")
    assert in_order(sdk, parts) == expected_parts(message_id, EXPECTED[sdk], usage)
    # The Anthropic signature is where the AI SDK's Anthropic provider looks for it.
    if sdk.startswith("anthropic"):
        ends = [p for p in parts if p["type"] == "reasoning-end"]
        assert ends[0]["providerMetadata"] == SIGNATURE


async def test_a_failed_response_fails_the_generation_with_the_providers_message(
    app: str,
) -> None:
    """``response.failed`` is not swallowed: the session ends failed, saying why."""
    sid = new_sid("ad-fail")
    async with StreamClient(app, backoff=FAST) as client:
        chunks, end = await read(
            client.start(f"/chat/{sid}", {"sdk": "openai_responses", "model": f"fail-{sid}"})
        )
    assert end is not None and end.state is State.FAILED
    assert "the stand-in failed on purpose" in (end.reason or "")
    assert "UpstreamError" in (end.reason or "")
    assert not any(isinstance(c.data, dict) and c.data["type"] == "finish" for c in chunks)


def test_importing_the_adapters_imports_no_sdk() -> None:
    """The core and the adapters stay free of SDKs: each is an extra, imported by the app."""
    code = (
        "import sys, fastapi_streamhub, fastapi_streamhub.adapters\n"
        "sdks = ('openai', 'anthropic', 'litellm', 'pydantic_ai', 'langchain_core', 'langgraph')\n"
        "loaded = [m for m in sdks if m in sys.modules]\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "[]", out


def test_encoder_finish_and_usage_chunks() -> None:
    """``finish`` sends no part of its own but sets the final finish reason (an unknown
    reason is ignored); ``usage`` becomes message metadata and leaves a text run open."""
    enc = UIMessageStreamEncoder("s")

    def chunk(n: int, data: Any, kind: str = "json") -> HubChunk:
        return HubChunk(Cursor(1, n), data, kind)  # type: ignore[arg-type]

    out = enc.encode(chunk(1, "hi", "text"), 1)
    out += enc.encode(chunk(2, {"type": "usage", "inputTokens": 1}), 1)
    out += enc.encode(chunk(3, {"type": "finish", "finishReason": "length"}), 1)
    out += enc.encode(chunk(4, {"type": "finish", "finishReason": "bogus"}), 1)
    out += enc.encode(End(State.DONE, None), 1)
    assert ui_parts(out) == [
        {"type": "start", "messageId": "s-1"},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "hi"},
        {"type": "message-metadata", "messageMetadata": {"usage": {"inputTokens": 1}}},
        {"type": "text-end", "id": "text-1"},
        {"type": "finish", "finishReason": "length"},
    ]


def test_adapters_export_exactly_the_documented_names() -> None:
    import fastapi_streamhub.adapters as adapters
    from fastapi_streamhub import StreamHubError

    documented = [
        "FINISH_REASONS",
        "UpstreamError",
        "anthropic_messages",
        "langchain_events",
        "langgraph_messages",
        "openai_chat",
        "openai_responses",
        "pydantic_ai_events",
        "ui_message_stream",
    ]
    assert adapters.__all__ == documented
    assert issubclass(adapters.UpstreamError, StreamHubError)


@pytest.mark.parametrize("sdk", ["openai_chat", "openai_responses_manager", "anthropic_stream"])
async def test_a_cancel_closes_the_providers_stream(app: str, sdk: str) -> None:
    """Cancelling the session mid-answer closes the SDK's stream, so the provider sees its
    client go (and stops billing tokens nobody reads), instead of a response left open."""
    sid = new_sid(f"ad-{sdk}")
    model = f"hold-{sid}"
    async with StreamClient(app, backoff=FAST) as client:
        await read_into_a_tool_call(client.start(f"/chat/{sid}", {"sdk": sdk, "model": model}))
        assert await client.cancel(sid, wait=10) is State.CANCELLED
    async with httpx.AsyncClient(base_url=app, timeout=20) as http:
        answer = await http.post(f"/provider/closed/{model}")
    assert answer.json() == {"closed": True}


async def test_a_tool_input_that_is_not_json_is_a_tool_input_error(app: str) -> None:
    """Malformed tool arguments from the model do not fail the answer: the call ends with
    ``tool-input-error`` holding the raw text, a part the AI SDK knows."""
    sid = new_sid("ad-badjson")
    async with StreamClient(app, backoff=FAST) as client:
        chunks, end = await read(
            client.start(f"/chat/{sid}", {"sdk": "openai_chat", "model": f"badjson-{sid}"})
        )
    assert end is not None and end.state is State.DONE
    errors = [c.data for c in chunks if isinstance(c.data, dict) and "errorText" in c.data]
    assert len(errors) == 1
    assert errors[0]["type"] == "tool-input-error"
    assert errors[0]["toolCallId"] == "call_w1"
    assert errors[0]["input"] == '{"city": "Paris", "unit": "celsius"'
    assert "not valid JSON" in errors[0]["errorText"]
    assert available("call_t2", "get_time", TIME) in [c.data for c in chunks]


async def test_an_incomplete_response_is_done_with_finish_reason_length(app: str) -> None:
    sid = new_sid("ad-incomplete")
    async with StreamClient(app, backoff=FAST) as client:
        chunks, end = await read(
            client.start(f"/chat/{sid}", {"sdk": "openai_responses", "model": f"incomplete-{sid}"})
        )
    assert end is not None and end.state is State.DONE
    assert chunks[-1].data == {
        "type": "finish",
        "finishReason": "length",
        "rawFinishReason": "max_output_tokens",
    }


NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.mark.skipif(NODE is None, reason="node is not installed (Node 18+ needed)")
@pytest.mark.parametrize("sdk", ["openai_chat", "anthropic_stream", "pydantic_ai"])
def test_the_ai_sdk_resumes_in_the_middle_of_a_tool_call(
    app: str, sdk: str, tmp_path: Path
) -> None:
    """The real AI SDK (``ai`` in Node, DefaultChatTransport): a chat dropped after the first
    fragment of a tool call's input and resumed with reconnectToStream ends with the same
    message as an uninterrupted chat: the same reasoning (with its signature), tool and text
    parts, and the usage in the metadata. The SDK validates every part it reads."""
    node_modules(NODE_DIR, "ai")
    chat_id = new_sid(f"ad-{sdk}")
    model = f"hold-{chat_id}"
    config = {
        "base": app,
        "chat_id": chat_id,
        "other_chat_id": new_sid(f"ad-{sdk}"),
        "prompt": "Weather in Paris?",
        "sdk": sdk,
        "model": model,
        "release_url": f"{app}/provider/release/{model}",
    }
    result = run_node(NODE_DIR, "ai_sdk.mjs", "tool_resume", config, tmp_path / "node.log")
    assert result["firstTypes"][-2:] == ["tool-input-start", "tool-input-delta"]
    # A resume replays the generation from its start.
    assert result["resumedParts"][0]["type"] == "start"
    resumed, whole = result["resumed"], result["whole"]
    assert in_order(sdk, resumed["parts"]) == in_order(sdk, whole["parts"])
    assert resumed["metadata"] == whole["metadata"]
    usage = {k: v for k, v in EXPECTED[sdk][-2].items() if k != "type"}
    assert resumed["metadata"] == {"usage": usage}
    tools = [p for p in resumed["parts"] if p["type"] == "tool-get_weather"]
    assert len(tools) == 1
    assert tools[0]["toolCallId"] in ("call_w1", "toolu_w1")
    assert tools[0]["input"] == WEATHER
    if sdk == "pydantic_ai":
        assert tools[0]["state"] == "output-available"
        assert tools[0]["output"] == {"city": "Paris", "temperature": 18, "unit": "celsius"}
    else:
        assert tools[0]["state"] == "input-available"
    if sdk == "anthropic_stream":
        thinking = [p for p in resumed["parts"] if p["type"] == "reasoning"]
        assert thinking[0]["text"] == "The user wants the weather."
        assert thinking[0]["providerMetadata"] == SIGNATURE


@pytest.mark.skipif(NODE is None, reason="node is not installed (Node 18+ needed)")
@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} is missing")
def test_the_browser_helper_rebuilds_every_adapter_chunk(app: str, tmp_path: Path) -> None:
    """The browser helper (``streamhub.js`` in Chromium) reports every chunk of an adapter
    exactly (JSON chunks as JSON, the text with its NUL as text), and rebuilds the same chunks
    after the server reset its stale cursor."""
    node_modules(BROWSER_DIR, "playwright-core")
    sid = new_sid("ad-browser")
    url = f"/chat/{sid}?sdk=anthropic_stream"
    result = run_chat("module", {"base": app, "sid": sid, "url": url}, tmp_path / "node.log")
    first, second = result["first"], result["second"]
    assert [{k: c[k] for k in ("event", "kind", "data")} for c in first["chunks"]] == [
        _expected_chunk(x) for x in ANTHROPIC_CHUNKS
    ]
    assert first["text"] == "Let me check the weather\x00."
    assert first["end"] == {"state": "done", "reason": None}
    assert len(second["resets"]) == 1 and second["chunks"] == first["chunks"]
    assert result["pageErrors"] == []
