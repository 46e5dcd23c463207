"""The examples, run for real: uvicorn subprocesses on free ports, driven over HTTP with httpx.

- the chat example streams exactly its deterministic fake answer;
- a client that drops mid-stream resumes on a *second* instance sharing Redis, with the
  ``Last-Event-ID`` header or the ``?last_event_id=`` query, and gets exactly the rest;
- a cancel sent to one instance stops the producer running on the other;
- an instruction sent to one instance steers the answer running on the other;
- the OpenAI adapter, against the local stand-in provider, streams exactly its completion;
- each example of ``examples/adapters`` (one per SDK adapter) streams the stand-in provider's
  answer through its real SDK: text, a tool call, the end; its ``on_finish`` hook logs it.

``AppProcess`` and the app helpers are shared with ``test_browser.py``; the SSE parser is
``sse_client.SSEParser``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.process import read_log, terminate
from support.redis_server import free_port
from support.sids import new_sid
from support.sse_client import CONTROL_EVENTS, SSEEvent, SSEParser, cursor_key, rebuild_event

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) leaves the root out
    sys.path.insert(0, str(ROOT))

from examples._common import instruction_text  # noqa: E402
from examples.chat.app import fake_answer, fake_tokens  # noqa: E402
from examples.openai_adapter.app import ProviderError, _lines, openai_tokens  # noqa: E402
from examples.openai_adapter.standin import completion  # noqa: E402

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
STREAM_TIMEOUT = 20.0
HTTP_TIMEOUT = httpx.Timeout(10.0)
PROMPT = "How do resumable streams survive a reload?"

# -- events as a client rebuilds them (parser: sse_client.SSEParser) ----------------------------


def is_chunk(event: SSEEvent) -> bool:
    return event.type not in CONTROL_EVENTS


@dataclass
class Rebuilt:
    """What a client rebuilds from events, by the rules documented in ``_http/sse.py``."""

    text: str = ""
    chunks: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    metadata: list[Any] = field(default_factory=list)
    resets: list[dict[str, Any]] = field(default_factory=list)
    ends: list[dict[str, Any]] = field(default_factory=list)


def rebuild(events: list[SSEEvent]) -> Rebuilt:
    out = Rebuilt()
    for event in events:
        assert not out.ends, f"event after the end: {event}"
        if event.type == "metadata":
            assert event.own_id is None
            out.metadata.append(json.loads(event.data))
        elif event.type == "reset":
            assert event.own_id is None
            out.resets.append(json.loads(event.data))
            out.text, out.chunks, out.ids = "", [], []
        elif event.type == "end":
            assert event.own_id is None
            out.ends.append(json.loads(event.data))
        else:
            if event.type == "message":
                text = event.data
            else:
                assert event.type == "json", event
                text = json.loads(event.data)
                assert isinstance(text, str), event
            assert event.own_id, f"chunk without an id: {event}"
            out.chunks.append(text)
            out.ids.append(event.own_id)
            out.text += text
    return out


def read_sse(
    client: httpx.Client,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    stop_after_chunks: int | None = None,
    timeout: float = STREAM_TIMEOUT,
) -> list[SSEEvent]:
    """GET ``url`` and parse its events until the server closes it (or enough chunks came)."""
    deadline = time.monotonic() + timeout
    parser = SSEParser()
    events: list[SSEEvent] = []
    chunks = 0
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            raise AssertionError(f"GET {url}: {response.status_code} {response.text}")
        assert response.headers["content-type"].startswith("text/event-stream")
        for raw in response.iter_bytes():
            for kind, event in parser.feed(raw):
                if kind != "event":
                    continue
                events.append(event)
                chunks += is_chunk(event)
                if stop_after_chunks is not None and chunks >= stop_after_chunks:
                    return events
            if time.monotonic() > deadline:
                raise AssertionError(f"GET {url}: no end within {timeout} s; got {len(events)}")
    return events


# -- example apps as subprocesses -------------------------------------------------------------


class AppProcess:
    """``python -m <module>`` under uvicorn on a free loopback port; output goes to a log file."""

    def __init__(
        self, module: str, log_path: Path, *, env: dict[str, str], port: int | None = None
    ) -> None:
        self.module = module
        self.log_path = log_path
        self.env = env
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return read_log(self.log_path)

    def spawn(self) -> AppProcess:
        if self.port is None:
            self.port = free_port()
        env = {**os.environ, **self.env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        env["PYTHONUNBUFFERED"] = "1"
        # The chat example's saved answers: beside the log unless the test shares a file, never
        # the default in the temporary folder (a developer's own example runs read it).
        env.setdefault("CHAT_DB", str(self.log_path.with_suffix(".db")))
        with open(self.log_path, "ab") as log:
            log.write(f"--- {self.module} on port {self.port}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> AppProcess:
        """Poll ``/healthz`` until it answers, the process exits, or the deadline passes."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.module} exited with {self.proc.returncode}:\n{self.log()}"
                )
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.module} not ready within {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def start(self) -> AppProcess:
        return self.spawn().wait_ready()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still running after STOP_TIMEOUT."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def count(self, needle: str) -> int:
        return self.log().count(needle)


def run_apps(*apps: AppProcess) -> None:
    """Start several apps at once (their start-up overlaps) and wait until all are ready."""
    for app in apps:
        app.spawn()
    for app in apps:
        app.wait_ready()


def chat_env(redis_url: str = "memory://", delay: str = "0.005") -> dict[str, str]:
    return {"REDIS_URL": redis_url, "FAKE_LLM_DELAY": delay, "GRACEFUL_SHUTDOWN": "2"}


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[AppProcess]:
    app = AppProcess("examples.chat", tmp_path / "chat.log", env=chat_env())
    try:
        yield app.start()
    finally:
        app.stop()


@pytest.fixture
def chat_pair(tmp_path: Path, redis_url: str) -> Iterator[tuple[AppProcess, AppProcess]]:
    yield from two_chats(tmp_path, chat_env(redis_url))


def two_chats(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[AppProcess, AppProcess]]:
    """Two chat instances with ``env``, stopped when the generator is closed."""
    a = AppProcess("examples.chat", tmp_path / "chat-a.log", env=env)
    b = AppProcess("examples.chat", tmp_path / "chat-b.log", env=env)
    try:
        run_apps(a, b)
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=HTTP_TIMEOUT) as c:
        yield c


