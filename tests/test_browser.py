"""The chat page in a real browser: Debian's Chromium, driven by ``tests/browser/chat.mjs``.

The scenarios assert the exact final text against ``fake_answer``:

- reload: the page is reloaded mid-stream and resumes from its stored cursor (the page follows
  the answer with the browser helper, ``/streams/~/streamhub.js``);
- stop: the Stop button cancels the producer; the page shows a strict prefix;
- history: an answer reloaded mid-stream, a stopped one and a question asked after the Stop;
  the answers saved through ``on_finish`` (SQLite) are listed after each end and after a
  server restart, the stopped one marked truncated;
- reconnect: the producer runs on instance A, an EventSource follows on instance B, B is killed
  and started again on the same port; the browser reconnects by itself with Last-Event-ID.

Needs ``node`` and ``/usr/bin/chromium`` (``apt-get install -y chromium``); the npm package
``playwright-core`` is installed into ``tests/browser/node_modules`` on first use.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_app import expected_items
from support.apps import AppServer, start_servers
from support.node import NODE, node_modules, run_node
from test_examples import ROOT, AppProcess, chat_env, run_apps

from examples._common import instruction_text
from examples.chat.app import fake_answer
from fastapi_streamhub import Event

BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DELAY = "0.03"  # seconds per token: about 6 s per answer, long enough to act mid-stream

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (Node 18+ needed)"),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"{CHROMIUM} is missing: apt-get install -y chromium (or set CHROMIUM)",
    ),
]


@pytest.fixture(scope="session")
def playwright_core() -> Path:
    """``tests/browser/node_modules``, installed with npm when missing."""
    return node_modules(BROWSER_DIR, "playwright-core")


def run_chat(
    scenario: str,
    config: dict[str, Any],
    log_path: Path,
    on_step: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """Run a scenario of ``chat.mjs`` with Chromium."""
    return run_node(
        BROWSER_DIR, "chat.mjs", scenario, {"chromium": CHROMIUM, **config}, log_path, on_step
    )


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[AppProcess]:
    app = AppProcess("examples.chat", tmp_path / "chat.log", env=chat_env(delay=DELAY))
    try:
        yield app.start()
    finally:
        app.stop()


def figures(result: dict[str, Any], **extra: Any) -> str:
    shown = {k: v for k, v in result.items() if k not in ("text", "stored")}
    return json.dumps({**shown, **extra})


def test_reload_mid_stream_resumes_exactly(
    chat: AppProcess, playwright_core: Path, tmp_path: Path
) -> None:
    prompt = "Why does the page survive a reload?"
    full = fake_answer(prompt)
    result = run_chat(
        "reload",
        {"base": chat.url, "prompt": prompt, "reload_after_chars": 200},
        tmp_path / "node.log",
    )
    print("browser reload:", figures(result, expectedLength=len(full)))
    assert result["stateBeforeReload"] == "streaming"
    assert 200 <= result["charsBeforeReload"] < len(full)
    # Right after the reload the page shows the stored text, a prefix of the answer, at once.
    assert full.startswith(result["restoredText"])
    assert len(result["restoredText"]) >= result["storedCharsBeforeReload"] >= 200
    assert result["state"] == "done"
    assert result["text"] == full
    stored = result["stored"]
    assert stored["state"] == "done" and stored["text"] == full
    assert stored["extra"] == {"prompt": prompt}
    # One request started the session; after the reload the page resumed from its stored
    # cursor through /streams (EventSource cannot send Last-Event-ID on a first request).
    sid = stored["sessionId"]
    paths = [r["path"] for r in result["requests"]]
    assert paths[0].startswith(f"/chat/{sid}?prompt=")
    assert paths[1].startswith(f"/streams/{sid}?last_event_id=")
    assert [p for p in paths if p.startswith("/chat/")] == paths[:1]
    with httpx.Client(timeout=10) as client:
        status = client.get(f"{chat.url}/streams/{sid}/status").json()
    assert stored["cursor"] == status["last_event_id"]  # the cursor of the last chunk
    assert chat.count("fake LLM started") == 1
    # Both page loads imported the browser helper from the router.
    assert result["modules"] and all(m["status"] in (200, 304) for m in result["modules"])
    assert result["pageErrors"] == []


def test_stop_button_cancels(chat: AppProcess, playwright_core: Path, tmp_path: Path) -> None:
    prompt = "Can I stop an answer halfway?"
    full = fake_answer(prompt)
    result = run_chat(
        "stop",
        {"base": chat.url, "prompt": prompt, "stop_after_chars": 150},
        tmp_path / "node.log",
    )
    print("browser stop:", figures(result, expectedLength=len(full)))
    assert result["state"] == "cancelled"
    text = result["text"]
    assert len(text) >= result["charsBeforeStop"] >= 150
    assert full.startswith(text) and len(text) < len(full)
    sid = result["stored"]["sessionId"]
    assert result["stored"]["state"] == "cancelled"
    with httpx.Client(timeout=10) as client:
        status = client.get(f"{chat.url}/streams/{sid}/status").json()
        snapshot = client.get(f"{chat.url}/streams/{sid}/snapshot").json()
    assert status["state"] == "cancelled"
    assert snapshot["text"] == text  # the page shows everything the producer wrote
    assert chat.count("fake LLM stopped (interrupted)") == 1
    assert result["pageErrors"] == []


def test_instruction_box_steers_the_answer(
    chat: AppProcess, playwright_core: Path, tmp_path: Path
) -> None:
    prompt = "Tell me about resumable streams"
    instruction = "Talk about tea instead"
    result = run_chat(
        "steer",
        {"base": chat.url, "prompt": prompt, "instruction": instruction, "steer_after_chars": 100},
        tmp_path / "node.log",
    )
    print("browser steer:", figures(result))
    assert result["state"] == "done"
    before, marker, after = result["text"].partition(instruction_text(instruction))
    assert marker, result["text"]
    assert len(before) >= result["charsBeforeSteer"] >= 100
    assert fake_answer(prompt).startswith(before) and after == fake_answer(instruction)
    assert chat.count("fake LLM steered") == 1
    assert result["pageErrors"] == [] and result["consoleErrors"] == []


def test_history_lists_the_saved_answers_after_each_end_and_after_a_restart(
    chat: AppProcess, playwright_core: Path, tmp_path: Path
) -> None:
    prompts = ["What does the history keep?", "Will a stopped answer be kept?", "And after it?"]
    full = [fake_answer(p) for p in prompts]
    restarts: list[float] = []

    def restart(step: dict[str, Any]) -> str:
        assert step["step"] == "restart"
        started = time.monotonic()
        chat.stop()  # SIGTERM: the memory store goes, the SQLite file stays
        chat.start()  # same port
        restarts.append(time.monotonic() - started)
        return "restarted"

    config = {
        "base": chat.url,
        "prompt": prompts[0],
        "second_prompt": prompts[1],
        "third_prompt": prompts[2],
        "reload_after_chars": 150,
        "stop_after_chars": 100,
    }
    result = run_chat("history", config, tmp_path / "node.log", on_step=restart)
    first, second, third = result["first"], result["second"], result["third"]
    print("browser history:", json.dumps({"restartSeconds": restarts}))
    assert first["state"] == "done" and first["text"] == full[0]
    assert second["state"] == "cancelled"
    stopped = second["text"]
    assert len(stopped) >= 100 and full[1].startswith(stopped) and len(stopped) < len(full[1])
    assert third["state"] == "done" and third["text"] == full[2]
    rows = [
        {
            "sessionId": first["stored"]["sessionId"],
            "meta": f"{prompts[0]} — done",
            "text": full[0],
        },
        {
            "sessionId": second["stored"]["sessionId"],
            "meta": f"{prompts[1]} — cancelled (truncated)",
            "text": stopped,
        },
        {
            "sessionId": third["stored"]["sessionId"],
            "meta": f"{prompts[2]} — done",
            "text": full[2],
        },
    ]
    # Saved before each "end" reached the page (finish_before_end), newest first, exactly
    # what the page showed; the same after the restart (the rows come from SQLite).
    assert first["saved"] == rows[:1]
    assert second["saved"] == rows[1::-1]
    assert third["saved"] == rows[::-1]
    assert result["afterRestart"] == rows[::-1]
    assert chat.count("fake LLM started") == 3
    assert result["pageErrors"] == []


def test_eventsource_reconnects_by_itself_after_an_instance_restart(
    playwright_core: Path, tmp_path: Path, redis_url: str
) -> None:
    env = chat_env(redis_url, delay=DELAY)
    a = AppProcess("examples.chat", tmp_path / "chat-a.log", env=env)
    b = AppProcess("examples.chat", tmp_path / "chat-b.log", env=env)
    prompt = "What happens when the server I follow restarts?"
    full = fake_answer(prompt)
    restarts: list[float] = []

    def restart_b(step: dict[str, Any]) -> str:
        assert step["step"] == "restart"
        started = time.monotonic()
        b.kill()  # a crash: the browser sees the connection drop
        b.start()  # same port
        restarts.append(time.monotonic() - started)
        return "restarted"

    try:
        run_apps(a, b)
        config = {
            "producer": a.url,
            "follower": b.url,
            "sid": f"browser:{uuid.uuid4().hex}",
            "prompt": prompt,
            "restart_after_chars": 150,
        }
        result = run_chat("reconnect", config, tmp_path / "node.log", on_step=restart_b)
    finally:
        a.stop()
        b.stop()
    print("browser reconnect:", figures(result, restartSeconds=restarts, expectedLength=len(full)))
    assert result["end"] == {"state": "done", "reason": None}
    assert result["resets"] == 0
    assert result["text"] == full
    # The browser opened the stream twice: at the start and after B came back, the second
    # time on its own, with the last id it had seen as Last-Event-ID.
    opens = result["opensAtChars"]
    assert len(opens) >= 2 and opens[0] == 0
    assert result["charsBeforeRestart"] <= opens[1] < len(full)
    follows = [r for r in result["requests"] if r["path"].startswith("/streams/")]
    assert follows[0]["lastEventId"] is None
    # Attempts while B was down were refused before any header was sent; the one that got
    # through carried the cursor.
    reached = [r for r in follows[1:] if r["failure"] != "net::ERR_CONNECTION_REFUSED"]
    assert reached and all(r["lastEventId"] for r in reached), follows
    assert a.count("fake LLM started") == 1
    assert b.count("fake LLM started") == 0
    assert result["pageErrors"] == []


def _expected_chunk(item: Any) -> dict[str, Any]:
    """How the browser helper reports one item of ``http_app``'s generator."""
    if isinstance(item, Event):
        return {"event": item.event, "kind": "json", "data": item.data}
    if isinstance(item, str):
        plain = "\r" not in item and "\0" not in item
        return {"event": "message" if plain else "json", "kind": "text", "data": item}
    return {"event": "json", "kind": "json", "data": item}


