"""Pre-encoded streams: a producer that already speaks the AI SDK's UI message stream is parsed
once by ``adapters.ui_message_stream`` and persisted as chunks, never stored encoded and never
encoded twice.

The real producer is pydantic-ai's ``VercelAIAdapter`` (the agent of ``tests/adapters_app.py``,
its OpenAI model pointed at the stand-in provider over real HTTP), served by uvicorn; its SSE
text goes through ``ui_message_stream`` (``sdk=pydantic_ai_vercel``). The same agent through the
native adapter (``sdk=pydantic_ai``) is the reference: the text and the tool parts must be the
same, a resume in the middle of a tool call must rebuild the uninterrupted chunks, and
``protocol="ai-sdk"`` must send each of its parts once, as a part (not as a string holding one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from support.apps import AppServer, start_servers
from support.sids import new_sid
from test_adapters import FAST, read_into_a_tool_call

from fastapi_streamhub import State
from fastapi_streamhub.adapters import UpstreamError, ui_message_stream
from fastapi_streamhub.client import Chunk, StreamClient

pytestmark = pytest.mark.anyio

SSE = (
    b": a comment\r\n"
    b'data: {"type":"start","messageId":"m1"}\r\n\r\n'
    b'data: {"type":"start-step"}\n\n'
    b'data: {"type":"text-start","id":"t"}\n\n'
    b'data: {"type":"text-delta","id":"t","delta":"Hel"}\n\n'
    b'data: {"type":"text-delta","id":"t","delta":"lo \xc3\xa9"}\n\n'
    b'data: {"type":"text-end","id":"t"}\n\n'
    b'data: {"type":"tool-input-start","toolCallId":"c1","toolName":"f"}\r\r'
    b'event: ignored\ndata: {"type":"tool-input-available","toolCallId":"c1",\n'
    b'data: "toolName":"f","input":{"a":1}}\n\n'
    b'data: {"type":"message-metadata","messageMetadata":{"k":1}}\n\n'
    b'data: {"type":"finish-step"}\n\n'
    b'data: {"type":"finish","finishReason":"tool-calls"}\n\n'
    b"data: [DONE]\n\n"
    b'data: {"type":"text-delta","id":"t","delta":"after done"}\n\n'
)
PARSED: list[Any] = [
    {"type": "start-step"},
    "Hel",
    "lo é",
    {"type": "tool-input-start", "toolCallId": "c1", "toolName": "f"},
    {"type": "tool-input-available", "toolCallId": "c1", "toolName": "f", "input": {"a": 1}},
    {"type": "message-metadata", "messageMetadata": {"k": 1}},
    {"type": "finish-step"},
    {"type": "finish", "finishReason": "tool-calls", "rawFinishReason": None},
]


async def collect(pieces: list[Any]) -> list[Any]:
    async def source() -> AsyncIterator[Any]:
        for piece in pieces:
            yield piece

    return [chunk async for chunk in ui_message_stream(source())]


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(SSE)])
async def test_sse_text_split_anywhere_gives_the_same_chunks(size: int) -> None:
    pieces = [SSE[i : i + size] for i in range(0, len(SSE), size)]
    text = SSE.decode()
    strings = [text[i : i + size] for i in range(0, len(text), size)]
    assert await collect(pieces) == PARSED
    assert await collect(strings) == PARSED


async def test_decoded_parts_and_errors() -> None:
    parts = [{"type": "text-delta", "id": "t", "delta": "x"}, {"type": "finish"}]
    assert await collect(parts) == [
        "x",
        {"type": "finish", "finishReason": "stop", "rawFinishReason": None},
    ]
    with pytest.raises(UpstreamError, match="quota"):
        await collect(['data: {"type":"error","errorText":"quota"}\n\n'])
    with pytest.raises(UpstreamError, match="not JSON"):
        await collect(["data: {oops\n\n"])
    with pytest.raises(TypeError, match="string 'type'"):
        await collect([42])


# -- the real VercelAIAdapter, served ---------------------------------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        "REDIS_URL": "memory://",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    server = AppServer("pre-encoded", env, tmp_path_factory.mktemp("pre"), "adapters_app:app")
    start_servers([server])
    try:
        yield server.url
        log = server.log()
        assert "Error" not in log and "Warning" not in log, log
    finally:
        server.stop()


def value(chunk: Chunk) -> Any:
    return chunk.data


async def read_all(client: StreamClient, path: str, params: dict[str, str]) -> list[Chunk]:
    chunks: list[Chunk] = []
    stream = client.start(path, params)
    async for item in stream:
        if isinstance(item, Chunk):
            chunks.append(item)
    assert stream.end is not None and stream.end.state is State.DONE, stream.end
    return chunks


def tool_parts(values: list[Any]) -> dict[str, list[Any]]:
    """The tool parts of each call, in order (the two producers interleave calls differently:
    the native adapter ends a call's input when the next part starts, pydantic-ai's
    VercelAIAdapter when the model's response ends)."""
    calls: dict[str, list[Any]] = {}
    for v in values:
        if isinstance(v, dict) and str(v["type"]).startswith("tool-"):
            calls.setdefault(v["toolCallId"], []).append(v)
    return calls


async def test_vercel_adapter_sse_is_stored_as_the_native_chunks(app: str) -> None:
    async with StreamClient(app, backoff=FAST) as client:
        native = [
            value(c)
            for c in await read_all(client, f"/chat/{new_sid('pn')}", {"sdk": "pydantic_ai"})
        ]
        sid = new_sid("pv")
        vercel = [
            value(c) for c in await read_all(client, f"/chat/{sid}", {"sdk": "pydantic_ai_vercel"})
        ]
        snapshot = await client.snapshot(sid)
    texts = [v for v in vercel if isinstance(v, str)]
    assert texts and not any(t.startswith("data:") for t in texts)  # not stored encoded
    assert "".join(texts) == "".join(v for v in native if isinstance(v, str))
    assert snapshot.text == "".join(texts)
    assert tool_parts(vercel) == tool_parts(native) and len(tool_parts(native)) == 2
    assert vercel[-1] == {"type": "finish", "finishReason": "stop", "rawFinishReason": None}
    kinds = {v["type"] for v in vercel if isinstance(v, dict)}
    assert not kinds & {"start", "text-start", "text-end", "text-delta"}


async def test_resume_in_the_middle_of_a_tool_call(app: str) -> None:
    sid = new_sid("pv-hold")
    model = f"hold-{sid}"
    async with StreamClient(app, backoff=FAST) as client:
        first = await read_into_a_tool_call(
            client.start(f"/chat/{sid}", {"sdk": "pydantic_ai_vercel", "model": model})
        )
        async with httpx.AsyncClient(base_url=app) as http:
            (await http.post(f"/provider/release/{model}")).raise_for_status()
        rest = [c async for c in client.stream(sid, after=first[-1].id) if isinstance(c, Chunk)]
        whole = [c async for c in client.stream(sid) if isinstance(c, Chunk)]
    resumed = first + rest
    assert [c.id for c in resumed] == [c.id for c in whole]
    assert [c.data for c in resumed] == [c.data for c in whole]
    assert any(isinstance(c.data, dict) and c.data["type"] == "tool-input-available" for c in rest)


async def test_protocol_ai_sdk_sends_each_part_once(app: str) -> None:
    sid = new_sid("pv-ai")
    async with httpx.AsyncClient(base_url=app, timeout=20) as http:
        body = (
            await http.get(
                f"/chat/{sid}", params={"sdk": "pydantic_ai_vercel", "protocol": "ai-sdk"}
            )
        ).content
    datas = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert datas[-1] == b"[DONE]"
    parts = [orjson.loads(d) for d in datas[:-1]]
    assert all(isinstance(p, dict) for p in parts)  # a part, never a string holding one
    kinds = [p["type"] for p in parts]
    assert kinds[0] == "start" and kinds.count("start") == 1
    assert kinds[-1] == "finish" and kinds.count("finish") == 1
    assert kinds.count("tool-input-available") == 2  # the stand-in's two tool calls, once each
    assert not any(p["type"] == "data-json" for p in parts)