def chat_url(app: AppProcess, sid: str, prompt: str = PROMPT) -> str:
    return f"{app.url}/chat/{sid}?{httpx.QueryParams(prompt=prompt)}"


# -- the chat example -------------------------------------------------------------------------


def test_fake_answer_is_deterministic_and_long_enough() -> None:
    answer = fake_answer(PROMPT)
    assert answer == fake_answer(PROMPT) != fake_answer(PROMPT + "?")
    assert "".join(fake_tokens(PROMPT)) == answer
    assert 150 <= len(fake_tokens(PROMPT)) <= 300
    assert PROMPT in answer


def test_chat_streams_the_fake_answer(chat: AppProcess, client: httpx.Client) -> None:
    sid = new_sid("test")
    got = rebuild(read_sse(client, chat_url(chat, sid)))
    assert got.text == fake_answer(PROMPT)
    assert got.chunks == fake_tokens(PROMPT)
    assert got.metadata == [{"prompt": PROMPT}]
    assert got.ends == [{"state": "done", "reason": None}]
    assert got.resets == []
    keys = [cursor_key(c) for c in got.ids]
    assert keys == sorted(set(keys))

    # A finished session is replayed, not generated again.
    again = rebuild(read_sse(client, chat_url(chat, sid)))
    assert again.text == got.text and again.ids == got.ids
    assert again.ends == [{"state": "done", "reason": None}]
    snapshot = client.get(f"{chat.url}/streams/{sid}/snapshot").json()
    assert snapshot["state"] == "done" and snapshot["text"] == got.text
    assert chat.count("fake LLM started") == 1
    assert chat.count("fake LLM stopped (finished)") == 1


