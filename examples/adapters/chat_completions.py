"""OpenAI Chat Completions through ``adapters.openai_chat``: text, tool calls (assembled by
index), usage and the finish reason. ``python -m examples.adapters.chat_completions``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from openai import AsyncOpenAI

from examples._common import serve
from examples.adapters._app import adapter_app, env
from fastapi_streamhub.adapters import openai_chat

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def answer(q: str) -> AsyncIterator[Any]:
    async with AsyncOpenAI(base_url=env("OPENAI_BASE_URL"), api_key=env("OPENAI_API_KEY")) as llm:
        stream = await llm.chat.completions.create(
            model=env("LLM_MODEL"),
            messages=[{"role": "user", "content": q}],
            tools=[WEATHER_TOOL],
            stream=True,
            stream_options={"include_usage": True},  # else no usage chunk
        )
        async for chunk in openai_chat(stream):
            yield chunk


app = adapter_app("OpenAI Chat Completions", answer)

if __name__ == "__main__":
    serve(app)
