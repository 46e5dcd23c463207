"""The SDK adapters in an app, run by uvicorn: ``uvicorn adapters_app:app --app-dir tests``.

``GET /chat/{sid}?sdk=&model=&protocol=`` returns ``ResumableStreamingResponse(sid, ...)`` over
the adapter of ``sdk`` (``openai_chat``, ``litellm``, ``openai_responses``,
``openai_responses_manager``, ``anthropic_stream``, ``anthropic_create``, ``pydantic_ai``,
``pydantic_ai_vercel`` (pydantic-ai's ``VercelAIAdapter`` SSE through ``ui_message_stream``),
``langgraph``, ``langchain_events``), whose real SDK client calls the stand-in provider
(``tests/support/provider.py``) mounted in this same app under ``/provider``. ``model=hold-<x>``
makes the provider stop in the middle of the tool call until ``POST /provider/release/hold-<x>``.
``POST /api/chat`` is the same for the AI SDK's ``DefaultChatTransport`` (the body's ``sdk``
and ``model`` choose), resumed at ``GET /api/chat/{id}/stream``. The hub's backend is
``REDIS_URL`` (default ``memory://``).

No SDK may reach the internet: every client gets the stand-in's URL, a dummy key and no retries,
and LiteLLM is told to use its bundled cost map and to send no telemetry (set before it is
imported).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")
os.environ["LANGSMITH_TRACING"] = "false"  # LangChain would otherwise trace to LangSmith
os.environ["LANGCHAIN_TRACING_V2"] = "false"

from fastapi import FastAPI, HTTPException, Request
from support.provider import router as provider_router

from fastapi_streamhub import (
    ResumableStreamingResponse,
    StreamHub,
    create_router,
    streamhub_router,
)
from fastapi_streamhub.adapters import (
    anthropic_messages,
    langchain_events,
    langgraph_messages,
    openai_chat,
    openai_responses,
    pydantic_ai_events,
    ui_message_stream,
)

KEY = "sk-standin-not-a-real-key"
# Plain data, typed Any: each SDK has its own request types, and they differ between releases.
MESSAGES: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


async def chunks(sdk: str, model: str, base: str) -> AsyncIterator[Any]:
    """The adapter's chunks for one answer of the stand-in provider at ``base``."""
    if sdk in ("openai_chat", "openai_responses", "openai_responses_manager"):
        from openai import AsyncOpenAI

        client = AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
        async with client:
            if sdk == "openai_chat":
                stream: Any = await client.chat.completions.create(
                    model=model,
                    messages=MESSAGES,
                    tools=TOOLS,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                source = openai_chat(stream)
            elif sdk == "openai_responses":
                stream = await client.responses.create(model=model, input="weather?", stream=True)
                source = openai_responses(stream)
            else:
                source = openai_responses(client.responses.stream(model=model, input="weather?"))
            async for chunk in source:
                yield chunk
    elif sdk == "litellm":
        import litellm

        litellm.telemetry = False
        stream = await litellm.acompletion(
            model=f"openai/{model}",
            api_base=f"{base}/v1",
            api_key=KEY,
            messages=MESSAGES,
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
            num_retries=0,
        )
        async for chunk in openai_chat(stream):
            yield chunk
    elif sdk in ("anthropic_stream", "anthropic_create"):
        from anthropic import AsyncAnthropic

        client_a = AsyncAnthropic(base_url=base, api_key=KEY, max_retries=0)
        async with client_a:
            args: dict[str, Any] = {"model": model, "max_tokens": 1024, "messages": MESSAGES}
            if sdk == "anthropic_stream":
                source = anthropic_messages(client_a.messages.stream(**args))
            else:
                source = anthropic_messages(await client_a.messages.create(**args, stream=True))
            async for chunk in source:
                yield chunk
    elif sdk in ("langgraph", "langchain_events"):
        async for chunk in langgraph_chunks(sdk, model, base):
            yield chunk
    elif sdk == "pydantic_ai":
        async for chunk in pydantic_ai_chunks(model, base):
            yield chunk
    elif sdk == "pydantic_ai_vercel":
        async for chunk in pydantic_ai_vercel_chunks(model, base):
            yield chunk
    else:
        raise ValueError(f"unknown sdk {sdk!r}")


def get_weather(city: str, unit: str = "celsius") -> dict[str, Any]:
    """The weather in ``city`` (the stand-in's tool calls ask for it)."""
    return {"city": city, "temperature": 18, "unit": unit}


def get_time(tz: str) -> str:
    """The time in the time zone ``tz``."""
    return f"14:00 in {tz}"


async def pydantic_ai_chunks(model: str, base: str) -> AsyncIterator[Any]:
    """An agent with two tools: the model asks for both, the agent runs them and asks again."""
    from openai import AsyncOpenAI
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    client = AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    async with client:
        llm = OpenAIChatModel(model, provider=OpenAIProvider(openai_client=client))
        agent = Agent(llm, tools=[get_weather, get_time])
        async for chunk in pydantic_ai_events(agent.run_stream_events("Weather in Paris?")):
            yield chunk


async def pydantic_ai_vercel_chunks(model: str, base: str) -> AsyncIterator[Any]:
    """The same agent behind pydantic-ai's ``VercelAIAdapter``: its encoded UI message stream
    (SSE text) through ``ui_message_stream``, parsed once."""
    from openai import AsyncOpenAI
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.ui.vercel_ai import VercelAIAdapter
    from pydantic_ai.ui.vercel_ai.request_types import SubmitMessage, TextUIPart, UIMessage

    client = AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    async with client:
        llm = OpenAIChatModel(model, provider=OpenAIProvider(openai_client=client))
        agent = Agent(llm, tools=[get_weather, get_time])
        question = UIMessage(id="q1", role="user", parts=[TextUIPart(text="Weather in Paris?")])
        run_input = SubmitMessage(id="chat", messages=[question])
        adapter = VercelAIAdapter(agent, run_input, accept="text/event-stream")
        async for chunk in ui_message_stream(adapter.encode_stream(adapter.run_stream())):
            yield chunk


def build() -> FastAPI:
    hub = StreamHub.from_url(os.environ.get("REDIS_URL") or "memory://")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with hub.lifespan(app):
            yield

    app = FastAPI(lifespan=lifespan, title="streamhub adapter tests")
    app.include_router(streamhub_router)
    app.include_router(provider_router, prefix="/provider")

    # The AI SDK's DefaultChatTransport: POST /api/chat (the body names the SDK and the model),
    # and GET /api/chat/{id}/stream to resume.
    app.include_router(create_router(prefix="/api/chat", ai_sdk=True))

    @app.post("/api/chat")
    async def ai_chat(request: Request) -> ResumableStreamingResponse:
        body = await request.json()
        base = str(request.base_url).rstrip("/") + "/provider"
        return ResumableStreamingResponse(
            str(body["id"]),
            chunks(str(body["sdk"]), str(body["model"]), base),
            restart=True,
            protocol="ai-sdk",
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/chat/{sid}")
    async def chat(
        sid: str, request: Request, sdk: str, model: str = "standin-1", protocol: str = "sse"
    ) -> ResumableStreamingResponse:
        if protocol not in ("sse", "ai-sdk"):
            raise HTTPException(422, "protocol must be sse or ai-sdk")
        base = str(request.base_url).rstrip("/") + "/provider"
        return ResumableStreamingResponse(
            sid,
            chunks(sdk, model, base),
            protocol=protocol,  # type: ignore[arg-type]
        )

    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return build()
    raise AttributeError(name)


async def langgraph_chunks(sdk: str, model: str, base: str) -> AsyncIterator[Any]:
    """A two-node LangGraph agent (model, tools): the model asks for both tools, the tool node
    runs them and the model answers."""
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    tools = [tool(get_weather), tool(get_time)]
    llm = ChatOpenAI(
        model=model,
        base_url=f"{base}/v1",
        api_key=KEY,  # type: ignore[arg-type]
        max_retries=0,
        stream_usage=True,
    ).bind_tools(tools)

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await llm.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    graph = builder.compile()
    question: Any = {"messages": [("user", "Weather in Paris?")]}
    if sdk == "langgraph":
        source = langgraph_messages(graph.astream(question, stream_mode="messages"))
    else:
        source = langchain_events(graph.astream_events(question, version="v2"))
    async for chunk in source:
        yield chunk