def test_chat_page_and_validation(chat: AppProcess, client: httpx.Client) -> None:
    page = client.get(chat.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    elements = ('id="prompt"', 'id="send"', 'id="stop"', 'id="answer"', 'id="status"')
    for element in (*elements, 'id="saved"'):
        assert element in page.text
    assert "http://" not in page.text and "https://" not in page.text
    assert client.get(f"{chat.url}/chat/bad%20id?prompt=x").status_code == 422
    assert client.get(f"{chat.url}/chat/{'x' * 201}?prompt=x").status_code == 422
    assert client.get(f"{chat.url}/chat/ok").status_code == 422  # prompt is required
    assert client.get(f"{chat.url}/streams/{new_sid('test')}").status_code == 404
    assert chat.count("fake LLM started") == 0


def test_chat_saves_every_finished_answer_and_keeps_it_across_a_restart(
    tmp_path: Path, client: httpx.Client
) -> None:
    """``on_finish`` writes each answer to SQLite once, stopped ones as truncated; with
    ``finish_before_end`` the history already holds an answer when its ``end`` arrives; the
    file outlives the process."""
    env = {**chat_env(delay="0.02"), "CHAT_DB": str(tmp_path / "chat.db")}
    app = AppProcess("examples.chat", tmp_path / "chat.log", env=env)
    try:
        app.start()
        done_sid, stopped_sid = new_sid("hist"), new_sid("hist")
        got = rebuild(read_sse(client, chat_url(app, done_sid)))
        assert got.ends == [{"state": "done", "reason": None}]
        saved = client.get(f"{app.url}/history").json()  # at once: saved before the end
        assert [(a["session_id"], a["state"], a["truncated"]) for a in saved] == [
            (done_sid, "done", False)
        ]
        assert saved[0]["text"] == fake_answer(PROMPT) and saved[0]["prompt"] == PROMPT

        read_sse(client, chat_url(app, stopped_sid, "stop me"), stop_after_chunks=3)
        answer = client.post(f"{app.url}/streams/{stopped_sid}/cancel", params={"wait": 5})
        assert answer.json() == {"state": "cancelled"}
        rest = rebuild(read_sse(client, f"{app.url}/streams/{stopped_sid}"))
        saved = client.get(f"{app.url}/history").json()
        assert [(a["session_id"], a["state"], a["truncated"]) for a in saved] == [
            (stopped_sid, "cancelled", True),
            (done_sid, "done", False),
        ]
        assert saved[0]["text"] == rest.text and saved[0]["prompt"] == "stop me"

        app.stop()
        app.start()
        assert client.get(f"{app.url}/history").json() == saved
        assert client.get(f"{app.url}/history", params={"limit": 0}).status_code == 422
    finally:
        app.stop()


@pytest.mark.parametrize("how", ["header", "query", "chat-endpoint"])
def test_resume_on_the_second_instance(
    chat_pair: tuple[AppProcess, AppProcess], client: httpx.Client, how: str
) -> None:
    a, b = chat_pair
    sid = new_sid("test")
    first = rebuild(read_sse(client, chat_url(a, sid), stop_after_chunks=25))
    assert len(first.chunks) == 25 and first.ends == []
    cursor = first.ids[-1]
    state = client.get(f"{b.url}/streams/{sid}/status").json()["state"]

    if how == "header":
        events = read_sse(client, f"{b.url}/streams/{sid}", headers={"last-event-id": cursor})
    elif how == "query":
        events = read_sse(
            client, f"{b.url}/streams/{sid}?{httpx.QueryParams(last_event_id=cursor)}"
        )
    else:  # the same URL as the first request: B joins A's producer instead of starting one
        events = read_sse(client, chat_url(b, sid), headers={"last-event-id": cursor})
    rest = rebuild(events)

    full = fake_answer(PROMPT)
    assert rest.resets == []
    assert first.text + rest.text == full
    assert first.chunks + rest.chunks == fake_tokens(PROMPT)
    assert cursor_key(rest.ids[0]) == (cursor_key(cursor)[0], cursor_key(cursor)[1] + 1)
    assert rest.ends == [{"state": "done", "reason": None}]
    assert [e.type for e in events].count("end") == 1 and events[-1].type == "end"
    # One producer, on A; B only relayed what A wrote to Redis.
    assert a.count("fake LLM started") == 1
    assert b.count("fake LLM started") == 0
    print(
        f"resume via {how}: {len(first.chunks)} chunks from A, {len(rest.chunks)} from B, "
        f"session {state} at resume"
    )


def test_cancel_on_one_instance_stops_the_producer_on_the_other(
    chat_pair: tuple[AppProcess, AppProcess], client: httpx.Client
) -> None:
    a, b = chat_pair
    sid = new_sid("test")
    first = rebuild(read_sse(client, chat_url(a, sid), stop_after_chunks=5))
    answer = client.post(f"{b.url}/streams/{sid}/cancel", params={"wait": 5})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"state": "cancelled"}
    rest = rebuild(
        read_sse(client, f"{b.url}/streams/{sid}", headers={"last-event-id": first.ids[-1]})
    )
    assert rest.ends == [{"state": "cancelled", "reason": rest.ends[0]["reason"]}]
    text = first.text + rest.text
    assert fake_answer(PROMPT).startswith(text) and len(text) < len(fake_answer(PROMPT))
    deadline = time.monotonic() + 5
    while a.count("fake LLM stopped (interrupted)") != 1:
        assert time.monotonic() < deadline, a.log()
        time.sleep(0.05)


