"""A resumable stream over any OpenAI-compatible chat-completions API, with plain httpx.

``openai_tokens(client, **request)`` POSTs ``{base_url}/chat/completions`` with
``"stream": true``, reads the provider's server-sent events and yields each
``choices[0].delta.content`` until ``data: [DONE]``. The app wraps it in a
``ResumableStreamingResponse``, so the provider is called once per session whatever happens to
the client's connection, and a cancel closes the provider's HTTP stream.

Environment: ``OPENAI_BASE_URL`` (``https://api.openai.com/v1``), ``OPENAI_API_KEY``,
``OPENAI_MODEL`` (``gpt-4o-mini``), ``REDIS_URL`` (``memory://``), ``HOST``/``PORT``.
Against the local stand-in provider (``examples/openai_adapter/standin.py``)::

    PORT=9000 python -m examples.openai_adapter.standin &
    OPENAI_BASE_URL=http://127.0.0.1:9000/v1 OPENAI_API_KEY=test PORT=8000 \\
        python -m examples.openai_adapter
    curl -N 'http://127.0.0.1:8000/ask/s1?q=hello'
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Path, Query, Request

from examples._common import SESSION_ID, serve
from fastapi_streamhub import ResumableStreamingResponse, StreamHub, streamhub_router

_EOL = re.compile(r"\r\n|\r|\n")


class ProviderError(RuntimeError):
    """The provider answered with an error status or an error event."""


async def _lines(texts: AsyncIterator[str]) -> AsyncIterator[str]:
    """Split a text stream into lines at ``\\r\\n``, ``\\r`` or ``\\n``, as SSE does.

    Not ``httpx.Response.aiter_lines()``: it also splits at U+2028, U+0085 and other
    characters that JSON may carry unescaped inside a string.
    """
    pending = ""
    async for text in texts:
        pending += text
        # A trailing CR may be the first half of a CRLF split across two reads: keep it.
        held = "\r" if pending.endswith("\r") else ""
        *lines, pending = _EOL.split(pending[: len(pending) - len(held)])
        pending += held
        for line in lines:
            yield line
    if pending.rstrip("\r"):
        yield pending.rstrip("\r")


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The data of each server-sent event read from ``lines`` (SSE rules, data field only)."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


async def openai_tokens(client: httpx.AsyncClient, **request: Any) -> AsyncIterator[str]:
    """Stream a chat completion and yield its content deltas.

    ``client`` carries the base URL and the ``Authorization`` header; ``request`` is the JSON
    body (``model``, ``messages``, ``temperature``...), sent with ``"stream": true``.
    """
    body = {**request, "stream": True}
    async with client.stream("POST", "chat/completions", json=body) as response:
        if response.status_code != 200:
            detail = (await response.aread()).decode("utf-8", "replace")[:500]
            raise ProviderError(f"provider answered HTTP {response.status_code}: {detail}")
        async for data in _sse_data(_lines(response.aiter_text())):
            if data.strip() == "[DONE]":
                return
            event = json.loads(data)
            if "error" in event:
                raise ProviderError(f"provider error: {event['error']}")
            for choice in event.get("choices") or ():
                if choice.get("index", 0) != 0:
                    continue
                content = (choice.get("delta") or {}).get("content")
                if content:
                    yield content
    raise ProviderError("the provider's stream ended without data: [DONE]")


def provider_client() -> httpx.AsyncClient:
    """An httpx client for the provider configured in the environment."""
    base_url = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/") + "/"
    headers = {}
    if key := os.environ.get("OPENAI_API_KEY"):
        headers["authorization"] = f"Bearer {key}"
    # No read timeout between tokens beyond a generous one: models pause while they think.
    timeout = httpx.Timeout(10.0, read=120.0)
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)


hub = StreamHub.from_url(os.environ.get("REDIS_URL", "memory://"))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    # The client outlives every producer: the hub stops its producers before the client closes.
    async with provider_client() as client:
        app.state.provider = client
        async with hub.lifespan(app) as state:
            yield {**state, "provider": client}


app = FastAPI(title="streamhub OpenAI adapter", lifespan=lifespan)
app.include_router(streamhub_router)


@app.get(
    "/ask/{session_id}",
    summary="Ask the provider; the answer streams as SSE",
    response_class=ResumableStreamingResponse,
    responses=ResumableStreamingResponse.openapi_responses(),
)
async def ask(
    request: Request,
    session_id: Annotated[str, Path(pattern=SESSION_ID)],
    q: Annotated[str, Query(min_length=1, max_length=8000)],
) -> ResumableStreamingResponse:
    tokens = openai_tokens(
        request.app.state.provider,
        model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
        messages=[{"role": "user", "content": q}],
    )
    return ResumableStreamingResponse(session_id, tokens, metadata={"q": q})


@app.get("/healthz", summary="Liveness probe")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    serve(app)


if __name__ == "__main__":
    main()