def test_browser_helper_decodes_every_chunk_and_takes_a_reset(
    playwright_core: Path, tmp_path: Path
) -> None:
    n = 21  # three rounds of the seven kinds of "mixed" items: CR, NUL, JSON, named events
    items = expected_items(n, "mixed")
    text = "".join(i for i in items if isinstance(i, str))
    server = AppServer("module", {"REDIS_URL": "memory://"}, tmp_path)
    sid = f"browser:{uuid.uuid4().hex}"
    try:
        start_servers([server])
        result = run_chat(
            "module",
            {"base": server.url, "sid": sid, "url": f"/gen/{sid}?n={n}&kind=mixed&meta=true"},
            tmp_path / "node.log",
        )
        with httpx.Client(timeout=10) as client:
            status = client.get(f"{server.url}/streams/{sid}/status").json()
    finally:
        server.stop()
    first, second = result["first"], result["second"]
    print(
        "browser helper:",
        json.dumps(
            {
                "chunks": len(first["chunks"]),
                "chars": len(first["text"]),
                "resets": [len(first["resets"]), len(second["resets"])],
                "statuses": first["statuses"],
            }
        ),
    )
    # Every chunk, in order, exactly as the producer sent it; the text is the text chunks.
    assert [{k: c[k] for k in ("event", "kind", "data")} for c in first["chunks"]] == [
        _expected_chunk(i) for i in items
    ]
    assert [c["id"] for c in first["chunks"]][-1] == status["last_event_id"]
    assert first["text"] == text and first["end"] == {"state": "done", "reason": None}
    assert first["metadata"] == [{"model": "test", "n": n}]
    assert first["resets"] == [] and first["closed"] is True
    assert result["stored"] == {
        "version": 1,
        "sessionId": sid,
        "url": f"/gen/{sid}?n={n}&kind=mixed&meta=true",
        "text": text,
        "cursor": status["last_event_id"],
        "state": "done",
        "reason": None,
        "extra": {"n": 1},
    }
    # A cursor of another generation: the server resets, the stale text is dropped, and the
    # replay rebuilds the same text and chunks from the start.
    assert len(second["resets"]) == 1 and second["resets"][0]["generation"] == status["generation"]
    assert second["text"] == text and second["end"]["state"] == "done"
    assert second["chunks"] == first["chunks"]
    assert result["storedAfterReset"]["text"] == text
    assert result["storedAfterReset"]["cursor"] == status["last_event_id"]
    assert result["pageErrors"] == []  # (the console has a 404: /favicon.ico)
