"""The OpenAPI document as part of the HTTP contract, checked over real HTTP (uvicorn subprocesses).

- ``/openapi.json`` and ``/docs`` answer for an app with every router variant and routes of its
  own with ``response_class=ResumableStreamingResponse`` (``tests/openapi_app.py``), and for the
  chat example;
- event streams are documented as ``text/event-stream`` (one event's fields), their errors as
  the JSON they are;
- every path answers HEAD where it answers GET, and a 405 names every method of its path;
- schemathesis generates requests from each document and checks every answer against it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events
from support.apps import AppServer, start_servers

from fastapi_streamhub import ResumableStreamingResponse

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0


def _serve(name: str, app: str, env: dict[str, str], log_dir: Path) -> Iterator[AppServer]:
    server = AppServer(name, env, log_dir, app)
    try:
        start_servers([server])
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """Every router variant, and the app's own SSE routes, on the memory backend."""
    yield from _serve("variants", "openapi_app:app", {}, tmp_path_factory.mktemp("openapi"))


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """``examples/chat`` (its package is found from the repository root)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "FAKE_LLM_DELAY": "0.001"}
    yield from _serve("chat", "examples.chat.app:app", env, tmp_path_factory.mktemp("openapi"))


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as c:
        yield c


def document(client: httpx.Client, server: AppServer) -> dict[str, Any]:
    resp = client.get(f"{server.url}/openapi.json")
    assert resp.status_code == 200, resp.text[:500]
    doc: dict[str, Any] = resp.json()
    return doc


# --------------------------------------------------------------------------- the document


@pytest.mark.parametrize("name", ["variants", "chat"])
def test_openapi_json_and_docs_answer(
    name: str, request: pytest.FixtureRequest, client: httpx.Client
) -> None:
    server: AppServer = request.getfixturevalue(name)
    doc = document(client, server)
    assert doc["openapi"].startswith("3.")
    docs = client.get(f"{server.url}/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text


SSE_OPERATIONS = {
    "variants": [
        "/streams/{session_id}",
        "/api/chat/{session_id}",
        "/api/chat/{session_id}/stream",
        "/gen/{sid}",
        "/plain/{sid}",
    ],
    "chat": ["/chat/{session_id}"],
}


@pytest.mark.parametrize("name", ["variants", "chat"])
def test_streams_are_event_streams_and_errors_are_json(
    name: str, request: pytest.FixtureRequest, client: httpx.Client
) -> None:
    server: AppServer = request.getfixturevalue(name)
    paths = document(client, server)["paths"]
    for path in SSE_OPERATIONS[name]:
        responses = paths[path]["get"]["responses"]
        assert list(responses["200"]["content"]) == ["text/event-stream"], path
    # Documented with openapi_responses(): one event's fields.
    for path in (p for p in SSE_OPERATIONS[name] if p != "/plain/{sid}"):
        event = paths[path]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
        assert event["type"] == "object", (path, event)
        assert {"data", "event", "id", "retry"} <= set(event["properties"]), (path, event)
    # Every error of every operation is JSON, whatever the operation's own media type.
    for path, operations in paths.items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response.get("content", {})) == ["application/json"], (
                        method,
                        path,
                        status,
                    )
    if name == "variants":
        stream = paths["/streams/{session_id}"]["get"]["responses"]
        assert {"400", "404", "422"} <= set(stream)
        assert "403" in paths["/api/chat/{session_id}"]["get"]["responses"]  # authorize
        assert "403" not in stream
        assert "400" in paths["/streams/active"]["post"]["responses"]
        messages = paths["/streams/{session_id}/messages"]["post"]["responses"]
        assert "Idempotency-Key" in messages["422"]["description"]


def test_status_code_is_a_success_with_a_body() -> None:
    async def tokens() -> Any:
        yield "x"

    assert ResumableStreamingResponse("s", tokens()).status_code == 200
    assert ResumableStreamingResponse("s", tokens(), status_code=201).status_code == 201
    for bad in (204, 205, 199, 300, 404, True, "200", 200.0):
        with pytest.raises(ValueError, match="status_code"):
            ResumableStreamingResponse("s", tokens(), status_code=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- methods


ALLOW = [
    ("PUT", "/streams/s1", "GET, HEAD, DELETE"),
    ("PATCH", "/streams/s1", "GET, HEAD, DELETE"),
    ("OPTIONS", "/streams/s1", "GET, HEAD, DELETE"),
    ("TRACE", "/streams/s1", "GET, HEAD, DELETE"),
    ("POST", "/streams/s1", "GET, HEAD, DELETE"),
    ("DELETE", "/streams/s1/status", "GET, HEAD"),
    ("PUT", "/streams/s1/snapshot", "GET, HEAD"),
    ("GET", "/streams/s1/cancel", "POST"),
    ("HEAD", "/streams/s1/cancel", "POST"),
    ("PUT", "/streams/s1/messages", "POST"),
    ("OPTIONS", "/streams/active", "POST"),
    ("PUT", "/api/chat/active", "POST"),
    ("PUT", "/api/chat/s1/stream", "GET, HEAD"),
    ("PUT", "/api/chat/s1", "GET, HEAD, DELETE"),
]


@pytest.mark.parametrize(("method", "path", "allow"), ALLOW, ids=[f"{m} {p}" for m, p, _ in ALLOW])
def test_405_names_every_method_of_the_path(
    variants: AppServer, client: httpx.Client, method: str, path: str, allow: str
) -> None:
    resp = client.request(method, variants.url + path)
    assert resp.status_code == 405, (resp.status_code, resp.text)
    assert resp.headers["allow"] == allow
    if method != "HEAD":
        assert resp.json() == {"detail": "Method Not Allowed"}


def test_unknown_endpoint_is_422_for_every_method(
    variants: AppServer, client: httpx.Client
) -> None:
    for method in ("GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"):
        resp = client.request(method, f"{variants.url}/streams/s1/bogus")
        assert resp.status_code == 422, (method, resp.status_code)
        assert "unknown endpoint" in resp.json()["detail"]


def test_head_answers_like_get_without_the_stream(
    variants: AppServer, client: httpx.Client
) -> None:
    base = variants.url
    unknown = f"unknown-{uuid.uuid4().hex[:8]}"
    for path in (f"/streams/{unknown}", f"/streams/{unknown}/status", f"/api/chat/{unknown}"):
        resp = client.head(base + path)
        assert resp.status_code == 404, (path, resp.status_code)
        assert resp.headers["content-type"] == "application/json"
        assert resp.content == b""
    assert client.head(f"{base}/api/chat/{unknown}/stream").status_code == 204
    assert client.head(f"{base}/streams/~/streamhub.js").status_code == 200

    # A running stream: HEAD answers at once (a GET would follow it for seconds).
    sid = f"head-{uuid.uuid4().hex[:8]}"
    with client.stream("GET", f"{base}/gen/{sid}", params={"n": 100, "delay": 0.02}) as live:
        assert live.status_code == 200
        for path in (f"/streams/{sid}", f"/api/chat/{sid}/stream"):
            resp = client.head(base + path, timeout=2.0)
            assert resp.status_code == 200, (path, resp.status_code)
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.content == b""
        for path in (f"/streams/{sid}/status", f"/streams/{sid}/snapshot"):
            get, head = client.get(base + path), client.head(base + path)
            assert head.status_code == get.status_code == 200
            assert head.headers["content-type"] == get.headers["content-type"]
            assert head.content == b""
    wait_until_done(client, base, sid)


def wait_until_done(client: httpx.Client, base: str, sid: str) -> None:
    """Let the generation of ``sid`` end, so that it does not load the next test."""
    resp = client.post(f"{base}/streams/{sid}/cancel", params={"wait": 5})
    assert resp.status_code == 200, resp.text


# --------------------------------------------------------------------------- schemathesis

# Every check that reads answers. Off: the checks about authentication and about resources
# other operations create, which need security schemes or links these documents do not declare.
CHECKS_ON = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
]
CHECKS_OFF = [
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
    "object_level_authorization",
]
# Checks off for some operations (path regex -> checks), each for a reason a schema cannot
# change. POST /{sid}/messages answers 422 to a body ``id`` that differs from its
# ``Idempotency-Key`` header (documented), a rule between two places that no schema can state:
# a schema-valid request may be refused there on purpose.
OFF_FOR = {r"/messages$": ["positive_data_acceptance"]}


def schemathesis_run(
    url: str, *, max_examples: int, off_for: dict[str, list[str]] = OFF_FOR
) -> list[str]:
    """Run schemathesis (every phase: examples, coverage, fuzzing, stateful) against the
    document at ``url`` with a fixed seed; return what it found, one line each."""
    config = SchemathesisConfig.from_dict(
        {
            "seed": 1,
            # No crash cache (it would replay earlier runs' failures) and no files written.
            "cache": {"enabled": False},
            "suppress-health-check": ["all"],
            "workers": 1,
            "request-timeout": TIMEOUT,
            "generation": {"max-examples": max_examples, "database": "none"},
            "checks": {
                **{name: {"enabled": True} for name in CHECKS_ON},
                **{name: {"enabled": False} for name in CHECKS_OFF},
            },
            "operations": [
                {
                    "include-path-regex": path,
                    "checks": {name: {"enabled": False} for name in names},
                }
                for path, names in off_for.items()
            ],
        }
    )
    schema = schemathesis.openapi.from_url(url, config=config)
    found: list[str] = []
    phases: dict[str, int] = {}  # test cases sent per phase
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            phases[event.phase.value] = phases.get(event.phase.value, 0) + len(event.recorder.cases)
            for nodes in event.recorder.checks.values():
                for node in nodes:
                    if node.failure_info is not None:
                        failure = node.failure_info.failure
                        found.append(f"{event.recorder.label}: {failure.title}: {failure.message}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            found.append(f"error: {event!r}")
    # Requests built from the document (coverage) and generated ones (fuzzing) both ran.
    assert phases.get("coverage", 0) > 0 and phases.get("fuzzing", 0) > 0, phases
    return found


@pytest.mark.timeout(120)
def test_schemathesis_every_router_variant(variants: AppServer) -> None:
    # /plain documents its 200 as FastAPI does for any response class ({"type": "string"}),
    # which a reader takes as the schema of each event (the reason for openapi_responses()).
    off_for = {**OFF_FOR, r"^/plain/": ["response_schema_conformance"]}
    found = schemathesis_run(f"{variants.url}/openapi.json", max_examples=25, off_for=off_for)
    assert found == [], "\n".join(found)
    check_log(variants)


@pytest.mark.timeout(120)
def test_schemathesis_chat_example(chat: AppServer) -> None:
    found = schemathesis_run(f"{chat.url}/openapi.json", max_examples=25)
    assert found == [], "\n".join(found)
    check_log(chat)


def check_log(server: AppServer) -> None:
    log = server.log()
    for marker in ("ERROR", "Traceback", "Exception"):
        assert marker not in log, f"{server.name} logged {marker!r}:\n{log[-3000:]}"
