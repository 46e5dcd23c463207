"""A FastAPI backend for the Vercel AI SDK: ``useChat({ resume: true })`` resumes its answers.

The AI SDK's ``DefaultChatTransport`` (npm package ``ai``) talks to two URLs, both served here
with the SDK's defaults (``api: "/api/chat"``):

- ``POST /api/chat`` with ``{"id": <chat id>, "messages": [...], "trigger": ...}``: answers the
  last user message with the fake LLM of the chat example, as a UI message stream
  (``ResumableStreamingResponse(..., protocol="ai-sdk")``), and a ``data-usage`` part at the
  end;
- ``GET /api/chat/{chat_id}/stream`` (the router built with ``ai_sdk=True``): the resume
  request, 204 when no answer is running, else the answer from its start and then live.

The chat id is the session id, and the id of the last user message is the generation's
``turn``: a new user message starts a new generation of that session (the generation number
makes each answer's message id, ``<chat id>-<generation>``, unique within the chat), and one
sent while an answer still runs cancels that answer first (it ends ``cancelled``, reason
``superseded``): a question asked after Stop is never lost. A repeat of the same message (a
retry, a second tab) joins the answer running for it, or replays it once finished; a
``regenerate-message`` request is a turn of its own (``regenerate:<message id>``).

The page side: ``GET /api/chat/~/chat-transport.js`` is the router's transport for
``useChat``, whose ``stop()`` also cancels the answer on the server.

A chat is a conversation: each generation's metadata is the user's turn (``{"user": {"id",
"text"}}``), so ``GET /api/chat/{chat_id}?follow=conversation`` (the router's SSE stream, or
``streamhub.js`` with ``conversation: true``, or ``StreamClient.stream(chat_id,
conversation=True)``) shows a second tab or device every question and its answer, turn after
turn; ``?follow=turns`` gives each turn's start (with its ``turn``) and end only, for a page
whose ``useChat`` streams the answers itself (the React page here). ``GET
/api/chat/{chat_id}/status`` names the running generation and its ``turn``. ``GET
/api/history/{chat_id}`` lists the turns this instance answered (kept in memory: a real app
saves them in its database).

``GET /`` is the React front end in ``page/`` (``useChat({ resume: true })`` with the router's
transport); ``GET /app.js`` its bundle, built with ``npm ci && npm run build`` in ``page/``.

Run it with ``python -m examples.ai_sdk``; settings: ``REDIS_URL`` (``memory://``),
``HOST``/``PORT`` (127.0.0.1:8000), ``FAKE_LLM_DELAY`` (0.03 s per token), ``CORS_ORIGINS``
(comma-separated origins allowed to call the API, such as a Next.js dev server on
``http://localhost:3000``; none by default), ``AI_SDK_PAGE_BUNDLE`` (the folder of the page's
``app.js``, ``page/dist``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from examples._common import SESSION_ID, add_healthz, fake_llm, serve
from fastapi_streamhub import Event, ResumableStreamingResponse, StreamHub, create_router

__all__ = ["HISTORY", "ChatRequest", "answer", "app", "history", "main", "prompt_of", "turn_of"]

ChatId = Annotated[str, StringConstraints(pattern=SESSION_ID)]

PAGE = FilePath(__file__).resolve().parent / "page"
# The React page's bundle (`npm ci && npm run build` in page/ writes page/dist/app.js);
# AI_SDK_PAGE_BUNDLE names another folder holding app.js (the tests build it there).
BUNDLE = FilePath(os.environ.get("AI_SDK_PAGE_BUNDLE") or PAGE / "dist")

hub = StreamHub.from_url(os.environ.get("REDIS_URL", "memory://"))
app = FastAPI(title="streamhub AI SDK backend", lifespan=hub.lifespan)
# The SDK resumes at `${api}/${chatId}/stream`: mounting the router at the chat route's path
# keeps the SDK's default URLs (and adds /api/chat/{id}/status, /cancel, ... beside them).
# A page on another origin (CORS_ORIGINS) may also cancel or steer: the router refuses
# cross-origin writes from any other origin.
ORIGINS = [o.strip() for o in os.environ.get("CORS_ORIGINS", "").split(",") if o.strip()]
app.include_router(create_router(prefix="/api/chat", ai_sdk=True, allowed_origins=ORIGINS))
add_healthz(app, hub)
if ORIGINS:
    app.add_middleware(
        CORSMiddleware,
        allow_origins=ORIGINS,
        allow_methods=["GET", "POST"],
        allow_headers=["content-type"],
    )


class UIMessage(BaseModel):
    """A message as the SDK sends it; only text parts are read here."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=180)
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = Field(max_length=1000)


