"""What the examples share: a deterministic fake LLM, and running an app under uvicorn.

The fake LLM's answer to a prompt is always the same text (:func:`fake_answer`), so a client
can check that what it rebuilt after reloads, reconnects and instance switches is exact.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI

from fastapi_streamhub import StreamContext, StreamHub
from fastapi_streamhub._types import SESSION_ID_PATTERN

log = logging.getLogger("examples.fake_llm")

# The router's own check of a session id, for the examples' generator routes.
SESSION_ID = SESSION_ID_PATTERN

_OPENINGS = (
    "That is a good question, and it has more than one side.",
    "Let me walk through it step by step.",
    "The short answer is that it depends on what you optimise for.",
    "People ask this often, and the usual answers miss a detail or two.",
)
_MIDDLES = (
    "Each word you see was published to the hub before it reached your browser.",
    "If you reload the page now, the text picks up exactly where it stopped.",
    "A second server that shares the same Redis can serve the rest of this answer.",
    "Nothing is generated twice: the producer keeps running while readers come and go.",
    "The cursor in every event id tells the server which words you already have.",
    "Stopping the answer is a cancel that reaches the producer wherever it runs.",
)
_CLOSINGS = (
    "I hope that helps — ask a follow-up question if anything is unclear.",
    "That is the gist of it; the details are in the documentation… as always.",
    "Try it yourself: break the connection and watch the stream heal itself.",
)


def fake_answer(prompt: str) -> str:
    """The canned answer to ``prompt``: three paragraphs, 150-300 words, always the same."""
    words = prompt.split()
    topic = " ".join(words[:24]) + (" …" if len(words) > 24 else "")
    topic = topic or "nothing in particular"
    seed = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big")
    rng = random.Random(seed)
    middles = rng.sample(_MIDDLES, 5)
    first = [
        f'You asked: "{topic}".',
        rng.choice(_OPENINGS),
        "Here is a considered answer, streamed one word at a time so that you can watch it arrive.",
        *middles[:2],
    ]
    second = [
        "Think of the answer as a log rather than a response.",
        "Every token is appended to the log with a number, and readers follow the log from "
        "whatever number they last saw.",
        *middles[2:],
        "That is why a naïve retry is not needed: the reader resumes, the writer never restarts.",
    ]
    third = [
        f'In short, "{topic}" deserves a careful look, and this stream survives a reload, a '
        "dropped connection or a second server along the way.",
        rng.choice(_CLOSINGS),
    ]
    return "\n\n".join(" ".join(paragraph) for paragraph in (first, second, third))


def fake_tokens(prompt: str) -> list[str]:
    """``fake_answer(prompt)`` split into word tokens (each keeps its trailing whitespace)."""
    return re.findall(r"\S+\s*|\s+", fake_answer(prompt))


def token_delay() -> float:
    """Mean seconds between tokens, from ``FAKE_LLM_DELAY`` (default 0.03)."""
    return max(0.0, float(os.environ.get("FAKE_LLM_DELAY", "0.03")))


def instruction_text(instruction: str) -> str:
    """What the fake LLM writes when an instruction reaches it, before it changes topic."""
    return f"\n\n[instruction: {instruction}]\n\n"


async def fake_llm(prompt: str, ctx: StreamContext | None = None) -> AsyncIterator[str]:
    """Yield the tokens of :func:`fake_answer` with a realistic, jittered pace.

    With a stream context it can be steered: each steering message (a string, the instruction)
    that arrives mid-answer is echoed as :func:`instruction_text`, and the answer then goes on
    as the answer to the instruction (``fake_tokens(instruction)``).
    """
    tokens = fake_tokens(prompt)
    delay = token_delay()
    rng = random.Random(len(prompt))
    sent = 0
    outcome = "interrupted"
    log.info("fake LLM started: %d tokens for prompt %r", len(tokens), prompt[:60])
    try:
        while sent < len(tokens):
            await anyio.sleep(delay * rng.uniform(0.66, 1.33) if delay else 0)
            # Between two tokens, as a real agent loop would: take what arrived, never wait.
            for message in ctx.messages_nowait() if ctx is not None else ():
                instruction = str(message.data).strip()[:500]
                if instruction:
                    log.info("fake LLM steered by message %s: %r", message.id, instruction[:60])
                    yield instruction_text(instruction)
                    tokens = tokens[:sent] + fake_tokens(instruction)
            yield tokens[sent]
            sent += 1
        outcome = "finished"
    finally:
        log.info("fake LLM stopped (%s) after %d/%d tokens", outcome, sent, len(tokens))


def add_healthz(app: FastAPI, hub: StreamHub) -> None:
    """``GET /healthz``: the liveness probe the tests wait on, naming the hub's backend."""

    @app.get("/healthz", summary="Liveness probe")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "backend": type(hub.backend).__name__}


def serve(app: FastAPI) -> None:
    """Run ``app`` with uvicorn on ``HOST``/``PORT`` (127.0.0.1:8000), logging at INFO."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s: %(message)s")
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        # uvicorn runs the lifespan shutdown only after every open response ends, and an SSE
        # response may stay open for minutes: cut them after a few seconds (their clients
        # reconnect with their cursor) so the hub can close its producers.
        timeout_graceful_shutdown=int(os.environ.get("GRACEFUL_SHUTDOWN", "15")),
    )
