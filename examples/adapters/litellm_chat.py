"""LiteLLM's ``acompletion(stream=True)``: the Chat Completions shape, so ``adapters.openai_chat``
reads it (one adapter for every provider LiteLLM speaks to).
``python -m examples.adapters.litellm_chat``."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import

from collections.abc import AsyncIterator
from typing import Any

import litellm

from examples._common import serve
from examples.adapters._app import adapter_app, env
from fastapi_streamhub.adapters import openai_chat

litellm.telemetry = False


async def answer(q: str) -> AsyncIterator[Any]:
    stream: Any = await litellm.acompletion(
        model=f"openai/{env('LLM_MODEL')}",  # "<provider>/<model>": here an OpenAI-compatible one
        api_base=env("OPENAI_BASE_URL"),
        api_key=env("OPENAI_API_KEY"),
        messages=[{"role": "user", "content": q}],
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in openai_chat(stream):
        yield chunk


app = adapter_app("LiteLLM", answer)

if __name__ == "__main__":
    serve(app)
