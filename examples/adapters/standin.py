"""``python -m examples.adapters.standin``: the test suite's stand-in LLM provider on
``PORT`` (9000), for the adapter examples without a key.

It serves OpenAI's ``/v1/chat/completions`` and ``/v1/responses`` and Anthropic's
``/v1/messages`` as streams with text, a tool call, reasoning and usage, the shapes the real
APIs send (``tests/support/provider.py``, which ``tests/test_adapters.py`` drives the SDKs
against). It answers every question the same way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from support.provider import router

app = FastAPI(title="stand-in LLM provider")
app.include_router(router)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    port = int(os.environ.get("PORT", "9000"))
    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=port)


if __name__ == "__main__":
    main()
