"""A pydantic-ai agent with a tool through ``adapters.pydantic_ai_events``: text, reasoning, the
tool call and the tool's result. ``python -m examples.adapters.pydantic_ai_agent``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from examples._common import serve
from examples.adapters._app import adapter_app, env
from fastapi_streamhub.adapters import pydantic_ai_events


def get_weather(city: str, unit: str = "celsius") -> dict[str, Any]:
    """The weather in ``city``."""
    return {"city": city, "temperature": 18, "unit": unit}


def get_time(tz: str) -> str:
    """The time in the time zone ``tz``."""
    return f"14:00 in {tz}"


provider = OpenAIProvider(base_url=env("OPENAI_BASE_URL"), api_key=env("OPENAI_API_KEY"))
agent = Agent(OpenAIChatModel(env("LLM_MODEL"), provider=provider), tools=[get_weather, get_time])


async def answer(q: str) -> AsyncIterator[Any]:
    async for chunk in pydantic_ai_events(agent.run_stream_events(q)):
        yield chunk


app = adapter_app("pydantic-ai", answer)

if __name__ == "__main__":
    serve(app)