class ChatRequest(BaseModel):
    """The body of the SDK's ``sendMessages`` request."""

    model_config = ConfigDict(extra="allow")  # the transport's `body` option adds fields
    id: ChatId
    messages: list[UIMessage] = Field(min_length=1, max_length=1000)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = Field(default=None, max_length=180)


def prompt_of(messages: list[UIMessage]) -> str:
    """The text of the last user message (422 when there is none)."""
    for message in reversed(messages):
        if message.role == "user":
            text = "".join(
                p["text"]
                for p in message.parts
                if p.get("type") == "text" and isinstance(p.get("text"), str)
            ).strip()
            if text:
                return text[:4000]
    raise HTTPException(status_code=422, detail="no user message with text to answer")


# chat id -> the turns answered here: {"user": {"id", "text"}, "answer", "state"}.
HISTORY: dict[str, list[dict[str, Any]]] = {}
MAX_CHATS = 1000  # the oldest chat's history goes first


async def answer(prompt: str, chat_id: str = "", user: Any = None) -> AsyncIterator[str | Event]:
    """The fake LLM's tokens (``text-delta`` parts), then ``data-usage`` with their count.

    The turn is kept in :data:`HISTORY`, with the answer as far as it got (``stopped`` when
    the generation was cancelled or superseded).
    """
    tokens = 0
    text: list[str] = []
    turn = {"user": user, "answer": "", "state": "stopped"}
    if chat_id:
        HISTORY.setdefault(chat_id, []).append(turn)
        while len(HISTORY) > MAX_CHATS:
            del HISTORY[next(iter(HISTORY))]
    try:
        async for token in fake_llm(prompt):
            tokens += 1
            text.append(token)
            yield token
        yield Event({"tokens": tokens}, "usage")
        turn["state"] = "done"
    finally:
        turn["answer"] = "".join(text)


@app.post(
    "/api/chat",
    summary="Answer the last user message as a UI message stream",
    response_class=ResumableStreamingResponse,
    responses=ResumableStreamingResponse.openapi_responses("The UI message stream."),
)
async def chat(request: ChatRequest) -> ResumableStreamingResponse:
    prompt = prompt_of(request.messages)
    turn = turn_of(request)
    user = {"id": turn, "text": prompt}
    return ResumableStreamingResponse(
        request.id,
        answer(prompt, request.id, user),
        turn=turn,
        metadata={"user": user},  # the user's turn, for followers of the conversation
        protocol="ai-sdk",
    )


@app.get("/api/history/{chat_id}", summary="The turns of a chat answered by this instance")
async def history(chat_id: Annotated[str, Path(pattern=SESSION_ID)]) -> dict[str, Any]:
    return {"chat_id": chat_id, "turns": HISTORY.get(chat_id, [])}


@app.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(PAGE / "index.html", headers={"cache-control": "no-store"})


@app.get("/app.js", include_in_schema=False)
async def page_bundle() -> FileResponse:
    bundle = BUNDLE / "app.js"
    if not bundle.is_file():
        raise HTTPException(
            status_code=404,
            detail="the page is not built: run `npm ci && npm run build` in examples/ai_sdk/page",
        )
    return FileResponse(bundle, media_type="text/javascript", headers={"cache-control": "no-cache"})


def turn_of(request: ChatRequest) -> str:
    """What the request asks: its last user message, or the answer it regenerates."""
    if request.trigger == "regenerate-message" and request.messageId:
        return f"regenerate:{request.messageId}"
    for message in reversed(request.messages):
        if message.role == "user":
            return f"message:{message.id}"
    raise HTTPException(status_code=422, detail="no user message to answer")


def main() -> None:
    serve(app)


if __name__ == "__main__":
    main()
