"""``python -m examples.client [--url URL] [--sync] [--session SID] PROMPT``: ask the chat example.

Starts (or joins) a session on the chat example's ``GET /chat/{sid}?prompt=...`` with
:class:`~fastapi_streamhub.client.StreamClient` and prints the answer as it streams. When the
connection drops, or the server it reads from restarts (with the session on Redis), the client
reconnects by itself with its last cursor and the answer carries on from the exact word where
it stopped; the reconnect count is printed at the end. ``--sync`` does the same with
``SyncStreamClient``.

Needs httpx (``pip install 'fastapi-streamhub[client]'``) and a running chat example
(``python -m examples.chat`` or ``scripts/example``).
"""

from __future__ import annotations

import argparse
import sys
import uuid

import anyio

from fastapi_streamhub import Chunk, Reset
from fastapi_streamhub.client import ClientStream, StreamClient, SyncClientStream, SyncStreamClient


def show(item: object) -> None:
    """Print text as it comes; a reset means the answer starts over."""
    if isinstance(item, Chunk) and item.kind == "text" and item.event is None:
        print(item.data, end="", flush=True)
    elif isinstance(item, Reset):
        print(f"\n[reset: {item.reason}; the answer starts over]", flush=True)


def report(stream: ClientStream | SyncClientStream) -> int:
    end = stream.end
    print(f"\n[{end.state.value if end else '?'}; {stream.reconnects} reconnects]", flush=True)
    return 0 if end is not None and end.state == "done" else 1


async def ask(url: str, session_id: str, prompt: str) -> int:
    async with StreamClient(url) as client:
        stream = client.start(f"/chat/{session_id}", {"prompt": prompt})
        async for item in stream:
            show(item)
        return report(stream)


def ask_sync(url: str, session_id: str, prompt: str) -> int:
    with SyncStreamClient(url) as client:
        stream = client.start(f"/chat/{session_id}", {"prompt": prompt})
        for item in stream:
            show(item)
        return report(stream)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.client", description=__doc__)
    parser.add_argument("prompt", nargs="?", default="How do resumable streams work?")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the chat app")
    parser.add_argument("--session", default=None, help="session id (default: a new one)")
    parser.add_argument("--sync", action="store_true", help="use SyncStreamClient")
    args = parser.parse_args(argv)
    session_id = args.session or f"cli-{uuid.uuid4().hex[:8]}"
    print(f"[session {session_id}]", flush=True)
    if args.sync:
        return ask_sync(args.url, session_id, args.prompt)
    return anyio.run(ask, args.url, session_id, args.prompt)


if __name__ == "__main__":
    sys.exit(main())