@pytest.fixture
def slow_chat_pair(tmp_path: Path, redis_url: str) -> Iterator[tuple[AppProcess, AppProcess]]:
    # Slow enough that an instruction always lands mid-answer (some 6 s per answer).
    yield from two_chats(tmp_path, chat_env(redis_url, delay="0.03"))


def test_an_instruction_sent_to_one_instance_steers_the_answer_on_the_other(
    slow_chat_pair: tuple[AppProcess, AppProcess], client: httpx.Client
) -> None:
    a, b = slow_chat_pair
    page = client.get(b.url + "/")
    for element in ('id="instruction"', 'id="steer"', "/messages"):
        assert element in page.text
    sid = new_sid("test")
    instruction = "Tell me about tea instead"
    first = rebuild(read_sse(client, chat_url(a, sid), stop_after_chunks=5))
    sent = client.post(
        f"{b.url}/streams/{sid}/messages", json={"message": instruction, "id": "steer-1"}
    )
    assert sent.status_code == 202, sent.text
    retried = client.post(
        f"{b.url}/streams/{sid}/messages", json={"message": instruction, "id": "steer-1"}
    )
    assert retried.json() == {**sent.json(), "duplicate": True}
    rest = rebuild(
        read_sse(client, f"{b.url}/streams/{sid}", headers={"last-event-id": first.ids[-1]})
    )
    assert rest.ends == [{"state": "done", "reason": None}]
    text = first.text + rest.text
    before, marker, after = text.partition(instruction_text(instruction))
    assert marker, text  # echoed once: the retry was not delivered again
    assert len(before) < len(fake_answer(PROMPT)) and fake_answer(PROMPT).startswith(before)
    assert after == fake_answer(instruction)
    assert a.count("fake LLM steered") == 1
    late = client.post(f"{a.url}/streams/{sid}/messages", json={"message": "too late"})
    assert late.status_code == 409, late.text


# -- the OpenAI adapter -----------------------------------------------------------------------


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[AppProcess]:
    app = AppProcess(
        "examples.openai_adapter.standin", tmp_path / "standin.log", env={"STANDIN_DELAY": "0.002"}
    )
    try:
        yield app.start()
    finally:
        app.stop()


@pytest.fixture
def adapter(tmp_path: Path, standin: AppProcess) -> Iterator[AppProcess]:
    env = {
        "REDIS_URL": "memory://",
        "OPENAI_BASE_URL": standin.url + "/v1",
        "OPENAI_API_KEY": "test-key",
        "GRACEFUL_SHUTDOWN": "2",
    }
    app = AppProcess("examples.openai_adapter", tmp_path / "adapter.log", env=env)
    try:
        yield app.start()
    finally:
        app.stop()


def test_openai_adapter_streams_the_completion(adapter: AppProcess, client: httpx.Client) -> None:
    question = "What does the stand-in say?"
    sid = new_sid("test")
    url = f"{adapter.url}/ask/{sid}?{httpx.QueryParams(q=question)}"
    first = rebuild(read_sse(client, url, stop_after_chunks=10))
    rest = rebuild(read_sse(client, url, headers={"last-event-id": first.ids[-1]}))
    assert first.text + rest.text == completion(question)
    assert rest.ends == [{"state": "done", "reason": None}]
    whole = rebuild(read_sse(client, f"{adapter.url}/streams/{sid}"))
    assert whole.text == completion(question)
    assert whole.metadata == [{"q": question}]


