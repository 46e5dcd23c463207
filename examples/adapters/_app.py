"""What the adapter examples share: the app around one ``answer(question)`` generator.

``GET /ask/{session_id}?q=...`` streams the answer as a resumable SSE stream (the router's
endpoints resume, cancel and snapshot it); the answer's text and tool calls are logged through
the hub's ``on_finish`` when it ends. Every example calls the provider at the SDK's usual
environment variables, defaulting to the stand-in (``python -m examples.adapters.standin``,
port 9000) so it runs without a key:

- ``OPENAI_BASE_URL`` (``http://127.0.0.1:9000/v1``), ``OPENAI_API_KEY``;
- ``ANTHROPIC_BASE_URL`` (``http://127.0.0.1:9000``), ``ANTHROPIC_API_KEY``;
- ``LLM_MODEL``: the model name (``standin-1``; set a real one with a real provider).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query

from examples._common import SESSION_ID, add_healthz
from fastapi_streamhub import (
    FinishedGeneration,
    ResumableStreamingResponse,
    StreamHub,
    streamhub_router,
)

__all__ = ["STANDIN", "adapter_app", "env"]

log = logging.getLogger("examples.adapters")

STANDIN = "http://127.0.0.1:9000"
_DEFAULTS = {
    "OPENAI_BASE_URL": f"{STANDIN}/v1",
    "OPENAI_API_KEY": "standin-no-key",
    "ANTHROPIC_BASE_URL": STANDIN,
    "ANTHROPIC_API_KEY": "standin-no-key",
    "LLM_MODEL": "standin-1",
}


def env(name: str) -> str:
    """An environment variable of the list above, or its stand-in default."""
    return os.environ.get(name) or _DEFAULTS[name]


async def log_answer(done: FinishedGeneration) -> None:
    """The ``on_finish`` hook: a real app saves the answer here (see ``examples/chat``)."""
    tools = [c["toolName"] for c in done.chunks if c.get("type") == "tool-input-available"]
    log.info(
        "answer %s/%d %s: %d characters, tool calls %s",
        done.session_id,
        done.generation,
        done.state,
        len(done.text),
        tools,
    )


def adapter_app(title: str, answer: Callable[[str], AsyncIterator[Any]]) -> FastAPI:
    """An app that streams ``answer(q)`` at ``GET /ask/{session_id}?q=``."""
    hub = StreamHub.from_url(os.environ.get("REDIS_URL", "memory://"), on_finish=log_answer)
    app = FastAPI(title=title, lifespan=hub.lifespan)
    app.include_router(streamhub_router)
    add_healthz(app, hub)

    @app.get("/ask/{session_id}", response_class=ResumableStreamingResponse)
    async def ask(
        session_id: Annotated[str, Path(pattern=SESSION_ID)],
        q: Annotated[str, Query(min_length=1, max_length=4000)],
    ) -> ResumableStreamingResponse:
        return ResumableStreamingResponse(session_id, answer(q), metadata={"q": q})

    return app
