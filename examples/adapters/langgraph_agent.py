"""A LangGraph agent (a model node and a tool node) through ``adapters.langgraph_messages``:
every model call's text and tool calls, and the tools' results.
``python -m examples.adapters.langgraph_agent``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from examples._common import serve
from examples.adapters._app import adapter_app, env
from fastapi_streamhub.adapters import langgraph_messages


@tool
def get_weather(city: str, unit: str = "celsius") -> dict[str, Any]:
    """The weather in ``city``."""
    return {"city": city, "temperature": 18, "unit": unit}


@tool
def get_time(tz: str) -> str:
    """The time in the time zone ``tz``."""
    return f"14:00 in {tz}"


def build_graph() -> Any:
    tools = [get_weather, get_time]
    llm = ChatOpenAI(
        model=env("LLM_MODEL"),
        base_url=env("OPENAI_BASE_URL"),
        api_key=env("OPENAI_API_KEY"),  # type: ignore[arg-type]  # a str is accepted at runtime
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
    return builder.compile()


graph = build_graph()


async def answer(q: str) -> AsyncIterator[Any]:
    question: Any = {"messages": [("user", q)]}
    async for chunk in langgraph_messages(graph.astream(question, stream_mode="messages")):
        yield chunk


app = adapter_app("LangGraph", answer)

if __name__ == "__main__":
    serve(app)
