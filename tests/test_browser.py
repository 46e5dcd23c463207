"""The chat page in a real browser: Debian's Chromium, driven by ``tests/browser/chat.mjs``.

Three scenarios, each asserting the exact final text against ``fake_answer``:

- reload: the page is reloaded mid-stream and resumes from its stored cursor;
- stop: the Stop button cancels the producer; the page shows a strict prefix;
- reconnect: the producer runs on instance A, an EventSource follows on instance B, B is killed
  and started again on the same port; the browser reconnects by itself with Last-Event-ID.

Needs ``node`` and ``/usr/bin/chromium`` (``apt-get install -y chromium``); the npm package
``playwright-core`` is installed into ``tests/browser/node_modules`` on first use.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from test_examples import ROOT, AppProcess, chat_env, run_apps

from examples.chat.app import fake_answer

BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node")
NODE_TIMEOUT = 50.0
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
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed; cannot install playwright-core")
        command = [npm, "ci" if (BROWSER_DIR / "package-lock.json").exists() else "install"]
        try:
            subprocess.run(
                [*command, "--no-audit", "--no-fund"],
                cwd=BROWSER_DIR,
                check=True,
                capture_output=True,
                timeout=180,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            output = getattr(exc, "stderr", b"") or b""
            pytest.skip(f"could not install playwright-core: {exc}\n{output.decode()[-2000:]}")
    return BROWSER_DIR / "node_modules"


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def run_node(
    scenario: str,
    config: dict[str, Any],
    log_path: Path,
    on_step: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """Run ``chat.mjs``; answer its STEP lines with ``on_step``; return its RESULT."""
    deadline = time.monotonic() + NODE_TIMEOUT
    assert NODE is not None
    with open(log_path, "wb") as stderr:
        proc = subprocess.Popen(
            [NODE, "chat.mjs", scenario, json.dumps({"chromium": CHROMIUM, **config})],
            cwd=BROWSER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert proc.stdin is not None and proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    reader.start()
    output: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"chat.mjs {scenario}: no result within {NODE_TIMEOUT} s:\n" + "".join(output)
                ) from None
            if line is None:
                raise AssertionError(
                    f"chat.mjs {scenario} exited without a result:\n"
                    + "".join(output)
                    + log_path.read_text(errors="replace")
                )
            output.append(line)
            kind, _, body = line.partition(" ")
            if kind == "RESULT":
                result: dict[str, Any] = json.loads(body)
                return result
            if kind == "ERROR":
                raise AssertionError(f"chat.mjs {scenario}: {json.loads(body)['message']}")
            if kind == "STEP":
                assert on_step is not None, line
                proc.stdin.write(on_step(json.loads(body)) + "\n")
                proc.stdin.flush()
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
        proc.stdin.close()
        proc.stdout.close()


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
    result = run_node(
        "reload",
        {"base": chat.url, "prompt": prompt, "reload_after_chars": 200},
        tmp_path / "node.log",
    )
    print("browser reload:", figures(result, expectedLength=len(full)))
    assert result["stateBeforeReload"] == "streaming"
    assert 200 <= result["charsBeforeReload"] < len(full)
    assert result["state"] == "done"
    assert result["text"] == full
    assert result["stored"]["state"] == "done" and result["stored"]["text"] == full
    # One request started the session; after the reload the page resumed from its stored
    # cursor through /streams (EventSource cannot send Last-Event-ID on a first request).
    sid = result["stored"]["sid"]
    paths = [r["path"] for r in result["requests"]]
    assert paths[0].startswith(f"/chat/{sid}?prompt=")
    assert paths[1].startswith(f"/streams/{sid}?last_event_id=")
    assert [p for p in paths if p.startswith("/chat/")] == paths[:1]
    assert chat.count("fake LLM started") == 1
    assert result["pageErrors"] == []


def test_stop_button_cancels(chat: AppProcess, playwright_core: Path, tmp_path: Path) -> None:
    prompt = "Can I stop an answer halfway?"
    full = fake_answer(prompt)
    result = run_node(
        "stop",
        {"base": chat.url, "prompt": prompt, "stop_after_chars": 150},
        tmp_path / "node.log",
    )
    print("browser stop:", figures(result, expectedLength=len(full)))
    assert result["state"] == "cancelled"
    text = result["text"]
    assert len(text) >= result["charsBeforeStop"] >= 150
    assert full.startswith(text) and len(text) < len(full)
    sid = result["stored"]["sid"]
    assert result["stored"]["state"] == "cancelled"
    with httpx.Client(timeout=10) as client:
        status = client.get(f"{chat.url}/streams/{sid}/status").json()
        snapshot = client.get(f"{chat.url}/streams/{sid}/snapshot").json()
    assert status["state"] == "cancelled"
    assert snapshot["text"] == text  # the page shows everything the producer wrote
    assert chat.count("fake LLM stopped (interrupted)") == 1
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
        result = run_node("reconnect", config, tmp_path / "node.log", on_step=restart_b)
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
