"""The AI SDK's ``useChat`` in a real browser: the React page of ``examples/ai_sdk``.

``examples/ai_sdk/page`` is a React 19 page with ``@ai-sdk/react`` 4 ``useChat({ resume: true,
transport })``, the transport being the router's (``/api/chat/~/chat-transport.js``, imported
at run time, not bundled). The test session installs the page's npm packages (``npm ci``, its
own ``package-lock.json``), bundles it with esbuild into a temporary folder, and the example
(uvicorn) serves that bundle (``AI_SDK_PAGE_BUNDLE``). Debian's Chromium, driven by
``tests/browser/chat.mjs`` (``react_*`` scenarios), then checks what a chat user expects:

- reload mid-answer: the answer resumes and ends exact, one text part, no duplicate message;
  a reload after the end finds nothing to resume (204) and shows the same messages;
- a second tab opening the chat mid-answer joins it; both end with the whole answer;
- Stop (``useChat``'s ``stop()``): the server says ``cancelled`` within a second and its
  chunk count stops growing; a new question then gets its answer, the stopped one is kept;
- a new question while an answer runs: the server supersedes the answer and answers it.
- conversations: a question asked in tab A shows in tab B (which follows the chat's turns with
  ``streamhub.js`` beside ``useChat``, ``?follow=turns``: no chunk) with its answer, live,
  across a reload of B; each tab receives each answer once.
- other devices (browser contexts of their own): one opening the chat mid-answer shows the
  turn in order and the next turn too; one opening it after the end shows the last turn.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.node import node_modules
from test_browser import playwright_core, run_chat  # noqa: F401 (a fixture)
from test_browser import pytestmark as browser_marks  # node and Chromium present
from test_examples import ROOT, AppProcess, chat_env

from examples.chat.app import fake_answer

PAGE_DIR = ROOT / "examples" / "ai_sdk" / "page"
DELAY = "0.03"  # seconds per token: about 6 s per answer, long enough to act mid-answer

pytestmark = [*browser_marks, pytest.mark.usefixtures("playwright_core")]


@pytest.fixture(scope="session")
def page_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The React page bundled by esbuild (``npm run build``) into a temporary folder."""
    node_modules(PAGE_DIR, "esbuild")
    out = tmp_path_factory.mktemp("ai-sdk-page")
    npm = shutil.which("npm")
    assert npm is not None  # node_modules() skipped without it
    # The page's own build script (esbuild), its output redirected: a later --outfile wins.
    subprocess.run(
        [npm, "run", "--silent", "build", "--", f"--outfile={out / 'app.js'}"],
        cwd=PAGE_DIR,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


@pytest.fixture
def ai_sdk(tmp_path: Path, page_bundle: Path) -> Iterator[AppProcess]:
    env = {**chat_env(delay=DELAY), "AI_SDK_PAGE_BUNDLE": str(page_bundle)}
    app = AppProcess("examples.ai_sdk", tmp_path / "ai_sdk.log", env=env)
    try:
        yield app.start()
    finally:
        app.stop()


def react(app: AppProcess, scenario: str, tmp_path: Path, **config: Any) -> dict[str, Any]:
    result = run_chat(scenario, {"base": app.url, **config}, tmp_path / "node.log")
    assert result["pageErrors"] == [], result["pageErrors"]
    # Every page load imported the router's transport.
    loads = [m["status"] for m in result["modules"] if "chat-transport" in m["path"]]
    assert loads and all(s in (200, 304) for s in loads), result["modules"]
    return result


def two_turns(
    app: AppProcess, scenario: str, tmp_path: Path, prompt: str, second: str, **config: Any
) -> dict[str, Any]:
    """A scenario of two questions, with the whole answer expected to each."""
    full, second_full = fake_answer(prompt), fake_answer(second)
    return react(
        app,
        scenario,
        tmp_path,
        prompt=prompt,
        full=full,
        second_prompt=second,
        second_full=second_full,
        **config,
    )


def answer_id(view: dict[str, Any], status: dict[str, Any]) -> str:
    """The message id of the answer of the chat's current generation (``<chat id>-<gen>``)."""
    return f"{view['chatId']}-{status['generation']}"


def texts(view: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["text"]) for m in view["messages"]]


