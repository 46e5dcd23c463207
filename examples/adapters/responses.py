"""The OpenAI Responses API through ``adapters.openai_responses``: text, function-call
arguments, reasoning summaries, usage. ``python -m examples.adapters.responses``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from openai import AsyncOpenAI

from examples._common import serve
from examples.adapters._app import adapter_app, env
from fastapi_streamhub.adapters import openai_responses


async def answer(q: str) -> AsyncIterator[Any]:
    async with AsyncOpenAI(base_url=env("OPENAI_BASE_URL"), api_key=env("OPENAI_API_KEY")) as llm:
        stream = await llm.responses.create(model=env("LLM_MODEL"), input=q, stream=True)
        async for chunk in openai_responses(stream):
            yield chunk


app = adapter_app("OpenAI Responses", answer)

if __name__ == "__main__":
    serve(app)
