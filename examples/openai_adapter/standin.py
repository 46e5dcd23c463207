"""A local stand-in for an OpenAI-compatible provider, for tests and demos without a key.

``POST /v1/chat/completions`` answers every request with :func:`completion` of the last user
message: streamed as ``chat.completion.chunk`` events (``data: {...}`` lines, then
``data: [DONE]``) when ``"stream": true``, else as one ``chat.completion`` object. Any bearer
token is accepted but one must be sent. ``STANDIN_DELAY`` sets the seconds between chunks
(0.02). Run it with ``PORT=9000 python -m examples.openai_adapter.standin``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

app = FastAPI(title="OpenAI-compatible stand-in")


class Message(BaseModel):
    role: str
    content: str


class CompletionRequest(BaseModel):
    model: str
    messages: list[Message]
    stream: bool = False


def completion(question: str) -> str:
    """The stand-in's answer to ``question``: deterministic, with characters worth checking."""
    return (
        f"Stand-in model here. You said: {question}\n\n"
        "Streams are resumable — even with unicode (naïve café, 東京, 🚀), "
        "a Windows line ending\r\nand a lone carriage return\rin the text, "
        "a line separator\u2028too.\n"
        "The end."
    )


def pieces(text: str) -> list[str]:
    """``text`` cut the way providers cut it: a few characters per chunk, words split apart."""
    return [text[i : i + 7] for i in range(0, len(text), 7)]


def _chunk(model: str, created: int, delta: dict[str, Any], finish: str | None) -> str:
    body = {
        "id": f"chatcmpl-standin-{created}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    # ensure_ascii=False: real providers send raw UTF-8 (and U+2028 may appear unescaped).
    return "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"


async def _events(model: str, text: str, delay: float) -> AsyncIterator[str]:
    created = int(time.time())
    yield _chunk(model, created, {"role": "assistant", "content": ""}, None)
    for piece in pieces(text):
        await anyio.sleep(delay)
        yield _chunk(model, created, {"content": piece}, None)
    yield _chunk(model, created, {}, "stop")
    yield "data: [DONE]\n\n"


@app.post("/v1/chat/completions")
async def chat_completions(
    body: CompletionRequest, authorization: str | None = Header(default=None)
) -> Any:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(status_code=401, detail="missing bearer token")
    users = [m.content for m in body.messages if m.role == "user"]
    text = completion(users[-1] if users else "")
    if body.stream:
        delay = float(os.environ.get("STANDIN_DELAY", "0.02"))
        return StreamingResponse(_events(body.model, text, delay), media_type="text/event-stream")
    return JSONResponse(
        {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
    )


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "9000"))
    )