def test_reload_mid_answer_resumes_exactly(ai_sdk: AppProcess, tmp_path: Path) -> None:
    prompt = f"Why does useChat survive a reload? {uuid.uuid4().hex[:6]}"
    full = fake_answer(prompt)
    result = react(
        ai_sdk, "react_reload", tmp_path, prompt=prompt, full=full, reload_after_chars=150
    )
    before, restored, after = result["before"], result["restored"], result["after"]
    print("react reload:", json.dumps({"charsBeforeReload": len(before["messages"][-1]["text"])}))
    assert before["status"] == "streaming"
    assert 150 <= len(before["messages"][-1]["text"]) < len(full)
    # Right after the reload the page shows what it had stored: the question and a prefix.
    assert texts(restored)[0] == ("user", prompt)
    assert full.startswith(restored["messages"][-1]["text"])
    # The resumed answer replaced the stored part of itself: one message, one text part.
    assert texts(after) == [("user", prompt), ("assistant", full)]
    assert after["messages"][1]["textParts"] == 1
    assert not any(m["stopped"] for m in after["messages"])
    assert after["messages"][1]["id"] == before["messages"][1]["id"]
    assert result["resumeStatus"] == 204  # after the end: nothing to resume
    assert result["afterEnd"]["messages"] == after["messages"]
    assert result["server"]["state"] == "done"
    assert after["messages"][1]["id"] == answer_id(after, result["server"])
    assert ai_sdk.count("POST /api/chat ") == 1


def test_a_second_tab_joins_the_running_answer(ai_sdk: AppProcess, tmp_path: Path) -> None:
    prompt = f"Can a second tab follow the answer? {uuid.uuid4().hex[:6]}"
    full = fake_answer(prompt)
    result = react(
        ai_sdk, "react_two_tabs", tmp_path, prompt=prompt, full=full, join_after_chars=100
    )
    expected = [("user", prompt), ("assistant", full)]
    assert texts(result["first"]) == expected and texts(result["second"]) == expected
    assert [m["id"] for m in result["first"]["messages"]] == [
        m["id"] for m in result["second"]["messages"]
    ]
    assert result["second"]["messages"][1]["textParts"] == 1
    assert result["server"]["state"] == "done"
    assert result["second"]["messages"][1]["id"] == answer_id(result["second"], result["server"])


def test_stop_stops_the_server_and_a_new_question_is_answered(
    ai_sdk: AppProcess, tmp_path: Path
) -> None:
    prompt, second = "Can I stop an answer halfway?", "And what comes after a Stop?"
    result = two_turns(
        ai_sdk, "react_stop_then_ask", tmp_path, prompt, second, stop_after_chars=100
    )
    print(
        "react stop:",
        json.dumps({k: result[k] for k in ("cancelMs", "chunksAtCancel", "chunksLater")}),
    )
    assert result["cancelMs"] < 1000  # the server says cancelled within a second of Stop
    assert result["chunksLater"] == result["chunksAtCancel"]  # and writes nothing after
    assert result["stateLater"] == "cancelled"
    stopped = result["stopped"]["messages"]
    assert texts(result["stopped"])[0] == ("user", prompt)
    text = stopped[1]["text"]
    assert len(text) >= result["charsBeforeStop"] >= 100
    assert fake_answer(prompt).startswith(text) and len(text) < len(fake_answer(prompt))
    # The question after Stop got its answer; the stopped answer is kept as it was stopped.
    assert texts(result["after"]) == [
        ("user", prompt),
        ("assistant", text),
        ("user", second),
        ("assistant", fake_answer(second)),
    ]
    # Two generations: the stopped one, then the new question's (the one the server runs now).
    assert result["server"]["state"] == "done"
    assert result["after"]["messages"][3]["id"] == answer_id(result["after"], result["server"])
    assert stopped[1]["id"] != result["after"]["messages"][3]["id"]
    # Marked stopped (no finish part): in this tab, and in the second tab that followed it,
    # which got what the server wrote before the cancel and the abort part.
    assert [m["stopped"] for m in result["after"]["messages"]] == [False, True, False, False]
    other = result["otherStopped"]["messages"]
    assert [(m["role"], m["stopped"]) for m in other] == [("user", False), ("assistant", True)]
    assert other[1]["text"].startswith(text) and fake_answer(prompt).startswith(other[1]["text"])
    # The second tab showed the question after Stop and its answer too, with the same ids.
    other_after = result["otherAfter"]["messages"]
    assert [m["id"] for m in other_after] == [m["id"] for m in result["after"]["messages"]]
    assert other_after[2:] == result["after"]["messages"][2:]