@pytest.mark.anyio
async def test_openai_tokens_against_the_standin(standin: AppProcess) -> None:
    async with httpx.AsyncClient(
        base_url=standin.url + "/v1/", headers={"authorization": "Bearer k"}, timeout=HTTP_TIMEOUT
    ) as provider:
        tokens = [
            t
            async for t in openai_tokens(
                provider, model="m", messages=[{"role": "user", "content": "hi"}]
            )
        ]
        assert "".join(tokens) == completion("hi")
        assert len(tokens) > 10

        async with httpx.AsyncClient(base_url=standin.url + "/v1/", timeout=HTTP_TIMEOUT) as anon:
            with pytest.raises(ProviderError, match="401"):
                async for _ in openai_tokens(anon, model="m", messages=[]):
                    pass


@pytest.mark.anyio
async def test_provider_line_splitting() -> None:
    async def pieces(*texts: str) -> AsyncIterator[str]:
        for text in texts:
            yield text

    got = [line async for line in _lines(pieces("a\r", "\nb\rc\n", "\u2028d\r", "\r", "e"))]
    assert got == ["a", "b", "c", "\u2028d", "", "e"]


# -- examples/adapters: one app per SDK adapter, against the stand-in provider ----------------

ADAPTER_EXAMPLES = [
    "chat_completions",
    "responses",
    "anthropic_messages",
    "litellm_chat",
    "langgraph_agent",
    "pydantic_ai_agent",
]


@pytest.fixture(scope="module")
def llm_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_dir = tmp_path_factory.mktemp("standin")
    app = AppProcess("examples.adapters.standin", log_dir / "standin.log", env={})
    try:
        yield app.start().url
    finally:
        app.stop()


@pytest.mark.parametrize("name", ADAPTER_EXAMPLES)
def test_adapter_example_streams_the_standin_answer(
    name: str, llm_standin: str, tmp_path: Path, client: httpx.Client
) -> None:
    env = {
        "OPENAI_BASE_URL": f"{llm_standin}/v1",
        "ANTHROPIC_BASE_URL": llm_standin,
        # A dead proxy for all but loopback: an SDK that reached for the internet would fail.
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "GRACEFUL_SHUTDOWN": "2",
    }
    app = AppProcess(f"examples.adapters.{name}", tmp_path / f"{name}.log", env=env)
    try:
        app.start()
        sid = new_sid(name.replace("_", "-"))
        url = f"{app.url}/ask/{sid}?{httpx.QueryParams(q='Weather in Paris?')}"
        events = read_sse(client, url)
        chunks = [c for c in map(rebuild_event, events) if c is not None]
        ends = [json.loads(e.data) for e in events if e.type == "end"]
        snapshot = client.get(f"{app.url}/streams/{sid}/snapshot").json()
    finally:
        app.stop()
    assert ends == [{"state": "done", "reason": None}], ends
    text = "".join(c.value for c in chunks if c.kind == "text")
    assert text and snapshot["text"] == text
    parts = [c.value for c in chunks if c.kind == "json"]
    tools = [p["toolName"] for p in parts if p["type"] == "tool-input-available"]
    assert "get_weather" in tools, parts
    assert parts[-1]["type"] == "finish", parts
    assert f"answer {sid}/" in app.log() and " done: " in app.log()


@pytest.mark.anyio
async def test_ai_sdk_page_is_served_and_an_unbuilt_bundle_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import examples.ai_sdk.app as ai_sdk_app

    monkeypatch.setattr(ai_sdk_app, "BUNDLE", tmp_path)  # an empty folder: not built
    transport = httpx.ASGITransport(app=ai_sdk_app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        page = await client.get("/")
        missing = await client.get("/app.js")
        (tmp_path / "app.js").write_text("export {};\n")
        built = await client.get("/app.js")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/app.js">' in page.text
    assert missing.status_code == 404
    assert "npm ci && npm run build" in missing.json()["detail"]
    assert built.status_code == 200 and built.text == "export {};\n"
    assert built.headers["content-type"].startswith("text/javascript")
