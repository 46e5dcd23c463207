"""The router's client endpoints, in process: the browser helper module and the AI SDK resume.

- ``GET {prefix}/~/streamhub.js``: JavaScript with an ETag (304 when unchanged), under any
  prefix, and no clash with session ids;
- ``create_router(ai_sdk=True)``: ``GET /{chat_id}/stream`` is 204 when nothing runs, a UI
  message stream while an answer runs, authorized as ``read``; without the option the path is
  not routed and the OpenAPI document is unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request

from fastapi_streamhub import ResumableStreamingResponse, StreamHub, create_router

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MODULE = (resources.files("fastapi_streamhub") / "static" / "streamhub.js").read_bytes()


async def refuse_stranger(request: Request, session_id: str, action: str) -> bool:
    return request.headers.get("x-user") == "owner"


@pytest.fixture
async def hub() -> AsyncIterator[StreamHub]:
    async with StreamHub.from_url("memory://") as hub:
        yield hub


def client_for(hub: StreamHub, *routers: Any) -> httpx.AsyncClient:
    app = FastAPI()
    app.state.streamhub = hub
    for router in routers:
        app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_browser_module_is_served_with_its_etag(hub: StreamHub) -> None:
    async with client_for(hub, create_router(), create_router(prefix="/api/chat")) as client:
        resp = await client.get("/streams/~/streamhub.js")
        assert resp.status_code == 200
        assert resp.content == MODULE
        assert resp.headers["content-type"] == "text/javascript; charset=utf-8"
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-content-type-options"] == "nosniff"
        etag = resp.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"')
        for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = await client.get("/streams/~/streamhub.js", headers={"if-none-match": sent})
            assert again.status_code == 304 and again.content == b"", sent
            assert again.headers["etag"] == etag
        stale = await client.get("/streams/~/streamhub.js", headers={"if-none-match": '"old"'})
        assert stale.status_code == 200 and stale.content == MODULE
        # Under another prefix too; and the path shadows no session id.
        assert (await client.get("/api/chat/~/streamhub.js")).content == MODULE
        # "streamhub.js" is a valid session id (unknown here), not the module.
        assert (await client.get("/streams/streamhub.js/status")).status_code == 404
        assert (await client.get("/streams/~/other.js")).status_code == 422
        assert (await client.get("/streams/~")).status_code == 422
    # Not in the OpenAPI document: it is a file, not an API.
    paths = FastAPI(routes=create_router().routes).openapi()["paths"]
    assert not any("~" in path for path in paths)


async def test_resume_route_is_opt_in(hub: StreamHub) -> None:
    async with client_for(hub, create_router()) as client:
        resp = await client.get("/streams/c1/stream")
        assert resp.status_code == 422  # an unknown endpoint, as before
    paths = FastAPI(routes=create_router(ai_sdk=True).routes).openapi()["paths"]
    resume = paths["/streams/{session_id}/stream"]["get"]
    assert {"200", "204"} <= set(resume["responses"])
    assert (
        "/streams/{session_id}/stream"
        not in FastAPI(routes=create_router().routes).openapi()["paths"]
    )


async def test_resume_route_answers_by_session_state(hub: StreamHub) -> None:
    router = create_router(prefix="/api/chat", ai_sdk=True, authorize=refuse_stranger)
    owner = {"x-user": "owner"}
    async with client_for(hub, router) as client:
        assert (await client.get("/api/chat/c1/stream", headers=owner)).status_code == 204
        assert (await client.get("/api/chat/c1/stream")).status_code == 403
        assert (await client.get("/api/chat/bad%20id/stream", headers=owner)).status_code == 422
        assert (await client.post("/api/chat/c1/stream", headers=owner)).status_code == 405

        registration = await hub.register("c1")
        assert registration.producer is not None
        producer = registration.producer
        await producer.publish("one ")
        # httpx's ASGI transport hands the answer over once the app has finished it, so the
        # producer finishes once the route has seen the session active (its status read).
        status = hub.status
        checked = anyio.Event()

        async def status_then_signal(session_id: str) -> Any:
            info = await status(session_id)
            checked.set()
            return info

        hub.status = status_then_signal  # type: ignore[method-assign]
        answers: list[httpx.Response] = []

        async def resume() -> None:
            answers.append(await client.get("/api/chat/c1/stream", headers=owner))

        async with anyio.create_task_group() as tg:
            tg.start_soon(resume)
            await checked.wait()
            await producer.publish("two")
            await producer.close()
        del hub.status
        resp = answers[0]
        assert resp.status_code == 200
        assert resp.headers["x-vercel-ai-ui-message-stream"] == "v1"
        seen = [line for line in resp.text.splitlines() if line.startswith("data: ")]
        assert seen[0].startswith('data: {"type":"start","messageId":"c1-')
        assert seen[1:] == [
            'data: {"type":"text-start","id":"text-1"}',
            'data: {"type":"text-delta","id":"text-1","delta":"one "}',
            'data: {"type":"text-delta","id":"text-1","delta":"two"}',
            'data: {"type":"text-end","id":"text-1"}',
            'data: {"type":"finish","finishReason":"stop"}',
            "data: [DONE]",
        ]
        # Finished: nothing to resume.
        assert (await client.get("/api/chat/c1/stream", headers=owner)).status_code == 204


async def test_finished_answer_replays_on_post_without_restart(hub: StreamHub) -> None:
    async def short() -> AsyncIterator[str]:
        yield "hello"

    app = FastAPI()
    app.state.streamhub = hub

    @app.post("/chat/{sid}")
    async def chat(sid: str, restart: bool = False) -> ResumableStreamingResponse:
        return ResumableStreamingResponse(sid, short(), protocol="ai-sdk", restart=restart)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = (await client.post("/chat/s")).text
        replay = (await client.post("/chat/s")).text
        restarted = (await client.post("/chat/s?restart=true")).text
    assert replay == first  # the same message id and parts: a replay
    assert restarted != first and restarted.count('"delta":"hello"') == 1