def test_a_new_question_while_an_answer_runs_is_answered(
    ai_sdk: AppProcess, tmp_path: Path
) -> None:
    prompt, second = "Tell me a long story", "Actually, answer this instead"
    result = two_turns(ai_sdk, "react_supersede", tmp_path, prompt, second, ask_after_chars=100)
    after = texts(result["after"])
    print("react supersede:", json.dumps(after)[:300])
    # The superseded answer is kept as far as it got; the new question has its whole answer.
    assert len(after) == 4 and after[0] == ("user", prompt) and after[1][0] == "assistant"
    assert len(after[1][1]) >= 100 and fake_answer(prompt).startswith(after[1][1])
    assert after[2:] == [("user", second), ("assistant", fake_answer(second))]
    assert [m["stopped"] for m in result["after"]["messages"]] == [False, True, False, False]
    assert result["server"]["state"] == "done"
    assert result["after"]["messages"][-1]["id"] == answer_id(result["after"], result["server"])
    assert result["before"]["messages"][-1]["id"] != result["after"]["messages"][-1]["id"]


def test_a_second_tab_shows_a_turn_started_in_the_first(ai_sdk: AppProcess, tmp_path: Path) -> None:
    prompt, second = "Where does a chat begin?", "And does the other tab see this?"
    result = two_turns(
        ai_sdk, "react_conversation", tmp_path, prompt, second, reload_after_chars=100
    )
    assert result["otherErrors"] == []
    assert texts(result["bBefore"]) == [("user", prompt), ("assistant", fake_answer(prompt))]
    # Tab B showed tab A's new question and followed its answer live (then a reload).
    assert texts(result["bMidTurn"])[:3] == [*texts(result["bBefore"]), ("user", second)]
    assert fake_answer(second).startswith(result["bMidTurn"]["messages"][3]["text"])
    expected = [
        ("user", prompt),
        ("assistant", fake_answer(prompt)),
        ("user", second),
        ("assistant", fake_answer(second)),
    ]
    assert texts(result["a"]) == expected and texts(result["b"]) == expected
    # The same messages, ids included: B's copy of the question has A's message id.
    assert result["a"]["messages"] == result["b"]["messages"]
    assert result["b"]["messages"][3]["id"] == answer_id(result["b"], result["server"])
    assert ai_sdk.count("POST /api/chat ") == 2  # tab B asked nothing itself
    # Each tab received each answer once, through useChat; its follower of the chat's turns
    # (?follow=turns) received no chunk. A saw both answers; B (reloaded mid-turn 2) the
    # second answer since its reload.
    chunks = result["chunks"]
    print("react conversation chunks per tab:", json.dumps(chunks))
    assert chunks["a"]["follower"] == 0 and chunks["b"]["follower"] == 0
    assert chunks["a"]["deltaChars"] == len(fake_answer(prompt)) + len(fake_answer(second))
    assert chunks["b"]["deltaChars"] == len(fake_answer(second))
    follows = {
        r["path"].partition("follow=")[2][:5] for r in result["requests"] if "follow=" in r["path"]
    }
    assert follows == {"turns"}


def test_other_devices_show_the_running_turn_and_the_next(
    ai_sdk: AppProcess, tmp_path: Path
) -> None:
    prompt, second = "Can my phone follow this chat?", "And the next question too?"
    result = two_turns(ai_sdk, "react_other_device", tmp_path, prompt, second, join_after_chars=100)
    assert result["otherErrors"] == []
    first_turn = [("user", prompt), ("assistant", fake_answer(prompt))]
    # B joined mid-answer: the answer through useChat's resume, the question (from the
    # conversation's metadata) put before it.
    assert texts(result["bFirst"]) == first_turn
    assert texts(result["b"]) == [*first_turn, ("user", second), ("assistant", fake_answer(second))]
    assert result["b"]["messages"] == result["a"]["messages"]  # the same ids
    # C came after the end: the last turn, its answer from the follower (nothing to resume).
    assert result["c"]["messages"] == result["a"]["messages"][2:]
    assert result["c"]["messages"][1]["id"] == answer_id(result["c"], result["server"])
    assert ai_sdk.count("POST /api/chat ") == 2  # B and C asked nothing
