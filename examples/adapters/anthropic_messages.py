"""Anthropic Messages through ``adapters.anthropic_messages``: text, ``tool_use`` input, thinking
with its signature (kept for the next turn). ``python -m examples.adapters.anthropic_messages``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from anthropic import AsyncAnthropic

from examples._common import serve
from examples.adapters._app import adapter_app, env
from fastapi_streamhub.adapters import anthropic_messages


async def answer(q: str) -> AsyncIterator[Any]:
    llm = AsyncAnthropic(base_url=env("ANTHROPIC_BASE_URL"), api_key=env("ANTHROPIC_API_KEY"))
    async with llm:
        # The stream manager itself: the adapter enters it and closes it on every exit.
        stream = llm.messages.stream(
            model=env("LLM_MODEL"), max_tokens=1024, messages=[{"role": "user", "content": q}]
        )
        async for chunk in anthropic_messages(stream):
            yield chunk


app = adapter_app("Anthropic Messages", answer)

if __name__ == "__main__":
    serve(app)
