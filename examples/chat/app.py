"""Chat demo: a deterministic fake LLM streamed as a resumable SSE stream.

Run it with ``python -m examples.chat`` (or ``python examples/chat/app.py``) and open
http://127.0.0.1:8000/. Settings come from the environment:

- ``REDIS_URL``: the hub's backend, ``memory://`` by default (one process); a ``redis://`` URL
  lets several instances serve the same sessions.
- ``HOST`` / ``PORT``: where uvicorn listens (127.0.0.1:8000).
- ``FAKE_LLM_DELAY``: mean seconds between tokens (0.03); tests speed it up.
- ``CHAT_DB``: the SQLite file of saved answers (``streamhub-chat.db`` in the temporary
  directory by default).

The answer to a prompt is always the same text (:func:`fake_answer`, in ``examples/_common.py``),
so a client can check that what it rebuilt after reloads, reconnects and instance switches is
exact. The page (``static/index.html``) follows the answer with the browser helper the router
serves at ``/streams/~/streamhub.js``; its "add instruction" box steers the running answer:
it sends the instruction to ``POST /streams/{sid}/messages`` (the router's endpoint), and the
fake LLM, which reads its steering messages between tokens, echoes it and changes topic.

Every finished answer — done, stopped, failed, cut by a crash — is saved through the hub's
``on_finish`` hook into SQLite (``history.py``), idempotent on ``(session_id, generation)``;
``finish_before_end`` makes the ``end`` event wait for the save, so the page, which reloads the
history when an answer ends and on every load, always finds it. ``GET /history`` lists them.
"""

from __future__ import annotations

import os
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query
from fastapi.responses import FileResponse

from examples._common import SESSION_ID, add_healthz, fake_answer, fake_llm, fake_tokens, serve
from examples.chat.history import History, default_path
from fastapi_streamhub import ResumableStreamingResponse, StreamHub, streamhub_router

__all__ = ["app", "fake_answer", "fake_llm", "fake_tokens", "main"]

STATIC = FilePath(__file__).resolve().parent / "static"

history = History(default_path())
# The end of an answer waits (up to 5 s) until it is saved: a reload after "end" finds it.
hub = StreamHub.from_url(
    os.environ.get("REDIS_URL", "memory://"), on_finish=history.save, finish_before_end=5.0
)
app = FastAPI(title="streamhub chat demo", lifespan=hub.lifespan)
app.include_router(streamhub_router)
add_healthz(app, hub)


@app.get(
    "/chat/{session_id}",
    summary="Ask the fake LLM; the answer streams as SSE",
    response_class=ResumableStreamingResponse,
    responses=ResumableStreamingResponse.openapi_responses(),
)
async def chat(
    session_id: Annotated[str, Path(pattern=SESSION_ID)],
    prompt: Annotated[str, Query(min_length=1, max_length=4000)],
) -> ResumableStreamingResponse:
    # A factory rather than a generator: the fake LLM gets the stream's context, through which
    # it reads the instructions the page sends to POST /streams/{session_id}/messages.
    return ResumableStreamingResponse(
        session_id, lambda ctx: fake_llm(prompt, ctx), metadata={"prompt": prompt}
    )


@app.get("/history", summary="The answers saved last, newest first")
async def saved_answers(
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[dict[str, Any]]:
    return await history.latest(limit)


@app.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})


def main() -> None:
    serve(app)


if __name__ == "__main__":
    main()
